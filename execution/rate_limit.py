"""RateGovernor: the bot's side of Binance's rate limits, fed by the venue's own headers.

Binance USD-M counts request weight per IP (2,400 per minute) and new orders per account
(300 per 10 s, 1,200 per minute) in fixed windows, and says where each client stands in every
answer: ``X-MBX-USED-WEIGHT-1M`` and, on orders, ``X-MBX-ORDER-COUNT-10S`` / ``-1M``. Over a
limit it answers 429 with ``Retry-After``; a client that does not back off gets 418, an IP ban
of 2 minutes to 3 days (developers.binance.com, USDⓈ-M Futures, "General Info" > "LIMITS").

The governor is asked before every request ("may I send this now, or how long to wait") and
told every response's status and headers. Its rules, in order:

1. Banned (418) or told to back off (429): nothing is sent until ``Retry-After`` has passed.
2. When a wait ends, risk-reducing requests (reduce-only orders, cancels) go before the others:
   a normal request waits while an urgent one is waiting.
3. Budget: the weight and order counts of the current window are the venue's last header
   plus what this client sent since (reserved when a request leaves, so concurrent requests
   never see the same headroom twice). Above ``soft_fraction`` of a window's budget, a normal
   request waits for the window to roll; an urgent one may use the rest, never more.
4. A normal request whose wait would exceed ``max_wait_seconds`` is not sent at all
   (``RateLimitedError``: nothing reached the venue, so an order so refused is confirmed
   not placed, never unknown). An urgent request waits as long as it takes.

Windows are fixed and aligned to the epoch, as the venue's are, on this machine's clock: when
the local clock starts a new window the estimate restarts from zero and the next header
corrects it. The limits and windows themselves are read from ``exchangeInfo.rateLimits``
(``learn_limits``) when the markets load, so a VIP tier's higher limits are used as granted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from loguru import logger

from core.errors import RetryableError

WEIGHT_HEADER = "x-mbx-used-weight-1m"
ORDER_HEADERS = ("x-mbx-order-count-10s", "x-mbx-order-count-1m")


class RateLimitedError(RetryableError):
    """The request was NOT sent: the venue's rate limit (or a ban) would be broken, and the
    wait is longer than this request may wait. Action: nothing reached the exchange (an order
    so refused is not placed); try again later."""


class Priority(str, Enum):
    """Who goes first when the budget is short or a wait ends."""

    URGENT = "urgent"  # reduces risk: reduce-only orders, cancels
    NORMAL = "normal"  # everything else


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The budgets the governor keeps to (Binance's defaults until ``exchangeInfo`` says)."""

    weight_per_window: int = 2_400
    weight_window_ms: int = 60_000
    orders_per_short_window: int = 300
    short_order_window_ms: int = 10_000
    orders_per_long_window: int = 1_200
    long_order_window_ms: int = 60_000


@dataclass(slots=True)
class _Window:
    """One fixed window's estimate: the venue's last figure plus what we sent since."""

    length_ms: int
    limit: int
    start_ms: int = -1
    used: int = 0

    def roll(self, now_ms: int) -> None:
        start = now_ms - now_ms % self.length_ms
        if start != self.start_ms:
            self.start_ms, self.used = start, 0

    def end_ms(self) -> int:
        return self.start_ms + self.length_ms


@dataclass(slots=True)
class GovernorCounters:
    waits: int = 0  # requests that waited at least once
    refused: int = 0  # normal requests given up (RateLimitedError)
    answered_429: int = 0
    answered_418: int = 0
    waited_seconds: float = 0.0
    last_weight: int | None = None  # the venue's last X-MBX-USED-WEIGHT-1M


