"""Exchange adapters: one small async interface, implemented on ccxt (live and simulator).

The engine above this file never sees a ccxt type. Requests go out and come back as the
dataclasses below, with exact ``Decimal`` quantities read from the exchange's own strings, and
every ccxt exception is translated once, in ``_translated``, into the ``core.errors`` type that
says what the caller should do.

This module and ``signals/market_data.py`` are the only ones that import ccxt. The paper
exchange (``execution/paper.py``) implements the same interface without sending anything.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, AsyncIterator, Iterable, Protocol

import ccxt.async_support as ccxt_async
from ccxt.base import errors as ccxt_errors
from loguru import logger

from core.config import ExchangeConfig, Secrets
from core.errors import (AuthenticationError, InsufficientFundsError, InvalidOrderError, OrderNotFoundError,
                         PermanentError, RetryableError)
from core.venue import ccxt_client_config, find_perpetual, point_at_local_exchange
from execution.rate_limit import Priority, RateGovernor, RateLimitedError, estimate_cost, request_path

ZERO = Decimal(0)


class ExchangeOrderStatus(str, Enum):
    """An order's state as the exchange reports it (ccxt's unified words)."""

    OPEN = "open"  # resting or partially filled, still working
    CLOSED = "closed"  # fully filled
    CANCELED = "canceled"
    EXPIRED = "expired"  # e.g. a market order's unfillable remainder
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self is not ExchangeOrderStatus.OPEN


class OrderStatusUnknownError(RetryableError):
    """The request may or may not have reached the exchange (timeout, dropped connection).

    Action: look the order up by its clientOrderId before doing anything else with it.
    """


@dataclass(frozen=True, slots=True)
class MarketRules:
    """Precision and limits of one market, exact."""

    symbol: str
    exchange_symbol: str  # e.g. BTCUSDT
    step_size: Decimal
    tick_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    max_qty: Decimal | None = None  # LOT_SIZE: limit orders
    max_market_qty: Decimal | None = None  # MARKET_LOT_SIZE: market orders (EOS: 200,000 vs 1,000,000)


@dataclass(frozen=True, slots=True)
class OrderState:
    """One order as the exchange last described it."""

    client_order_id: str
    exchange_order_id: str | None
    symbol: str
    side: str  # "buy" / "sell"
    order_type: str  # "market" / "limit"
    qty: Decimal
    filled: Decimal
    avg_price: Decimal | None
    status: ExchangeOrderStatus
    reduce_only: bool = False
    price: Decimal | None = None
    ts_ms: int | None = None

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled


@dataclass(frozen=True, slots=True)
class TradeFill:
    """One execution of an order, keyed by the exchange's trade id (fills are deduplicated on it)."""

    trade_id: str
    client_order_id: str | None
    exchange_order_id: str | None
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal  # in the settlement currency (USDT)
    ts_ms: int


@dataclass(frozen=True, slots=True)
class PositionInfo:
    symbol: str
    qty: Decimal  # signed: + long, - short
    entry_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    currency: str
    total: Decimal
    free: Decimal


@dataclass(slots=True)
class AdapterCounters:
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class ExchangeAdapter(Protocol):
    """What the engine needs from an exchange. Implemented by CcxtExchange and PaperExchange."""

    name: str
    sends_orders: bool
    recv_window_ms: int  # signed requests older than this are refused by the venue (0: none sent)

    async def load_markets(self) -> None: ...
    def rules(self, symbol: str) -> MarketRules: ...
    def resolve_symbol(self, raw: str) -> str: ...
    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal: ...
    def price_to_precision(self, symbol: str, price: Decimal) -> Decimal: ...
    async def fetch_balance(self) -> BalanceInfo: ...
    async def fetch_positions(self, symbols: Iterable[str]) -> dict[str, PositionInfo]: ...
    async def create_order(self, *, symbol: str, side: str, qty: Decimal, order_type: str, client_order_id: str,
                           price: Decimal | None = None, reduce_only: bool = False) -> OrderState: ...
    async def fetch_order(self, *, symbol: str, client_order_id: str) -> OrderState: ...
    async def cancel_order(self, *, symbol: str, client_order_id: str) -> OrderState: ...
    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]: ...
    async def fetch_order_fills(self, *, symbol: str, exchange_order_id: str) -> list[TradeFill]: ...
    async def set_leverage(self, symbol: str, leverage: int) -> None: ...
    async def set_margin_mode(self, symbol: str, mode: str) -> None: ...
    async def close(self) -> None: ...


