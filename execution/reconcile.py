"""Reconciliation: make the journal and the exchange agree, at start and periodically.

What the bot holds on a pair is *derived*, not trusted: it is the sum of the journal's recorded
fills of that pair's orders, per leg. So a crash at any point (between two legs, during a
rollback, after a fill whose response was lost) is repaired the same way:

1. every unresolved order in the journal is looked up by clientOrderId and brought up to date
   (a working order left by a crash is cancelled), and missing fills are fetched;
2. orders on the exchange that carry our prefix but that the journal does not know, or knows
   as finished, are cancelled;
3. each pair's legs are derived from fills and compared with the exchange's net positions;
   a difference the journal cannot explain blocks the pairs on that symbol (``--adopt`` records
   it as a position the bot did not open, which it then never touches);
4. each pair is restored: flat, in position (LONG/SHORT from the legs' signs), or repaired:
   a naked leg is closed (P5), an imbalance beyond one lot step is trimmed (P2).

The pure part (``classify``) decides; the async part acts. Reconciliation runs under the
engine's lock, so it never races an execution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from loguru import logger

from core.errors import OrderNotFoundError, PermanentError, RetryableError
from core.types import PairState, SignalType, TradingSignal
from execution.journal_models import OrderPurpose, OrderRecord, OrderStatus, PairPosition, Side
from execution.orders import CLIENT_ID_PREFIX, OrderRequest

ZERO = Decimal(0)


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

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Reconciler:
    """Acts on the engine's parts; created by the engine, run under its lock."""

    def __init__(self, engine: Any, *, adopt: bool, external_path: Path) -> None:
        self._engine = engine
        self._adopt = adopt
        self._external_path = external_path
        self.external: dict[str, Decimal] = _load_external(external_path)

    async def run(self, *, startup: bool) -> ReconcileReport:
        report = ReconcileReport()
        engine = self._engine
        engine.counters.reconciliations += 1
        await self._resolve_open_orders(report)
        await self._cancel_orphans(report)
        await self._fill_gaps(report)
        exchange_positions = await self._exchange_positions()
        if exchange_positions is not None:
            self._compare_positions(exchange_positions, report)
        await self._restore_pairs(report, startup=startup)
        if startup or report.repaired or report.blocked or report.orphans_cancelled:
            logger.info("reconciliation ({}): {}", "startup" if startup else "periodic",
                        {k: v for k, v in report.as_dict().items() if v})
        return report

    # -- orders ---------------------------------------------------------------------------------
    async def _resolve_open_orders(self, report: ReconcileReport) -> None:
        engine = self._engine
        for order in engine.journal.open_orders():
            report.orders_checked += 1
            try:
                state = await engine.adapter.fetch_order(symbol=order.symbol, client_order_id=order.client_order_id)
            except OrderNotFoundError:
                report.orders_not_found += 1
                if order.status in (OrderStatus.INTENT, OrderStatus.SENT, OrderStatus.UNKNOWN):
                    engine.journal.update_order(order.client_order_id, status=OrderStatus.NOT_FOUND)
                else:  # ACKED/PARTIAL once, now purged by the exchange: it is no longer working
                    engine.journal.update_order(order.client_order_id, status=OrderStatus.CANCELED,
                                                error="not found at reconciliation")
                continue
            except (RetryableError, PermanentError) as exc:
                logger.warning("reconciliation: lookup of {} failed: {}", order.client_order_id, exc)
                continue
            if not state.status.is_final:
                state = await engine.placer.cancel_remainder(order.symbol, order.client_order_id, state)
                report.working_cancelled += 1
            record = engine.placer.apply_state(order.client_order_id, state)
            report.orders_updated += 1
            if record.filled_qty > 0:
                await engine.placer.record_fills(record)
                engine.counters.fills_adopted += 1

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
                    record = engine.placer.apply_state(order.client_order_id, state)
                    await engine.placer.record_fills(record)

    async def _fill_gaps(self, report: ReconcileReport) -> None:
        engine = self._engine
        for pair_id in engine.pairs:
            orders = engine.journal.orders_for_pair(pair_id)
            recorded = _fill_qty_by_order(engine.journal, pair_id)
            for order in orders:
                if order.filled_qty > recorded.get(order.client_order_id, ZERO):
                    await engine.placer.record_fills(order)
                    report.fills_fetched += 1

    # -- positions ------------------------------------------------------------------------------
    def derived(self, pair_id: str) -> tuple[Decimal, Decimal]:
        engine = self._engine
        orders = engine.journal.orders_for_pair(pair_id)
        return derived_legs(orders, "a"), derived_legs(orders, "b")

    async def _exchange_positions(self) -> dict[str, Decimal] | None:
        engine = self._engine
        symbols = sorted({s for p in engine.pairs.values() for s in (p.symbol_a, p.symbol_b)})
        try:
            positions = await engine.adapter.fetch_positions(symbols)
        except (RetryableError, PermanentError) as exc:
            logger.warning("reconciliation: positions unavailable: {}", exc)
            return None
        return {s: (positions[s].qty if s in positions else ZERO) for s in symbols}

    def _compare_positions(self, exchange: dict[str, Decimal], report: ReconcileReport) -> None:
        engine = self._engine
        expected: dict[str, Decimal] = {s: ZERO for s in exchange}
        for pair_id, spec in engine.pairs.items():
            qa, qb = self.derived(pair_id)
            expected[spec.symbol_a] += qa
            expected[spec.symbol_b] += qb
        for symbol, held in exchange.items():
            difference = held - expected[symbol] - self.external.get(symbol, ZERO)
            if difference == 0:
                continue
            pairs = [p for p, s in engine.pairs.items() if symbol in (s.symbol_a, s.symbol_b)]
            if self._adopt:
                self.external[symbol] = self.external.get(symbol, ZERO) + difference
                _save_external(self._external_path, self.external)
                report.external[symbol] = str(difference)
                logger.warning("reconciliation: {} {} on the exchange is not the bot's; adopted as external "
                               "(never traded by the bot)", symbol, difference)
                continue
            reason = (f"exchange holds {held} {symbol} but the journal explains {expected[symbol]}; "
                      f"difference {difference}. Close it by hand or restart with --adopt")
            for pair_id in pairs:
                report.blocked[pair_id] = reason
                engine.blocked[pair_id] = reason
            logger.error("reconciliation: {} -> pairs {} kept out of trading", reason, ", ".join(pairs))

    async def _restore_pairs(self, report: ReconcileReport, *, startup: bool) -> None:
        engine = self._engine
        for pair_id, spec in engine.pairs.items():
            if pair_id in engine.blocked:
                continue
            qa, qb = self.derived(pair_id)
            position = engine.positions[pair_id]
            verdict = classify(qa, qb)
            if not startup and (qa, qb) == (position.qty_a, position.qty_b) and position.state is not PairState.HALTED:
                continue
            if verdict is PairVerdict.FLAT:
                if position.round_trip_id is not None:
                    self._close_trip(position)
                engine._save_position(replace(position, state=PairState.FLAT, qty_a=ZERO, qty_b=ZERO,
                                              entry_signal_id=None, entry_ts_ms=None, round_trip_id=None,
                                              halted_reason=None))
            elif verdict in (PairVerdict.LONG_SPREAD, PairVerdict.SHORT_SPREAD):
                state = PairState(verdict.value)
                qa, qb = await self._trim_imbalance(spec, position, qa, qb, report)
                engine._save_position(replace(position, state=state, qty_a=qa, qty_b=qb, halted_reason=None))
            elif verdict is PairVerdict.NAKED:
                await self._close_naked(spec, position, qa, qb, report)
            else:
                reason = f"legs {spec.symbol_a} {qa} / {spec.symbol_b} {qb} are no spread position"
                engine.blocked[pair_id] = reason
                report.blocked[pair_id] = reason
                logger.error("reconciliation: {}: {}; kept out of trading", pair_id, reason)
                continue
            report.restored[pair_id] = engine.positions[pair_id].state.value

    async def _trim_imbalance(self, spec: Any, position: PairPosition, qa: Decimal, qb: Decimal,
                              report: ReconcileReport) -> tuple[Decimal, Decimal]:
        """A crash during P2 can leave more than one lot step of imbalance: trim it now."""
        engine = self._engine
        ratio = self._entry_ratio(position)
        if ratio is None:
            return qa, qb
        step_a = engine.adapter.rules(spec.symbol_a).step_size
        step_b = engine.adapter.rules(spec.symbol_b).step_size
        hedge_b = (abs(qa) / ratio // step_b) * step_b
        if abs(qb) - hedge_b >= step_b:
            removed = await self._repair_order(spec, position, "b", spec.symbol_b, qb, abs(qb) - hedge_b)
            qb = qb - removed if qb > 0 else qb + removed
            report.repaired[spec.pair_id] = f"trimmed {spec.symbol_b} by {removed}"
        hedge_a = (abs(qb) * ratio // step_a) * step_a
        if abs(qa) - hedge_a >= step_a:
            removed = await self._repair_order(spec, position, "a", spec.symbol_a, qa, abs(qa) - hedge_a)
            qa = qa - removed if qa > 0 else qa + removed
            report.repaired[spec.pair_id] = f"trimmed {spec.symbol_a} by {removed}"
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
            if position.round_trip_id is not None:
                self._close_trip(position)
            else:
                trip = engine.journal.open_round_trip(spec.pair_id, entry_signal_id=self._repair_signal_id(spec),
                                                      opened_ts_ms=engine.journal_now_ms())
                engine.journal.close_round_trip(trip, exit_signal_id=None, closed_ts_ms=engine.journal_now_ms(),
                                                exit_reason="reconcile_rollback")
            engine._save_position(replace(position, state=PairState.FLAT, qty_a=ZERO, qty_b=ZERO,
                                          entry_signal_id=None, entry_ts_ms=None, round_trip_id=None,
                                          halted_reason=None))
            return
        engine.counters.rollbacks_failed += 1
        signed = left if held > 0 else -left
        reason = f"naked {symbol} {signed} could not be closed at reconciliation"
        engine.counters.halts += 1
        logger.critical("{} HALTED | {} | no new entries on this pair", spec.pair_id, reason)
        engine._save_position(replace(position, state=PairState.HALTED,
                                      qty_a=signed if leg == "a" else ZERO, qty_b=signed if leg == "b" else ZERO,
                                      halted_reason=reason))
        report.repaired[spec.pair_id] = reason

    async def _repair_order(self, spec: Any, position: PairPosition, leg: str, symbol: str, held: Decimal,
                            qty: Decimal) -> Decimal:
        """Reduce ``held`` by ``qty`` with REPAIR orders under a reconciliation signal id."""
        engine = self._engine
        signal_id = self._repair_signal_id(spec)
        side = "sell" if held > 0 else "buy"
        removed = ZERO
        existing = {o.client_order_id for o in engine.journal.orders_for_signal(signal_id)}
        attempt = 0
        while removed < qty and attempt < engine._exec.max_order_retries + 5:
            request = OrderRequest(signal_id, spec.pair_id, leg, OrderPurpose.REPAIR, attempt, symbol, side,
                                   qty - removed, reduce_only=engine._reduce_only_ok(symbol, side, qty - removed),
                                   round_trip_id=position.round_trip_id)
            attempt += 1
            if request.cid in existing:
                continue
            placed = await engine.placer.place(request)
            removed += placed.filled
        return removed

    def _repair_signal_id(self, spec: Any) -> str:
        """Repairs need a recorded signal for the journal's foreign keys; one per pass and pair."""
        engine = self._engine
        ts = engine.journal_now_ms()
        signal_id = f"R{spec.pair_id[:8]}-{ts:x}"[:26]
        if engine.journal.get_signal(signal_id) is None:
            engine.journal.record_signal(TradingSignal(signal_id, spec.pair_id, SignalType.EXIT, 0.0, 0.0, 0.0, 0.0,
                                                       0.0, 0.0, float(spec.hedge_ratio), ts))
        return signal_id

    def _entry_ratio(self, position: PairPosition) -> Decimal | None:
        """Units of A per unit of B that the entry asked for."""
        if position.entry_signal_id is None:
            return None
        entries = [o for o in self._engine.journal.orders_for_signal(position.entry_signal_id)
                   if o.purpose is OrderPurpose.ENTRY]
        qty = {o.leg.value: o.qty for o in entries}
        if qty.get("a") and qty.get("b"):
            return qty["a"] / qty["b"]
        return None

    def _close_trip(self, position: PairPosition) -> None:
        engine = self._engine
        exit_id = None
        if position.entry_ts_ms is not None:
            for record in reversed(engine.journal.signals_for_pair_since(position.pair_id, position.entry_ts_ms)):
                if not record.signal.signal_type.is_entry and engine.journal.orders_for_signal(record.signal.signal_id):
                    exit_id = record.signal.signal_id
                    break
        engine.journal.close_round_trip(position.round_trip_id, exit_signal_id=exit_id,
                                        closed_ts_ms=engine.journal_now_ms(), exit_reason="reconciled")


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
