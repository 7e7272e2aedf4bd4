"""Operator views: the periodic status table and the per-pair PnL rows of the final statistics.

PnL is computed from the journal (realized: closed round trips, net of fees and funding) and
from the current mids (unrealized: open legs against their average entry price from recorded
fills, less the fees paid and plus the funding received on them so far), so the numbers on
screen are the ones a later audit of the journal would give. ``funding_usdt`` is the funding
received (+) or paid (-) by the pair's round trips, closed and open.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, Callable

from loguru import logger
from rich import box
from rich.console import Console
from rich.table import Table

from execution.journal import Journal
from execution.journal_models import PairPosition, Side
from signals.generator import SignalGenerator

ZERO = Decimal(0)
MidSource = Callable[[str], Decimal | None]


STATUS_CAPTION = ("LONG/SHORT = LONG_SPREAD/SHORT_SPREAD, * = warming; pos: base qty, + long - short; held: "
                  "time in trade; upnl: USDT, net; age_ms: quotes a/b by the wall clock")
STATUS_COLUMNS = ("pair", "state", "z", "pos_a", "pos_b", "entry_z", "held", "upnl", "age_ms", "refused")


def status_table(generators: dict[str, SignalGenerator], *, width: int = 100, hub: Any = None,
                 engine: Any = None, journal: Journal | None = None, mids: MidSource | None = None) -> str:
    """The periodic status, one row per pair, within ``width`` columns: state, z, the position
    per leg (signed base quantity: + long, - short), the entry z, the time in trade (exchange
    time: the pair's last event minus its entry), the unrealized PnL (net of the fees and funding
    of the open legs, ``open_pnl``), the quote ages of both legs (``a/b`` ms) and the refusals.

    Quote ages come from the market-data hub (wall clock: a dead feed shows as stale); without
    a hub (tests, replays) they fall back to the generator's exchange-time ages. Without an engine
    the position columns are empty.
    """
    table = Table(title="status", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=0,
                  caption=STATUS_CAPTION, caption_justify="left")
    for column in STATUS_COLUMNS:  # fold, never cut: an over-long cell wraps inside its column
        table.add_column(column, justify="left" if column in ("pair", "state") else "right", overflow="fold")
    positions = getattr(engine, "positions", {}) if engine is not None else {}
    refusals = getattr(engine, "refusals_by_pair", {}) if engine is not None else {}
    for pair_id, gen in generators.items():
        s = gen.snapshot()
        z = "" if s.z != s.z else f"{s.z:+.2f}"
        if hub is not None:
            age_a, age_b = hub.quote_age_ms(gen.symbol_a), hub.quote_age_ms(gen.symbol_b)
            stale = hub.feed_lost or hub.is_stale(gen.symbol_a) or hub.is_stale(gen.symbol_b)
        else:
            age_a, age_b, stale = s.quote_age_a_ms, s.quote_age_b_ms, False
        state = _short_state(display_state(s))
        position = positions.get(pair_id)
        held = position is not None and (position.qty_a != 0 or position.qty_b != 0)
        table.add_row(
            pair_id, f"STALE {state}" if stale else state, z,
            _qty(position.qty_a) if held else "", _qty(position.qty_b) if held else "",
            _entry_z(journal, position) if held else "",
            _duration(s.last_ts_ms - s.entry_ts_ms) if held and s.entry_ts_ms and s.last_ts_ms else "",
            f"{open_pnl(journal, position, mids):,.2f}" if held and journal is not None and mids is not None else "",
            f"{_age(age_a)}/{_age(age_b)}", str(refusals.get(pair_id, 0)))
    console = Console(width=width, record=True, file=_NullFile(), color_system=None)
    console.print(table)
    return console.export_text()


def _short_state(state: str) -> str:
    """``SHORT_SPREAD (warming)`` -> ``SHORT*``: the status table's state column (STATUS_CAPTION)."""
    short = state.replace("_SPREAD", "")
    return short.replace(" (warming)", "*")


def _age(ms: int | None) -> str:
    return "-" if ms is None else str(ms)


def _qty(qty: Decimal) -> str:
    return f"{qty:+g}" if qty else "0"


def _entry_z(journal: Journal | None, position: PairPosition) -> str:
    if journal is None or position.entry_signal_id is None:
        return ""
    record = journal.get_signal(position.entry_signal_id)
    return "" if record is None else f"{record.signal.z:+.2f}"


