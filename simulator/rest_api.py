"""Binance USD-M REST endpoints of the simulator (the subset ccxt's binanceusdm calls).

Public: ping, time, exchangeInfo, klines, depth, ticker/24hr, ticker/bookTicker, ticker/price,
premiumIndex, fundingRate, fundingInfo. Signed (API key + timestamp + HMAC, ``simulator/auth.py``): account (v2, v3),
positionRisk (v2, v3), leverageBracket, leverage, marginType, positionSide/dual (GET/POST),
multiAssetsMargin (GET/POST), order (POST/GET/DELETE), openOrders, allOpenOrders (DELETE), allOrders, userTrades,
commissionRate, income. API-key only:
listenKey (POST/PUT/DELETE).

Times: ``/fapi/v1/time`` and ``exchangeInfo.serverTime`` are the SERVER clock: the host's wall
time plus the ``clock_skew_ms`` fault (what ccxt signs against, and what the timestamp check
uses); everything about the market (klines, tickers, order and trade times) is REPLAY time.

Fault hooks here, all on ``POST /fapi/v1/order`` unless said otherwise (``simulator/faults.py``
has the knobs): a placed order's response can be "lost" (the connection is aborted after the
order exists); an order can "land late" (the connection is aborted and the order is placed
later, on the wall clock, unless its ``timestamp + recvWindow`` has passed by then); the answer
can be HTTP 503 "Unknown error..." or HTTP 408 -1007, with the order placed or not behind it;
``userTrades`` and ``positionRisk`` / ``account`` positions can lag. Latency and HTTP error
bursts are applied by the server's middleware.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from loguru import logger

from matching import errors
from matching.accounts import Account
from matching.engine import TradingEngine
from matching.errors import BinanceError
from matching.orders import decimal_text
from matching.requests import (
    NewOrder,
    int_param,
    optional_int,
    optional_text,
    parse_new_order,
    parse_order_ref,
    text,
)
from simulator import auth
from simulator.faults import FaultInjector
from simulator.funding import FundingSchedule
from market_replay.markets import exchange_info_payload, leverage_bracket_payload
from simulator.rate_limits import RateLimiter
from simulator.replay import MarketReplay

INTERVALS_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000, "3d": 259_200_000, "1w": 604_800_000,
}
MAX_KLINES = 1500
BNB_SYMBOL = "BNBUSDT"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def wall_ms() -> int:
    return int(time.time() * 1000)


class ListenKeys:
    """listenKey <-> account. One key per account, as Binance: POST returns the live key."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._counter = 0
        self.by_key: dict[str, str] = {}
        self.by_account: dict[str, str] = {}

    def create(self, account: str) -> str:
        existing = self.by_account.get(account)
        if existing is not None:
            return existing
        self._counter += 1
        digest = hashlib.sha256(f"{self._seed}:{account}:{self._counter}".encode()).hexdigest()
        key = (digest * 2)[:64]
        self.by_key[key] = account
        self.by_account[account] = key
        return key

    def account_of(self, key: str) -> str | None:
        return self.by_key.get(key)

    def delete(self, key: str) -> str | None:
        account = self.by_key.pop(key, None)
        if account is not None:
            self.by_account.pop(account, None)
        return account


