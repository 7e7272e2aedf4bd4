"""Binance USD-M rate limits as the simulator enforces them: weights, order counts, bans.

Sources (developers.binance.com, USDⓈ-M Futures): "General Info" > "LIMITS" ("IP Limits",
"Order Rate Limits"), and the "Request Weight" line of each endpoint's page.

- Request weight per IP: 2,400 per minute. Every ``/fapi`` response carries
  ``X-MBX-USED-WEIGHT-1M``, the IP's weight used in the current window (this request included).
- Orders per account: 300 per 10 s and 1,200 per minute. ``POST /fapi/v1/order`` answers carry
  ``X-MBX-ORDER-COUNT-10S`` and ``X-MBX-ORDER-COUNT-1M``. A new order costs 1 on each order
  window and 0 IP weight.
- Over a limit: HTTP 429, ``-1003`` (weight) or ``-1015`` (orders), with ``Retry-After`` in
  seconds until the window that was broken rolls over.
- "Failing to back off after receiving 429s" earns an automated IP ban: HTTP 418 with
  ``Retry-After`` until the ban ends. Bans "scale in duration for repeat offenders, from 2
  minutes to 3 days": here the first ban lasts ``ban_base_seconds`` and each later one
  ``ban_growth`` times the previous, capped at ``ban_max_seconds`` (Binance does not publish
  its scale; doubling is this model's choice).

Windows are FIXED, aligned to the epoch (a 1-minute window starts every whole minute of the
wall clock and its count then restarts at zero), as Binance counts its intervals: a request at
00:01:23.456 counts toward the 00:01:00 minute. A sliding window would be stricter; the fixed
one is what lets a burst of 2 x the budget straddle a minute boundary, so the bot must not
assume anything better.

What is recorded for tests: every 429 and 418 answered, and every *violation*: a request that
arrived before the ``Retry-After`` the simulator had given that IP (or that account, for order
limits) had passed, or during a ban.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from matching.errors import BinanceError

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
ORDER_HEADERS = ("X-MBX-ORDER-COUNT-10S", "X-MBX-ORDER-COUNT-1M")

# (method, path) -> weight, or a callable of the query/body parameters. Documented values of
# each endpoint's "Request Weight" (developers.binance.com, USDⓈ-M Futures REST API).
Weight = int | Callable[[Mapping[str, str]], int]


def _klines(params: Mapping[str, str]) -> int:
    """Kline/Candlestick Data: by ``limit`` (default 500): [1,100) 1, [100,500) 2,
    [500,1000] 5, > 1000 10."""
    limit = _int(params.get("limit"), 500)
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def _depth(params: Mapping[str, str]) -> int:
    """Order Book: by ``limit`` (default 500): 5/10/20/50 -> 2, 100 -> 5, 500 -> 10, 1000 -> 20."""
    limit = _int(params.get("limit"), 500)
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


def _by_symbol(one: int, every: int) -> Callable[[Mapping[str, str]], int]:
    """Endpoints whose weight depends on whether ``symbol`` was sent."""
    def weight(params: Mapping[str, str]) -> int:
        return one if params.get("symbol") else every
    return weight


ENDPOINT_WEIGHTS: dict[tuple[str, str], Weight] = {
    ("GET", "/fapi/v1/ping"): 1,
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/klines"): _klines,
    ("GET", "/fapi/v1/depth"): _depth,
    ("GET", "/fapi/v1/ticker/24hr"): _by_symbol(1, 40),
    ("GET", "/fapi/v1/ticker/bookTicker"): _by_symbol(2, 5),
    ("GET", "/fapi/v1/ticker/price"): _by_symbol(1, 2),
    ("GET", "/fapi/v2/ticker/price"): _by_symbol(1, 2),
    ("GET", "/fapi/v1/premiumIndex"): _by_symbol(1, 10),
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v1/leverageBracket"): 1,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("POST", "/fapi/v1/order"): 0,  # counted on the order windows instead
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("GET", "/fapi/v1/openOrders"): _by_symbol(1, 40),
    ("DELETE", "/fapi/v1/allOpenOrders"): 1,
    ("GET", "/fapi/v1/allOrders"): 5,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
}
ORDER_ENDPOINTS: frozenset[tuple[str, str]] = frozenset({("POST", "/fapi/v1/order")})


def request_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """The IP weight of one request (1 for a path the table does not know, as a 404 costs)."""
    weight = ENDPOINT_WEIGHTS.get((method.upper(), path), 1)
    return weight(params) if callable(weight) else weight


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Binance's default limits (``enabled`` False turns enforcement and headers off).

    The window lengths are configurable so that tests can scale a minute down to a second or
    two; ``exchangeInfo.rateLimits`` then announces the scaled windows, as Binance announces
    its own (``rate_limits_payload``).
    """

    enabled: bool = True
    weight_per_window: int = 2_400
    weight_window_ms: int = 60_000
    orders_per_short_window: int = 300
    short_order_window_ms: int = 10_000
    orders_per_long_window: int = 1_200
    long_order_window_ms: int = 60_000
    ban_base_seconds: float = 120.0
    ban_growth: float = 2.0
    ban_max_seconds: float = 3 * 86_400.0

    def __post_init__(self) -> None:
        for name in ("weight_per_window", "weight_window_ms", "orders_per_short_window",
                     "short_order_window_ms", "orders_per_long_window", "long_order_window_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} = {getattr(self, name)!r}: must be >= 1")
        if not 0 < self.ban_base_seconds <= self.ban_max_seconds or self.ban_growth < 1:
            raise ValueError("expected 0 < ban_base_seconds <= ban_max_seconds and ban_growth >= 1")

    def rate_limits_payload(self) -> list[dict[str, Any]]:
        """``exchangeInfo.rateLimits`` for these limits (Binance's shape)."""
        return [_limit("REQUEST_WEIGHT", self.weight_window_ms, self.weight_per_window),
                _limit("ORDERS", self.long_order_window_ms, self.orders_per_long_window),
                _limit("ORDERS", self.short_order_window_ms, self.orders_per_short_window)]


