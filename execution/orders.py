"""Placing one order safely: journal first, unknown outcomes resolved, fills recorded.

This is protocol P3 in one routine, shared by every purpose (entry, exit, top-up, trim,
rollback, repair), so no protocol can forget it:

1. the intent (deterministic clientOrderId) is committed to the journal before the request;
2. a timeout or a lost response never means "not placed": the order goes to the resolver
   (``execution/resolver.py``), which looks it up by clientOrderId until it is found or its
   horizon has passed; only a confirmed "none" is resent, under the same id;
3. a working order is followed to a final state within a deadline, and its remainder cancelled;
4. its fills are fetched and recorded, deduplicated by trade id, waiting for lagging trades.

Every interaction ends in an ``Outcome``: filled, none, or unknown. ``PlacedOrder.filled``
refuses to answer for an unknown order, so nothing above this module can turn unknown into
zero (docs/architecture.md, "Order outcomes").
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Awaitable, Callable, TypeVar

from loguru import logger

from enum import Enum

from core.backoff import jittered_backoff_seconds
from core.errors import OrderNotFoundError, PairsBotError, PermanentError, RetryableError
from core.log_setup import log_trade_event
from execution.exchange import ExchangeAdapter, ExchangeOrderStatus, OrderState, OrderStatusUnknownError
from execution.journal import Journal
from execution.journal_models import OrderPurpose, OrderRecord, OrderStatus
from execution.markets_watch import is_filter_rejection
from execution.resolver import OrderResolver, Resolution

_PURPOSE_CODE = {OrderPurpose.ENTRY: "E", OrderPurpose.EXIT: "X", OrderPurpose.TOP_UP: "U",
                 OrderPurpose.TRIM: "T", OrderPurpose.ROLLBACK: "R", OrderPurpose.REPAIR: "P",
                 OrderPurpose.LIMIT_CHASE: "L", OrderPurpose.VANISHED: "V"}
CLIENT_ID_PREFIX = "pb-"


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


class OutcomeUnknownError(PairsBotError):
    """An order's filled quantity was asked for while its outcome is unknown. Action: a bug in
    the caller: check ``PlacedOrder.unknown`` and hand the order to the resolver instead."""


class Outcome(str, Enum):
    """What one order interaction came to (docs/architecture.md, "Order outcomes")."""

    FILLED = "filled"  # final on the exchange with a fill (possibly partial)
    NONE = "none"  # confirmed nothing: refused, cancelled or expired unfilled, or not found after its horizon
    UNKNOWN = "unknown"  # cannot tell yet; the resolver has it, nothing may be resent or counted as zero


_UNKNOWN_SEND = object()  # ``_send_with_ghost_protocol``: the request's outcome is unknown


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
    """Where an order ended: its journal record, its outcome, and when it was acknowledged
    (monotonic s). ``filled`` is a fact only when the outcome is known: asking it of an unknown
    order raises, so no caller can turn unknown into zero by accident."""

    record: OrderRecord
    acked_at: float | None
    outcome: Outcome

    @property
    def unknown(self) -> bool:
        return self.outcome is Outcome.UNKNOWN

    @property
    def filled(self) -> Decimal:
        if self.outcome is Outcome.UNKNOWN:
            raise OutcomeUnknownError(f"order {self.record.client_order_id}: its outcome is unknown "
                                      f"(journal {self.record.status.value})")
        return self.record.filled_qty


@dataclass(slots=True)
class SentOrder:
    """An order between its ack and its final state: ``state`` None when confirmed not placed;
    ``unknown`` when nobody can tell yet."""

    request: OrderRequest
    record: OrderRecord
    state: OrderState | None
    acked_at: float | None
    unknown: bool = False


class OrderPlacer:
    """Runs the P3 routine for one order at a time (callers may run several concurrently)."""

    def __init__(self, adapter: ExchangeAdapter, journal: Journal, counters: ProtocolCounters, *,
                 resolver: OrderResolver, max_retries: int, backoff_ms: int, final_wait_seconds: float,
                 fill_wait_seconds: float = 2.0, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._adapter = adapter
        self._journal = journal
        self._counters = counters
        self.resolver = resolver
        self._max_retries = max_retries
        self._backoff_ms = backoff_ms
        self._final_wait = final_wait_seconds
        self._fill_wait = fill_wait_seconds
        self._rng = random.Random(seed)
        self._clock = clock
        #: Told (symbol, error) when an order is refused by a symbol filter (the filters changed).
        self.on_filter_rejection: Callable[[str, str], None] | None = None

    async def place(self, req: OrderRequest, *, working_seconds: float | None = None) -> PlacedOrder:
        """Send ``req`` and follow it to a final state; never raises for exchange trouble.

        ``working_seconds`` is how long a limit order may rest before its remainder is cancelled.
        """
        return await self.finish(await self.send(req), working_seconds=working_seconds)

    async def send(self, req: OrderRequest) -> SentOrder:
        """Steps 1-2 only: commit the intent, send with the ghost protocol, return at the ack."""
        return (await self.send_together([req]))[0]

    async def send_together(self, requests: list[OrderRequest], *,
                            prelude: Callable[[], object] | None = None) -> list[SentOrder]:
        """Commit every intent first, then send all requests at once and return at their acks.

        The legs of a pair leave back to back: no journal commit (an fsync) sits between them,
        and one leg's writes and trade fetch after its ack (``finish``) never delay the other
        leg's ack. Every leg's task is awaited even when another one raises (a journal error):
        none is ever left running unawaited; the first error is raised after all have ended.
        """
        with self._journal.batch():  # ``prelude`` (e.g. the pair's ENTERING) commits with the intents
            if prelude is not None:
                prelude()
            records = self._journal.record_order_intents([dict(
                client_order_id=req.cid, signal_id=req.signal_id, pair_id=req.pair_id, leg=req.leg,
                purpose=req.purpose, attempt=req.attempt, symbol=req.symbol, side=req.side,
                order_type=req.order_type, qty=req.qty, price=req.price, reduce_only=req.reduce_only,
                round_trip_id=req.round_trip_id) for req in requests])
        return await gather_all(*(self._send_one(req, record) for req, record in zip(requests, records)))

    async def _send_one(self, req: OrderRequest, record: OrderRecord) -> SentOrder:
        state = await self._send_with_ghost_protocol(req)
        if not isinstance(state, OrderState):  # None: confirmed not placed; else the unknown marker
            return SentOrder(req, record, None, None, unknown=state is _UNKNOWN_SEND)
        return SentOrder(req, record, state, self._clock())

    async def finish(self, sent: SentOrder, *, working_seconds: float | None = None) -> PlacedOrder:
        """Steps 3-4: follow a sent order to a final state, record its state and its fills."""
        req = sent.request
        if sent.unknown:
            return PlacedOrder(self._journal.get_order(req.cid) or sent.record, None, Outcome.UNKNOWN)
        if sent.state is None:
            return PlacedOrder(self._journal.get_order(req.cid) or sent.record, None, Outcome.NONE)
        state = await self._await_final(req, sent.state, working_seconds)
        record = self._apply_state(req.cid, state)
        if not state.status.is_final:
            # The remainder could not be cancelled: it may still fill. Unknown, for the resolver.
            logger.error("{} {}: still working after its deadline and its cancel failed (filled {} so far); "
                         "outcome unknown", req.pair_id, req.cid, state.filled)
            return PlacedOrder(record, sent.acked_at, Outcome.UNKNOWN)
        await self.record_fills(record)
        log_trade_event("order_final", pair_id=req.pair_id, cid=req.cid, purpose=req.purpose.value,
                        symbol=req.symbol, side=req.side, qty=str(req.qty), filled=str(record.filled_qty),
                        avg_price=str(record.avg_price), status=record.status.value)
        final = self._journal.get_order(req.cid) or record
        return PlacedOrder(final, sent.acked_at, Outcome.FILLED if final.filled_qty > 0 else Outcome.NONE)

    async def _send_with_ghost_protocol(self, req: OrderRequest) -> OrderState | None | object:
        """The order's state, None when confirmed not placed, or ``_UNKNOWN_SEND``.

        An unknown outcome goes to the resolver. Only when it confirms the order was never placed
        (not found after its horizon) is the request sent again, under the same clientOrderId
        and with a fresh timestamp; a resend of an order that did land (and filled) would be
        accepted again by Binance and double the position.
        """
        for attempt in range(self._max_retries + 1):
            try:
                self._counters.orders_sent += 1
                return await self._adapter.create_order(
                    symbol=req.symbol, side=req.side, qty=req.qty, order_type=req.order_type,
                    client_order_id=req.cid, price=req.price, reduce_only=req.reduce_only)
            except OrderStatusUnknownError as exc:
                logger.warning("{} {}: create_order outcome unknown ({}); resolving it by clientOrderId",
                               req.pair_id, req.cid, exc)
                record = self._journal.update_order(req.cid, status=OrderStatus.UNKNOWN, error=str(exc)[:300],
                                                    horizon_ms=self.resolver.horizon_from_now())
                self._counters.ghost_lookups += 1
                found = await self.resolver.resolve(record)
                if found.resolution is Resolution.FOUND:
                    self._counters.ghosts_adopted += 1
                    return found.state
                if found.resolution is Resolution.UNKNOWN:
                    return _UNKNOWN_SEND
                why = "not found after its horizon"
            except RetryableError as exc:  # refused before processing (429/418, -1021): nothing placed
                why = f"not processed: {exc}"
                logger.warning("{} {}: {}", req.pair_id, req.cid, why)
            except PermanentError as exc:
                if attempt > 0:  # a refused resend (a duplicate id?): one look whether the id is live
                    with contextlib.suppress(RetryableError, PermanentError):
                        return await self._adapter.fetch_order(symbol=req.symbol, client_order_id=req.cid)
                self._counters.orders_rejected += 1
                logger.warning("{} {}: order rejected: {}", req.pair_id, req.cid, exc)
                self._update_status(req.cid, OrderStatus.REJECTED, error=str(exc)[:300])
                if self.on_filter_rejection is not None and is_filter_rejection(str(exc)):
                    self.on_filter_rejection(req.symbol, str(exc))
                return None
            if attempt < self._max_retries:
                self._counters.ghost_resends += 1
                await asyncio.sleep(self.backoff(attempt))
                self._update_status(req.cid, OrderStatus.RESENDING, error=why[:300])
                logger.info("{} {}: resending under the same id ({})", req.pair_id, req.cid, why)
        logger.error("{} {}: not placed after {} attempts", req.pair_id, req.cid, self._max_retries + 1)
        self._update_status(req.cid, OrderStatus.REJECTED, error=f"not placed after {self._max_retries + 1} attempts")
        return None

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
        """Fetch and record the order's trades until they add up to its filled quantity.

        Binance's trade list can lag the order (the order says FILLED, userTrades is still
        empty or short): the fills that must come are waited for, on a backoff, for up to
        ``fill_wait_seconds``; what is still missing then is counted and left to reconciliation,
        whose late fills reprice the round trip (``Journal.record_fill``).
        """
        if record.filled_qty <= 0 or record.exchange_order_id is None:
            return
        deadline = self._clock() + self._fill_wait
        attempt = 0
        while True:
            try:
                fills = await self._adapter.fetch_order_fills(symbol=record.symbol,
                                                              exchange_order_id=record.exchange_order_id)
            except RetryableError:
                fills = None
            except PermanentError as exc:
                logger.error("{}: fills of {} cannot be read: {}", record.pair_id, record.client_order_id, exc)
                self._counters.fill_fetch_failures += 1
                return
            if fills is not None:
                for fill in fills:
                    if self._journal.record_fill(record.client_order_id, trade_id=fill.trade_id, qty=fill.qty,
                                                 price=fill.price, fee=fill.fee, ts_ms=fill.ts_ms,
                                                 fee_asset=fill.fee_asset, fee_native=fill.fee_native):
                        self._counters.fills_recorded += 1
                recorded = self._journal.fills_for_order(record.client_order_id)
                total_fee = sum((f.fee for f in recorded), Decimal(0))
                current = self._journal.get_order(record.client_order_id) or record
                if recorded and total_fee != current.fee:
                    self._journal.update_order(record.client_order_id, status=current.status, fee=total_fee)
                if sum((f.qty for f in recorded), Decimal(0)) >= current.filled_qty:
                    return
            if self._clock() >= deadline:
                self._counters.fill_fetch_failures += 1
                logger.warning("{} {}: trades recorded fall short of filled {} after {:.1f} s; reconciliation "
                               "will fetch the rest", record.pair_id, record.client_order_id, record.filled_qty,
                               self._fill_wait)
                return
            await asyncio.sleep(min(self.backoff(attempt), max(0.0, deadline - self._clock())))
            attempt = min(attempt + 1, 4)

    def _update_status(self, cid: str, status: OrderStatus, *, error: str | None = None) -> None:
        """Record a status the exchange did not report in full (rejected, resending). Validated by
        the journal's transition table: an illegal change raises, it is never skipped."""
        self._journal.update_order(cid, status=status, error=error)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, in seconds: ``attempt`` 0 waits up to ``retry_backoff_ms``."""
        return jittered_backoff_seconds(attempt + 1, self._rng, first_ms=self._backoff_ms, max_ms=math.inf)


class OutcomeUnresolved(PairsBotError):
    """An order of the execution has an unknown outcome. Action: stop the execution, mark the pair
    RESOLVING and hand the order to the resolver; never resend it or count it as zero."""


def known_filled(*placed: PlacedOrder) -> tuple[Decimal, ...]:
    """The filled quantities of orders whose outcomes are known; ``OutcomeUnresolved`` naming the
    unknown ones otherwise (every order given has ended: the caller awaited them all)."""
    unknown = [p.record for p in placed if p.unknown]
    if unknown:
        raise OutcomeUnresolved("outcome unknown for " + ", ".join(
            f"{r.client_order_id} ({r.symbol} {r.side.value} {r.qty}, journal {r.status.value})" for r in unknown))
    return tuple(p.filled for p in placed)


T = TypeVar("T")


async def gather_all(*aws: Awaitable[T]) -> list[T]:
    """``asyncio.gather`` that lets every awaitable finish before raising the first error.

    Plain ``gather`` raises at the first exception and leaves the other tasks running
    unawaited: a leg would go on trading with nobody watching it.
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)  # type: ignore[arg-type]


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
