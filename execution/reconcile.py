"""Reconciliation: make the journal and the exchange agree, at start and periodically.

What the bot holds on a pair is *derived*, not trusted: it is the sum of the journal's recorded
fills of that pair's orders, per leg. So a crash at any point (between two legs, during a
rollback, after a fill whose response was lost) is repaired the same way:

1. every unresolved order in the journal is looked up by clientOrderId (retried while the
   exchange cannot answer) and brought up to date (a working order left by a crash is
   cancelled), and missing fills are fetched; an order that still cannot be looked up blocks
   its pair at startup and leaves its pair and symbols alone in a periodic pass;
2. orders on the exchange that carry our prefix but that the journal does not know, or knows
   as finished, are cancelled;
3. each pair's legs are derived from fills and compared with the exchange's net positions;
   a difference the journal cannot explain blocks the pairs on that symbol (``--adopt`` records
   it as a position the bot did not open, which it then never touches);
4. each pair is restored: flat, in position (LONG/SHORT from the legs' signs), or repaired:
   a naked leg is closed (P5), an imbalance beyond one lot step is trimmed (P2). The entry and
   the round trip behind held legs are taken from the journal when the crash came before the
   position was saved, and a round trip left open (or already closed) by a crash between two
   journal writes is adopted (or left alone).

The pure part (``classify``) decides; the async part acts. Reconciliation runs under the
engine's lock, so it never races an execution.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field, replace
from collections.abc import Set as AbstractSet
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from loguru import logger

from core.errors import PermanentError, RetryableError
from core.types import PairState, SignalType, TradingSignal
from execution.journal_models import (FillConflictError, IllegalTransitionError, OrderPurpose, OrderRecord,
                                      OrderStatus, PairPosition, Side)
from execution.lifecycle import IllegalPairTransition, PairEvent
from execution.orders import CLIENT_ID_PREFIX, OrderRequest, OutcomeUnresolved
from execution.resolver import Resolution

ZERO = Decimal(0)
#: Pauses before re-reading positions that differ from the journal (positionRisk lags fills).
_POSITION_RECHECK_SECONDS = (0.25, 0.5, 1.0)


class PairVerdict(str, Enum):
    FLAT = "FLAT"
    LONG_SPREAD = "LONG_SPREAD"
    SHORT_SPREAD = "SHORT_SPREAD"
    NAKED = "NAKED"  # one leg held, the other not
    INCONSISTENT = "INCONSISTENT"  # both held, but with signs no spread position has


def classify(qty_a: Decimal, qty_b: Decimal) -> PairVerdict:
    """Pure: what a pair's derived legs mean. LONG_SPREAD holds +Y (b) and -X (a).

    >>> classify(Decimal("-2"), Decimal("1")).value
    'LONG_SPREAD'
    """
    if qty_a == 0 and qty_b == 0:
        return PairVerdict.FLAT
    if qty_a == 0 or qty_b == 0:
        return PairVerdict.NAKED
    if qty_b > 0 > qty_a:
        return PairVerdict.LONG_SPREAD
    if qty_a > 0 > qty_b:
        return PairVerdict.SHORT_SPREAD
    return PairVerdict.INCONSISTENT


def derived_legs(orders: list[OrderRecord], leg: str) -> Decimal:
    """Pure: signed quantity of one leg from the filled quantities of the pair's orders.

    Filled quantities come with every order state, so this works even while an order's trade
    list (needed for PnL, not for the book) could not be fetched yet.
    """
    total = ZERO
    for order in orders:
        if order.leg.value == leg and order.filled_qty:
            total += order.filled_qty if order.side is Side.BUY else -order.filled_qty
    return total


@dataclass(slots=True)
class ReconcileReport:
    orders_checked: int = 0
    orders_updated: int = 0
    orders_not_found: int = 0
    working_cancelled: int = 0
    orphans_cancelled: int = 0
    fills_fetched: int = 0
    restored: dict[str, str] = field(default_factory=dict)
    repaired: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    external: dict[str, str] = field(default_factory=dict)
    unresolved: dict[str, str] = field(default_factory=dict)  # orders whose lookup kept failing
    anomalies: dict[str, str] = field(default_factory=dict)  # journal and exchange contradict

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Reconciler:
    """Acts on the engine's parts; created by the engine, run under its lock."""

    def __init__(self, engine: Any, *, adopt: bool, external_path: Path) -> None:
        self._engine = engine
        self._adopt = adopt
        self._external_path = external_path
        self.external: dict[str, Decimal] = _load_external(external_path)
        self._pass_signals: dict[str, str] = {}  # pair -> this pass's repair signal id
        self._vanished_now: list[_Vanished] = []  # this pass's vanished legs, explained after the comparison

    async def run(self, *, startup: bool) -> ReconcileReport:
        report = ReconcileReport()
        engine = self._engine
        engine.counters.reconciliations += 1
        self._pass_signals = {}
        self._vanished_now = []
        await self._resolve_open_orders(report)
        await self._cancel_orphans(report)
        await self._fill_gaps(report)
        unresolved = self._unresolved(report, startup=startup)
        skip_symbols = {o.symbol for o in unresolved}
        exchange_positions = await self._exchange_positions()
        for pause in _POSITION_RECHECK_SECONDS:
            if exchange_positions is None or not self._differences(exchange_positions, skip_symbols):
                break
            # positionRisk can lag the fills: look again before calling a difference real. A
            # failed re-read leaves nothing to compare: a stale snapshot must never block a pair.
            await asyncio.sleep(pause)
            exchange_positions = await self._exchange_positions()
        if exchange_positions is not None:
            self._compare_positions(exchange_positions, report, skip=skip_symbols)
        for vanished in self._vanished_now:
            await self._explain_vanished(vanished)
        await self._restore_pairs(report, startup=startup, skip={o.pair_id for o in unresolved})
        if startup or report.repaired or report.blocked or report.orphans_cancelled or report.anomalies:
            logger.info("reconciliation ({}): {}", "startup" if startup else "periodic",
                        {k: v for k, v in report.as_dict().items() if v})
        return report

    # -- orders ---------------------------------------------------------------------------------
    async def _resolve_open_orders(self, report: ReconcileReport) -> None:
        """Every open order through the resolver: found (followed, cancelled if still working,
        fills fetched), confirmed none (not found after its horizon), or left unresolved."""
        engine = self._engine
        for order in engine.journal.open_orders():
            report.orders_checked += 1
            found = await engine.resolver.resolve(order)
            if found.resolution is Resolution.NONE:
                report.orders_not_found += 1
                continue
            if found.resolution is Resolution.UNKNOWN or found.state is None:
                continue
            state = found.state
            if not state.status.is_final:
                state = await engine.placer.cancel_remainder(order.symbol, order.client_order_id, state)
                report.working_cancelled += 1
            record = await self._adopt_state(order, state, report)
            if record is None:
                continue
            report.orders_updated += 1
            if record.filled_qty > 0:
                engine.counters.fills_adopted += 1

    def _unresolved(self, report: ReconcileReport, *, startup: bool) -> list[OrderRecord]:
        """Orders still unresolved after the lookups: their pairs' legs cannot be derived.

        Those pairs go RESOLVING (no entries) and, with their symbols, are left alone until a
        later pass resolves them: comparing or repairing now would act on a book known to be
        incomplete. The engine's resolution task runs passes until they are resolved.
        """
        engine = self._engine
        unresolved = engine.journal.open_orders()
        for order in unresolved:
            report.unresolved[order.client_order_id] = f"{order.pair_id} {order.symbol} {order.status.value}"
            if order.pair_id in engine.positions:
                engine.mark_resolving(order.pair_id, f"order {order.client_order_id} ({order.symbol}) still "
                                                     f"unresolved ({order.status.value})")
        if unresolved:
            logger.warning("reconciliation: {} order(s) still unresolved: {}", len(unresolved),
                           ", ".join(o.client_order_id for o in unresolved))
        return unresolved

    async def _cancel_orphans(self, report: ReconcileReport) -> None:
        engine = self._engine
        for symbol in sorted({s for p in engine.pairs.values() for s in (p.symbol_a, p.symbol_b)}):
            try:
                orders = await engine.adapter.fetch_open_orders(symbol)
            except (RetryableError, PermanentError) as exc:
                logger.warning("reconciliation: open orders of {} unavailable: {}", symbol, exc)
                continue
            for order in orders:
                if not order.client_order_id.startswith(CLIENT_ID_PREFIX):
                    continue  # the user's own order: never touched
                known = engine.journal.get_order(order.client_order_id)
                if known is not None and known.status.is_open:
                    continue  # resolved by _resolve_open_orders on this same pass
                logger.warning("reconciliation: cancelling orphan order {} on {}", order.client_order_id, symbol)
                state = await engine.placer.cancel_remainder(symbol, order.client_order_id, order)
                report.orphans_cancelled += 1
                engine.counters.orphans_cancelled += 1
                if known is not None:
                    await self._adopt_state(known, state, report)

    async def _fill_gaps(self, report: ReconcileReport) -> None:
        engine = self._engine
        for pair_id in engine.pairs:
            orders = engine.journal.orders_for_pair(pair_id)
            recorded = _fill_qty_by_order(engine.journal, pair_id)
            for order in orders:
                if order.filled_qty > recorded.get(order.client_order_id, ZERO):
                    try:
                        await engine.placer.record_fills(order)
                    except (IllegalTransitionError, FillConflictError) as exc:
                        self._anomaly(order, "its trades", exc, report)
                        continue
                    report.fills_fetched += 1

    async def _adopt_state(self, known: OrderRecord, state: Any, report: ReconcileReport) -> OrderRecord | None:
        """Record the exchange's view of an order and its fills. A view the journal's rules refuse
        (REJECTED in the journal, CANCELED on the exchange; fills that contradict) is an anomaly:
        recorded with both versions, and the pass goes on with the other orders and pairs."""
        engine = self._engine
        try:
            record = engine.placer.apply_state(known.client_order_id, state)
            await engine.placer.record_fills(record)
        except (IllegalTransitionError, FillConflictError) as exc:
            self._anomaly(known, f"{state.status.value} filled {state.filled}", exc, report)
            return None
        return record

    def _anomaly(self, known: OrderRecord, exchange_says: str, exc: Exception, report: ReconcileReport) -> None:
        engine = self._engine
        detail = {"order": known.client_order_id, "journal": f"{known.status.value} filled {known.filled_qty}",
                  "exchange": exchange_says, "error": str(exc)}
        engine.journal.record_event("anomaly", known.pair_id, detail)
        report.anomalies[known.client_order_id] = f"journal {detail['journal']}, exchange {exchange_says}"
        logger.error("reconciliation: ANOMALY {} ({}): journal {} but exchange {}: {}; kept as recorded, the pass "
                     "goes on", known.client_order_id, known.pair_id, detail["journal"], exchange_says, exc)

    # -- positions ------------------------------------------------------------------------------
    def derived(self, pair_id: str) -> tuple[Decimal, Decimal]:
        engine = self._engine
        orders = engine.journal.orders_for_pair(pair_id)
        return derived_legs(orders, "a"), derived_legs(orders, "b")

    def expected_positions(self) -> dict[str, Decimal]:
        """Per symbol, the net position the journal explains: the pairs' derived legs summed."""
        engine = self._engine
        expected: dict[str, Decimal] = {}
        for pair_id, spec in engine.pairs.items():
            qa, qb = self.derived(pair_id)
            expected[spec.symbol_a] = expected.get(spec.symbol_a, ZERO) + qa
            expected[spec.symbol_b] = expected.get(spec.symbol_b, ZERO) + qb
        return expected

    async def _exchange_positions(self) -> dict[str, Decimal] | None:
        engine = self._engine
        symbols = sorted({s for p in engine.pairs.values() for s in (p.symbol_a, p.symbol_b)})
        try:
            positions = await engine.adapter.fetch_positions(symbols)
        except (RetryableError, PermanentError) as exc:
            logger.warning("reconciliation: positions unavailable: {}", exc)
            return None
        return {s: (positions[s].qty if s in positions else ZERO) for s in symbols}

    def _differences(self, exchange: dict[str, Decimal], skip: AbstractSet[str]) -> dict[str, Decimal]:
        """Per symbol, what the exchange holds beyond what the journal and adopted positions explain."""
        expected = self.expected_positions()
        differences = {symbol: held - expected[symbol] - self.external.get(symbol, ZERO)
                       for symbol, held in exchange.items() if symbol not in skip}
        return {symbol: d for symbol, d in differences.items() if d != 0}

    def _compare_positions(self, exchange: dict[str, Decimal], report: ReconcileReport, *,
                           skip: AbstractSet[str] = frozenset()) -> None:
        """Block the pairs on a symbol whose exchange position the journal cannot explain (or
        adopt the difference with ``--adopt``); unblock a BLOCKED pair whose symbols match again."""
        engine = self._engine
        expected = self.expected_positions()
        differing: set[str] = set()
        # Symbols with an unresolved order (``skip``) are left out: the journal's side is not known yet.
        for symbol, difference in self._differences(exchange, skip).items():
            held = exchange[symbol]
            pairs = [p for p, s in engine.pairs.items() if symbol in (s.symbol_a, s.symbol_b)]
            if self._adopt:
                self.external[symbol] = self.external.get(symbol, ZERO) + difference
                _save_external(self._external_path, self.external)
                report.external[symbol] = str(difference)
                logger.warning("reconciliation: {} {} on the exchange is not the bot's; adopted as external "
                               "(never traded by the bot)", symbol, difference)
                continue
            if self._vanished(symbol, held, expected[symbol], report):
                continue
            differing.add(symbol)
            reason = (f"exchange holds {held} {symbol} but the journal explains {expected[symbol]}; "
                      f"difference {difference}. Close it by hand or restart with --adopt")
            for pair_id in pairs:
                if engine.pair_state(pair_id) is PairState.HALTED:
                    continue  # sticky: its operator decides
                qa, qb = self.derived(pair_id)
                engine.lifecycle.apply(pair_id, PairEvent.BLOCK, PairState.BLOCKED, qty_a=qa, qty_b=qb, reason=reason)
                report.blocked[pair_id] = reason
            logger.error("reconciliation: {} -> pairs {} kept out of trading", reason, ", ".join(pairs))
        for pair_id, spec in engine.pairs.items():
            legs = {spec.symbol_a, spec.symbol_b}
            if engine.pair_state(pair_id) is PairState.BLOCKED and legs <= set(exchange) and not legs & (differing | skip):
                engine.lifecycle.apply(pair_id, PairEvent.UNBLOCK, PairState.RESOLVING,
                                       reason="the exchange matches the journal again")
                logger.warning("reconciliation: {}: the exchange matches the journal again; unblocked", pair_id)

    def _vanished(self, symbol: str, held: Decimal, explained: Decimal, report: ReconcileReport) -> bool:
        """Less of ``symbol`` on the exchange than the journal explains, on the same side or none:
        a leg left with no order of ours (liquidation, auto-deleveraging, a manual close).

        The missing quantity is taken off the pairs whose leg on the symbol points that way, as
        VANISHED journal rows (no order, no trade), so their derived legs equal the exchange; this
        same pass then closes each surviving leg as a naked leg (``on_leg_vanished: close``), or
        the pairs are HALTED with nothing sent (``alert``). A CRITICAL line says what vanished.
        """
        engine = self._engine
        if explained == 0 or (held != 0 and (held > 0) != (explained > 0)) or abs(held) >= abs(explained):
            return False
        missing = explained - held  # signed, the side that vanished
        alert = engine.on_leg_vanished == "alert"
        taken: list[str] = []
        rows: list[str] = []
        for pair_id, spec in engine.pairs.items():
            if missing == 0:
                break
            for leg, leg_symbol in (("a", spec.symbol_a), ("b", spec.symbol_b)):
                if leg_symbol != symbol or missing == 0:
                    continue
                qty = self.derived(pair_id)[0 if leg == "a" else 1]
                if qty == 0 or (qty > 0) != (missing > 0):
                    continue
                gone = min(abs(qty), abs(missing))
                rows.append(self._record_vanished(spec, leg, symbol, gone if qty > 0 else -gone))
                missing -= gone if missing > 0 else -gone
                taken.append(f"{pair_id} {leg} {gone if qty > 0 else -gone}")
                if alert and engine.pair_state(pair_id) is not PairState.HALTED:
                    qa, qb = self.derived(pair_id)
                    engine.lifecycle.apply(pair_id, PairEvent.HALT, PairState.HALTED, qty_a=qa, qty_b=qb,
                                           reason=f"{symbol} leg vanished from the exchange (on_leg_vanished: alert)")
        report.repaired[f"vanished {symbol}"] = ", ".join(taken)
        self._vanished_now.append(_Vanished(symbol, held, explained, tuple(taken), tuple(rows), alert))
        return True

    async def _explain_vanished(self, vanished: _Vanished) -> None:
        """Find the venue's order that closed a vanished leg, price the VANISHED row with its
        trades, and say it in one CRITICAL line.

        Binance's ``allOrders`` and ``userTrades`` list the venue's own orders too: a liquidation
        (clientOrderId ``autoclose-...``), an auto-deleveraging (``adl_autoclose``), a delisting
        settlement (``settlement_autoclose-...``). An order on the symbol newer than the bot's
        last fill of it, filled, and unknown to the journal is the cause. When one VANISHED row
        took the whole of it, that order's trades become the row's fills (its exchange order id
        is recorded), so the round trip's PnL counts the liquidation at its real price; else the
        row stays unpriced and the line says so.
        """
        engine = self._engine
        symbol = vanished.symbol
        since = max((f.ts_ms for pair_id in engine.pairs for f in engine.journal.fills_for_pair_since(pair_id, 0)
                     if f.symbol == symbol), default=None)
        cause, priced = "no order found on the exchange (cause unknown)", "unpriced"
        try:
            orders = await engine.adapter.fetch_recent_orders(symbol, since)
        except (RetryableError, PermanentError) as exc:
            orders = []
            cause = f"the exchange's order history is unavailable ({exc})"
        venue = [o for o in orders if o.filled > 0 and not o.client_order_id.startswith(CLIENT_ID_PREFIX)
                 and engine.journal.get_order(o.client_order_id) is None]
        if venue:
            closer = venue[-1]
            cause = f"{_vanish_cause(closer.client_order_id)} (order {closer.client_order_id}, " \
                    f"{closer.side} {closer.filled} at {closer.avg_price})"
            priced = await self._price_vanished(vanished, closer)
        logger.critical("reconciliation: {} VANISHED: the exchange holds {} but the journal explains {}, and no "
                        "order of ours did it | cause: {} | taken off: {} ({}) | {}", symbol, vanished.held,
                        vanished.explained, cause, ", ".join(vanished.taken), priced,
                        "the pairs are HALTED, nothing sent" if vanished.alert else "closing the surviving legs")

    async def _price_vanished(self, vanished: _Vanished, closer: Any) -> str:
        engine = self._engine
        row = engine.journal.get_order(vanished.rows[0]) if len(vanished.rows) == 1 else None
        if row is None or closer.exchange_order_id is None or closer.filled != row.filled_qty:
            return "unpriced: the venue's order does not match one VANISHED row"
        try:
            fills = await engine.adapter.fetch_order_fills(symbol=vanished.symbol,
                                                           exchange_order_id=closer.exchange_order_id)
            if sum((f.qty for f in fills), ZERO) != row.filled_qty:
                return "unpriced: the venue's trades are not all visible yet"
            for fill in fills:
                engine.journal.record_fill(row.client_order_id, trade_id=fill.trade_id, qty=fill.qty,
                                           price=fill.price, fee=fill.fee, ts_ms=fill.ts_ms)
            engine.journal.update_order(row.client_order_id, status=OrderStatus.FILLED,
                                        exchange_order_id=closer.exchange_order_id, avg_price=closer.avg_price,
                                        fee=sum((f.fee for f in fills), ZERO))
        except (RetryableError, PermanentError, FillConflictError, IllegalTransitionError) as exc:
            return f"unpriced: {exc}"
        return f"priced at {closer.avg_price} from the venue's trades"

    def _record_vanished(self, spec: Any, leg: str, symbol: str, signed_qty: Decimal) -> str:
        engine = self._engine
        signal_id = self._repair_signal_id(spec)
        attempt = sum(1 for o in engine.journal.orders_for_signal(signal_id)
                      if o.purpose is OrderPurpose.VANISHED and o.leg.value == leg)
        request = OrderRequest(signal_id, spec.pair_id, leg, OrderPurpose.VANISHED, attempt, symbol,
                               "sell" if signed_qty > 0 else "buy", abs(signed_qty),
                               round_trip_id=engine.positions[spec.pair_id].round_trip_id)
        with engine.journal.batch():
            engine.journal.record_order_intent(
                client_order_id=request.cid, signal_id=signal_id, pair_id=spec.pair_id, leg=leg,
                purpose=OrderPurpose.VANISHED, attempt=attempt, symbol=symbol, side=request.side,
                order_type="market", qty=request.qty, round_trip_id=request.round_trip_id)
            engine.journal.update_order(request.cid, status=OrderStatus.FILLED, filled_qty=request.qty,
                                        error="vanished from the exchange with no order of ours")
        return request.cid

    async def _restore_pairs(self, report: ReconcileReport, *, startup: bool,
                             skip: AbstractSet[str] = frozenset()) -> None:
        engine = self._engine
        for pair_id, spec in engine.pairs.items():
            position = engine.positions[pair_id]
            if position.state in (PairState.BLOCKED, PairState.HALTED) or pair_id in skip:
                continue  # sticky (an operator, or for BLOCKED a matching exchange, clears it)
            qa, qb = self.derived(pair_id)
            open_trip = self._open_trip(pair_id)
            if not startup and (qa, qb) == (position.qty_a, position.qty_b) \
                    and position.state in (PairState.FLAT, PairState.LONG_SPREAD, PairState.SHORT_SPREAD) \
                    and position.round_trip_id == open_trip:
                continue
            try:
                await self._restore_pair(spec, position, qa, qb, open_trip, report, startup=startup)
            except OutcomeUnresolved as unresolved:
                report.unresolved[pair_id] = str(unresolved)
                engine.mark_resolving(pair_id, f"repair order unresolved: {unresolved}")
            except IllegalPairTransition as exc:  # one pair's contradiction never stops the pass
                engine.journal.record_event("anomaly", pair_id, {"pair": pair_id, "error": str(exc)})
                report.anomalies[pair_id] = str(exc)
                logger.error("reconciliation: ANOMALY {}: {}; the pass goes on", pair_id, exc)

    async def _restore_pair(self, spec: Any, position: PairPosition, qa: Decimal, qb: Decimal,
                            open_trip: int | None, report: ReconcileReport, *, startup: bool) -> None:
        engine = self._engine
        pair_id = spec.pair_id
        verdict = classify(qa, qb)
        if verdict in (PairVerdict.LONG_SPREAD, PairVerdict.SHORT_SPREAD, PairVerdict.NAKED):
            # A crash can come between the fills and the saved position: take the entry and
            # its round trip from the journal, so the trim below knows the planned hedge
            # and the PnL of what is closed later lands in a round trip.
            entry = self._entry_of(pair_id, position)
            position = replace(position, round_trip_id=self._trip_for(spec, position, open_trip, entry))
            if entry is not None and position.entry_signal_id is None and verdict is not PairVerdict.NAKED:
                position = replace(position, entry_signal_id=entry.signal_id, entry_ts_ms=entry.ts_ms)
            if verdict is not PairVerdict.NAKED:
                qa, qb = await self._trim_imbalance(spec, position, qa, qb, entry, report)
                verdict = classify(qa, qb)
        event = _restore_event(position.state)
        if verdict is PairVerdict.FLAT:
            with engine.journal.batch():
                self._close_trip(open_trip)
                engine.lifecycle.apply(pair_id, event, PairState.FLAT)
        elif verdict in (PairVerdict.LONG_SPREAD, PairVerdict.SHORT_SPREAD):
            engine.lifecycle.apply(pair_id, event, PairState(verdict.value), qty_a=qa, qty_b=qb,
                                   entry_signal_id=position.entry_signal_id, entry_ts_ms=position.entry_ts_ms,
                                   round_trip_id=position.round_trip_id)
        elif verdict is PairVerdict.NAKED:
            await self._close_naked(spec, position, qa, qb, report)
        else:
            reason = f"legs {spec.symbol_a} {qa} / {spec.symbol_b} {qb} are no spread position"
            engine.lifecycle.apply(pair_id, PairEvent.BLOCK, PairState.BLOCKED, qty_a=qa, qty_b=qb, reason=reason)
            report.blocked[pair_id] = reason
            logger.error("reconciliation: {}: {}; kept out of trading", pair_id, reason)
            return
        report.restored[pair_id] = engine.positions[pair_id].state.value

    async def _trim_imbalance(self, spec: Any, position: PairPosition, qa: Decimal, qb: Decimal,
                              entry: _Entry | None, report: ReconcileReport) -> tuple[Decimal, Decimal]:
        """A crash during P2 can leave more than one lot step of imbalance: trim it now.

        The hedge is the entry's planned ``want_a : want_b``. A pair is left alone when either
        leg is within one lot step of the exact hedge of the other (what P2 guarantees); else the
        leg that overshoots is trimmed to the hedge of the other, floored to its step. Hedges
        are computed by exact cross-multiplication: through a rounded ratio
        (``qa / (want_a / want_b)``) a correctly hedged leg came out a hair short of its hedge,
        floored a whole step low and was trimmed, and the other leg after it, at every restart.
        """
        if entry is None:
            return qa, qb
        engine = self._engine
        step_a = engine.adapter.rules(spec.symbol_a).step_size
        step_b = engine.adapter.rules(spec.symbol_b).step_size
        off = abs(abs(qb) * entry.want_a - abs(qa) * entry.want_b)  # |qb - exact hedge of qa| * want_a
        if off <= step_b * entry.want_a or off <= step_a * entry.want_b:
            return qa, qb
        if abs(qb) * entry.want_a > abs(qa) * entry.want_b:
            excess = abs(qb) - _hedge_qty(abs(qa), entry.want_b, entry.want_a, step_b)
            removed = await self._repair_order(spec, position, "b", spec.symbol_b, qb, excess)
            qb = qb - removed if qb > 0 else qb + removed
            report.repaired[spec.pair_id] = f"trimmed {spec.symbol_b} by {removed} of {excess}"
        else:
            excess = abs(qa) - _hedge_qty(abs(qb), entry.want_a, entry.want_b, step_a)
            removed = await self._repair_order(spec, position, "a", spec.symbol_a, qa, excess)
            qa = qa - removed if qa > 0 else qa + removed
            report.repaired[spec.pair_id] = f"trimmed {spec.symbol_a} by {removed} of {excess}"
        return qa, qb

    async def _close_naked(self, spec: Any, position: PairPosition, qa: Decimal, qb: Decimal,
                           report: ReconcileReport) -> None:
        engine = self._engine
        leg, symbol, held = ("a", spec.symbol_a, qa) if qa != 0 else ("b", spec.symbol_b, qb)
        removed = await self._repair_order(spec, position, leg, symbol, held, abs(held))
        left = abs(held) - removed
        if left == 0:
            engine.counters.rollbacks += 1
            report.repaired[spec.pair_id] = f"closed naked {symbol} {held}"
            with engine.journal.batch():
                self._close_trip(position.round_trip_id, exit_reason="reconcile_rollback")
                engine.lifecycle.apply(spec.pair_id, _restore_event(engine.pair_state(spec.pair_id)), PairState.FLAT)
            return
        engine.counters.rollbacks_failed += 1
        signed = left if held > 0 else -left
        reason = f"naked {symbol} {signed} could not be closed at reconciliation"
        engine.counters.halts += 1
        logger.critical("{} HALTED | {} | no new entries on this pair", spec.pair_id, reason)
        engine.lifecycle.apply(spec.pair_id, PairEvent.HALT, PairState.HALTED,
                               qty_a=signed if leg == "a" else ZERO, qty_b=signed if leg == "b" else ZERO,
                               reason=reason, round_trip_id=position.round_trip_id)
        report.repaired[spec.pair_id] = reason

    async def _repair_order(self, spec: Any, position: PairPosition, leg: str, symbol: str, held: Decimal,
                            qty: Decimal) -> Decimal:
        """Reduce ``held`` by ``qty`` with REPAIR orders under this pass's repair signal id, through
        the engine's one close routine (``ExecutionEngine.close_quantity``); returns how much
        was taken off."""
        engine = self._engine
        left = await engine.close_quantity(signal_id=self._repair_signal_id(spec), pair_id=spec.pair_id, leg=leg,
                                           symbol=symbol, side="sell" if held > 0 else "buy", qty=qty,
                                           purpose=OrderPurpose.REPAIR, round_trip_id=position.round_trip_id)
        return qty - left

    def _repair_signal_id(self, spec: Any) -> str:
        """Repairs need a recorded signal for the journal's foreign keys; one per pass and pair."""
        cached = self._pass_signals.get(spec.pair_id)
        if cached is not None:
            return cached
        engine = self._engine
        ts = engine.journal_now_ms()
        signal_id = f"R{spec.pair_id[:8]}-{ts:x}"[:26]
        if engine.journal.get_signal(signal_id) is None:
            engine.journal.record_signal(TradingSignal(signal_id, spec.pair_id, SignalType.EXIT, 0.0, 0.0, 0.0, 0.0,
                                                       0.0, 0.0, float(spec.hedge_ratio), ts))
        self._pass_signals[spec.pair_id] = signal_id
        return signal_id

    def _entry_of(self, pair_id: str, position: PairPosition) -> _Entry | None:
        """The entry behind the pair's legs: the position's own, or else (the crash came before
        the position was saved) the latest entry signal that planned both legs."""
        planned: dict[str, dict[str, OrderRecord]] = {}
        for order in self._engine.journal.orders_for_pair(pair_id):
            if order.purpose is OrderPurpose.ENTRY:
                planned.setdefault(order.signal_id, {})[order.leg.value] = order
        wanted = position.entry_signal_id
        for signal_id in ([wanted] if wanted in planned else list(reversed(planned))):
            legs = planned[signal_id]
            if "a" in legs and "b" in legs:
                record = self._engine.journal.get_signal(signal_id)
                return _Entry(signal_id, record.signal.ts_ms if record else None, legs["a"].qty, legs["b"].qty,
                              linked=legs["a"].round_trip_id is not None)
        return None

    def _open_trip(self, pair_id: str) -> int | None:
        """The pair's open round trip in the journal (at most one), if any."""
        trips = [t for t in self._engine.journal.round_trips(pair_id) if t.is_open]
        return trips[-1].id if trips else None

    def _trip_for(self, spec: Any, position: PairPosition, open_trip: int | None, entry: _Entry | None) -> int:
        """The round trip a held (or naked) pair belongs to.

        The position's own if it is open; else an open one nobody points at (a crash between
        opening it and saving the position: a new one could not be opened, the journal allows
        one open trip per pair); else a new one from the entry behind the legs.
        """
        if open_trip is not None:
            return open_trip
        engine = self._engine
        now = engine.journal_now_ms()
        if entry is not None and not entry.linked:
            return engine.journal.open_round_trip(spec.pair_id, entry_signal_id=entry.signal_id,
                                                  opened_ts_ms=entry.ts_ms if entry.ts_ms is not None else now)
        return engine.journal.open_round_trip(spec.pair_id, entry_signal_id=self._repair_signal_id(spec),
                                              opened_ts_ms=now)

    def _close_trip(self, round_trip_id: int | None, *, exit_reason: str = "reconciled") -> None:
        """Close a round trip if it is still open (a crash can come between closing it and saving
        the flat position; closing it twice raised and stopped the whole reconciliation)."""
        engine = self._engine
        trip = None if round_trip_id is None else engine.journal.get_round_trip(round_trip_id)
        if trip is None or not trip.is_open:
            return
        exit_id = self._pass_signals.get(trip.pair_id)
        for record in reversed(engine.journal.signals_for_pair_since(trip.pair_id, trip.opened_ts_ms)):
            orders = engine.journal.orders_for_signal(record.signal.signal_id)
            if not record.signal.signal_type.is_entry and any(o.purpose is not OrderPurpose.REPAIR for o in orders):
                exit_id = record.signal.signal_id  # the exit that did not finish; repairs are linked by id
                break
        engine.journal.close_round_trip(trip.id, exit_signal_id=exit_id, closed_ts_ms=engine.journal_now_ms(),
                                        exit_reason=exit_reason)