def _duration(ms: int) -> str:
    """``1d02h``, ``3h05m``, ``12m30s``, ``45s``."""
    seconds = max(0, ms // 1000)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def display_state(snapshot: Any) -> str:
    """The pair's state for operators: WARMING while bars are missing (after a gap, or before
    the window is full), said next to the position when one is held."""
    state = snapshot.state.value
    warming = snapshot.warming or not snapshot.window_full
    if not warming:
        return state
    return "WARMING" if state == "FLAT" else f"{state} (warming)"


def pnl_rows(journal: Journal, positions: dict[str, PairPosition], mids: MidSource) -> list[dict[str, Any]]:
    """Per pair: round trips, wins, realized and unrealized PnL net of fees and funding, fees,
    funding, max drawdown."""
    rows = []
    for pair_id, position in positions.items():
        trips = [t for t in journal.round_trips(pair_id) if not t.is_open and t.net_pnl is not None]
        realized = sum((t.net_pnl for t in trips if t.net_pnl is not None), ZERO)
        fees = sum((t.fees for t in trips if t.fees is not None), ZERO)
        funding = sum((t.funding for t in trips if t.funding is not None), ZERO)
        unrealized, open_fees, open_funding = open_trip_parts(journal, position, mids)
        rows.append({
            "pair": pair_id, "state": position.state.value, "round_trips": len(trips),
            "wins": sum(1 for t in trips if t.net_pnl is not None and t.net_pnl > 0),
            "realized_usdt": _money(realized), "unrealized_usdt": _money(unrealized - open_fees + open_funding),
            "fees_usdt": _money(fees + open_fees), "funding_usdt": _money(funding + open_funding),
            "max_drawdown_usdt": _money(_max_drawdown(
                [t.net_pnl for t in trips if t.net_pnl is not None])),
        })
    return rows


def open_pnl(journal: Journal, position: Any, mids: MidSource) -> Decimal:
    """The open round trip's unrealized PnL, exact: marked to mid, less the fees paid on it, plus
    the funding received on it (0 when no trip is open)."""
    marked, fees, funding = open_trip_parts(journal, position, mids)
    return marked - fees + funding


def open_trip_parts(journal: Journal, position: Any, mids: MidSource) -> tuple[Decimal, Decimal, Decimal]:
    """The pair's open round trip as (marked PnL before fees, fees, funding).

    Marked PnL is the cash of the trip's fills so far plus the quantity those same fills hold x
    mid. Quantities come from the fills, not from the position: a read while an execution is
    recording its fills (one leg's fills in, the position not yet updated) would otherwise count
    a leg twice or not at all (a demo's equity curve dipped one leg's notional, about 450 USDT,
    for one sample). A closed trip is realized: all zero. A leg with fills but no mid: marked 0,
    the fees and funding still count.
    """
    if position.round_trip_id is None:
        return ZERO, ZERO, ZERO
    trip = journal.get_round_trip(position.round_trip_id)
    if trip is None or not trip.is_open:
        return ZERO, ZERO, ZERO
    cash, fees, held = ZERO, ZERO, {}
    for fill in journal.fills_for_pair_since(position.pair_id, trip.opened_ts_ms - 1):
        signed = fill.qty if fill.side is Side.BUY else -fill.qty
        cash -= signed * fill.price
        fees += fill.fee
        held[fill.symbol] = held.get(fill.symbol, ZERO) + signed
    funding = sum((f.amount for f in journal.funding_for_round_trip(trip.id)), ZERO)
    value = ZERO
    for symbol, qty in held.items():
        mid = mids(symbol) if qty else ZERO
        if mid is None:
            return ZERO, fees, funding
        value += qty * mid
    return cash + value, fees, funding


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("round_trips", "wins", "realized_usdt", "unrealized_usdt", "fees_usdt", "funding_usdt")
    return {k: round(sum(r[k] for r in rows), 6) if k.endswith("usdt") else sum(r[k] for r in rows) for k in keys}


def _max_drawdown(pnls: list[Decimal]) -> Decimal:
    """Largest fall of cumulative realized PnL from its running peak (0 if it never fell)."""
    peak = ZERO
    equity = ZERO
    worst = ZERO
    for pnl in pnls:
        equity += pnl
        peak = max(peak, equity)
        worst = max(worst, peak - equity)
    return worst


def _money(value: Decimal) -> float:
    return float(round(value, 6))


class _NullFile:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        return None


class StatusReporter:
    """Logs the status table every ``interval_seconds`` of wall time."""

    name = "status"

    def __init__(self, generators: dict[str, SignalGenerator], interval_seconds: float, *, hub: Any = None,
                 engine: Any = None, journal: Journal | None = None, mids: MidSource | None = None) -> None:
        self._generators = generators
        self._hub = hub
        self._engine, self._journal, self._mids = engine, journal, mids
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="status")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            logger.info("\n" + status_table(self._generators, hub=self._hub, engine=self._engine,
                                                journal=self._journal, mids=self._mids).rstrip())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def stats(self) -> dict[str, Any]:
        return {}