# Most specific first: the first matching ccxt class decides the translation.
_TRANSLATION: tuple[tuple[type[BaseException], type[Exception]], ...] = (
    (ccxt_errors.OrderNotFound, OrderNotFoundError),
    (ccxt_errors.InsufficientFunds, InsufficientFundsError),
    (ccxt_errors.AuthenticationError, AuthenticationError),
    (ccxt_errors.InvalidOrder, InvalidOrderError),
    (ccxt_errors.BadSymbol, InvalidOrderError),
    (ccxt_errors.BadRequest, InvalidOrderError),
    (ccxt_errors.OperationRejected, InvalidOrderError),
    (ccxt_errors.NotSupported, PermanentError),
    (ccxt_errors.DDoSProtection, RateLimitedError),  # 429/418: refused before processing, nothing placed
    (ccxt_errors.RateLimitExceeded, RateLimitedError),
    (ccxt_errors.RequestTimeout, OrderStatusUnknownError),
    (ccxt_errors.NetworkError, RetryableError),
    (ccxt_errors.BadResponse, OrderStatusUnknownError),
    (ccxt_errors.OperationFailed, RetryableError),  # e.g. HTTP 500 / -1001: the server failed midway
    (ccxt_errors.ExchangeError, PermanentError),
    (ccxt_errors.BaseError, PermanentError),
)


def translate_ccxt_error(exc: BaseException, operation: str, context: str) -> Exception:
    """Map a ccxt exception onto ours. For requests that create state (``create_order``), any
    network failure means the outcome is unknown, so it becomes ``OrderStatusUnknownError``."""
    for ccxt_type, ours in _TRANSLATION:
        if isinstance(exc, ccxt_type):
            if operation == "create_order" and ours is RetryableError \
                    and not isinstance(exc, (ccxt_errors.DDoSProtection, ccxt_errors.InvalidNonce)):
                ours = OrderStatusUnknownError
            return ours(f"{operation} {context}: {type(exc).__name__}: {exc}")
    return PermanentError(f"{operation} {context}: {type(exc).__name__}: {exc}")