class RestApi:
    """Route table and handlers; all state lives in the engine, replay and listen keys."""

    def __init__(self, *, engine: TradingEngine, replay: MarketReplay,
                 recorded_info: dict[str, Any],
                 faults: FaultInjector, listen_keys: ListenKeys, funding: FundingSchedule,
                 max_recv_window_ms: int,
                 on_listen_key_deleted: Callable[[str], Awaitable[None]],
                 rate_limiter: RateLimiter | None = None) -> None:
        self.engine = engine
        self.rate_limiter = rate_limiter
        self.replay = replay
        self.recorded_info = recorded_info
        self.faults = faults
        self.listen_keys = listen_keys
        self.funding = funding
        self.max_recv_window_ms = max_recv_window_ms
        self._on_listen_key_deleted = on_listen_key_deleted
        self._late_orders: set[asyncio.TimerHandle] = set()
        self._deferred_fills: set[asyncio.TimerHandle] = set()

    def register(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/fapi/v1/ping", self.ping),
            ("GET", "/fapi/v1/time", self.server_time),
            ("GET", "/fapi/v1/exchangeInfo", self.exchange_info),
            ("GET", "/fapi/v1/klines", self.klines),
            ("GET", "/fapi/v1/depth", self.depth),
            ("GET", "/fapi/v1/ticker/24hr", self.ticker_24h),
            ("GET", "/fapi/v1/ticker/bookTicker", self.book_ticker),
            ("GET", "/fapi/v1/ticker/price", self.ticker_price),
            ("GET", "/fapi/v2/ticker/price", self.ticker_price),
            ("GET", "/fapi/v1/premiumIndex", self.premium_index),
            ("GET", "/fapi/v1/fundingRate", self.funding_rate),
            ("GET", "/fapi/v1/fundingInfo", self.funding_info),
            ("GET", "/fapi/v1/commissionRate", self.commission_rate),
            ("GET", "/fapi/v1/income", self.income),
            ("GET", "/fapi/v2/account", self.account),
            ("GET", "/fapi/v3/account", self.account),
            ("GET", "/fapi/v2/positionRisk", self.position_risk),
            ("GET", "/fapi/v3/positionRisk", self.position_risk),
            ("GET", "/fapi/v1/leverageBracket", self.leverage_bracket),
            ("POST", "/fapi/v1/leverage", self.set_leverage),
            ("POST", "/fapi/v1/marginType", self.set_margin_type),
            ("GET", "/fapi/v1/positionSide/dual", self.position_mode),
            ("POST", "/fapi/v1/positionSide/dual", self.set_position_mode),
            ("GET", "/fapi/v1/multiAssetsMargin", self.multi_assets_mode),
            ("POST", "/fapi/v1/multiAssetsMargin", self.set_multi_assets_mode),
            ("POST", "/fapi/v1/order", self.new_order),
            ("GET", "/fapi/v1/order", self.get_order),
            ("DELETE", "/fapi/v1/order", self.cancel_order),
            ("GET", "/fapi/v1/openOrders", self.open_orders),
            ("DELETE", "/fapi/v1/allOpenOrders", self.cancel_all),
            ("GET", "/fapi/v1/allOrders", self.all_orders),
            ("GET", "/fapi/v1/userTrades", self.user_trades),
            ("POST", "/fapi/v1/listenKey", self.listen_key_create),
            ("PUT", "/fapi/v1/listenKey", self.listen_key_keepalive),
            ("DELETE", "/fapi/v1/listenKey", self.listen_key_delete),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)

    # --- public ----------------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def server_time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self.server_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        payload = exchange_info_payload(self.recorded_info, self.engine.rules.values(), self.server_ms())
        if self.rate_limiter is not None and self.rate_limiter.config.enabled:
            payload["rateLimits"] = self.rate_limiter.config.rate_limits_payload()
        return json_response(payload)

    async def klines(self, request: web.Request) -> web.Response:
        q = request.query
        symbol = self._symbol(text(q, "symbol"))
        interval = INTERVALS_MS.get(text(q, "interval"))
        if interval is None or interval % self.replay.base_interval_ms != 0:
            raise errors.invalid_interval()
        limit = max(1, min(int_param(q, "limit", 500), MAX_KLINES))
        rows = self.replay.klines(symbol, interval, start_ms=optional_int(q, "startTime"),
                                  end_ms=optional_int(q, "endTime"), limit=limit)
        return json_response(rows)

    async def depth(self, request: web.Request) -> web.Response:
        """Top of book plus the fill model's synthetic levels (``FillConfig.depth_levels``)."""
        q = request.query
        symbol = self._symbol(text(q, "symbol"))
        limit = max(1, min(int_param(q, "limit", 20), 1000))
        book = self.replay.book(symbol)
        i = self.replay.index[symbol]
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        if book is not None:
            rules = self.engine.rules[symbol]
            step = max(rules.tick_size, book.ask - book.bid)
            levels = min(limit, self.engine.fills.depth_levels + 1)
            bids = [[decimal_text(book.bid - step * n), decimal_text(book.bid_qty)]
                    for n in range(levels) if book.bid - step * n > 0]
            asks = [[decimal_text(book.ask + step * n), decimal_text(book.ask_qty)]
                    for n in range(levels)]
        now = self.replay.now_ms
        return json_response({"lastUpdateId": self.replay.uid[i], "E": now, "T": now,
                              "bids": bids, "asks": asks})

    async def ticker_24h(self, request: web.Request) -> web.Response:
        symbol = optional_text(request.query, "symbol")
        if symbol is not None:
            return json_response(self.replay.ticker_24h(self._symbol(symbol)))
        return json_response([self.replay.ticker_24h(s) for s in self.replay.symbols])

    async def book_ticker(self, request: web.Request) -> web.Response:
        symbol = optional_text(request.query, "symbol")
        if symbol is not None:
            return json_response(self._book_row(self._symbol(symbol)))
        return json_response([self._book_row(s) for s in self.replay.symbols
                              if self.replay.book(s) is not None])

    async def ticker_price(self, request: web.Request) -> web.Response:
        symbol = optional_text(request.query, "symbol")
        bnb = self.engine.fills.bnb_price_usdt
        if symbol is not None and symbol.upper() == BNB_SYMBOL and BNB_SYMBOL not in self.engine.rules \
                and bnb is not None:
            # the configured BNB price (fees paid in BNB) when the replay has no BNB quotes
            return json_response({"symbol": BNB_SYMBOL, "price": decimal_text(bnb), "time": self.replay.now_ms})
        names = [self._symbol(symbol)] if symbol else self.replay.symbols
        rows = [{"symbol": s, "price": decimal_text(self.replay.last_price(s) or Decimal(0)),
                 "time": self.replay.now_ms} for s in names]
        return json_response(rows[0] if symbol else rows)

    async def premium_index(self, request: web.Request) -> web.Response:
        """Mark = index = mid; the funding rate and time from the schedule (``simulator/funding.py``)."""
        symbol = optional_text(request.query, "symbol")
        names = [self._symbol(symbol)] if symbol else self.replay.symbols
        now = self.replay.now_ms
        rows = []
        for s in names:
            mark = decimal_text(self.replay.mark_price(s) or Decimal(0))
            rows.append({"symbol": s, "markPrice": mark, "indexPrice": mark,
                         "estimatedSettlePrice": mark,
                         "lastFundingRate": f"{self.funding.config.rate(s):f}",
                         "interestRate": "0.0001" if self.funding.config.enabled else "0",
                         "nextFundingTime": self.funding.next_funding_ms(s),
                         "time": now})
        return json_response(rows[0] if symbol else rows)

    async def funding_rate(self, request: web.Request) -> web.Response:
        """Settled funding rates, oldest first (default 100, at most 1000 rows)."""
        q = request.query
        symbol = optional_text(q, "symbol")
        return json_response(self.funding.rate_history(
            self._symbol(symbol) if symbol else None, start_ms=optional_int(q, "startTime"),
            end_ms=optional_int(q, "endTime"), limit=max(1, min(int_param(q, "limit", 100), 1000))))

    async def funding_info(self, request: web.Request) -> web.Response:
        return json_response(self.funding.info_rows())

    # --- signed ----------------------------------------------------------------------------

    async def account(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        return json_response(self.engine.account_payload(
            account, position_lag_ms=self.faults.position_lag_ms))

    async def position_risk(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = optional_text(params, "symbol")
        return json_response(self.engine.position_risk(
            account, self._symbol(symbol) if symbol else None,
            lag_ms=self.faults.position_lag_ms))

    async def leverage_bracket(self, request: web.Request) -> web.Response:
        _, params = await self._signed(request)
        symbol = optional_text(params, "symbol")
        rules = self.engine.rules.values()
        if symbol is not None:
            rules = [self.engine.rules[self._symbol(symbol)]]  # type: ignore[assignment]
        rows = leverage_bracket_payload(rules)
        return json_response(rows[0] if symbol else rows)

    async def set_leverage(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return json_response(self.engine.set_leverage(account, self._symbol(text(params, "symbol")),
                                                      int_param(params, "leverage")))

    async def set_margin_type(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return json_response(self.engine.set_margin_type(
            account, self._symbol(text(params, "symbol")), text(params, "marginType")))

    async def position_mode(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        return json_response({"dualSidePosition": account.dual_side_position})

    async def set_position_mode(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return json_response(self.engine.set_position_mode(
            account, _true_false(params, "dualSidePosition")))

    async def multi_assets_mode(self, request: web.Request) -> web.Response:
        account, _ = await self._signed(request)
        return json_response({"multiAssetsMargin": account.multi_assets_margin})

    async def set_multi_assets_mode(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return json_response(self.engine.set_multi_assets_mode(
            account, _true_false(params, "multiAssetsMargin")))

    async def new_order(self, request: web.Request) -> web.StreamResponse:
        account, params = await self._signed(request)
        req = parse_new_order(params)
        if self.faults.land_late():
            self._schedule_late_order(account.name, req, auth.request_deadline_ms(params))
            return _abort_connection(request)
        unknown = self.faults.unknown_outcome()
        if unknown is not None:
            kind, applied = unknown
            return self._unknown_outcome(request, account, req, kind, applied)
        deferred = self.faults.delay_market_fill() if req.order_type == "MARKET" else None
        order = self.engine.place_order(account, req, defer_fills=deferred)
        if deferred is not None:
            self._schedule_deferred_fill(order.order_id)
        if self.faults.lose_response():
            return _abort_connection(request)
        payload = order.ack_payload() if req.response_type == "ACK" else order.rest_payload(
            with_time=False)
        return json_response(payload)

    def server_ms(self) -> int:
        """The server's clock: the host's wall clock shifted by the ``clock_skew_ms`` fault."""
        return wall_ms() + self.faults.clock_skew_ms

    def _schedule_deferred_fill(self, order_id: int) -> None:
        """The ``market_delay`` fault: the rest of a market order's fills ``market_delay_ms`` later."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fill() -> None:
            self._deferred_fills.discard(handle)  # type: ignore[arg-type]
            try:
                self.engine.complete_deferred(order_id)
            except Exception:  # a bug must not vanish inside a timer callback
                logger.exception("simulator: deferred fills of order {} failed", order_id)

        handle = loop.call_later(self.faults.market_delay_seconds, fill)
        self._deferred_fills.add(handle)

    def cancel_late_orders(self) -> int:
        """Forget every late order not landed yet (server stop or reset); returns how many.
        Deferred market fills (``market_delay``) not done yet are dropped too."""
        for pending in self._deferred_fills:
            pending.cancel()
        self._deferred_fills.clear()
        dropped = len(self._late_orders)
        for handle in self._late_orders:
            handle.cancel()
            self.faults.record("late_order_dropped")
        self._late_orders.clear()
        return dropped

    def _schedule_late_order(self, account: str, req: NewOrder, deadline_ms: int) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def land() -> None:
            self._late_orders.discard(handle)  # type: ignore[arg-type]
            self._land_late_order(account, req, deadline_ms)

        handle = loop.call_later(self.faults.lands_late_seconds, land)
        self._late_orders.add(handle)

    def _land_late_order(self, account_name: str, req: NewOrder, deadline_ms: int) -> None:
        """Place a late order now, as Binance would: refused once its recvWindow has passed."""
        now = self.server_ms()
        account = self.engine.accounts.get(account_name)
        if account is None:
            self.faults.record("late_order_dropped")
            return
        if now > deadline_ms:
            self.faults.record("late_order_expired")
            logger.debug("simulator: late order {} expired ({} ms past timestamp+recvWindow)",
                         req.client_order_id, now - deadline_ms)
            return
        try:
            order = self.engine.place_order(account, req)
        except BinanceError as exc:
            self.faults.record("late_order_duplicate" if exc.code == -4116
                               else "late_order_refused")
            logger.debug("simulator: late order {} refused: {} {}", req.client_order_id,
                         exc.code, exc.msg)
        except Exception:  # a bug must not vanish inside a timer callback
            self.faults.record("late_order_refused")
            logger.exception("simulator: late order {} failed", req.client_order_id)
        else:
            self.faults.record("late_order_landed")
            logger.debug("simulator: late order {} landed as {} ({})", req.client_order_id,
                         order.order_id, order.status)

    def _unknown_outcome(self, request: web.Request, account: Account, req: NewOrder,
                         kind: str, applied: bool) -> web.Response:
        """Answer "execution status unknown", having placed the order behind it or not."""
        outcome = "not_applied"
        if applied:
            try:
                self.engine.place_order(account, req)
                outcome = "applied"
            except BinanceError:
                outcome = "refused"  # the backend refused it; the gateway never heard
        self.faults.record(f"{kind}_{outcome}")
        if kind == "unknown_503":
            return json_response(errors.unknown_error_503_payload(request.path, self.server_ms()),
                                 status=503)
        err = errors.backend_timeout()
        return json_response(err.payload(), status=err.http_status)

    async def get_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        order = self.engine.query_order(account, parse_order_ref(params))
        return json_response(order.rest_payload())

    async def cancel_order(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        order = self.engine.cancel_order(account, parse_order_ref(params))
        return json_response(order.rest_payload(with_time=False))

    async def open_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = optional_text(params, "symbol")
        orders = self.engine.open_orders(account, symbol.upper() if symbol else None)
        return json_response([o.rest_payload() for o in orders])

    async def cancel_all(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        self.engine.cancel_all(account, text(params, "symbol").upper())
        return json_response({"code": 200,
                              "msg": "The operation of cancel all open order is done."})

    async def all_orders(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        orders = self.engine.all_orders(
            account, text(params, "symbol").upper(), start_ms=optional_int(params, "startTime"),
            end_ms=optional_int(params, "endTime"),
            limit=max(1, min(int_param(params, "limit", 500), 1000)))
        return json_response([o.rest_payload() for o in orders])

    async def user_trades(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return json_response(self.engine.user_trades(
            account, text(params, "symbol").upper(), order_id=optional_int(params, "orderId"),
            limit=max(1, min(int_param(params, "limit", 500), 1000)),
            lag_ms=self.faults.trade_lag_ms))

    async def commission_rate(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        return json_response(self.engine.commission_rate(account, self._symbol(text(params, "symbol"))))

    async def income(self, request: web.Request) -> web.Response:
        account, params = await self._signed(request)
        symbol = optional_text(params, "symbol")
        return json_response(self.engine.income_history(
            account, symbol=self._symbol(symbol) if symbol else None,
            income_type=optional_text(params, "incomeType"), start_ms=optional_int(params, "startTime"),
            end_ms=optional_int(params, "endTime"), limit=max(1, min(int_param(params, "limit", 100), 1000))))

    # --- user data stream keys (API key header only, no signature) -------------------------

    async def listen_key_create(self, request: web.Request) -> web.Response:
        account = self._keyed(request)
        return json_response({"listenKey": self.listen_keys.create(account.name)})

    async def listen_key_keepalive(self, request: web.Request) -> web.Response:
        account = self._keyed(request)
        key = self.listen_keys.by_account.get(account.name)
        if key is None:
            raise errors.invalid_listen_key()
        return json_response({"listenKey": key})

    async def listen_key_delete(self, request: web.Request) -> web.Response:
        account = self._keyed(request)
        key = self.listen_keys.by_account.get(account.name)
        if key is not None:
            self.listen_keys.delete(key)
            await self._on_listen_key_deleted(account.name)
        return json_response({})

    # --- helpers ---------------------------------------------------------------------------

    def _symbol(self, symbol: str) -> str:
        upper = symbol.upper()
        if upper not in self.engine.rules:
            raise errors.invalid_symbol()
        return upper

    def _book_row(self, symbol: str) -> dict[str, Any]:
        book = self.replay.book(symbol)
        i = self.replay.index[symbol]
        zero = Decimal(0)
        return {"symbol": symbol, "bidPrice": decimal_text(book.bid if book else zero),
                "bidQty": decimal_text(book.bid_qty if book else zero),
                "askPrice": decimal_text(book.ask if book else zero),
                "askQty": decimal_text(book.ask_qty if book else zero),
                "time": self.replay.ts[i], "lastUpdateId": self.replay.uid[i]}

    def _keyed(self, request: web.Request) -> Account:
        account = self.engine.account_by_key(auth.require_api_key(request.headers))
        if account is None:
            raise errors.invalid_api_key()
        return account

    async def _signed(self, request: web.Request) -> tuple[Account, dict[str, str]]:
        account = self._keyed(request)
        body = await request.text() if request.can_read_body else ""
        query = request.rel_url.raw_query_string
        params = auth.parse_params(query, body)
        auth.check_timestamp(params, self.server_ms(), self.max_recv_window_ms)
        auth.check_signature(query, body, account.secret)
        return account, params


def _true_false(params: dict[str, str], name: str) -> bool:
    """A required "true"/"false" parameter (Binance's spelling), or -1102 / -1130."""
    raw = text(params, name).lower()
    if raw not in ("true", "false"):
        raise errors.invalid_param(name)
    return raw == "true"


def _abort_connection(request: web.Request) -> web.StreamResponse:
    """Drop the TCP connection without answering: the client sees a network error."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=204)
