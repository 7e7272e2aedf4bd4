"""The one place that turns an unknown order outcome into a fact (docs/architecture.md, "Order outcomes").

Real Binance answers some order requests with no outcome at all: a client timeout, a dropped
connection, an HTTP 503 whose message says the execution status is unknown, a ``-1007``. An
immediate lookup by clientOrderId can then answer ``-2013`` (no such order) and the order can
still land afterwards. What makes "not found" final is Binance's own rule: a request whose
``timestamp`` is more than ``recvWindow`` old when the matching engine gets it is refused. So once
the original request's timestamp + recvWindow + a margin for clock error has passed, an order
that is still not found can never appear. That moment is the order's *horizon*.

``OrderResolver.resolve`` looks an order up on a backoff schedule until it is found (its state is
a fact) or a lookup sent after its horizon still says "not found" (confirmed none). If neither
happens within the budget (the exchange keeps failing), the answer stays *unknown*: nothing may
be resent and nothing may be counted as zero. Lookups that fail are retried here, so callers never
loop over the resolver themselves.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from loguru import logger

from core.errors import OrderNotFoundError, PermanentError, RetryableError
from execution.exchange import ExchangeAdapter, OrderState
from execution.journal import Journal
from execution.journal_models import OrderRecord, OrderStatus

#: Statuses whose request may have been in flight when a previous process died: their stored
#: horizon (if any) is not enough, the restart time bounds the request's timestamp instead.
_MAYBE_IN_FLIGHT = frozenset({OrderStatus.INTENT, OrderStatus.SENT, OrderStatus.RESENDING})


class Resolution(str, Enum):
    FOUND = "found"  # the exchange has the order: ``state`` is its state
    NONE = "none"  # confirmed none: not found by a lookup sent after the horizon
    UNKNOWN = "unknown"  # still cannot tell (the lookups kept failing within the budget)


@dataclass(frozen=True, slots=True)
class ResolveResult:
    resolution: Resolution
    state: OrderState | None = None
    lookups: int = 0
    detail: str = ""


@dataclass(slots=True)
class ResolverCounters:
    resolutions_started: int = 0
    resolved_found: int = 0
    resolved_none: int = 0
    resolutions_unknown: int = 0  # budget passed with no answer: handed on, never guessed
    lookups: int = 0
    not_found_before_horizon: int = 0  # "-2013" that did not count, because the order could still land


class OrderResolver:
    """Looks orders up by clientOrderId until found or past their horizon.

    ``recv_window_ms`` is the recvWindow the order requests are signed with, ``margin_ms`` the
    allowance for the error of the measured clock offset. ``wall_ms`` is the clock requests are
    signed with: the exchange's as last measured (``ExchangeAdapter.exchange_now_ms``), since
    Binance checks a request's timestamp against its own clock; horizons and lookup times are
    all taken on it. ``started_ms`` is when this process started: any request a previous
    process sent has a timestamp before it.
    """

    def __init__(self, adapter: ExchangeAdapter, journal: Journal, *, recv_window_ms: int, margin_ms: int,
                 extra_budget_seconds: float, seed: int | None = None,
                 wall_ms: Callable[[], int] | None = None) -> None:
        self._adapter = adapter
        self._journal = journal
        self.recv_window_ms = recv_window_ms
        self.margin_ms = margin_ms
        self._extra_budget = extra_budget_seconds
        self._rng = random.Random(seed)
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self.started_ms = self._wall_ms()
        self.counters = ResolverCounters()

    def rebase_start(self) -> None:
        """Take the restart bound again once the clock is synchronized: by the exchange's clock
        or this machine's, whichever is later (a previous process may have signed with either)."""
        self.started_ms = max(self._wall_ms(), time.time_ns() // 1_000_000)

    def horizon_from_now(self) -> int:
        """The horizon of a request that has already left (its timestamp is before now)."""
        return self._wall_ms() + self.recv_window_ms + self.margin_ms

    def horizon_of(self, order: OrderRecord) -> int:
        """When "not found" becomes final for ``order``'s latest request (wall ms).

        An UNKNOWN order carries the horizon written when its request came back without an
        answer. An order whose request may have been in flight when a process died (INTENT, SENT,
        RESENDING) is bounded by this process's start instead: that request's timestamp is older.
        """
        restart_bound = self.started_ms + self.recv_window_ms + self.margin_ms
        if order.status in _MAYBE_IN_FLIGHT or order.horizon_ms is None:
            return max(order.horizon_ms or 0, restart_bound)
        return order.horizon_ms

    async def resolve(self, order: OrderRecord, *, budget_seconds: float | None = None) -> ResolveResult:
        """Look ``order`` up until found or confirmed none; UNKNOWN if the budget runs out first.

        The default budget is the time left to the horizon plus ``extra_budget_seconds``. On
        NONE the journal row becomes NOT_FOUND (final for that request); on FOUND the caller
        applies the state (it may still be working and need following).
        """
        counters = self.counters
        counters.resolutions_started += 1
        horizon = self.horizon_of(order)
        if budget_seconds is None:
            budget_seconds = max(0.0, (horizon - self._wall_ms()) / 1000) + self._extra_budget
        deadline = time.monotonic() + budget_seconds
        delay = 0.05
        lookups = 0
        last = ""
        while True:
            syncs = getattr(self._adapter, "clock_syncs", 0)
            sent_at = self._wall_ms()
            lookups += 1
            counters.lookups += 1
            try:
                state = await self._adapter.fetch_order(symbol=order.symbol, client_order_id=order.client_order_id)
            except OrderNotFoundError as exc:
                # A lookup sent again after a clock re-sync (-1021) went out at another exchange time
                # than ``sent_at``: its "not found" is not final, the next lookup decides.
                resynced = getattr(self._adapter, "clock_syncs", 0) != syncs
                if sent_at > horizon and not resynced:
                    self._confirm_none(order, lookups)
                    counters.resolved_none += 1
                    return ResolveResult(Resolution.NONE, lookups=lookups, detail="not found after its horizon")
                counters.not_found_before_horizon += 1
                last = f"not found {horizon - sent_at} ms before its horizon ({exc})"
            except (RetryableError, PermanentError) as exc:
                last = f"lookup failed: {exc}"
            else:
                counters.resolved_found += 1
                if lookups > 1:
                    logger.warning("{} {}: found on lookup {} (status {}, filled {})", order.pair_id,
                                   order.client_order_id, lookups, state.status.value, state.filled)
                return ResolveResult(Resolution.FOUND, state, lookups)
            now = time.monotonic()
            if now >= deadline:
                counters.resolutions_unknown += 1
                logger.error("{} {}: outcome still unknown after {} lookups ({}); not resending, not counting "
                             "it as zero", order.pair_id, order.client_order_id, lookups, last)
                return ResolveResult(Resolution.UNKNOWN, lookups=lookups, detail=last)
            # Sleep on the backoff schedule, but wake just past the horizon: that lookup decides.
            to_horizon = (horizon - self._wall_ms()) / 1000 + 0.01
            pause = delay * self._rng.uniform(0.75, 1.0)
            if 0 < to_horizon < pause:
                pause = to_horizon
            await asyncio.sleep(min(pause, max(0.0, deadline - now)))
            delay = min(delay * 2, 1.0)

    def _confirm_none(self, order: OrderRecord, lookups: int) -> None:
        current = self._journal.get_order(order.client_order_id)
        if current is None:
            return
        if current.status in (OrderStatus.ACKED, OrderStatus.PARTIALLY_FILLED):
            # It was working once and the exchange no longer knows it: purged, not "never placed".
            self._journal.update_order(order.client_order_id, status=OrderStatus.CANCELED,
                                       error="no longer on the exchange")
            return
        if current.status is not OrderStatus.NOT_FOUND:
            self._journal.update_order(order.client_order_id, status=OrderStatus.NOT_FOUND,
                                       error=f"not found after its horizon ({lookups} lookups)")
        logger.info("{} {}: confirmed not placed (not found after its horizon, {} lookups)", order.pair_id,
                    order.client_order_id, lookups)
