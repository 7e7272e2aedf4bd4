"""Placing one order safely: journal first, ghost lookup before any retry, fills recorded.

This is protocol P3 in one routine, shared by every purpose (entry, exit, top-up, trim,
rollback, repair), so no protocol can forget it:

1. the intent (deterministic clientOrderId) is committed to the journal before the request;
2. a timeout or a lost response never means "not placed": the order is looked up by its
   clientOrderId, adopted if found, and only resent (with the same id) if the exchange says it
   does not know it;
3. a working order is followed to a final state within a deadline, and its remainder cancelled;
4. its fills are fetched and recorded, deduplicated by trade id.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from loguru import logger

from core.errors import OrderNotFoundError, PermanentError, RetryableError
from core.log_setup import log_trade_event
from execution.exchange import ExchangeAdapter, ExchangeOrderStatus, OrderState
from execution.journal import Journal
from execution.journal_models import TRANSITIONS, OrderPurpose, OrderRecord, OrderStatus

_PURPOSE_CODE = {OrderPurpose.ENTRY: "E", OrderPurpose.EXIT: "X", OrderPurpose.TOP_UP: "U",
                 OrderPurpose.TRIM: "T", OrderPurpose.ROLLBACK: "R", OrderPurpose.REPAIR: "P",
                 OrderPurpose.LIMIT_CHASE: "L"}
CLIENT_ID_PREFIX = "pb-"
_ABSENT = object()  # a lookup's answer "the exchange does not have this order"


def client_order_id(signal_id: str, leg: str, purpose: OrderPurpose, attempt: int) -> str:
    """Deterministic id: the same signal, leg, purpose and attempt always give the same id.

    ``pb-`` marks the bot's orders, so reconciliation can tell them from the user's.

    >>> client_order_id("EOSAXS-1a2b3c4d5e-EL", "a", OrderPurpose.ENTRY, 0)
    'pb-EOSAXS-1a2b3c4d5e-EL-aE0'
    """
    cid = f"{CLIENT_ID_PREFIX}{signal_id}-{leg}{_PURPOSE_CODE[purpose]}{attempt}"
    if len(cid) > 36:
        raise ValueError(f"clientOrderId {cid!r} is longer than Binance's 36 characters")
    return cid


class LookupInconclusive(RetryableError):
    """A lookup by clientOrderId could not tell whether the order exists. Action: do not resend;
    leave the order unresolved for reconciliation."""


@dataclass(slots=True)
class ProtocolCounters:
    """How often each safety protocol acted, for the final statistics."""

    orders_sent: int = 0
    orders_rejected: int = 0
    ghost_lookups: int = 0  # P3: a lost response looked up by clientOrderId
    ghosts_adopted: int = 0  # ... and found on the exchange
    ghost_resends: int = 0  # ... not found, resent with the same id
    orphans_cancelled: int = 0  # reconciliation cancelled an unknown order of ours
    partial_fills_repaired: int = 0  # P2
    top_ups: int = 0
    trims: int = 0
    remainders_cancelled: int = 0
    precision_refusals: int = 0  # P4
    rollbacks: int = 0  # P5 succeeded
    rollbacks_failed: int = 0
    halts: int = 0
    exit_retries: int = 0
    fills_recorded: int = 0
    fill_fetch_failures: int = 0
    reconciliations: int = 0
    fills_adopted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class OrderRequest:
    signal_id: str
    pair_id: str
    leg: str  # "a" / "b"
    purpose: OrderPurpose
    attempt: int
    symbol: str
    side: str
    qty: Decimal
    order_type: str = "market"
    price: Decimal | None = None
    reduce_only: bool = False
    round_trip_id: int | None = None
    cid: str = field(init=False)

    def __post_init__(self) -> None:
        self.cid = client_order_id(self.signal_id, self.leg, self.purpose, self.attempt)


@dataclass(slots=True)
class PlacedOrder:
    """Where an order ended: its journal record, and when it was acknowledged (monotonic s)."""

    record: OrderRecord
    acked_at: float | None

    @property
    def filled(self) -> Decimal:
        return self.record.filled_qty


@dataclass(slots=True)
class SentOrder:
    """An order between its ack and its final state: ``state`` None when it was not placed."""

    request: OrderRequest
    record: OrderRecord
    state: OrderState | None
    acked_at: float | None


class OrderPlacer:
    """Runs the P3 routine for one order at a time (callers may run several concurrently)."""

    def __init__(self, adapter: ExchangeAdapter, journal: Journal, counters: ProtocolCounters, *,
                 max_retries: int, backoff_ms: int, final_wait_seconds: float, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._adapter = adapter
        self._journal = journal
        self._counters = counters
        self._max_retries = max_retries
        self._backoff_ms = backoff_ms
        self._final_wait = final_wait_seconds
        self._rng = random.Random(seed)
        self._clock = clock

    async def place(self, req: OrderRequest, *, working_seconds: float | None = None) -> PlacedOrder:
        """Send ``req`` and follow it to a final state; never raises for exchange trouble.

        ``working_seconds`` is how long a limit order may rest before its remainder is cancelled.
        """
        return await self.finish(await self.send(req), working_seconds=working_seconds)

    async def send(self, req: OrderRequest) -> SentOrder:
        """Steps 1-2 only: commit the intent, send with the ghost protocol, return at the ack."""
        return (await self.send_together([req]))[0]

    async def send_together(self, requests: list[OrderRequest]) -> list[SentOrder]:
        """Commit every intent first, then send all requests at once and return at their acks.

        The legs of a pair leave back to back: no journal commit (an fsync) sits between them,
        and one leg's writes and trade fetch after its ack (``finish``) never delay the other
        leg's ack.
        """
        records = self._journal.record_order_intents([dict(
            client_order_id=req.cid, signal_id=req.signal_id, pair_id=req.pair_id, leg=req.leg,
            purpose=req.purpose, attempt=req.attempt, symbol=req.symbol, side=req.side,
            order_type=req.order_type, qty=req.qty, price=req.price, reduce_only=req.reduce_only,
            round_trip_id=req.round_trip_id) for req in requests])
        return list(await asyncio.gather(*(self._send_one(req, record) for req, record in zip(requests, records))))

    async def _send_one(self, req: OrderRequest, record: OrderRecord) -> SentOrder:
        state = await self._send_with_ghost_protocol(req)
        return SentOrder(req, record, state, self._clock() if state is not None else None)

    async def finish(self, sent: SentOrder, *, working_seconds: float | None = None) -> PlacedOrder:
        """Steps 3-4: follow a sent order to a final state, record its state and its fills."""
        req = sent.request
        if sent.state is None:
            return PlacedOrder(self._journal.get_order(req.cid) or sent.record, None)
        state = await self._await_final(req, sent.state, working_seconds)
        record = self._apply_state(req.cid, state)
        await self.record_fills(record)
        log_trade_event("order_final", pair_id=req.pair_id, cid=req.cid, purpose=req.purpose.value,
                        symbol=req.symbol, side=req.side, qty=str(req.qty), filled=str(record.filled_qty),
                        avg_price=str(record.avg_price), status=record.status.value)
        return PlacedOrder(self._journal.get_order(req.cid) or record, sent.acked_at)

    async def _send_with_ghost_protocol(self, req: OrderRequest) -> OrderState | None:
        for attempt in range(self._max_retries + 1):
            try:
                self._counters.orders_sent += 1
                return await self._adapter.create_order(
                    symbol=req.symbol, side=req.side, qty=req.qty, order_type=req.order_type,
                    client_order_id=req.cid, price=req.price, reduce_only=req.reduce_only)
            except RetryableError as exc:
                logger.warning("{} {}: create_order outcome unknown ({}); looking it up by clientOrderId",
                               req.pair_id, req.cid, exc)
                self._safe_update(req.cid, OrderStatus.UNKNOWN, error=str(exc)[:300])
                outcome = await self._resolve_by_lookup(req)
                if outcome is not _ABSENT:
                    return outcome
            except PermanentError as exc:
                if attempt > 0:  # a resend may be refused as a duplicate id: the first one landed
                    outcome = await self._resolve_by_lookup(req)
                    if outcome is not _ABSENT:
                        return outcome
                self._counters.orders_rejected += 1
                logger.warning("{} {}: order rejected: {}", req.pair_id, req.cid, exc)
                self._safe_update(req.cid, OrderStatus.REJECTED, error=str(exc)[:300])
                return None
            if attempt < self._max_retries:
                self._counters.ghost_resends += 1
                await asyncio.sleep(self.backoff(attempt))
        logger.error("{} {}: gave up after {} attempts; reconciliation will resolve it",
                     req.pair_id, req.cid, self._max_retries + 1)
        return None

    async def _lookup(self, req: OrderRequest) -> OrderState | None:
        """P3: is the order on the exchange after all? Returns it, or None when the exchange says
        it does not know it.

        Raises ``LookupInconclusive`` when the lookup cannot tell (it kept failing, or was
        refused). Then nothing may be resent: a clientOrderId is unique only among *open*
        orders, so a resend of an order that did land and has filled would be accepted again
        and double the position.
        """
        self._counters.ghost_lookups += 1
        for attempt in range(self._max_retries + 1):
            try:
                state = await self._adapter.fetch_order(symbol=req.symbol, client_order_id=req.cid)
            except OrderNotFoundError:
                self._safe_update(req.cid, OrderStatus.NOT_FOUND)
                logger.info("{} {}: not on the exchange; will resend with the same id", req.pair_id, req.cid)
                return None
            except RetryableError as exc:
                if attempt == self._max_retries:
                    raise LookupInconclusive(f"{attempt + 1} lookups failed, the last with {exc}") from exc
                await asyncio.sleep(self.backoff(attempt))
                continue
            except PermanentError as exc:
                raise LookupInconclusive(f"lookup refused: {exc}") from exc
            self._counters.ghosts_adopted += 1
            logger.warning("{} {}: ghost order found and adopted (status {}, filled {})",
                           req.pair_id, req.cid, state.status.value, state.filled)
            return state
        raise LookupInconclusive("no lookup attempted")  # unreachable: max_retries >= 0

    async def _resolve_by_lookup(self, req: OrderRequest) -> Any:
        """The order if the exchange has it; ``None`` if nobody can tell (give up, no resend:
        reconciliation resolves it); ``_ABSENT`` if the exchange says it never got it."""
        try:
            found = await self._lookup(req)
        except LookupInconclusive as why:
            logger.error("{} {}: cannot tell whether the order was placed ({}); not resending, "
                         "reconciliation will resolve it", req.pair_id, req.cid, why)
            return None
        return _ABSENT if found is None else found

    async def _await_final(self, req: OrderRequest, state: OrderState, working_seconds: float | None) -> OrderState:
        """Poll a working order until final; cancel what is left at the deadline."""
        if state.status.is_final:
            return state
        deadline = self._clock() + (working_seconds if working_seconds is not None else self._final_wait)
        poll = 0.02
        while self._clock() < deadline:
            await asyncio.sleep(poll)
            poll = min(poll * 2, 0.5)
            try:
                state = await self._adapter.fetch_order(symbol=req.symbol, client_order_id=req.cid)
            except (RetryableError, OrderNotFoundError):
                continue
            if state.status.is_final:
                return state
        return await self.cancel_remainder(req.symbol, req.cid, state)

    async def cancel_remainder(self, symbol: str, cid: str, state: OrderState) -> OrderState:
        """Cancel an open order; whatever happens, return its latest known state."""
        for attempt in range(self._max_retries + 1):
            try:
                state = await self._adapter.cancel_order(symbol=symbol, client_order_id=cid)
                self._counters.remainders_cancelled += 1
                return state
            except OrderNotFoundError:  # it finished meanwhile: read its final state
                try:
                    return await self._adapter.fetch_order(symbol=symbol, client_order_id=cid)
                except (RetryableError, OrderNotFoundError):
                    await asyncio.sleep(self.backoff(attempt))
            except RetryableError:
                await asyncio.sleep(self.backoff(attempt))
            except PermanentError as exc:
                logger.error("cancel of {} refused: {}", cid, exc)
                break
        return state

    def _apply_state(self, cid: str, state: OrderState) -> OrderRecord:
        status = journal_status(state)
        return self._journal.update_order(cid, status=status, exchange_order_id=state.exchange_order_id,
                                          filled_qty=state.filled if status is not OrderStatus.ACKED else None,
                                          avg_price=state.avg_price)

    def apply_state(self, cid: str, state: OrderState) -> OrderRecord:
        """Record an exchange view of an order (used by reconciliation)."""
        return self._apply_state(cid, state)

    async def record_fills(self, record: OrderRecord) -> None:
        """Fetch and record the order's trades; a failure is counted and left to reconciliation."""
        if record.filled_qty <= 0 or record.exchange_order_id is None:
            return
        for attempt in range(self._max_retries + 1):
            try:
                fills = await self._adapter.fetch_order_fills(symbol=record.symbol,
                                                              exchange_order_id=record.exchange_order_id)
            except RetryableError:
                await asyncio.sleep(self.backoff(attempt))
                continue
            except PermanentError as exc:
                logger.error("{}: fills of {} cannot be read: {}", record.pair_id, record.client_order_id, exc)
                break
            for fill in fills:
                if self._journal.record_fill(record.client_order_id, trade_id=fill.trade_id, qty=fill.qty,
                                             price=fill.price, fee=fill.fee, ts_ms=fill.ts_ms):
                    self._counters.fills_recorded += 1
            total_fee = sum((f.fee for f in fills), Decimal(0))
            if fills and total_fee != record.fee:
                self._journal.update_order(record.client_order_id, status=record.status, fee=total_fee)
            return
        self._counters.fill_fetch_failures += 1

    def _safe_update(self, cid: str, status: OrderStatus, *, error: str | None = None) -> None:
        """Record a status the exchange did not report in full (unknown, not found, rejected).

        A transition the journal's table does not allow is logged and skipped rather than raised:
        after NOT_FOUND, a resend with the same id can end UNKNOWN or REJECTED again, and a
        ``JournalError`` here would abort the execution between its two legs (no rollback).
        """
        current = self._journal.get_order(cid)
        if current is None or current.status is status:
            return
        if status not in TRANSITIONS[current.status]:
            logger.warning("{}: journal keeps {} (it has no {} -> {} transition)", cid, current.status.value,
                           current.status.value, status.value)
            return
        self._journal.update_order(cid, status=status, error=error)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, in seconds (parameters in ms)."""
        base = self._backoff_ms * (2 ** attempt)
        return self._rng.uniform(base / 2, base) / 1000


def journal_status(state: OrderState) -> OrderStatus:
    """The journal's word for an exchange state."""
    if state.status is ExchangeOrderStatus.OPEN:
        return OrderStatus.PARTIALLY_FILLED if state.filled > 0 else OrderStatus.ACKED
    return {
        ExchangeOrderStatus.CLOSED: OrderStatus.FILLED,
        ExchangeOrderStatus.CANCELED: OrderStatus.CANCELED,
        ExchangeOrderStatus.EXPIRED: OrderStatus.EXPIRED,
        ExchangeOrderStatus.REJECTED: OrderStatus.REJECTED,
    }[state.status]
