"""The session's marked-to-market equity curve and the ``performance`` statistics section.

Equity at a sample = the account's equity when the engine started (its first balance read) +
the net PnL of the round trips closed since + the unrealized PnL of the open positions now
(``app.report.open_pnl``). A sample is taken at start, after each executed signal that closed a
round trip, within ``check_seconds`` of a close outside the router (a rollback, a reconciliation),
every ``interval_seconds``, and once more at stop (the snapshot).
The figures themselves are pure functions in ``app/performance.py``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from app import performance as perf
from app.report import MidSource, open_pnl
from execution.journal import Journal

ZERO = Decimal(0)


class EquityRecorder:
    """Samples equity while the bot runs; its ``stats()`` is the final statistics' figures."""

    name = "performance"

    def __init__(self, *, engine: Any, journal: Journal, mids: MidSource, interval_seconds: float,
                 check_seconds: float = 1.0, wall_ms: Callable[[], int] | None = None) -> None:
        self._engine = engine
        self._journal = journal
        self._mids = mids
        self._interval = interval_seconds
        self._check = min(check_seconds, interval_seconds)
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._closed_at_start: set[int] | None = None
        self._start_equity: Decimal | None = None
        self.samples: list[perf.EquityPoint] = []
        self._closed_seen = 0
        self._task: asyncio.Task[None] | None = None
        self._final: dict[str, Any] | None = None

    async def start(self) -> None:
        """After the engine started: its first balance read is the equity at start."""
        self._closed_at_start = {t.id for t in self._journal.round_trips() if not t.is_open}
        start = getattr(self._engine, "balance_at_start", None)
        self._start_equity = start.total if start is not None else None
        self.sample()
        self._task = asyncio.create_task(self._loop(), name="performance.sample")

    async def _loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self._check)
            closed_now = len(self._session_trips())
            if closed_now != self._closed_seen or time.monotonic() - last >= self._interval:
                self.sample()
                last = time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def on_execution(self, _result: Any) -> None:
        """After an executed signal: a sample if it closed a round trip (the router calls this)."""
        if self._closed_at_start is not None and len(self._session_trips()) != self._closed_seen:
            self.sample()

    def _session_trips(self) -> list[Any]:
        before = self._closed_at_start or set()
        return [t for t in self._journal.round_trips() if not t.is_open and t.id not in before]

    def _unrealized(self) -> dict[str, Decimal]:
        return {pair_id: mark.unrealized_usdt for pair_id, mark in self._marks().items()}

    def _marks(self) -> dict[str, OpenMark]:
        """Each open position marked once: the mids read now and the unrealized PnL at exactly them."""
        marks = {}
        for pair_id, pos in self._engine.positions.items():
            if pos.qty_a == 0 and pos.qty_b == 0:
                continue
            mids = {pos.symbol_a: self._mids(pos.symbol_a), pos.symbol_b: self._mids(pos.symbol_b)}
            marks[pair_id] = OpenMark(mids[pos.symbol_a], mids[pos.symbol_b],
                                      open_pnl(self._journal, pos, mids.get))
        return marks

    def sample(self) -> perf.EquityPoint | None:
        """One point of the curve now (None without an equity at start)."""
        trips = self._session_trips()
        self._closed_seen = len(trips)
        point = self.current(trips)
        if point is not None:
            self.samples.append(point)
        return point

    def current(self, trips: list[Any] | None = None) -> perf.EquityPoint | None:
        """The marked-to-market equity now, not recorded on the curve (the operator API reads it).
        ``trips``: this session's round trips when the caller has just read them."""
        if self._start_equity is None:
            return None
        realized = sum((t.net_pnl or ZERO for t in (self._session_trips() if trips is None else trips)), ZERO)
        return perf.EquityPoint(self._wall_ms(), self._start_equity + realized + sum(self._unrealized().values(), ZERO))

    def stats(self) -> dict[str, Any]:
        """The figures at stop, exact money as strings. Computed once the engine has stopped (it read,
        or failed to read, the final balance), so the screen and the file show the same numbers;
        before that (a snapshot while running) computed afresh each time."""
        if self._final is not None:
            return self._final
        if self._closed_at_start is None:  # never started
            return {}
        self.sample()
        stopped = (getattr(self._engine, "balance_at_stop", None) is not None
                   or getattr(self._engine, "final_balance_error", None) is not None)
        section = performance_section(
            session_trips=self._session_trips(), all_trips=self._journal.round_trips(), marks=self._marks(),
            positions=self._engine.positions, start_equity=self._start_equity,
            end_balance=getattr(self._engine, "balance_at_stop", None),
            end_unknown=(getattr(self._engine, "final_balance_error", None) if stopped else "the bot is still running"),
            last_balance=getattr(self._engine, "balance", None), samples=self.samples)
        if stopped:
            self._final = section
        return section


