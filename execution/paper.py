"""The dry-run exchange: the adapter interface of ``execution/exchange.py``, filled on paper.

Why it reuses the simulator's matching engine: a strategy should behave the same in a dry run,
against the offline simulator and (as far as a model can tell) live. So nothing here matches or
accounts on its own: orders go through ``matching.engine.TradingEngine``, the engine behind the
simulator too (Binance's filters, reduce-only and margin checks, one-way positions, fees,
slippage, partial fills from ``matching.fill_model`` drawn from a seeded ``PartialFills``).
``matching/`` is a package of its own so that this module never imports ``simulator/``, the
test exchange. Only the edges are ours:

- **Quotes** come from the live market-data hub through ``on_quote``; the latest book of each
  symbol is what market orders take and what resting limit orders wait for.
- **Precision and rules** come from the live markets object, so a paper order is rounded and
  filtered exactly as a live one would be. Unified ccxt symbols (``BTC/USDT:USDT``) are mapped
  to exchange ids (``BTCUSDT``) by ``rules(symbol).exchange_symbol``.
- **Errors**: the engine's ``BinanceError`` codes become ``core.errors`` types once, in
  ``_translated``, like ccxt's do in ``CcxtExchange``.
- **Funding**: at each funding time the paper positions pay or receive ``notional x rate`` as
  live ones would. The rate and the funding time come from the live ``premiumIndex`` (ccxt
  ``fetch_funding_rate``, through ``markets``); a funding time counts as reached when the
  symbol's latest quote (exchange time) is at or past it, and is settled at the next
  ``fetch_funding_payments`` call (the engine polls it) at the then latest mid as the mark.
  A funding time that passes while the bot is down is not charged.
- **Persistence**: a restart must find the paper account where it was, because the paper
  journal remembers positions and startup reconciliation compares the two. With a
  ``state_path`` the engine state is written atomically after every change.

Nothing here sends anything anywhere: there is no network code in this module or the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from loguru import logger

from core.files import write_json_atomically
from core.config import PaperConfig
from core.errors import (InsufficientFundsError, InvalidOrderError, OrderNotFoundError, PermanentError,
                         RetryableError)
from core.types import Quote
from execution.exchange import (AccountModes, BalanceInfo, ExchangeOrderStatus, FeeRates, FundingPayment, FundingRateInfo,
                                LeverageBracket, MarketRules,
                                OrderState, PositionInfo, TradeFill)
from matching.accounts import Account, margin_summary
from matching.config import AccountConfig, FillConfig
from matching.engine import PartialFills, TradingEngine
from matching.errors import BinanceError
from matching.fill_model import BookTop, InvalidBookError
from matching.orders import Order
from matching.requests import OrderRef, parse_new_order
from matching.rules import SymbolRules, rules_from_info

STATE_VERSION = 1
ACCOUNT_NAME = "paper"
FIRST_ORDER_ID = 1
MarketInfoFn = Callable[[str], Mapping[str, Any]]

_STATUS = {"NEW": ExchangeOrderStatus.OPEN, "PARTIALLY_FILLED": ExchangeOrderStatus.OPEN,
           "FILLED": ExchangeOrderStatus.CLOSED, "CANCELED": ExchangeOrderStatus.CANCELED,
           "EXPIRED": ExchangeOrderStatus.EXPIRED}
_MARGIN_TYPES = {"isolated": "ISOLATED", "cross": "CROSSED", "crossed": "CROSSED"}
_NOT_FOUND_CODES = frozenset({-2011, -2013})
_RETRYABLE_CODES = frozenset({-1001, -1003, -1008})
_MARGIN_TYPE_ALREADY_SET = -4046


class MarketSource(Protocol):
    """The part of the live adapter the paper exchange borrows: markets, rules and precision."""

    async def load_markets(self, *, reload: bool = False) -> None: ...
    def is_trading(self, symbol: str) -> bool: ...
    def rules(self, symbol: str) -> MarketRules: ...
    def resolve_symbol(self, raw: str) -> str: ...
    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal: ...
    def price_to_precision(self, symbol: str, price: Decimal) -> Decimal: ...
    async def fetch_funding_rate(self, symbol: str) -> FundingRateInfo: ...


def translate_binance_error(exc: BinanceError, operation: str, context: str) -> Exception:
    """Map an engine rejection onto ours by what the caller should do.

    >>> type(translate_binance_error(BinanceError(-2019, "Margin is insufficient."), "create_order", "x"))
    <class 'core.errors.InsufficientFundsError'>
    """
    message = f"{operation} {context}: paper {exc.code} {exc.msg}"
    if exc.code == -2019:
        return InsufficientFundsError(message)
    if exc.code in _NOT_FOUND_CODES:
        return OrderNotFoundError(message)
    if exc.code in _RETRYABLE_CODES or exc.http_status >= 500 or exc.http_status in (418, 429):
        return RetryableError(message)
    if 400 <= exc.http_status < 500:
        return InvalidOrderError(message)
    return PermanentError(message)


@dataclass(slots=True)
class LiveBooks:
    """The engine's ``MarketView`` over the hub's quotes: latest book and event time per symbol.

    ``now_ms`` is set to the traded symbol's latest quote time before each engine call, so order
    and fill times are exchange times, as they would be live.
    """

    now_ms: int = 0
    books: dict[str, BookTop] = field(default_factory=dict)
    times_ms: dict[str, int] = field(default_factory=dict)

    def book(self, symbol: str) -> BookTop | None:
        return self.books.get(symbol)

    def mark_price(self, symbol: str) -> Decimal | None:
        """The latest mid stands in for Binance's mark price (unrealized PnL, position margin)."""
        book = self.books.get(symbol)
        return None if book is None else book.mid

    def at(self, symbol: str) -> None:
        """Make the engine's clock the latest quote time of ``symbol`` (kept if none yet)."""
        self.now_ms = self.times_ms.get(symbol, self.now_ms)