@dataclass(slots=True)
class _Window:
    """A fixed window's count: restarts at zero when a new window (``start_ms``) begins."""

    length_ms: int
    start_ms: int = -1
    count: int = 0

    def add(self, now_ms: int, amount: int) -> int:
        start = now_ms - now_ms % self.length_ms
        if start != self.start_ms:
            self.start_ms, self.count = start, 0
        self.count += amount
        return self.count

    def end_ms(self) -> int:
        return self.start_ms + self.length_ms


@dataclass(slots=True)
class _Offender:
    """What one IP (or account) was told: back off until ``retry_after_ms``; banned until."""

    retry_after_ms: int = 0
    banned_until_ms: int = 0
    bans: int = 0


@dataclass(frozen=True, slots=True)
class Violation:
    """A request that came before the wait the simulator had asked for was over."""

    at_ms: int
    scope: str  # "ip 127.0.0.1" / "account default"
    method: str
    path: str
    wait_until_ms: int  # the Retry-After (or ban end) it ignored
    kind: str  # "retry_after" / "banned"


@dataclass(slots=True)
class Verdict:
    """The outcome of one request: headers to add, or the refusal to answer with."""

    headers: dict[str, str] = field(default_factory=dict)
    error: BinanceError | None = None


class RateLimiter:
    """Counts weight per IP and orders per account in fixed windows; answers 429 / 418."""

    def __init__(self, config: RateLimitConfig | None = None, *,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.config = config or RateLimitConfig()
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self._weights: dict[str, _Window] = {}
        self._orders: dict[str, tuple[_Window, _Window]] = {}
        self._ips: dict[str, _Offender] = {}
        self._accounts: dict[str, _Offender] = {}
        self.answered: Counter[int] = Counter()  # HTTP status -> how many (429, 418)
        self.peak_weight = 0  # the most weight one IP used in one window
        self.violations: list[Violation] = []

    def update(self, config: RateLimitConfig) -> None:
        self.config = config

    def stats(self) -> dict[str, Any]:
        return {"enabled": self.config.enabled, "answered_429": self.answered[429],
                "answered_418": self.answered[418], "violations": len(self.violations),
                "peak_weight": self.peak_weight,
                "bans": {ip: o.bans for ip, o in self._ips.items() if o.bans}}

    def check(self, *, ip: str, account: str | None, method: str, path: str,
              params: Mapping[str, str]) -> Verdict:
        """Count one request and decide. ``account``: the API key's account for an order."""
        config = self.config
        if not config.enabled:
            return Verdict()
        now = self._clock_ms()
        offender = self._ips.setdefault(ip, _Offender())
        if now < offender.banned_until_ms:
            self._violate(now, f"ip {ip}", method, path, offender.banned_until_ms, "banned")
            return self._refuse(_banned(ip, offender.banned_until_ms), offender.banned_until_ms, now)
        if now < offender.retry_after_ms:
            self._violate(now, f"ip {ip}", method, path, offender.retry_after_ms, "retry_after")
            return self._ban(ip, offender, now)
        weight = self._weights.setdefault(ip, _Window(config.weight_window_ms))
        weight.length_ms = config.weight_window_ms
        used = weight.add(now, request_weight(method, path, params))
        self.peak_weight = max(self.peak_weight, used)
        verdict = Verdict(headers={WEIGHT_HEADER: str(used)})
        if used > config.weight_per_window:
            offender.retry_after_ms = _whole_seconds_after(now, weight.end_ms())
            verdict.error = _too_much_weight(ip, config)
            return self._answer(verdict, offender.retry_after_ms, now)
        if account is not None and (method.upper(), path) in ORDER_ENDPOINTS:
            return self._count_order(verdict, account, method, path, now)
        return verdict

    def _count_order(self, verdict: Verdict, account: str, method: str, path: str,
                     now: int) -> Verdict:
        config = self.config
        short, long = self._orders.setdefault(
            account, (_Window(config.short_order_window_ms), _Window(config.long_order_window_ms)))
        short.length_ms, long.length_ms = config.short_order_window_ms, config.long_order_window_ms
        offender = self._accounts.setdefault(account, _Offender())
        if now < offender.retry_after_ms:
            self._violate(now, f"account {account}", method, path, offender.retry_after_ms,
                          "retry_after")
        counts = (short.add(now, 1), long.add(now, 1))
        verdict.headers.update(zip(ORDER_HEADERS, (str(c) for c in counts)))
        for window, count, limit in ((short, counts[0], config.orders_per_short_window),
                                     (long, counts[1], config.orders_per_long_window)):
            if count > limit:
                offender.retry_after_ms = _whole_seconds_after(now, window.end_ms())
                verdict.error = _too_many_orders(limit, window.length_ms)
                return self._answer(verdict, offender.retry_after_ms, now)
        return verdict

    def _ban(self, ip: str, offender: _Offender, now: int) -> Verdict:
        config = self.config
        seconds = min(config.ban_base_seconds * config.ban_growth ** offender.bans,
                      config.ban_max_seconds)
        offender.bans += 1
        offender.banned_until_ms = now + int(seconds * 1000)
        offender.retry_after_ms = 0
        return self._refuse(_banned(ip, offender.banned_until_ms), offender.banned_until_ms, now)

    def _refuse(self, error: BinanceError, until_ms: int, now: int) -> Verdict:
        return self._answer(Verdict(error=error), until_ms, now)

    def _answer(self, verdict: Verdict, until_ms: int, now: int) -> Verdict:
        if verdict.error is not None:
            self.answered[verdict.error.http_status] += 1
        verdict.headers["Retry-After"] = str(max(1, math.ceil((until_ms - now) / 1000)))
        return verdict

    def _violate(self, now: int, scope: str, method: str, path: str, until_ms: int,
                 kind: str) -> None:
        self.violations.append(Violation(now, scope, method.upper(), path, until_ms, kind))


def _whole_seconds_after(now: int, end_ms: int) -> int:
    """The moment a ``Retry-After`` in whole seconds (rounded up) points at."""
    return now + max(1, math.ceil((end_ms - now) / 1000)) * 1000


def _limit(kind: str, window_ms: int, limit: int) -> dict[str, Any]:
    if window_ms % 60_000 == 0:
        return {"rateLimitType": kind, "interval": "MINUTE", "intervalNum": window_ms // 60_000,
                "limit": limit}
    if window_ms % 1000 == 0:
        return {"rateLimitType": kind, "interval": "SECOND", "intervalNum": window_ms // 1000,
                "limit": limit}
    raise ValueError(f"window {window_ms} ms: expected whole seconds")


def _too_much_weight(ip: str, config: RateLimitConfig) -> BinanceError:
    return BinanceError(-1003, f"Too many requests; current limit of IP({ip}) is "
                        f"{config.weight_per_window} requests per "
                        f"{_interval_text(config.weight_window_ms)}. Please use the websocket for "
                        "live updates to avoid polling the API.", http_status=429)


def _too_many_orders(limit: int, window_ms: int) -> BinanceError:
    return BinanceError(-1015, f"Too many new orders; current limit is {limit} orders per "
                        f"{_interval_text(window_ms)}.", http_status=429)


def _banned(ip: str, until_ms: int) -> BinanceError:
    return BinanceError(-1003, f"Way too many requests; IP({ip}) banned until {until_ms}. Please "
                        "use the websocket for live updates to avoid bans.", http_status=418)


def _interval_text(window_ms: int) -> str:
    if window_ms % 60_000 == 0:
        n = window_ms // 60_000
        return "MINUTE" if n == 1 else f"{n} MINUTE"
    return f"{window_ms / 1000:g} SECOND"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default