@dataclass(frozen=True, slots=True)
class OpenMark:
    """An open position at stop: the mids it was marked at (None: no quote) and its unrealized PnL."""

    mid_a: Decimal | None
    mid_b: Decimal | None
    unrealized_usdt: Decimal


def performance_section(*, session_trips: list[Any], all_trips: list[Any], marks: dict[str, OpenMark],
                        positions: dict[str, Any], start_equity: Decimal | None, end_balance: Any,
                        samples: list[perf.EquityPoint], end_unknown: str | None = None,
                        last_balance: Any = None) -> dict[str, Any]:
    """The ``performance`` section of the session file: every figure of the final screen.

    ``end_balance`` is the balance read at stop; without it the equity at end is unknown
    (``equity_end_unknown`` says why) and never an older read (kept apart as ``equity_last_read_usdt``).
    """
    unrealized = {pair_id: mark.unrealized_usdt for pair_id, mark in marks.items()}
    open_total = sum(unrealized.values(), ZERO)
    session = perf.trip_figures(session_trips)
    all_time = perf.trip_figures(all_trips)
    end_equity = end_balance.total if end_balance is not None and start_equity is not None else None
    capital = start_equity if start_equity is not None and start_equity > 0 else None
    session_ratios = perf.ratios(session_trips, capital_usdt=capital or ZERO)
    all_ratios = perf.ratios(all_trips, capital_usdt=capital or ZERO)
    drawdown = perf.max_drawdown(samples)
    all_drawdown = perf.max_drawdown(perf.realized_curve(all_trips, capital or ZERO))
    unknown = None if end_equity is not None else (end_unknown or "no balance read at stop")
    return {
        "session": {
            **perf.figures_json(session),
            "unrealized_usdt": str(open_total),
            "net_pnl_usdt": str(session.realized_usdt + open_total),
            "equity_start_usdt": None if start_equity is None else str(start_equity),
            "equity_end_usdt": None if end_equity is None else str(end_equity),
            "equity_end_unknown": unknown,
            "equity_last_read_usdt": (str(last_balance.total) if unknown and last_balance is not None else None),
            "return_pct": (float((end_equity - start_equity) / start_equity * 100)
                           if end_equity is not None and start_equity else None),
            "max_drawdown_usdt": str(drawdown.usdt), "max_drawdown_pct": drawdown.pct,
            "sharpe": session_ratios.sharpe, "sortino": session_ratios.sortino,
            "ratio_samples": session_ratios.samples, "trips_per_year": session_ratios.trips_per_year,
            "equity_samples": len(samples),
        },
        "all_time": {
            **perf.figures_json(all_time),
            "unrealized_usdt": str(open_total),
            "net_pnl_usdt": str(all_time.realized_usdt + open_total),
            "max_drawdown_usdt": str(all_drawdown.usdt), "max_drawdown_pct": all_drawdown.pct,
            "sharpe": all_ratios.sharpe, "sortino": all_ratios.sortino,
            "ratio_samples": all_ratios.samples, "trips_per_year": all_ratios.trips_per_year,
        },
        "min_ratio_samples": perf.MIN_RATIO_SAMPLES,
        "pairs": pair_rows(session_trips, positions, unrealized),
        "open_positions": [
            {"pair": pair_id, "state": positions[pair_id].state.value,
             "symbol_a": positions[pair_id].symbol_a, "qty_a": str(positions[pair_id].qty_a),
             "mid_a": None if mark.mid_a is None else str(mark.mid_a),
             "symbol_b": positions[pair_id].symbol_b, "qty_b": str(positions[pair_id].qty_b),
             "mid_b": None if mark.mid_b is None else str(mark.mid_b),
             "unrealized_usdt": str(mark.unrealized_usdt)}
            for pair_id, mark in marks.items()],
        "equity_curve": [[p.ts_ms, str(p.equity_usdt)] for p in samples],
    }


def pair_rows(session_trips: list[Any], positions: dict[str, Any], unrealized: dict[str, Decimal]) -> list[dict[str, Any]]:
    """Per pair, this session: the closed trips' figures, the open position and its unrealized PnL.
    The money columns add up to the session's figures (unlike the ``pnl`` section's fees, which
    count the open legs' fees too)."""
    rows = []
    for f in perf.pair_figures(session_trips, positions):
        pos = positions[f.pair_id]
        rows.append({
            "pair": f.pair_id, "state": pos.state.value, "round_trips": f.round_trips, "wins": f.wins,
            "realized_usdt": str(f.realized_usdt), "fees_usdt": str(f.fees_usdt), "funding_usdt": str(f.funding_usdt),
            "max_drawdown_usdt": str(f.max_drawdown_usdt), "unrealized_usdt": str(unrealized.get(f.pair_id, ZERO)),
            "qty_a": str(pos.qty_a), "qty_b": str(pos.qty_b)})
    return rows
