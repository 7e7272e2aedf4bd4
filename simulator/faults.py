"""Fault injection: what can go wrong between the bot and the exchange, on purpose and seeded.

``FaultConfig`` is the knob set (per run, changeable at run time through
``SimulatorServer.set_faults`` or ``POST /sim/faults``). ``FaultInjector`` makes the yes/no
decisions; the matching engine asks it for its share (rejects, the partial-fill coin's stream,
the position lag) through ``matching.engine.VenueFaults``. Each kind of fault draws from its
own ``random.Random(f"{seed}:{kind}")``, so turning one knob does not shift the random sequence
of another, and a run with the same seed and the same request sequence injects the same faults.
Changing the config reseeds every stream.

Knobs (probabilities are per event, in [0, 1]):

- ``partial_fill_probability``: a fill is cut to a random number of lot steps (fill model).
- ``reject_probability`` / ``reject_code``: a new order is refused before it is placed, with
  one of ``matching.errors.REJECT_CODES``.
- ``lost_response_probability``: the order IS placed, then the connection is dropped before
  the reply (the client sees a network error; the order exists).
- ``latency_ms`` + ``latency_jitter_ms``: added before every REST request is processed.
- ``http_error_probability`` / ``http_error_status``: a REST request fails with that status
  (429/418: Binance's -1003 body; 500: -1001 JSON; 502/503/504: a gateway's plain-text page).
  ``inject_http_errors(status, count)`` queues a burst of the next ``count`` requests.
- ``ws_disconnect_every_seconds``: every WebSocket connection is closed that often (wall time).
  ``refuse_subscriptions(count)`` answers the next ``count`` SUBSCRIBE requests with Binance's
  error reply (``{"error": {"code": 2, ...}}``), which ccxt raises as an ExchangeError.
- ``malformed_frame_probability`` / ``malformed_kinds``: a market frame is replaced by a broken
  one: ``nan_price``, ``zero_price``, ``crossed_book``, ``missing_fields`` (no bid fields),
  ``garbage_json`` (truncated JSON), ``not_json`` (plain text), ``stale`` (an old quote with
  an old event time re-sent).

Unknown order outcomes (``POST /fapi/v1/order`` only): what Binance does when the client cannot
know whether an order was executed. Each decision is seeded; the "applied" coins have streams
of their own, so changing one probability does not move the other draws. They are checked in
this order, the first that fires wins: lands late, 503, -1007, then (order placed) lost response.

- ``lands_late_probability`` + ``lands_late_ms``: the connection is dropped with no answer (as
  for a lost response) but the order is NOT placed now; it is placed ``lands_late_ms`` later
  (wall time). Until then a lookup by ``origClientOrderId`` answers -2013. Binance refuses a
  request processed after its ``timestamp + recvWindow`` (its matching engine checks the window
  too, -5028), so a late order landing after that deadline is never placed: that is what makes
  "not found after the horizon" final. A late order whose clientOrderId is then held by an OPEN
  order is refused with -4116, as any duplicate.
- ``unknown_503_probability`` + ``unknown_503_applied_probability`` (default 0.5): HTTP 503 with
  Binance's "Unknown error, please check your request or try again later." body (execution
  status unknown); the order was placed or not by the seeded coin.
- ``timeout_1007_probability`` + ``timeout_1007_applied_probability`` (default 0.5): HTTP 408
  with -1007 "Timeout waiting for response from backend server. Send status unknown; execution
  status unknown."; placed or not by the seeded coin.
- ``trade_lag_ms``: ``GET /fapi/v1/userTrades`` shows a trade only this long (wall time) after
  it was made; the order itself already reports its fills.
- ``market_delay_probability`` + ``market_delay_ms`` (default 200) +
  ``market_delay_partial_probability`` (default 0.5): a MARKET order is accepted and answered
  before it has executed, as Binance may answer one: status NEW with executedQty 0 or (by the
  second coin) PARTIALLY_FILLED with about half its lots, the rest of its fills following
  ``market_delay_ms`` later (wall time). A query meanwhile shows it as answered; a cancel before
  then cancels the remainder. Counted as ``market_delayed_new`` / ``market_delayed_partial``.
- ``position_lag_ms``: ``positionRisk`` (v2, v3) and the positions of ``account`` (v2, v3)
  report each position as it was this long ago (wall time); wallet and margin figures stay
  current.
- ``clock_skew_ms`` (may be negative): the server's clock runs this far ahead of the host's
  wall clock. It is the clock of ``/fapi/v1/time``, ``exchangeInfo.serverTime``, the
  ``timestamp``/``recvWindow`` check of every signed request (-1021 either way, as Binance:
  ``timestamp >= serverTime + 1000`` or ``serverTime - timestamp > recvWindow``) and the
  deadline of late orders. A client that signs with its own clock and never syncs fails every
  signed call once the skew exceeds 1 s (client ahead) or its recvWindow (client behind).

Counters (``FaultInjector.injected``): ``lands_late``, then one landing outcome per late order:
``late_order_landed``, ``late_order_expired``, ``late_order_duplicate`` (-4116),
``late_order_refused`` (any other rejection), ``late_order_dropped`` (server stopped or reset
first); ``unknown_503_applied`` / ``unknown_503_not_applied`` / ``unknown_503_refused`` (applied,
but the engine rejected it, so no order exists) and the same three for ``timeout_1007_*``.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from matching.errors import REJECT_CODES

MALFORMED_KINDS: tuple[str, ...] = (
    "nan_price",
    "zero_price",
    "crossed_book",
    "missing_fields",
    "garbage_json",
    "not_json",
    "stale",
)
HTTP_ERROR_STATUSES: tuple[int, ...] = (418, 429, 500, 502, 503, 504)
PROBABILITY_FIELDS: tuple[str, ...] = (
    "partial_fill_probability", "reject_probability", "lost_response_probability",
    "http_error_probability", "malformed_frame_probability", "lands_late_probability",
    "unknown_503_probability", "unknown_503_applied_probability", "timeout_1007_probability",
    "timeout_1007_applied_probability", "market_delay_probability", "market_delay_partial_probability",
)
INT_FIELDS: frozenset[str] = frozenset({
    "seed", "reject_code", "latency_ms", "latency_jitter_ms", "http_error_status",
    "lands_late_ms", "trade_lag_ms", "position_lag_ms", "clock_skew_ms", "market_delay_ms",
})


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Every fault knob; the defaults inject nothing."""

    seed: int = 0
    partial_fill_probability: float = 0.0
    reject_probability: float = 0.0
    reject_code: int = -1008
    lost_response_probability: float = 0.0
    latency_ms: int = 0
    latency_jitter_ms: int = 0
    http_error_probability: float = 0.0
    http_error_status: int = 429
    ws_disconnect_every_seconds: float = 0.0
    malformed_frame_probability: float = 0.0
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    lands_late_probability: float = 0.0
    lands_late_ms: int = 300
    unknown_503_probability: float = 0.0
    unknown_503_applied_probability: float = 0.5
    timeout_1007_probability: float = 0.0
    timeout_1007_applied_probability: float = 0.5
    trade_lag_ms: int = 0
    position_lag_ms: int = 0
    clock_skew_ms: int = 0
    market_delay_probability: float = 0.0
    market_delay_ms: int = 200
    market_delay_partial_probability: float = 0.5

    def __post_init__(self) -> None:
        for name in PROBABILITY_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} = {value!r}: expected a probability within [0, 1]")
        if self.reject_code not in REJECT_CODES:
            raise ValueError(f"reject_code = {self.reject_code}: expected one of {REJECT_CODES}")
        if self.http_error_status not in HTTP_ERROR_STATUSES:
            raise ValueError(
                f"http_error_status = {self.http_error_status}: expected one of "
                f"{HTTP_ERROR_STATUSES}"
            )
        if self.latency_ms < 0 or self.latency_jitter_ms < 0:
            raise ValueError("latency_ms and latency_jitter_ms must be >= 0")
        for name in ("lands_late_ms", "trade_lag_ms", "position_lag_ms", "market_delay_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} = {getattr(self, name)!r}: must be >= 0")
        if self.ws_disconnect_every_seconds < 0:
            raise ValueError("ws_disconnect_every_seconds must be >= 0 (0 = never)")
        unknown = set(self.malformed_kinds) - set(MALFORMED_KINDS)
        if unknown or not self.malformed_kinds:
            raise ValueError(
                f"malformed_kinds = {self.malformed_kinds!r}: expected a non-empty subset of "
                f"{MALFORMED_KINDS}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: FaultConfig | None = None) -> FaultConfig:
        """``base`` (default: no faults) with the keys of ``data`` changed.

        Raises ``ValueError`` naming an unknown key or a bad value, so the admin endpoint and
        the CLI can report it in one line.
        """
        start = base or cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(names)}")
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "malformed_kinds":
                if isinstance(value, str):
                    value = tuple(v.strip() for v in value.split(",") if v.strip())
                changes[key] = tuple(value)
            elif key in INT_FIELDS:
                changes[key] = _as_int(key, value)
            else:
                changes[key] = _as_float(key, value)
        return dataclasses.replace(start, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["malformed_kinds"] = list(self.malformed_kinds)
        return data


class FaultInjector:
    """Seeded decisions for every fault kind, plus counters of what was injected."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._config = config or FaultConfig()
        self._streams: dict[str, random.Random] = {}
        self._burst: list[int] = []
        self._refused_subscriptions = 0
        self.injected: Counter[str] = Counter()
        self._reseed()

    @property
    def config(self) -> FaultConfig:
        return self._config

    def update(self, config: FaultConfig) -> None:
        """Switch to ``config`` and reseed every stream from its seed."""
        self._config = config
        self._reseed()

    def set_clock_skew(self, skew_ms: int) -> None:
        """Move the server clock without reseeding the random streams (a clock step is not a
        draw: a run that steps it keeps the same reject/lost/partial sequence)."""
        self._config = dataclasses.replace(self._config, clock_skew_ms=int(skew_ms))

    def inject_http_errors(self, status: int, count: int) -> None:
        """Make the next ``count`` REST requests fail with ``status`` (a burst)."""
        if status not in HTTP_ERROR_STATUSES:
            raise ValueError(f"status {status}: expected one of {HTTP_ERROR_STATUSES}")
        if count < 0:
            raise ValueError("count must be >= 0")
        self._burst.extend([status] * count)

    @property
    def pending_http_errors(self) -> int:
        """How many queued burst failures have not hit a request yet."""
        return len(self._burst)

    def refuse_subscriptions(self, count: int) -> None:
        """Answer the next ``count`` WebSocket SUBSCRIBE requests with an error, as Binance does
        for a stream it will not serve (ccxt raises an ExchangeError to the watch call)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        self._refused_subscriptions = count

    def refuse_subscription(self) -> bool:
        if self._refused_subscriptions > 0:
            self._refused_subscriptions -= 1
            self.injected["subscription_refused"] += 1
            return True
        return False

    def http_error(self) -> int | None:
        """The status to fail this REST request with, or None."""
        if self._burst:
            self.injected[f"http_{self._burst[0]}"] += 1
            return self._burst.pop(0)
        if self._chance("http", self._config.http_error_probability):
            self.injected[f"http_{self._config.http_error_status}"] += 1
            return self._config.http_error_status
        return None

    def latency_seconds(self) -> float:
        base, jitter = self._config.latency_ms, self._config.latency_jitter_ms
        if base == 0 and jitter == 0:
            return 0.0
        extra = self._streams["latency"].random() * jitter if jitter else 0.0
        return (base + extra) / 1000.0

    def reject_order(self) -> int | None:
        """The Binance error code to refuse this new order with, or None."""
        if self._chance("reject", self._config.reject_probability):
            self.injected["order_rejected"] += 1
            return self._config.reject_code
        return None

    def lose_response(self) -> bool:
        if self._chance("lost", self._config.lost_response_probability):
            self.injected["response_lost"] += 1
            return True
        return False

    def land_late(self) -> bool:
        """Whether this new order is dropped now and placed ``lands_late_ms`` later."""
        if self._chance("lands_late", self._config.lands_late_probability):
            self.injected["lands_late"] += 1
            return True
        return False

    def delay_market_fill(self) -> bool | None:
        """For a new MARKET order: None (executes at once), False (answered NEW, fills later) or
        True (answered PARTIALLY_FILLED, the rest later)."""
        if not self._chance("market_delay", self._config.market_delay_probability):
            return None
        partial = self._chance("market_delay_partial", self._config.market_delay_partial_probability)
        self.injected["market_delayed_partial" if partial else "market_delayed_new"] += 1
        return partial

    @property
    def market_delay_seconds(self) -> float:
        return self._config.market_delay_ms / 1000.0

    @property
    def lands_late_seconds(self) -> float:
        return self._config.lands_late_ms / 1000.0

    def unknown_outcome(self) -> tuple[str, bool] | None:
        """``(kind, applied)`` when this new order's answer says "execution status unknown".

        ``kind`` is ``unknown_503`` or ``timeout_1007`` (checked in that order); ``applied``
        is that kind's seeded coin: whether the venue places the order behind the error. The
        caller counts the outcome (``record``), since only placing tells applied from refused.
        """
        config = self._config
        for kind, probability, applied_probability in (
            ("unknown_503", config.unknown_503_probability,
             config.unknown_503_applied_probability),
            ("timeout_1007", config.timeout_1007_probability,
             config.timeout_1007_applied_probability),
        ):
            if self._chance(kind, probability):
                return kind, self._chance(f"{kind}_applied", applied_probability)
        return None

    def record(self, name: str) -> None:
        """Count an injected fault whose outcome only the caller knows."""
        self.injected[name] += 1

    @property
    def trade_lag_ms(self) -> int:
        return self._config.trade_lag_ms

    @property
    def position_lag_ms(self) -> int:
        return self._config.position_lag_ms

    @property
    def clock_skew_ms(self) -> int:
        return self._config.clock_skew_ms

    @property
    def partial_fill_probability(self) -> float:
        return self._config.partial_fill_probability

    def malformed_kind(self) -> str | None:
        """Which broken frame to send instead of the next market frame, or None."""
        probability = self._config.malformed_frame_probability
        if probability <= 0.0:
            return None
        stream = self._streams["frames"]
        if stream.random() >= probability:
            return None
        kind = self._config.malformed_kinds[stream.randrange(len(self._config.malformed_kinds))]
        self.injected[f"frame_{kind}"] += 1
        return kind

    def fill_rng(self) -> random.Random:
        """The stream the fill model draws partial-fill decisions from."""
        return self._streams["fills"]

    def _chance(self, kind: str, probability: float) -> bool:
        if probability <= 0.0:
            return False
        return self._streams[kind].random() < probability

    def _reseed(self) -> None:
        seed = self._config.seed
        self._streams = {
            kind: random.Random(f"{seed}:{kind}")
            for kind in ("http", "latency", "reject", "lost", "frames", "fills", "lands_late",
                         "unknown_503", "unknown_503_applied", "timeout_1007",
                         "timeout_1007_applied", "market_delay", "market_delay_partial")
        }


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{key} = {value!r}: expected an integer")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{key} = {value!r}: expected an integer") from None


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key} = {value!r}: expected a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{key} = {value!r}: expected a number") from None
