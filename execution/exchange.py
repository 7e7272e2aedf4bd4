"""Exchange adapters: one small async interface, implemented on ccxt (live and simulator).

The engine above this file never sees a ccxt type. Requests go out and come back as the
dataclasses below, with exact ``Decimal`` quantities read from the exchange's own strings, and
every ccxt exception is translated once, in ``_translated``, into the ``core.errors`` type that
says what the caller should do.

This module and ``signals/market_data.py`` are the only ones that import ccxt. The paper
exchange (``execution/paper.py``) implements the same interface without sending anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Protocol, TypeVar

import ccxt.async_support as ccxt_async
from ccxt.base import errors as ccxt_errors
from loguru import logger

from core.config import ExchangeConfig, Secrets
from core.errors import (AccountSetupError, AuthenticationError, InsufficientFundsError, InvalidOrderError,
                         OrderNotFoundError, PermanentError, RetryableError)
from core.venue import ccxt_client_config, find_perpetual, point_at_local_exchange
from execution.rate_limit import Priority, RateGovernor, RateLimitedError, estimate_cost, request_path

ZERO = Decimal(0)
T = TypeVar("T")
_BINANCE_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')
#: Binance refuses a margin-type change while the symbol has open orders (-4047) or a position (-4048).
_MARGIN_TYPE_LOCKED = {-4047: "open orders", -4048: "a position"}
#: Binance: isolated margin cannot be set in Multi-Assets mode.
_ISOLATED_IN_MULTI_ASSETS = -4168


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
    fee: Decimal  # in the settlement currency (USDT): what PnL uses
    ts_ms: int
    fee_asset: str = "USDT"  # the asset the venue charged (commissionAsset), e.g. BNB
    fee_native: Decimal | None = None  # the fee in ``fee_asset`` when that is not USDT


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """One funding payment of the account (Binance income FUNDING_FEE), keyed by the venue's id.

    ``amount`` is signed USDT: negative paid, positive received.
    """

    payment_id: str
    symbol: str
    amount: Decimal
    asset: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class FundingRateInfo:
    """The current funding rate of a perpetual (``premiumIndex``) and when it is next applied."""

    symbol: str
    rate: Decimal
    mark_price: Decimal | None
    next_funding_ms: int | None


@dataclass(frozen=True, slots=True)
class FeeRates:
    """Maker and taker fee rates (fractions of notional); ``source`` says where they came from."""

    maker: Decimal
    taker: Decimal
    source: str  # "account" (the venue's commissionRate), "market" (ccxt's market entry) or "config"


@dataclass(frozen=True, slots=True)
class PositionInfo:
    symbol: str
    qty: Decimal  # signed: + long, - short
    entry_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class LeverageBracket:
    """One notional tier of a symbol (Binance "Notional and Leverage Brackets"), exact.

    A position whose notional is in [notional_floor, notional_cap) may use up to
    ``initial_leverage``; its maintenance margin is ``notional * maint_margin_ratio - cum``.
    """

    bracket: int
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal
    maint_margin_ratio: Decimal
    cum: Decimal


@dataclass(frozen=True, slots=True)
class AccountModes:
    """The account-wide settings the bot depends on (read at start)."""

    hedge_mode: bool  # Binance dualSidePosition: LONG and SHORT positions side by side
    multi_assets: bool  # Binance Multi-Assets mode: cross margin only


HEDGE_MODE_REFUSAL = (
    "startup refused: the account is in hedge mode (dualSidePosition); pairs-bot needs one-way mode: "
    "Binance Futures > Preferences > Position Mode > One-way, or POST /fapi/v1/positionSide/dual "
    "dualSidePosition=false (allowed only with no position and no open order on any symbol)")
MULTI_ASSETS_ISOLATED_REFUSAL = (
    "startup refused: the account is in Multi-Assets mode, where Binance allows cross margin only "
    "(-4168), and exchange.margin_mode is \"isolated\": set exchange.margin_mode to \"cross\" in "
    "config.json, or switch to Single-Asset mode: Binance Futures > Preferences > Asset Mode > "
    "Single-Asset Mode, or POST /fapi/v1/multiAssetsMargin multiAssetsMargin=false")


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
    clock_sync_interval_seconds: float  # how often the engine calls sync_clock (0: only at start)

    async def load_markets(self, *, reload: bool = False) -> None: ...
    def is_trading(self, symbol: str) -> bool: ...
    async def sync_clock(self) -> int: ...
    def exchange_now_ms(self) -> int: ...
    async def fetch_account_modes(self) -> AccountModes: ...
    async def load_leverage_brackets(self, symbols: Iterable[str]) -> None: ...
    def leverage_brackets(self, symbol: str) -> tuple[LeverageBracket, ...]: ...
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
    async def fetch_recent_orders(self, symbol: str, since_ms: int | None = None) -> list[OrderState]: ...
    async def fetch_funding_payments(self, symbol: str, since_ms: int) -> list[FundingPayment]: ...
    async def fetch_fee_rates(self, symbol: str) -> FeeRates: ...
    async def set_leverage(self, symbol: str, leverage: int) -> None: ...
    async def set_margin_mode(self, symbol: str, mode: str) -> str: ...
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
                 governor: RateGovernor | None = None, client_throttle: bool = False) -> None:
        self._config = config
        # No ccxt throttle for orders (see ExchangeConfig.enable_rate_limit): it would space the
        # two legs of an entry by an order's request weight, ~200 ms on Binance. The venue's own
        # limits are kept by the governor instead, around every HTTP request (_governed_class).
        # ``client_throttle``: a market-data-only client (the downloader) may pace itself too.
        client = ccxt_client_config(api_key=secrets.api_key if secrets else None,
                                    secret=secrets.api_secret if secrets else None,
                                    timeout_ms=config.request_timeout_ms, enable_rate_limit=client_throttle)
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
        # ccxt signs with milliseconds() - options['timeDifference'] (binance nonce()); we measure
        # the difference ourselves (sync_clock) rather than through adjustForTimeDifference.
        self._ex.options["adjustForTimeDifference"] = False
        self._ex.options["timeDifference"] = 0
        self.clock_sync_interval_seconds = config.clock_sync_interval_seconds
        self.clock_offset_ms = 0  # this machine's clock minus the exchange's, as last measured
        self.clock_syncs = 0
        self._sync_lock = asyncio.Lock()
        self._rules: dict[str, MarketRules] = {}
        self._brackets: dict[str, tuple[LeverageBracket, ...]] = {}
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

    async def _signed(self, operation: str, context: str, request: Callable[[], Awaitable[T]], *,
                      priority: Priority = Priority.NORMAL) -> T:
        """One signed request, translated. A -1021 (ccxt InvalidNonce: the timestamp is outside
        recvWindow by the exchange's clock) re-measures the clock offset and sends the same
        request once more; any other error, or a second -1021, goes to the caller unchanged.

        Safe for create_order too: Binance checks timestamp and recvWindow before it processes
        a request ("SIGNED Endpoint Security", timing security, in the USD-M "General Info"), so
        a -1021 means the order was NOT accepted, and sending it again under the same
        clientOrderId cannot double it."""
        generation = self.clock_syncs
        try:
            async with self._translated(operation, context, priority=priority):
                return await request()
        except RetryableError as exc:
            if not isinstance(exc.__cause__, ccxt_errors.InvalidNonce):
                raise
            first = exc
        before = self.clock_offset_ms
        async with self._sync_lock:  # both legs may meet it at once: measure once
            if self.clock_syncs == generation:
                await self._measure_clock()
        logger.warning("{} refused with -1021 (timestamp outside recvWindow: {}); clock re-synced, this "
                       "machine is {} (was {}); sending it again", f"{operation} {context}".strip(), _ccxt_text(first),
                       offset_text(self.clock_offset_ms), offset_text(before))
        async with self._translated(operation, context, priority=priority):
            return await request()

    async def sync_clock(self) -> int:
        """Measure this machine's clock against the exchange's (GET /fapi/v1/time); returns
        the offset in ms (local minus exchange). Signed requests carry the exchange's time."""
        async with self._sync_lock:
            return await self._measure_clock()

    async def _measure_clock(self) -> int:
        # The midpoint of the round trip, not ccxt's load_time_difference (which takes the reply's
        # arrival time and so errs by a whole round trip): the error is at most half of it.
        # Urgent: without the clock nothing signed can be sent, exits and rollbacks included; the
        # request weighs 1, so it waits for the rate limit rather than being given up.
        async with self._translated("sync_clock", priority=Priority.URGENT):
            sent = self._ex.milliseconds()
            server = await self._ex.fetch_time()
            received = self._ex.milliseconds()
        if server is None:
            raise RetryableError("sync_clock: the exchange sent no serverTime")
        offset = (sent + received) // 2 - int(server)
        self._ex.options["timeDifference"] = offset
        self.clock_offset_ms = offset
        self.clock_syncs += 1
        return offset

    def exchange_now_ms(self) -> int:
        """Now by the exchange's clock, as last measured: the time ccxt signs requests with."""
        return int(self._ex.milliseconds()) - int(self._ex.options.get("timeDifference") or 0)

    async def load_markets(self, *, reload: bool = False) -> None:
        """Read exchangeInfo (``reload``: again, for changed filters and statuses); the cached
        ``rules`` are dropped after a reload, so the next order is checked against the new ones."""
        async with self._translated("load_markets"):
            await self._ex.load_markets(reload)
        if reload:
            self._rules.clear()

    def is_trading(self, symbol: str) -> bool:
        """Whether the venue trades ``symbol`` now (Binance: exchangeInfo ``status`` TRADING,
        which ccxt reads as ``market['active']``); False for a market that is gone."""
        market = (self._ex.markets or {}).get(symbol)
        return market is not None and market.get("active") is not False

    async def fetch_account_modes(self) -> AccountModes:
        """Position mode (GET /fapi/v1/positionSide/dual) and Multi-Assets mode
        (GET /fapi/v1/multiAssetsMargin) of the account."""
        position = await self._signed("fetch_position_mode", "", lambda: self._ex.fetch_position_mode())
        assets = await self._signed("fetch_multi_assets_mode", "",
                                    lambda: self._ex.fapiPrivateGetMultiAssetsMargin())
        return AccountModes(hedge_mode=_truthy(position.get("hedged")),
                            multi_assets=_truthy((assets or {}).get("multiAssetsMargin")))

    async def load_leverage_brackets(self, symbols: Iterable[str]) -> None:
        """Read the notional brackets (GET /fapi/v1/leverageBracket) of ``symbols``, exact, from
        the exchange's own fields; ``leverage_brackets(symbol)`` serves them afterwards."""
        wanted = list(symbols)
        tiers = await self._signed("load_leverage_brackets", ",".join(wanted),
                                   lambda: self._ex.fetch_leverage_tiers(wanted or None))
        for symbol, rows in (tiers or {}).items():
            self._brackets[symbol] = tuple(sorted((_bracket(r.get("info") or {}) for r in rows),
                                                  key=lambda b: b.notional_floor))

    def leverage_brackets(self, symbol: str) -> tuple[LeverageBracket, ...]:
        """The symbol's brackets, lowest notional first (empty before ``load_leverage_brackets``)."""
        return self._brackets.get(symbol, ())

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
        balance = await self._signed("fetch_balance", "", lambda: self._ex.fetch_balance())
        usdt = balance.get("USDT") or {}
        return BalanceInfo("USDT", _dec(usdt.get("total") or 0), _dec(usdt.get("free") or 0))

    async def fetch_positions(self, symbols: Iterable[str]) -> dict[str, PositionInfo]:
        wanted = list(symbols)
        rows = await self._signed("fetch_positions", ",".join(wanted), lambda: self._ex.fetch_positions(wanted or None))
        out: dict[str, PositionInfo] = {}
        for row in rows:
            info = row.get("info") or {}
            amount = info.get("positionAmt")
            qty = _dec(amount) if amount is not None else _signed_contracts(row)
            if qty == 0:
                continue
            held = out.get(row["symbol"])
            if held is not None:  # hedge mode: LONG and SHORT rows of one symbol net, never overwrite
                qty += held.qty
            out[row["symbol"]] = PositionInfo(row["symbol"], qty, _dec_or_none(info.get("entryPrice")))
        return out

    async def create_order(self, *, symbol: str, side: str, qty: Decimal, order_type: str, client_order_id: str,
                           price: Decimal | None = None, reduce_only: bool = False) -> OrderState:
        params: dict[str, Any] = {"newClientOrderId": client_order_id}
        if reduce_only:
            params["reduceOnly"] = True
        context = f"{symbol} {side} {qty} {order_type} cid={client_order_id}"
        # A -1021 is sent again after a clock re-sync, under the same clientOrderId (see _signed).
        raw = await self._signed("create_order", context, lambda: self._ex.create_order(
            symbol, order_type, side, str(qty), None if price is None else str(price), dict(params)),
            priority=Priority.URGENT if reduce_only else Priority.NORMAL)
        return self._order_state(raw, client_order_id)

    async def fetch_order(self, *, symbol: str, client_order_id: str) -> OrderState:
        # Urgent: a lookup is how an unknown outcome becomes a fact (docs/architecture.md, "Order
        # outcomes"); given up behind the rate limit, it leaves the pair RESOLVING and its hedge
        # unknown. Urgent requests still wait out every Retry-After and ban.
        raw = await self._signed("fetch_order", f"{symbol} cid={client_order_id}", lambda: self._ex.fetch_order(
            None, symbol, {"origClientOrderId": client_order_id}), priority=Priority.URGENT)
        return self._order_state(raw, client_order_id)

    async def cancel_order(self, *, symbol: str, client_order_id: str) -> OrderState:
        raw = await self._signed("cancel_order", f"{symbol} cid={client_order_id}", lambda: self._ex.cancel_order(
            None, symbol, {"origClientOrderId": client_order_id}), priority=Priority.URGENT)
        return self._order_state(raw, client_order_id)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        rows = await self._signed("fetch_open_orders", symbol or "all", lambda: self._ex.fetch_open_orders(symbol))
        return [self._order_state(r, r.get("clientOrderId") or "") for r in rows]

    async def fetch_order_fills(self, *, symbol: str, exchange_order_id: str) -> list[TradeFill]:
        rows = await self._signed("fetch_order_fills", f"{symbol} id={exchange_order_id}",  # urgent: as fetch_order
                                  lambda: self._ex.fetch_my_trades(symbol, None, None, {"orderId": exchange_order_id}),
                                  priority=Priority.URGENT)
        fills = []
        for r in rows:
            info = r.get("info") or {}
            native = _dec(info.get("commission", (r.get("fee") or {}).get("cost") or 0))
            asset = str(info.get("commissionAsset") or (r.get("fee") or {}).get("currency") or "USDT").upper()
            ts_ms = int(r.get("timestamp") or 0)
            fee = native if asset == "USDT" else await self._fee_in_usdt(asset, native, ts_ms)
            fills.append(TradeFill(
                trade_id=str(r.get("id")), client_order_id=None, exchange_order_id=str(r.get("order")),
                symbol=r["symbol"], side=r["side"], qty=_dec(info.get("qty", r.get("amount"))),
                price=_dec(info.get("price", r.get("price"))), fee=fee, ts_ms=ts_ms,
                fee_asset=asset, fee_native=None if asset == "USDT" else native))
        return fills

    async def _fee_in_usdt(self, asset: str, amount: Decimal, at_ms: int) -> Decimal:
        """A fee charged in ``asset`` (BNB) as USDT at that asset's price at the fill (8 decimals):
        the open of ``<ASSET>USDT``'s 1-minute kline holding ``at_ms``, or, where the venue has
        no such kline (the simulator's configured BNB price), its price now. Without a price the
        fill cannot be booked: the error is retryable, never a zero fee."""
        pair = f"{asset}USDT"
        price: Decimal | None = None
        try:
            async with self._translated("fetch_fee_price", f"{pair} kline at {at_ms}"):
                rows = await self._ex.fapiPublicGetKlines({"symbol": pair, "interval": "1m",
                                                          "startTime": at_ms - at_ms % 60_000, "limit": 1})
            if rows and rows[0] and int(rows[0][0]) <= at_ms:
                price = _dec_or_none(rows[0][1])
        except PermanentError as exc:
            logger.debug("no {} kline at {} ({}); converting the fee at its price now", pair, at_ms, exc)
        if price is None:
            async with self._translated("fetch_fee_price", pair):
                row = await self._ex.fapiPublicGetTickerPrice({"symbol": pair})
            price = _dec_or_none(row.get("price") if isinstance(row, dict) else None)
        if price is None or price <= 0:
            raise RetryableError(f"fee in {asset}: no {pair} price to convert it to USDT")
        return (amount * price).quantize(Decimal("1E-8"))

    async def fetch_funding_payments(self, symbol: str, since_ms: int) -> list[FundingPayment]:
        """The account's funding payments on ``symbol`` from ``since_ms`` (income FUNDING_FEE)."""
        async with self._translated("fetch_funding_payments", f"{symbol} since={since_ms}"):
            rows = await self._ex.fetch_funding_history(symbol, since_ms, 1000)
        out = []
        for r in rows:
            info = r.get("info") or {}
            out.append(FundingPayment(payment_id=str(r.get("id") or info.get("tranId")), symbol=symbol,
                                      amount=_dec(info.get("income", r.get("amount"))),
                                      asset=str(info.get("asset") or r.get("code") or "USDT"),
                                      ts_ms=int(r.get("timestamp") or info.get("time") or 0)))
        return out

    async def fetch_funding_rate(self, symbol: str) -> FundingRateInfo:
        """The perpetual's current funding rate, mark price and next funding time (premiumIndex)."""
        async with self._translated("fetch_funding_rate", symbol):
            raw = await self._ex.fetch_funding_rate(symbol)
        info = raw.get("info") or {}
        next_ms = info.get("nextFundingTime", raw.get("fundingTimestamp"))
        return FundingRateInfo(symbol=symbol, rate=_dec(info.get("lastFundingRate", raw.get("fundingRate"))),
                               mark_price=_dec_or_none(info.get("markPrice", raw.get("markPrice"))),
                               next_funding_ms=None if next_ms in (None, "") else int(next_ms))

    async def fetch_fee_rates(self, symbol: str) -> FeeRates:
        """The account's own fee rates (``GET /fapi/v1/commissionRate``), else the market's."""
        try:
            async with self._translated("fetch_fee_rates", symbol):
                raw = await self._ex.fetch_trading_fee(symbol)
            info = raw.get("info") or {}
            return FeeRates(_dec(info.get("makerCommissionRate", raw.get("maker"))),
                            _dec(info.get("takerCommissionRate", raw.get("taker"))), "account")
        except (PermanentError, RetryableError) as exc:
            market = self._ex.market(symbol)
            logger.warning("fee rates of {}: the account's are unavailable ({}); using the market's", symbol, exc)
            return FeeRates(_dec(market.get("maker")), _dec(market.get("taker")), "market")

    async def fetch_recent_orders(self, symbol: str, since_ms: int | None = None) -> list[OrderState]:
        """Every order of the account on ``symbol`` since ``since_ms`` (Binance ``allOrders``),
        the venue's own included: a liquidation (clientOrderId ``autoclose-...``, type
        LIQUIDATION) or an auto-deleveraging (``adl_autoclose``) is one of them."""
        rows = await self._signed("fetch_recent_orders", symbol, lambda: self._ex.fetch_orders(symbol, since_ms))
        return [self._order_state(r, r.get("clientOrderId") or "") for r in rows]

    # -- history for research (``python main.py download``) -----------------------------------
    def usdt_perpetuals(self) -> dict[str, str]:
        """Unified symbol -> exchange id of every trading USDT-margined linear perpetual."""
        return {s: m["id"] for s, m in (self._ex.markets or {}).items()
                if m.get("swap") and m.get("linear") and m.get("settle") == "USDT"
                and m.get("quote") == "USDT" and m.get("active") is not False}

    async def fetch_klines(self, symbol: str, timeframe: str, *, start_ms: int | None = None,
                           end_ms: int | None = None, limit: int = 1000) -> list[list[Any]]:
        """Binance kline rows as the venue sent them (prices as text: nothing is rounded through
        floats). ``start_ms`` only: the first ``limit`` from there; ``end_ms`` only: the last
        ``limit`` up to it (open times, inclusive)."""
        request: dict[str, Any] = {"symbol": self._ex.market(symbol)["id"], "interval": timeframe,
                                   "limit": limit}
        if start_ms is not None:
            request["startTime"] = start_ms
        if end_ms is not None:
            request["endTime"] = end_ms
        async with self._translated("fetch_klines", f"{symbol} {timeframe} {start_ms}..{end_ms}"):
            rows = await self._ex.fapiPublicGetKlines(request)
        return list(rows or [])

    async def fetch_quote_volumes(self) -> dict[str, Decimal]:
        """24h quote volume (USDT) of every USDT perpetual, from one ``ticker/24hr`` (weight 40)."""
        ids = {i: s for s, i in self.usdt_perpetuals().items()}
        async with self._translated("fetch_quote_volumes"):
            rows = await self._ex.fapiPublicGetTicker24hr()
        return {ids[r["symbol"]]: _dec(r.get("quoteVolume") or 0) for r in rows or []
                if isinstance(r, dict) and r.get("symbol") in ids}

    async def market_clock_ms(self, symbols: Iterable[str]) -> int:
        """The clock that says which candle is still open: the earlier of the server time and
        the newest book-ticker time of ``symbols``. On Binance both agree; a replaying venue
        (the simulator) signs on the wall clock but runs its market on the replay's, and an
        earlier clock can only keep a closed candle out for the next run, never let an open in."""
        async with self._translated("market_clock"):
            server = int(await self._ex.fetch_time())
            tickers = await self._ex.fetch_bids_asks(list(symbols))
        stamps = [int(t["timestamp"]) for t in (tickers or {}).values() if t.get("timestamp")]
        return min([server, max(stamps)] if stamps else [server])

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        await self._signed("set_leverage", f"{symbol} x{leverage}", lambda: self._ex.set_leverage(leverage, symbol))

    async def set_margin_mode(self, symbol: str, mode: str) -> str:
        """Set isolated/cross; returns the mode the symbol trades in from now on.

        "Already set" (-4046) is success. A change Binance refuses because the symbol has a
        position (-4048) or open orders (-4047), necessarily in the other margin type, keeps that
        type: one WARNING line, and the other mode is returned (e.g. ``run --adopt`` of a position
        the user opened in cross margin). Isolated in Multi-Assets mode (-4168) cannot be
        worked around: ``AccountSetupError``."""
        try:
            await self._signed("set_margin_mode", f"{symbol} {mode}", lambda: self._ex.set_margin_mode(mode, symbol))
        except PermanentError as exc:
            code = _binance_code(exc)
            if isinstance(exc.__cause__, ccxt_errors.MarginModeAlreadySet) or code == -4046:
                logger.debug("margin mode of {} already {}", symbol, mode)
                return mode
            if code in _MARGIN_TYPE_LOCKED:
                kept = "cross" if mode == "isolated" else "isolated"
                logger.warning("{} keeps its {} margin: Binance refuses to change the margin type while the symbol "
                               "has {} ({}); going on with {} margin for it", symbol, kept,
                               _MARGIN_TYPE_LOCKED[code], code, kept)
                return kept
            if code == _ISOLATED_IN_MULTI_ASSETS:
                raise AccountSetupError(MULTI_ASSETS_ISOLATED_REFUSAL) from exc
            raise
        return mode

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


def _binance_code(exc: BaseException) -> int | None:
    """Binance's numeric error code in a translated error (ccxt keeps the body in its text)."""
    for text in (str(exc.__cause__ or ""), str(exc)):
        match = _BINANCE_CODE.search(text)
        if match:
            return int(match.group(1))
    return None


def _ccxt_text(exc: BaseException) -> str:
    match = re.search(r'"msg"\s*:\s*"([^"]*)"', str(exc.__cause__ or exc))
    return match.group(1) if match else type(exc.__cause__ or exc).__name__


def offset_text(offset_ms: int) -> str:
    """How this machine's clock stands to the exchange's, in words (offset: local minus exchange)."""
    if offset_ms == 0:
        return "in step with the exchange"
    return f"{abs(offset_ms)} ms {'ahead of' if offset_ms > 0 else 'behind'} the exchange"


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _bracket(info: dict[str, Any]) -> LeverageBracket:
    return LeverageBracket(bracket=int(info.get("bracket") or 0), initial_leverage=int(info.get("initialLeverage") or 0),
                           notional_floor=_dec(info.get("notionalFloor", 0)),
                           notional_cap=_dec(info.get("notionalCap", 0)),
                           maint_margin_ratio=_dec(info.get("maintMarginRatio", 0)), cum=_dec(info.get("cum", 0)))


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