class CcxtExchange:
    """The live adapter on ccxt's async REST client (also what talks to the simulator)."""

    name = "ccxt"
    sends_orders = True

    def __init__(self, config: ExchangeConfig, secrets: Secrets | None, *,
                 governor: RateGovernor | None = None) -> None:
        self._config = config
        # No ccxt throttle here (see ExchangeConfig.enable_rate_limit): it would space the two
        # legs of an entry by an order's request weight, ~200 ms on Binance. The venue's own
        # limits are kept by the governor instead, around every HTTP request (_governed_class).
        client = ccxt_client_config(api_key=secrets.api_key if secrets else None,
                                    secret=secrets.api_secret if secrets else None,
                                    timeout_ms=config.request_timeout_ms, enable_rate_limit=False)
        self.governor = governor or RateGovernor(soft_fraction=config.rate_limit_soft_fraction,
                                                 max_wait_seconds=config.rate_limit_max_wait_seconds,
                                                 name=f"{config.id} orders")
        klass = _governed_class(getattr(ccxt_async, config.id))
        self._ex: Any = klass(client)
        self._ex.governor = self.governor
        # Every signed request carries this recvWindow; the resolver's horizon depends on it.
        self._ex.options["recvWindow"] = config.recv_window_ms
        self.recv_window_ms = config.recv_window_ms
        if config.base_url:
            point_at_local_exchange(self._ex, base_url=config.base_url, ws_url=config.ws_url)
        elif config.use_testnet:
            self._ex.set_sandbox_mode(True)
        self._rules: dict[str, MarketRules] = {}
        self.counters = AdapterCounters()

    @contextlib.asynccontextmanager
    async def _translated(self, operation: str, context: str = "", *,
                          priority: Priority = Priority.NORMAL) -> AsyncIterator[None]:
        """The one place ccxt exceptions become ours (STYLE.md habit 2); ``priority`` is what
        the rate governor gives every HTTP request of this call."""
        self.counters.requests += 1
        token = _PRIORITY.set((priority, f"{operation} {context}".strip()))
        try:
            yield
        except ccxt_errors.BaseError as exc:
            name = type(exc).__name__
            self.counters.errors[name] = self.counters.errors.get(name, 0) + 1
            raise translate_ccxt_error(exc, operation, context) from exc
        except RateLimitedError:
            self.counters.errors["RateLimitedError"] = self.counters.errors.get("RateLimitedError", 0) + 1
            raise
        finally:
            _PRIORITY.reset(token)

    async def load_markets(self) -> None:
        async with self._translated("load_markets"):
            await self._ex.load_markets()

    def resolve_symbol(self, raw: str) -> str:
        found = find_perpetual(self._ex.markets or {}, raw)
        if found is not None:
            return found
        raise InvalidOrderError(f"unknown market {raw!r} on {self._config.id}")

    def market_info(self, symbol: str) -> dict[str, Any]:
        """The venue's own description of the market (Binance: the exchangeInfo symbol object)."""
        return dict(self._ex.market(symbol).get("info") or {})

    def rules(self, symbol: str) -> MarketRules:
        cached = self._rules.get(symbol)
        if cached is not None:
            return cached
        market = self._ex.market(symbol)
        limits = market.get("limits") or {}
        precision = market.get("precision") or {}
        rules = MarketRules(
            symbol=symbol,
            exchange_symbol=market["id"],
            step_size=_dec(precision.get("amount")),
            tick_size=_dec(precision.get("price")),
            min_qty=_dec((limits.get("amount") or {}).get("min") or 0),
            min_notional=_dec((limits.get("cost") or {}).get("min") or 0),
            max_qty=_dec_or_none((limits.get("amount") or {}).get("max")),
            max_market_qty=_dec_or_none((limits.get("market") or {}).get("max")),
        )
        self._rules[symbol] = rules
        return rules

    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal:
        """Truncate to the lot step with ccxt's helper; below one step is an InvalidOrderError."""
        try:
            return Decimal(self._ex.amount_to_precision(symbol, str(qty)))
        except ccxt_errors.BaseError as exc:
            raise translate_ccxt_error(exc, "amount_to_precision", f"{symbol} {qty}") from exc

    def price_to_precision(self, symbol: str, price: Decimal) -> Decimal:
        try:
            return Decimal(self._ex.price_to_precision(symbol, str(price)))
        except ccxt_errors.BaseError as exc:
            raise translate_ccxt_error(exc, "price_to_precision", f"{symbol} {price}") from exc

    async def fetch_balance(self) -> BalanceInfo:
        async with self._translated("fetch_balance"):
            balance = await self._ex.fetch_balance()
        usdt = balance.get("USDT") or {}
        return BalanceInfo("USDT", _dec(usdt.get("total") or 0), _dec(usdt.get("free") or 0))

    async def fetch_positions(self, symbols: Iterable[str]) -> dict[str, PositionInfo]:
        wanted = list(symbols)
        async with self._translated("fetch_positions"):
            rows = await self._ex.fetch_positions(wanted or None)
        out: dict[str, PositionInfo] = {}
        for row in rows:
            info = row.get("info") or {}
            amount = info.get("positionAmt")
            qty = _dec(amount) if amount is not None else _signed_contracts(row)
            if qty != 0:
                out[row["symbol"]] = PositionInfo(row["symbol"], qty, _dec_or_none(info.get("entryPrice")))
        return out

    async def create_order(self, *, symbol: str, side: str, qty: Decimal, order_type: str, client_order_id: str,
                           price: Decimal | None = None, reduce_only: bool = False) -> OrderState:
        params: dict[str, Any] = {"newClientOrderId": client_order_id}
        if reduce_only:
            params["reduceOnly"] = True
        context = f"{symbol} {side} {qty} {order_type} cid={client_order_id}"
        async with self._translated("create_order", context,
                                    priority=Priority.URGENT if reduce_only else Priority.NORMAL):
            raw = await self._ex.create_order(symbol, order_type, side, str(qty),
                                              None if price is None else str(price), params)
        return self._order_state(raw, client_order_id)

    async def fetch_order(self, *, symbol: str, client_order_id: str) -> OrderState:
        async with self._translated("fetch_order", f"{symbol} cid={client_order_id}"):
            raw = await self._ex.fetch_order(None, symbol, {"origClientOrderId": client_order_id})
        return self._order_state(raw, client_order_id)

    async def cancel_order(self, *, symbol: str, client_order_id: str) -> OrderState:
        async with self._translated("cancel_order", f"{symbol} cid={client_order_id}", priority=Priority.URGENT):
            raw = await self._ex.cancel_order(None, symbol, {"origClientOrderId": client_order_id})
        return self._order_state(raw, client_order_id)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        async with self._translated("fetch_open_orders", symbol or "all"):
            rows = await self._ex.fetch_open_orders(symbol)
        return [self._order_state(r, r.get("clientOrderId") or "") for r in rows]

    async def fetch_order_fills(self, *, symbol: str, exchange_order_id: str) -> list[TradeFill]:
        async with self._translated("fetch_order_fills", f"{symbol} id={exchange_order_id}"):
            rows = await self._ex.fetch_my_trades(symbol, None, None, {"orderId": exchange_order_id})
        fills = []
        for r in rows:
            info = r.get("info") or {}
            fills.append(TradeFill(
                trade_id=str(r.get("id")), client_order_id=None, exchange_order_id=str(r.get("order")),
                symbol=r["symbol"], side=r["side"], qty=_dec(info.get("qty", r.get("amount"))),
                price=_dec(info.get("price", r.get("price"))),
                fee=_dec(info.get("commission", (r.get("fee") or {}).get("cost") or 0)),
                ts_ms=int(r.get("timestamp") or 0)))
        return fills

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        async with self._translated("set_leverage", f"{symbol} x{leverage}"):
            await self._ex.set_leverage(leverage, symbol)

    async def set_margin_mode(self, symbol: str, mode: str) -> None:
        """Set isolated/cross; "already set" is success, not an error."""
        try:
            async with self._translated("set_margin_mode", f"{symbol} {mode}"):
                await self._ex.set_margin_mode(mode, symbol)
        except PermanentError as exc:
            if isinstance(exc.__cause__, ccxt_errors.MarginModeAlreadySet) or "-4046" in str(exc):
                logger.debug("margin mode of {} already {}", symbol, mode)
                return
            raise

    async def close(self) -> None:
        await self._ex.close()

    def _order_state(self, raw: dict[str, Any], client_order_id: str) -> OrderState:
        info = raw.get("info") or {}
        qty = _dec(info.get("origQty", raw.get("amount")))
        filled = _dec(info.get("executedQty", raw.get("filled") or 0))
        avg = info.get("avgPrice", raw.get("average"))
        avg_price = _dec_or_none(avg)
        if avg_price is not None and avg_price == 0:
            avg_price = None
        status = _STATUS.get(raw.get("status") or "open", ExchangeOrderStatus.OPEN)
        return OrderState(
            client_order_id=raw.get("clientOrderId") or info.get("clientOrderId") or client_order_id,
            exchange_order_id=str(raw["id"]) if raw.get("id") is not None else None,
            symbol=raw.get("symbol") or "", side=(raw.get("side") or "").lower(),
            order_type=(raw.get("type") or "").lower(), qty=qty, filled=filled, avg_price=avg_price,
            status=status, reduce_only=bool(raw.get("reduceOnly")), price=_dec_or_none(info.get("price")),
            ts_ms=raw.get("timestamp"))