class PaperExchange:
    """The dry-run adapter: same interface as ``CcxtExchange``, orders filled on paper.

    ``markets`` supplies markets, rules and precision (the caller owns it; ``close`` leaves it
    open). ``market_info(symbol)`` returns the raw exchangeInfo symbol object of a unified
    symbol (ccxt's ``market['info']``); if omitted, ``markets.market_info`` is used. ``paper``
    holds fees, slippage, partial-fill probability, latency, seed and starting balance.
    ``state_path`` None keeps the account in memory only and never writes a file.
    """

    name = "paper"
    sends_orders = False
    recv_window_ms = 0  # nothing leaves the process: no outcome is ever unknown
    clock_sync_interval_seconds = 0.0  # one clock: nothing to sync

    def __init__(self, *, markets: MarketSource, paper: PaperConfig, state_path: Path | None,
                 market_info: MarketInfoFn | None = None) -> None:
        info_fn = market_info if market_info is not None else getattr(markets, "market_info", None)
        if not callable(info_fn):
            raise TypeError("PaperExchange needs market_info(symbol) -> exchangeInfo symbol dict "
                            "(pass market_info= or give the markets object a market_info method)")
        self._markets = markets
        self._market_info: MarketInfoFn = info_fn
        self._state_path = state_path
        self._latency_s = paper.latency_ms / 1000.0
        self._fills = FillConfig(taker_fee_rate=_dec(paper.taker_fee_rate),
                                 maker_fee_rate=_dec(paper.maker_fee_rate),
                                 slippage_bps=_dec(paper.slippage_bps))
        self._partial_fills = PartialFills(paper.partial_fill_probability, seed=paper.seed)
        self._account_config = AccountConfig(name=ACCOUNT_NAME, api_key="paper", secret="paper",
                                             starting_balance_usdt=_dec(paper.starting_balance_usdt))
        self._market = LiveBooks()
        self._exchange_id: dict[str, str] = {}  # unified -> exchange id
        self._unified: dict[str, str] = {}  # exchange id -> unified
        self._engine = self._new_engine({}, None)
        self._loaded = False
        self._early_quotes: dict[str, Quote] = {}
        self._warned_no_size: set[str] = set()
        self._funding_due: dict[str, tuple[int, Decimal]] = {}  # exchange id -> (next funding ms, rate)

    # -- markets and precision: the live markets' own ----------------------------------------
    async def load_markets(self, *, reload: bool = False) -> None:
        """Load the markets, then (once) the saved paper account, then any early quotes."""
        await (self._markets.load_markets(reload=True) if reload else self._markets.load_markets())
        if self._loaded:
            return
        self._loaded = True
        self._restore()
        early, self._early_quotes = self._early_quotes, {}
        for quote in early.values():
            self.on_quote(quote)

    def rules(self, symbol: str) -> MarketRules:
        return self._markets.rules(symbol)

    def is_trading(self, symbol: str) -> bool:
        return self._markets.is_trading(symbol)

    def resolve_symbol(self, raw: str) -> str:
        return self._markets.resolve_symbol(raw)

    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal:
        return self._markets.amount_to_precision(symbol, qty)

    def price_to_precision(self, symbol: str, price: Decimal) -> Decimal:
        return self._markets.price_to_precision(symbol, price)

    # -- quotes ------------------------------------------------------------------------------
    def on_quote(self, quote: Quote) -> None:
        """Keep ``quote`` as the symbol's book and fill resting orders it reaches.

        Called by the hub for every accepted quote of the traded symbols. Quotes that arrive
        before ``load_markets`` are held (latest per symbol) and applied once markets are known.
        """
        if not self._loaded:
            self._early_quotes[quote.symbol] = quote
            return
        symbol = self._exchange_id.get(quote.symbol) or self._ensure(quote.symbol)
        book = BookTop(bid=_dec(quote.bid), ask=_dec(quote.ask), bid_qty=_dec(quote.bid_qty),
                       ask_qty=_dec(quote.ask_qty))
        try:
            book.validate()
        except InvalidBookError as exc:
            logger.debug("paper: ignored an untradeable quote of {}: {}", quote.symbol, exc)
            return
        if book.bid_qty == 0 and book.ask_qty == 0 and symbol not in self._warned_no_size:
            self._warned_no_size.add(symbol)
            logger.warning("paper: quotes of {} carry no sizes; paper orders cannot fill against them",
                           quote.symbol)
        self._market.books[symbol] = book
        self._market.times_ms[symbol] = quote.ts_ms
        if not self._engine.has_open_orders(symbol):
            return
        before = {o.order_id: (o.executed_qty, o.status) for o in self._engine.open_orders(self._account, symbol)}
        self._market.now_ms = quote.ts_ms
        self._engine.on_quote(symbol, book, quote.ts_ms)
        after = {i: (self._engine.orders[i].executed_qty, self._engine.orders[i].status) for i in before}
        if after != before:
            self._save()

    # -- account -----------------------------------------------------------------------------
    async def fetch_balance(self) -> BalanceInfo:
        """USDT margin balance (wallet + unrealized PnL) as total, available margin as free.

        The same fields ccxt reads from Binance's account endpoint (marginBalance,
        availableBalance), so paper and live report alike.
        """
        account = self._account
        summary = margin_summary(account, self._engine.open_orders(account), self._market.mark_price)
        return BalanceInfo("USDT", summary.margin_balance, summary.available)

    async def fetch_positions(self, symbols: Iterable[str]) -> dict[str, PositionInfo]:
        """Non-zero signed positions by unified symbol (all of them when ``symbols`` is empty)."""
        wanted = set(symbols)
        out: dict[str, PositionInfo] = {}
        for exchange_id, position in self._account.positions.items():
            unified = self._unified.get(exchange_id, exchange_id)
            if position.amount != 0 and (not wanted or unified in wanted):
                out[unified] = PositionInfo(unified, position.amount, position.entry_price)
        return out

    # -- orders ------------------------------------------------------------------------------
    async def create_order(self, *, symbol: str, side: str, qty: Decimal, order_type: str, client_order_id: str,
                           price: Decimal | None = None, reduce_only: bool = False) -> OrderState:
        """Fill or rest an order on paper. A market order takes the latest book at once."""
        await self._latency()
        context = f"{symbol} {side} {qty} {order_type} cid={client_order_id}"
        exchange_id = self._ensure(symbol)
        if self._market.book(exchange_id) is None:
            raise RetryableError(f"create_order {context}: no quote yet for {symbol}")
        params = {"symbol": exchange_id, "side": side, "type": order_type, "quantity": _plain(qty),
                  "newClientOrderId": client_order_id, "reduceOnly": "true" if reduce_only else "false",
                  "newOrderRespType": "RESULT"}
        if order_type.lower() == "limit":
            params.update(price="" if price is None else _plain(price), timeInForce="GTC")
        with self._translated("create_order", context):
            request = parse_new_order(params)
            self._market.at(exchange_id)
            order = self._engine.place_order(self._account, request)
        self._save()
        return self._order_state(order)

    async def fetch_order(self, *, symbol: str, client_order_id: str) -> OrderState:
        await self._latency()
        exchange_id = self._ensure(symbol)
        with self._translated("fetch_order", f"{symbol} cid={client_order_id}"):
            order = self._engine.query_order(self._account, OrderRef(exchange_id, None, client_order_id))
        return self._order_state(order)

    async def cancel_order(self, *, symbol: str, client_order_id: str) -> OrderState:
        await self._latency()
        exchange_id = self._ensure(symbol)
        with self._translated("cancel_order", f"{symbol} cid={client_order_id}"):
            self._market.at(exchange_id)
            order = self._engine.cancel_order(self._account, OrderRef(exchange_id, None, client_order_id))
        self._save()
        return self._order_state(order)

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderState]:
        await self._latency()
        exchange_id = None if symbol is None else self._ensure(symbol)
        with self._translated("fetch_open_orders", symbol or "all"):
            orders = self._engine.open_orders(self._account, exchange_id)
        return [self._order_state(o) for o in orders]

    async def fetch_order_fills(self, *, symbol: str, exchange_order_id: str) -> list[TradeFill]:
        """The order's executions (trade ids are unique across the paper account), fees in USDT."""
        await self._latency()
        exchange_id = self._ensure(symbol)
        try:
            order_id = int(exchange_order_id)
        except ValueError:
            raise InvalidOrderError(f"fetch_order_fills {symbol}: {exchange_order_id!r} is not a paper order id") \
                from None
        order = self._engine.orders.get(order_id)
        with self._translated("fetch_order_fills", f"{symbol} id={exchange_order_id}"):
            rows = self._engine.user_trades(self._account, exchange_id, order_id=order_id, limit=1_000_000)
        return [TradeFill(trade_id=str(r["id"]), client_order_id=order.client_order_id if order else None,
                          exchange_order_id=str(r["orderId"]), symbol=symbol, side=r["side"].lower(),
                          qty=Decimal(r["qty"]), price=Decimal(r["price"]), fee=Decimal(r["commission"]),
                          ts_ms=int(r["time"]))
                for r in rows]

    async def fetch_funding_payments(self, symbol: str, since_ms: int) -> list[FundingPayment]:
        """The paper account's funding payments on ``symbol`` from ``since_ms``, after settling
        any funding time its positions have reached (see the module docstring)."""
        await self.apply_due_funding()
        exchange_id = self._ensure(symbol)
        rows = self._engine.income_history(self._account, symbol=exchange_id, income_type="FUNDING_FEE",
                                           start_ms=since_ms, limit=1_000_000)
        return [FundingPayment(payment_id=str(r["tranId"]), symbol=symbol, amount=Decimal(r["income"]),
                               asset=r["asset"], ts_ms=int(r["time"])) for r in rows]

    async def apply_due_funding(self) -> int:
        """Settle the funding of every held symbol whose announced funding time its quotes have
        reached, with the rate announced for it; then learn the next one. Returns how many."""
        fetch = getattr(self._markets, "fetch_funding_rate", None)
        if fetch is None:
            return 0
        settled = 0
        for exchange_id, position in list(self._account.positions.items()):
            if position.amount == 0:
                continue
            now = self._market.times_ms.get(exchange_id)
            due = self._funding_due.get(exchange_id)
            mark = self._market.mark_price(exchange_id)
            if due is not None and now is not None and now >= due[0] and mark is not None:
                rows = self._engine.settle_funding(exchange_id, due[1], mark, due[0])
                logger.info("paper: funding on {} at {}: rate {}, {} USDT", exchange_id, due[0], due[1],
                            rows[0]["income"] if rows else "0")
                self._funding_due.pop(exchange_id)
                settled += 1
            if exchange_id not in self._funding_due:
                try:
                    info = await fetch(self._unified.get(exchange_id, exchange_id))
                except (RetryableError, PermanentError) as exc:
                    logger.warning("paper: funding rate of {} unavailable ({}); funding not applied yet", exchange_id,
                                   exc)
                    continue
                # a funding time is charged once, even if premiumIndex still announces it
                if info.next_funding_ms is not None and not self._funding_settled(exchange_id, info.next_funding_ms):
                    self._funding_due[exchange_id] = (info.next_funding_ms, info.rate)
        if settled:
            self._save()
        return settled

    def _funding_settled(self, exchange_id: str, funding_ms: int) -> bool:
        """True if the paper account was already charged the funding of ``funding_ms`` (the
        income rows are part of the saved account, so this holds across restarts)."""
        return self._engine.has_income(self._account, exchange_id, funding_ms)

    async def fetch_fee_rates(self, symbol: str) -> FeeRates:
        """The configured paper rates (``paper.maker_fee_rate`` / ``paper.taker_fee_rate``)."""
        return FeeRates(self._fills.maker_fee_rate, self._fills.taker_fee_rate, "config")

    async def sync_clock(self) -> int:
        """Paper trades on this machine's clock: the offset is 0 by definition."""
        return 0

    def exchange_now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def fetch_account_modes(self) -> AccountModes:
        """The paper account is one-way and single-asset, always."""
        return AccountModes(hedge_mode=False, multi_assets=False)

    async def load_leverage_brackets(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self._ensure(symbol)

    def leverage_brackets(self, symbol: str) -> tuple[LeverageBracket, ...]:
        """One bracket per symbol, as the matching engine models margin (no notional tiers)."""
        rules = self._engine.rules.get(self._exchange_id.get(symbol, ""))
        if rules is None:
            return ()
        return (LeverageBracket(bracket=1, initial_leverage=rules.max_leverage, notional_floor=Decimal(0),
                                notional_cap=Decimal(50_000_000), maint_margin_ratio=rules.maint_margin_ratio,
                                cum=Decimal(0)),)

    async def fetch_recent_orders(self, symbol: str, since_ms: int | None = None) -> list[OrderState]:
        await self._latency()
        exchange_id = self._ensure(symbol)
        with self._translated("fetch_recent_orders", symbol):
            orders = self._engine.all_orders(self._account, exchange_id, start_ms=since_ms)
        return [self._order_state(o) for o in orders]

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        exchange_id = self._ensure(symbol)
        with self._translated("set_leverage", f"{symbol} x{leverage}"):
            self._engine.set_leverage(self._account, exchange_id, leverage)
        self._save()

    async def set_margin_mode(self, symbol: str, mode: str) -> str:
        """Set isolated/cross; "already set" is success, not an error (as in ``CcxtExchange``)."""
        wanted = _MARGIN_TYPES.get(mode.lower())
        if wanted is None:
            raise InvalidOrderError(f"set_margin_mode {symbol}: unknown margin mode {mode!r}")
        exchange_id = self._ensure(symbol)
        try:
            self._engine.set_margin_type(self._account, exchange_id, wanted)
        except BinanceError as exc:
            if exc.code == _MARGIN_TYPE_ALREADY_SET:
                logger.debug("paper: margin mode of {} already {}", symbol, mode)
                return mode
            raise translate_binance_error(exc, "set_margin_mode", f"{symbol} {mode}") from exc
        self._save()
        return mode

    async def close(self) -> None:
        """Save the account; the ``markets`` object belongs to the caller and stays open."""
        self._save()

    # -- internals ---------------------------------------------------------------------------
    @property
    def _account(self) -> Account:
        # Looked up each time: rebuilding the engine (new symbol, restore) replaces the object.
        return self._engine.accounts[ACCOUNT_NAME]

    @contextlib.contextmanager
    def _translated(self, operation: str, context: str) -> Iterator[None]:
        """The one place engine rejections become ``core.errors`` types (STYLE.md habit 2)."""
        try:
            yield
        except BinanceError as exc:
            raise translate_binance_error(exc, operation, context) from exc

    async def _latency(self) -> None:
        if self._latency_s > 0:
            await asyncio.sleep(self._latency_s)

    def _ensure(self, symbol: str) -> str:
        """The exchange id of ``symbol``, adding its rules to the engine the first time."""
        known = self._exchange_id.get(symbol)
        if known is not None:
            return known
        exchange_id = self._markets.rules(symbol).exchange_symbol
        if exchange_id not in self._engine.rules:
            rules = dict(self._engine.rules)
            rules[exchange_id] = self._symbol_rules(symbol, exchange_id)
            self._engine = self._new_engine(rules, self._engine.to_state())
        self._exchange_id[symbol] = exchange_id
        self._unified[exchange_id] = symbol
        return exchange_id

    def _symbol_rules(self, symbol: str, exchange_id: str) -> SymbolRules:
        info = self._market_info(symbol)
        if info.get("symbol") != exchange_id:
            raise PermanentError(f"paper: market info of {symbol} is for {info.get('symbol')!r}, "
                                 f"not {exchange_id!r}")
        try:
            return rules_from_info(info, "live")
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise PermanentError(f"paper: cannot read the filters of {symbol}: {exc!r}") from exc

    def _new_engine(self, rules: Mapping[str, SymbolRules], state: Mapping[str, Any] | None) -> TradingEngine:
        """A fresh engine over ``rules`` carrying ``state``; the partial-fill coin (RNG) is shared."""
        engine = TradingEngine(rules=rules, market=self._market, fills=self._fills, faults=self._partial_fills,
                               accounts=(self._account_config,), first_order_id=FIRST_ORDER_ID)
        if state is not None:
            engine.load_state(state)
        return engine

    def _order_state(self, order: Order) -> OrderState:
        return OrderState(
            client_order_id=order.client_order_id, exchange_order_id=str(order.order_id),
            symbol=self._unified.get(order.symbol, order.symbol), side=order.side.lower(),
            order_type=order.order_type.lower(), qty=order.orig_qty, filled=order.executed_qty,
            avg_price=order.avg_price if order.executed_qty > 0 else None, status=_STATUS[order.status],
            reduce_only=order.reduce_only, price=order.price if order.order_type == "LIMIT" else None,
            ts_ms=order.time_ms)

    # -- persistence -------------------------------------------------------------------------
    def _restore(self) -> None:
        """Load the saved account, with the rules of every symbol it mentions."""
        if self._state_path is None or not self._state_path.exists():
            return
        payload = _read_state(self._state_path)
        rules = dict(self._engine.rules)
        for exchange_id, saved in payload["symbols"].items():
            self._unified[exchange_id] = saved
            try:
                symbol = self._markets.resolve_symbol(saved)
                if self._markets.rules(symbol).exchange_symbol != exchange_id:
                    raise InvalidOrderError(f"{saved} is now {self._markets.rules(symbol).exchange_symbol}")
                rules[exchange_id] = self._symbol_rules(symbol, exchange_id)
            except PermanentError as exc:
                logger.warning("paper: market {} of the saved account is not available ({}); its position is "
                               "kept, its orders are dropped", saved, exc)
                continue
            self._exchange_id[symbol] = exchange_id
            self._unified[exchange_id] = symbol
        try:
            self._engine = self._new_engine(rules, payload["engine"])
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise PermanentError(f"paper state {self._state_path}: damaged ({exc!r}); delete it to start a "
                                 "fresh paper account") from exc
        logger.info("paper: account restored from {} (wallet {} USDT, {} order(s))", self._state_path,
                    self._account.wallet, len(self._engine.orders))

    def _save(self) -> None:
        """Write the account atomically (tmp file + rename). A failure is logged, not raised:
        the order it follows has already happened, and the next save will try again."""
        if self._state_path is None:
            return
        payload = {"version": STATE_VERSION, "saved_wall_ms": int(time.time() * 1000),
                   "symbols": dict(self._unified), "engine": self._engine.to_state()}
        try:
            _write_atomically(self._state_path, payload)
        except OSError as exc:
            logger.error("paper: cannot save the paper account to {}: {}", self._state_path, exc)


def _read_state(path: Path) -> dict[str, Any]:
    """The saved payload, or ``PermanentError`` saying what is wrong and how to start afresh."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PermanentError(f"paper state {path}: unreadable ({exc}); delete it to start a fresh paper "
                             "account") from exc
    if not isinstance(payload, dict) or payload.get("version") != STATE_VERSION \
            or not isinstance(payload.get("symbols"), dict) or not isinstance(payload.get("engine"), dict):
        raise PermanentError(f"paper state {path}: not a version-{STATE_VERSION} paper account file; delete it "
                             "to start a fresh paper account")
    return payload


def _write_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    write_json_atomically(path, payload)


def _dec(value: float) -> Decimal:
    """Exact decimal of a float through its shortest repr (63943.9 -> Decimal('63943.9'))."""
    return Decimal(repr(value))


def _plain(value: Decimal) -> str:
    """Decimal as Binance's request text: no exponent (``Decimal('1E+1')`` -> ``'10'``)."""
    return f"{value:f}"