@dataclass(slots=True)
class RateGovernor:
    """See the module docstring. ``clock_ms`` is wall time in ms (windows align to it)."""

    limits: RateLimits = field(default_factory=RateLimits)
    soft_fraction: float = 0.8
    max_wait_seconds: float = 10.0
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    name: str = "exchange"
    counters: GovernorCounters = field(default_factory=GovernorCounters)
    _weight: _Window = field(init=False)
    _orders: tuple[_Window, _Window] = field(init=False)
    _blocked_until_ms: int = 0
    _banned_until_ms: int = 0
    _urgent_waiting: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.soft_fraction <= 1:
            raise ValueError(f"soft_fraction = {self.soft_fraction!r}: expected within (0, 1]")
        self._apply(self.limits)

    # -- what the venue says ---------------------------------------------------------------
    def learn_limits(self, rate_limits: Iterable[Mapping[str, Any]]) -> None:
        """Adopt ``exchangeInfo.rateLimits`` (REQUEST_WEIGHT and ORDERS entries)."""
        limits = self.limits
        orders: list[tuple[int, int]] = []  # (window ms, limit): the shorter one is the 10 s kind
        for entry in rate_limits:
            window = _window_ms(entry)
            limit = entry.get("limit")
            if window is None or not isinstance(limit, int) or limit < 1:
                continue
            if entry.get("rateLimitType") == "REQUEST_WEIGHT":
                limits = replace(limits, weight_per_window=limit, weight_window_ms=window)
            elif entry.get("rateLimitType") == "ORDERS":
                orders.append((window, limit))
        if orders:
            (short_ms, short), (long_ms, long) = min(orders), max(orders)
            limits = replace(limits, orders_per_short_window=short, short_order_window_ms=short_ms,
                             orders_per_long_window=long, long_order_window_ms=long_ms)
        if limits != self.limits:
            logger.info("{}: rate limits from exchangeInfo: weight {}/{} ms, orders {}/{} ms and {}/{} ms",
                        self.name, limits.weight_per_window, limits.weight_window_ms,
                        limits.orders_per_short_window, limits.short_order_window_ms,
                        limits.orders_per_long_window, limits.long_order_window_ms)
            self._apply(limits)  # unchanged limits keep the current windows' counts

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Read one response's status and headers (every response, errors included)."""
        now = self.clock_ms()
        lower = {k.lower(): v for k, v in headers.items()}
        used = _int(lower.get(WEIGHT_HEADER))
        if used is not None:
            self.counters.last_weight = used
            self._weight.roll(now)
            self._weight.used = max(self._weight.used, used)
        for window, name in zip(self._orders, ORDER_HEADERS):
            count = _int(lower.get(name))
            if count is not None:
                window.roll(now)
                window.used = max(window.used, count)
        if status not in (418, 429):
            return
        seconds = _int(lower.get("retry-after"))
        wait_ms = (seconds if seconds is not None and seconds >= 0 else 1) * 1000
        until = now + wait_ms
        self._blocked_until_ms = max(self._blocked_until_ms, until)
        if status == 418:
            self.counters.answered_418 += 1
            if until > self._banned_until_ms:
                self._banned_until_ms = until
                logger.critical("{}: IP BANNED by the exchange (HTTP 418) until {} ({} s): no request is sent "
                                "until then; exits go first when it ends", self.name, _iso(until), wait_ms // 1000)
        else:
            self.counters.answered_429 += 1
            logger.warning("{}: rate limit hit (HTTP 429), weight {} of {}; no request for {} s (Retry-After)",
                           self.name, used if used is not None else "?", self._weight.limit, wait_ms // 1000)

    # -- may I send ------------------------------------------------------------------------
    def wait_seconds(self, *, priority: Priority, weight: int, orders: int = 0) -> float:
        """0 when a request of ``weight`` (and ``orders`` new orders) may leave now, else how
        long to wait before asking again."""
        now = self.clock_ms()
        if now < self._blocked_until_ms:
            return (self._blocked_until_ms - now) / 1000
        if priority is Priority.NORMAL and self._urgent_waiting:
            return 0.005
        share = 1.0 if priority is Priority.URGENT else self.soft_fraction
        waits = [0]
        windows = [(self._weight, weight)] + ([(w, orders) for w in self._orders] if orders else [])
        for window, cost in windows:
            window.roll(now)
            if cost and window.used + cost > math.floor(window.limit * share) and window.used > 0:
                waits.append(window.end_ms() - now)
        return max(waits) / 1000

    async def acquire(self, *, priority: Priority, weight: int, orders: int = 0, what: str = "") -> None:
        """Wait until the request may leave, then reserve its cost. A NORMAL request whose
        wait would pass ``max_wait_seconds`` raises ``RateLimitedError`` (nothing sent)."""
        waited = 0.0
        urgent = priority is Priority.URGENT
        if urgent:
            self._urgent_waiting += 1
        try:
            while True:
                delay = self.wait_seconds(priority=priority, weight=weight, orders=orders)
                if delay <= 0:
                    break
                if not urgent and waited + delay > self.max_wait_seconds:
                    self.counters.refused += 1
                    raise RateLimitedError(f"{what or 'request'} not sent: the exchange's rate limit would need a "
                                           f"wait of {waited + delay:.1f} s (more than {self.max_wait_seconds:g} s)")
                if waited == 0:
                    self.counters.waits += 1
                step = min(delay, 1.0)
                await asyncio.sleep(step)
                waited += step
                self.counters.waited_seconds += step
        finally:
            if urgent:
                self._urgent_waiting -= 1
        now = self.clock_ms()
        self._weight.roll(now)
        self._weight.used += weight
        for window in self._orders if orders else ():
            window.roll(now)
            window.used += orders

    @property
    def banned_until_ms(self) -> int | None:
        return self._banned_until_ms if self._banned_until_ms > self.clock_ms() else None

    def stats(self) -> dict[str, Any]:
        return {"waits": self.counters.waits, "refused": self.counters.refused,
                "answered_429": self.counters.answered_429, "answered_418": self.counters.answered_418,
                "waited_seconds": round(self.counters.waited_seconds, 3),
                "last_used_weight": self.counters.last_weight}

    def _apply(self, limits: RateLimits) -> None:
        self.limits = limits
        self._weight = _Window(limits.weight_window_ms, limits.weight_per_window)
        self._orders = (_Window(limits.short_order_window_ms, limits.orders_per_short_window),
                        _Window(limits.long_order_window_ms, limits.orders_per_long_window))


# -- what a request costs: the bot's estimate (the venue's header is the truth) ---------------
_API_PREFIX = {"fapiPublic": "/fapi/v1", "fapiPublicV2": "/fapi/v2", "fapiPublicV3": "/fapi/v3",
               "fapiPrivate": "/fapi/v1", "fapiPrivateV2": "/fapi/v2", "fapiPrivateV3": "/fapi/v3"}
_BY_SYMBOL = {"/fapi/v1/ticker/24hr": (1, 40), "/fapi/v1/ticker/bookTicker": (2, 5),
              "/fapi/v1/ticker/price": (1, 2), "/fapi/v2/ticker/price": (1, 2),
              "/fapi/v1/premiumIndex": (1, 10), "/fapi/v1/openOrders": (1, 40)}
_FIXED = {"/fapi/v2/account": 5, "/fapi/v3/account": 5, "/fapi/v2/balance": 5, "/fapi/v3/balance": 5,
          "/fapi/v2/positionRisk": 5, "/fapi/v3/positionRisk": 5, "/fapi/v1/userTrades": 5,
          "/fapi/v1/allOrders": 5, "/fapi/v1/positionSide/dual": 30}
NEW_ORDER = ("POST", "/fapi/v1/order")


def request_path(api: Any, path: str) -> str:
    """``/fapi/v1/order`` from ccxt's (api, path) pair, e.g. ('fapiPrivate', 'order')."""
    name = api[0] if isinstance(api, (list, tuple)) and api else api
    return f"{_API_PREFIX.get(str(name), '/' + str(name))}/{path}"


def estimate_cost(method: str, full_path: str, params: Mapping[str, Any]) -> tuple[int, int]:
    """(IP weight, new orders) of one request, from Binance USD-M's documented weights.

    >>> estimate_cost("GET", "/fapi/v1/klines", {"limit": 1000})
    (5, 0)
    >>> estimate_cost("POST", "/fapi/v1/order", {})
    (0, 1)
    """
    method = method.upper()
    if (method, full_path) == NEW_ORDER:
        return 0, 1
    if full_path == "/fapi/v1/klines":
        limit = _int(params.get("limit")) or 500
        return (1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10), 0
    if full_path == "/fapi/v1/depth":
        limit = _int(params.get("limit")) or 500
        return (2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20), 0
    if full_path in _BY_SYMBOL:
        one, every = _BY_SYMBOL[full_path]
        return (one if params.get("symbol") else every), 0
    return _FIXED.get(full_path, 1), 0


def _window_ms(entry: Mapping[str, Any]) -> int | None:
    unit = {"SECOND": 1000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}.get(str(entry.get("interval")))
    num = entry.get("intervalNum")
    return unit * num if unit and isinstance(num, int) and num > 0 else None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
