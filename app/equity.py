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
        return {pair_id: open_pnl(self._journal, pos, self._mids)
                for pair_id, pos in self._engine.positions.items()
                if pos.qty_a != 0 or pos.qty_b != 0}

    def sample(self) -> perf.EquityPoint | None:
        """One point of the curve now (None without an equity at start)."""
        self._closed_seen = len(self._session_trips())
        point = self.current()
        if point is not None:
            self.samples.append(point)
        return point

    def current(self) -> perf.EquityPoint | None:
        """The marked-to-market equity now, not recorded on the curve (the operator API reads it)."""
        if self._start_equity is None:
            return None
        realized = sum((t.net_pnl or ZERO for t in self._session_trips()), ZERO)
        return perf.EquityPoint(self._wall_ms(), self._start_equity + realized + sum(self._unrealized().values(), ZERO))

    def stats(self) -> dict[str, Any]:
        """The figures at stop, computed once (a final sample first), exact money as strings."""
        if self._final is not None:
            return self._final
        if self._closed_at_start is None:  # never started
            return {}
        self.sample()
        self._final = performance_section(
            session_trips=self._session_trips(), all_trips=self._journal.round_trips(),
            unrealized=self._unrealized(), positions=self._engine.positions,
            start_equity=self._start_equity, end_balance=getattr(self._engine, "balance", None),
            samples=self.samples)
        return self._final


def performance_section(*, session_trips: list[Any], all_trips: list[Any], unrealized: dict[str, Decimal],
                        positions: dict[str, Any], start_equity: Decimal | None, end_balance: Any,
                        samples: list[perf.EquityPoint]) -> dict[str, Any]:
    """The ``performance`` section of the session file: every figure of the final screen."""
    open_total = sum(unrealized.values(), ZERO)
    session = perf.trip_figures(session_trips)
    all_time = perf.trip_figures(all_trips)
    end_equity = end_balance.total if end_balance is not None and start_equity is not None else None
    capital = start_equity if start_equity is not None and start_equity > 0 else None
    session_ratios = perf.ratios(session_trips, capital_usdt=capital or ZERO)
    all_ratios = perf.ratios(all_trips, capital_usdt=capital or ZERO)
    drawdown = perf.max_drawdown(samples)
    all_drawdown = perf.max_drawdown(perf.realized_curve(all_trips, capital or ZERO))
    return {
        "session": {
            **perf.figures_json(session),
            "unrealized_usdt": str(open_total),
            "net_pnl_usdt": str(session.realized_usdt + open_total),
            "equity_start_usdt": None if start_equity is None else str(start_equity),
            "equity_end_usdt": None if end_equity is None else str(end_equity),
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
        "open_positions": [
            {"pair": pair_id, "state": positions[pair_id].state.value, "qty_a": str(positions[pair_id].qty_a),
             "qty_b": str(positions[pair_id].qty_b), "unrealized_usdt": str(value)}
            for pair_id, value in unrealized.items()],
        "equity_curve": [[p.ts_ms, str(p.equity_usdt)] for p in samples],
    }