@dataclass(frozen=True, slots=True)
class _Vanished:
    """A leg found vanished in this pass: what the exchange held, what the journal explained,
    the VANISHED rows recorded for it (client order ids) and the policy."""

    symbol: str
    held: Decimal
    explained: Decimal
    taken: tuple[str, ...]
    rows: tuple[str, ...]
    alert: bool


def _vanish_cause(client_order_id: str) -> str:
    """Pure: what the venue's clientOrderId says closed a position (Binance's special ids).

    >>> _vanish_cause("autoclose-1688744100053")
    'liquidation'
    """
    if client_order_id.startswith("autoclose-"):
        return "liquidation"
    if client_order_id.startswith("adl_autoclose"):
        return "auto-deleveraging"
    if client_order_id.startswith("settlement_autoclose-"):
        return "settlement (delisting or delivery)"
    return "an order not placed by the bot (a manual close?)"


def _restore_event(state: PairState) -> PairEvent:
    """The lifecycle event of a pair restored from its derived legs."""
    return PairEvent.RESOLVED if state is PairState.RESOLVING else PairEvent.RESTORED


@dataclass(frozen=True, slots=True)
class _Entry:
    """An entry signal as reconciliation needs it: its time and the leg quantities it planned."""

    signal_id: str
    ts_ms: int | None
    want_a: Decimal
    want_b: Decimal
    linked: bool  # its orders already belong to a round trip


def _hedge_qty(other: Decimal, want_this: Decimal, want_other: Decimal, step: Decimal) -> Decimal:
    """This leg's quantity hedging ``other`` at the planned ``want_this : want_other``, floored to
    ``step``, exactly.

    >>> _hedge_qty(Decimal(77), Decimal(737), Decimal(77), Decimal("0.1"))
    Decimal('737.0')
    """
    return ((other * want_this) // (want_other * step)) * step


def _fill_qty_by_order(journal: Any, pair_id: str) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for fill in journal.fills_for_pair_since(pair_id, 0):
        totals[fill.client_order_id] = totals.get(fill.client_order_id, ZERO) + fill.qty
    return totals


def _load_external(path: Path) -> dict[str, Decimal]:
    if not path.is_file():
        return {}
    return {k: Decimal(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def _save_external(path: Path, external: dict[str, Decimal]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: str(v) for k, v in external.items()}, indent=2), encoding="utf-8")
    tmp.replace(path)