_STATUS = {s.value: s for s in ExchangeOrderStatus} | {"canceling": ExchangeOrderStatus.OPEN}

#: (priority, what) of the adapter call in progress in this task: read by ``_governed_class``.
_PRIORITY: contextvars.ContextVar[tuple[Priority, str]] = contextvars.ContextVar(
    "rate_priority", default=(Priority.NORMAL, ""))


def _governed_class(base: Any) -> Any:
    """A subclass of the ccxt class whose every HTTP request passes the rate governor.

    ``fetch2`` is where ccxt signs and sends one request: the governor is asked before the
    signature (a request that waits is signed with a fresh timestamp, never a stale one), and
    a request it refuses raises ``RateLimitedError`` before anything leaves. ``on_rest_response``
    sees every answer's status and headers, errors included, before ccxt raises for them (this
    request's own headers, unlike ``last_response_headers``, which concurrent requests share).
    ``exchangeInfo`` teaches the governor the account's limits (``rateLimits``).
    """

    class Governed(base):  # type: ignore[misc, valid-type]
        governor: RateGovernor | None = None

        async def fetch2(self, path: Any, api: Any = "public", method: str = "GET", params: Any = None,
                         config: Any = None) -> Any:
            params = {} if params is None else params
            config = {} if config is None else config
            if self.governor is not None:
                full = request_path(api, path)
                weight, orders = estimate_cost(method, full, params if isinstance(params, dict) else {})
                priority, what = _PRIORITY.get()
                await self.governor.acquire(priority=priority, weight=weight, orders=orders,
                                            what=what or f"{method} {full}")
            return await super().fetch2(path, api, method, params, config)

        def on_rest_response(self, code: Any, reason: Any, url: str, method: str, response_headers: Any,
                             response_body: Any, request_headers: Any, request_body: Any) -> Any:
            if self.governor is not None:
                self.governor.observe(int(code or 0), response_headers or {})
                if url.split("?")[0].endswith("/exchangeInfo") and int(code or 0) == 200:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        self.governor.learn_limits(json.loads(response_body).get("rateLimits") or [])
            return super().on_rest_response(code, reason, url, method, response_headers, response_body,
                                            request_headers, request_body)

    Governed.__name__ = f"Governed{base.__name__}"
    return Governed


def _dec(value: Any) -> Decimal:
    """Exact decimal from an exchange string (or a float through its shortest repr)."""
    if value is None:
        raise InvalidOrderError("missing numeric field in exchange response")
    try:
        return Decimal(value) if isinstance(value, str) else Decimal(repr(value)) if isinstance(value, float) \
            else Decimal(value)
    except InvalidOperation as exc:
        raise InvalidOrderError(f"not a number in exchange response: {value!r}") from exc


def _dec_or_none(value: Any) -> Decimal | None:
    return None if value in (None, "") else _dec(value)


def _signed_contracts(row: dict[str, Any]) -> Decimal:
    contracts = _dec(row.get("contracts") or 0)
    return -contracts if row.get("side") == "short" else contracts
