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
from rich.console import Console
from rich.table import Table

from execution.journal import Journal
from execution.journal_models import PairPosition, Side
from signals.generator import SignalGenerator

ZERO = Decimal(0)
MidSource = Callable[[str], Decimal | None]


def status_table(generators: dict[str, SignalGenerator], *, width: int = 110, hub: Any = None) -> str:
    """The periodic status: pair, state, z, bars in window, quote ages by the wall clock.

    Quote ages come from the market-data hub (wall clock: a dead feed shows as stale); without
    a hub (tests, replays) they fall back to the generator's exchange-time ages.
    """
    table = Table(title="status", title_justify="left")
    for column in ("pair", "state", "z", "bars", "age_a_ms", "age_b_ms", "signals"):
        table.add_column(column, justify="right" if column not in ("pair", "state") else "left")
    for pair_id, gen in generators.items():
        s = gen.snapshot()
        z = "" if s.z != s.z else f"{s.z:+.2f}"
        if hub is not None:
            age_a, age_b = hub.quote_age_ms(gen.symbol_a), hub.quote_age_ms(gen.symbol_b)
            stale = hub.feed_lost or hub.is_stale(gen.symbol_a) or hub.is_stale(gen.symbol_b)
        else:
            age_a, age_b, stale = s.quote_age_a_ms, s.quote_age_b_ms, False
        state = display_state(s)
        table.add_row(pair_id, f"STALE ({state})" if stale else state, z,
                      f"{s.bars_in_window}/{s.lookback_bars - 1}",
                      "" if age_a is None else str(age_a), "" if age_b is None else str(age_b),
                      str(sum(s.signals_emitted.values())))
    console = Console(width=width, record=True, file=_NullFile(), color_system=None)
    console.print(table)
    return console.export_text()


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
        unrealized, open_fees = _unrealized(journal, position, mids)
        open_funding = _open_funding(journal, position)
        rows.append({
            "pair": pair_id, "state": position.state.value, "round_trips": len(trips),
            "wins": sum(1 for t in trips if t.net_pnl is not None and t.net_pnl > 0),
            "realized_usdt": _money(realized), "unrealized_usdt": _money(unrealized - open_fees + open_funding),
            "fees_usdt": _money(fees + open_fees), "funding_usdt": _money(funding + open_funding),
            "max_drawdown_usdt": _money(_max_drawdown(
                [t.net_pnl for t in trips if t.net_pnl is not None])),
        })
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("round_trips", "wins", "realized_usdt", "unrealized_usdt", "fees_usdt", "funding_usdt")
    return {k: round(sum(r[k] for r in rows), 6) if k.endswith("usdt") else sum(r[k] for r in rows) for k in keys}


def _open_funding(journal: Journal, position: PairPosition) -> Decimal:
    """Funding recorded so far for the pair's open round trip (0 when none is open)."""
    if position.round_trip_id is None:
        return ZERO
    trip = journal.get_round_trip(position.round_trip_id)
    if trip is None or not trip.is_open:
        return ZERO
    return sum((f.amount for f in journal.funding_for_round_trip(trip.id)), ZERO)


def _unrealized(journal: Journal, position: PairPosition, mids: MidSource) -> tuple[Decimal, Decimal]:
    """Mark-to-mid PnL of the open legs and the fees already paid on them."""
    if position.round_trip_id is None or (position.qty_a == 0 and position.qty_b == 0):
        return ZERO, ZERO
    trip = journal.get_round_trip(position.round_trip_id)
    if trip is None:
        return ZERO, ZERO
    cash = ZERO
    fees = ZERO
    for fill in journal.fills_for_pair_since(position.pair_id, trip.opened_ts_ms - 1):
        notional = fill.qty * fill.price
        cash += notional if fill.side is Side.SELL else -notional
        fees += fill.fee
    value = ZERO
    for symbol, qty in ((position.symbol_a, position.qty_a), (position.symbol_b, position.qty_b)):
        mid = mids(symbol)
        if qty and mid is None:
            return ZERO, fees
        value += qty * (mid or ZERO)
    return cash + value, fees


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

    def __init__(self, generators: dict[str, SignalGenerator], interval_seconds: float, *, hub: Any = None) -> None:
        self._generators = generators
        self._hub = hub
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="status")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            logger.info("\n" + status_table(self._generators, hub=self._hub).rstrip())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def stats(self) -> dict[str, Any]:
        return {}
