"""The matching and accounting engine of the venue model. No HTTP, no clock of its own.

One engine serves the offline simulator (``simulator/server.py`` puts HTTP and WebSocket in
front of it) and the paper exchange (``execution/paper.py`` calls it directly), so an order
meets the same rules in a dry run as against the simulator.

``TradingEngine`` takes typed requests (``matching/requests.py``), checks them the way
Binance does (filters, reduce-only, margin, client order ids), fills them through the shared
fill model (``matching/fill_model.py``) against the market's current book, and keeps orders,
positions and balances per account. Every change is also pushed to ``sink`` as the Binance
user-stream event (``ORDER_TRADE_UPDATE``, ``ACCOUNT_UPDATE``) for the WebSocket layer.

The venue's seeded decisions (random rejects, the partial-fill coin, reporting lags) come from
a ``VenueFaults`` passed in: the simulator's ``FaultInjector`` (``simulator/faults.py``, where
fault configuration and injection stay) or ``PartialFills`` here (no faults but partial fills).

Semantics worth knowing (and where they differ from Binance, why):

- Market orders take liquidity at once (NEW, then TRADE events); what the book cannot fill,
  or what the partial-fill fault cuts, EXPIRES (executedQty < origQty, status EXPIRED).
- LIMIT GTC crossing the book takes liquidity first, then rests; resting orders fill as maker
  when a later quote reaches their price (``on_quotes``). IOC expires the rest, FOK is
  refused with -5021 unless it can fill completely, GTX (post-only) with -5022 if it would take.
- Client order ids are unique among the account's OPEN orders of a symbol, as on Binance
  (-4116 otherwise); a query by ``origClientOrderId`` finds the newest order with that id.
- reduceOnly is refused (-2022) with no position, on the increasing side, or for more than
  the position (Binance may instead shrink such an order; refusing is stricter on purpose).
- A random reject (fault injection) happens after parameter and filter checks, before the
  order exists, so a valid order can be refused but an invalid one keeps its real error.
- Liquidation and auto-deleveraging (``check_liquidations``, ``liquidate``): a position whose
  mark price (``MarketView.mark_price``, the one place the mark is read) crosses its isolated
  liquidation price (``matching.accounts.liquidation_price``) is closed whole at the mark price,
  rounded to the tick, by a venue order of type LIQUIDATION with clientOrderId
  ``autoclose-<time>`` (ADL: ``adl_autoclose``), as Binance names them. It is in the order log,
  ``allOrders`` and ``userTrades`` like any order, and on the user stream as NEW then a
  CALCULATED (liquidation execution) update; the fee is the taker fee.
- Reporting lags (fault injection, ``trade_lag_ms`` / ``position_lag_ms``) are measured on the
  WALL clock (``wall_clock``), since they model the venue's read replicas, not the market:
  each trade remembers when it was made, and each (account, symbol) keeps a short history of
  its position, just long enough for the current ``position_lag_ms``.
"""

from __future__ import annotations

import bisect

import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from matching import errors
from matching.accounts import (
    Account,
    Position,
    account_update_event,
    account_v3_payload,
    increasing_qty,
    liquidation_price,
    margin_summary,
    position_risk_payload,
)
from matching.config import AccountConfig, FillConfig
from matching.fill_model import (
    BookTop,
    Fill,
    FillResult,
    FillRules,
    InvalidBookError,
    OrderSpec,
    fill_resting,
    is_marketable,
    take_liquidity,
)
from matching.filters import check_notional, check_price, check_quantity
from matching.orders import CANCELED, EXPIRED, Order, TradeRecord
from matching.requests import NewOrder, OrderRef
from matching.rules import SymbolRules, maintenance_bracket

EventSink = Callable[[str, dict[str, Any]], None]
WallClock = Callable[[], int]
MAX_OPEN_ORDERS_PER_SYMBOL = 200
_MONEY = Decimal("1E-8")
LIQUIDATION_CLIENT_PREFIX = "autoclose-"  # Binance: a liquidation order's clientOrderId
ADL_CLIENT_ID = "adl_autoclose"  # Binance: an auto-deleveraging order's clientOrderId


def wall_clock_ms() -> int:
    """The wall clock in ms (what ccxt signs with), the default for the reporting lags."""
    return int(time.time() * 1000)


class MarketView(Protocol):
    """What the engine needs from the market: the current time, books and marks."""

    now_ms: int

    def book(self, symbol: str) -> BookTop | None: ...

    def mark_price(self, symbol: str) -> Decimal | None: ...


class VenueFaults(Protocol):
    """The seeded decisions the engine asks the venue for, at the moment it needs them.

    Asked each time, never cached: the simulator changes its faults at run time (and reseeds).
    ``simulator.faults.FaultInjector`` is the full implementation; ``PartialFills`` the one
    for paper trading.
    """

    @property
    def partial_fill_probability(self) -> float: ...

    @property
    def position_lag_ms(self) -> int: ...

    def reject_order(self) -> int | None:
        """The code to refuse this new order with (one of ``errors.REJECT_CODES``), or None."""
        ...

    def fill_rng(self) -> random.Random:
        """The random stream the fill model's partial-fill coin draws from."""
        ...


class PartialFills:
    """``VenueFaults`` with partial fills only: no random rejects, no reporting lags.

    The coin's stream is seeded as the simulator's fill stream (``random.Random(f"{seed}:fills")``,
    as in ``FaultInjector``), so for one seed and one order sequence a paper run cuts the same
    fills as the simulator.

    >>> PartialFills(0.5, seed=3).fill_rng().random() == random.Random("3:fills").random()
    True
    """

    position_lag_ms = 0

    def __init__(self, probability: float = 0.0, *, seed: int = 0) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"partial_fill_probability = {probability!r}: expected a probability "
                             "within [0, 1]")
        self.partial_fill_probability = probability
        self._rng = random.Random(f"{seed}:fills")

    def reject_order(self) -> int | None:
        return None

    def fill_rng(self) -> random.Random:
        return self._rng


class TradingEngine:
    """Orders, positions and balances of every account of one venue (simulated or paper)."""

    def __init__(
        self,
        *,
        rules: Mapping[str, SymbolRules],
        market: MarketView,
        fills: FillConfig,
        faults: VenueFaults,
        accounts: Iterable[AccountConfig],
        first_order_id: int,
        sink: EventSink | None = None,
        wall_clock: WallClock = wall_clock_ms,
    ) -> None:
        self.rules = dict(rules)
        self.wall_clock = wall_clock
        self.market = market
        self.fills = fills
        self.faults = faults
        self.sink = sink
        self._account_configs = tuple(accounts)
        self._first_order_id = first_order_id
        self._fill_rules = {
            s: FillRules(tick_size=r.tick_size, step_size=r.step_size,
                         taker_fee_rate=fills.taker_fee_rate, maker_fee_rate=fills.maker_fee_rate,
                         slippage_bps=fills.slippage_bps, depth_levels=fills.depth_levels)
            for s, r in self.rules.items()
        }
        self.reset()

    # --- lifecycle -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every order and position; balances back to the configured start."""
        self.accounts: dict[str, Account] = {
            c.name: Account.from_config(c) for c in self._account_configs
        }
        self._by_key = {a.api_key: a for a in self.accounts.values()}
        self.orders: dict[int, Order] = {}
        self._open: dict[str, dict[int, Order]] = {s: {} for s in self.rules}
        self._by_client: dict[tuple[str, str, str], list[int]] = {}
        self._next_order_id = self._first_order_id
        self._next_trade_id = 1
        # GET /fapi/v1/income rows (funding payments), oldest first, all accounts
        self.income: list[dict[str, Any]] = []
        # The same rows per (account, symbol), in time order: a symbol's funding read is a bisect,
        # not a scan of every payment of every symbol (the bot reads it after every execution).
        self._income_by: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._next_tran_id = 1
        # Wall time each trade was made, and (wall ms, position copy) changes per
        # (account, symbol): only for the reporting-lag faults. Not persisted: after a restore
        # everything is reported as it is.
        self._trade_wall_ms: dict[int, int] = {}
        self._position_history: dict[tuple[str, str], deque[tuple[int, Position]]] = {}

    def account_by_key(self, api_key: str) -> Account | None:
        return self._by_key.get(api_key)

    @property
    def symbols_with_open_orders(self) -> list[str]:
        return [s for s, book in self._open.items() if book]

    # --- orders ----------------------------------------------------------------------------

    def place_order(self, account: Account, req: NewOrder, *, defer_fills: bool | None = None) -> Order:
        """Check, accept and (if it can) fill a new order. Raises ``BinanceError``.

        ``defer_fills`` (MARKET orders; the simulator's ``market_delay`` fault): False accepts the
        order with no execution yet (NEW), True with about half its lots executed
        (PARTIALLY_FILLED); ``complete_deferred`` executes the rest later. None: at once."""
        rules = self._rules(req.symbol)
        market_order = req.order_type == "MARKET"
        check_quantity(rules, req.quantity, market_order=market_order)
        if req.price is not None:
            check_price(rules, req.price)
        book = self._book(req.symbol)
        reference = (book.ask if req.side == "BUY" else book.bid) if market_order else req.price
        if reference is None:
            raise errors.mandatory_param("price")
        check_notional(rules, req.quantity * reference, reduce_only=req.reduce_only)
        if req.client_order_id is not None and self._open_by_client(account, req.symbol,
                                                                    req.client_order_id):
            raise errors.duplicate_client_order_id()
        if len(self._open[req.symbol]) >= MAX_OPEN_ORDERS_PER_SYMBOL:
            raise errors.BinanceError(-2025, "Reach max open order limit.")
        code = self.faults.reject_order()
        if code is not None:
            raise errors.error_for_code(code)
        _check_position_side(account, req)
        position = account.position(req.symbol).amount
        if req.reduce_only:
            reducing = (req.side == "SELL" and position > 0) or (req.side == "BUY" and position < 0)
            if not reducing or req.quantity > abs(position):
                raise errors.reduce_only_rejected()
        else:
            self._check_margin(account, req, reference, position)
        if req.order_type == "LIMIT":
            marketable = is_marketable(req.side, req.price, book)  # type: ignore[arg-type]
            if req.time_in_force == "GTX" and marketable:
                raise errors.post_only_would_take()
            if req.time_in_force == "FOK" and not self._fok_fillable(req, book):
                raise errors.fok_not_filled()
        order = self._register(account, req)
        self._emit(account, order.ws_event("NEW", order.time_ms))
        if defer_fills is not None and market_order:
            part = (order.orig_qty / 2 // rules.market_step_size) * rules.market_step_size if defer_fills else 0
            if part > 0:
                fill_rules = replace(self._fill_rules[order.symbol], partial_fill_probability=0.0)
                spec = OrderSpec(order.side, part, "MARKET", None)  # type: ignore[arg-type]
                self._apply(account, order, take_liquidity(spec, book, fill_rules, self.faults.fill_rng()),
                            order.time_ms)
            return order
        self._take(account, order, book)
        return order

    def complete_deferred(self, order_id: int) -> Order | None:
        """Execute what is left of a MARKET order accepted with ``defer_fills`` (unless it was
        cancelled meanwhile) against the book of now; its unfillable remainder expires."""
        order = self.orders.get(order_id)
        if order is None or not order.is_open or order.order_type != "MARKET":
            return None
        book = self.market.book(order.symbol)
        if book is None:
            self._close(order, EXPIRED)
            return order
        self._take(self.accounts[order.account], order, book)
        return order

    def cancel_order(self, account: Account, ref: OrderRef) -> Order:
        """Cancel an open order; -2011 if it is unknown or no longer open."""
        order = self._find(account, ref)
        if order is None or not order.is_open:
            raise errors.unknown_order_cancel()
        self._close(order, CANCELED)
        return order

    def cancel_all(self, account: Account, symbol: str) -> None:
        self._rules(symbol)
        for order in [o for o in self._open[symbol].values() if o.account == account.name]:
            self._close(order, CANCELED)

    def query_order(self, account: Account, ref: OrderRef) -> Order:
        """The order by id or client id; -2013 if this account has no such order."""
        order = self._find(account, ref)
        if order is None:
            raise errors.order_does_not_exist()
        return order

    def open_orders(self, account: Account, symbol: str | None = None) -> list[Order]:
        if symbol is not None:
            self._rules(symbol)
        books = [self._open[symbol]] if symbol is not None else list(self._open.values())
        found = [o for book in books for o in book.values() if o.account == account.name]
        return sorted(found, key=lambda o: o.order_id)

    def all_orders(self, account: Account, symbol: str, *, start_ms: int | None = None,
                   end_ms: int | None = None, limit: int = 500) -> list[Order]:
        self._rules(symbol)
        found = [o for o in self.orders.values() if o.account == account.name
                 and o.symbol == symbol and (start_ms is None or o.time_ms >= start_ms)
                 and (end_ms is None or o.time_ms <= end_ms)]
        return found[-limit:]

    def user_trades(self, account: Account, symbol: str, *, order_id: int | None = None,
                    limit: int = 500, lag_ms: int = 0) -> list[dict[str, Any]]:
        """``GET /fapi/v1/userTrades``; with ``lag_ms``, trades younger than that are hidden."""
        if order_id is not None:  # one order's trades: a lookup, not a scan of every order ever placed
            self._rules(symbol)
            order = self.orders.get(order_id)
            mine = order is not None and order.account == account.name and order.symbol == symbol
            rows = order.trade_payloads() if mine else []  # type: ignore[union-attr]
        else:
            rows = [row for o in self.all_orders(account, symbol, limit=10**9) for row in o.trade_payloads()]
        if lag_ms > 0:
            cutoff = self.wall_clock() - lag_ms
            rows = [r for r in rows if self._trade_wall_ms.get(r["id"], cutoff) <= cutoff]
        return sorted(rows, key=lambda r: r["id"])[-limit:]

    def has_open_orders(self, symbol: str) -> bool:
        return bool(self._open.get(symbol))

    def on_quote(self, symbol: str, book: BookTop, now_ms: int) -> None:
        """Fill resting orders of ``symbol`` that this quote (stamped ``now_ms``) reaches.

        The server calls it for every quote of a symbol with open orders, in time order, so a
        price that touches a limit and comes back within one loop iteration still fills it.
        """
        resting = self._open.get(symbol)
        if not resting:
            return
        for order in sorted(resting.values(), key=lambda o: o.order_id):
            self._fill_resting(order, book, now_ms)

    # --- account settings and reports ------------------------------------------------------

    def set_leverage(self, account: Account, symbol: str, leverage: int) -> dict[str, Any]:
        rules = self._rules(symbol)
        if not 1 <= leverage <= rules.max_leverage:
            raise errors.invalid_leverage(str(leverage))
        account.leverage[symbol] = leverage
        return {"leverage": leverage, "maxNotionalValue": "50000000", "symbol": symbol}

    def set_margin_type(self, account: Account, symbol: str, margin_type: str) -> dict[str, Any]:
        self._rules(symbol)
        wanted = margin_type.upper()
        if wanted not in ("ISOLATED", "CROSSED"):
            raise errors.invalid_margin_type()
        if wanted == "ISOLATED" and account.multi_assets_margin:
            raise errors.isolated_refused_in_multi_assets()
        if account.margin_type_of(symbol) == wanted:
            raise errors.no_need_to_change_margin_type()
        if account.position(symbol).amount != 0:
            raise errors.margin_type_locked_by_position()
        if self.open_orders(account, symbol):
            raise errors.margin_type_locked_by_orders()
        account.margin_type[symbol] = wanted
        return {"code": 200, "msg": "success"}

    def commission_rate(self, account: Account, symbol: str) -> dict[str, Any]:
        """``GET /fapi/v1/commissionRate``: the account's own maker/taker rates for ``symbol``."""
        self._rules(symbol)
        maker, taker = self._fee_rates(account)
        return {"symbol": symbol, "makerCommissionRate": str(maker), "takerCommissionRate": str(taker)}

    def settle_funding(self, symbol: str, rate: Decimal, mark: Decimal, funding_time_ms: int) -> list[dict[str, Any]]:
        """Charge one funding payment on ``symbol`` to every account holding it; returns the income rows.

        Each position pays ``amount * mark * rate`` (8 decimals, half up): with a positive rate
        longs pay and shorts receive, with a negative one the reverse, as on Binance. The USDT
        wallet moves by the payment and the account hears an ``ACCOUNT_UPDATE`` (reason
        FUNDING_FEE).
        """
        self._rules(symbol)
        rows = []
        for account in self.accounts.values():
            position = account.positions.get(symbol)
            if position is None or position.amount == 0:
                continue
            income = -(position.amount * mark * rate).quantize(_MONEY, rounding=ROUND_HALF_UP)
            account.wallet += income
            account.funding_paid += income
            account.update_ms = funding_time_ms
            row = {"symbol": symbol, "incomeType": "FUNDING_FEE", "income": str(income), "asset": "USDT",
                   "info": "FUNDING_FEE", "time": funding_time_ms, "tranId": self._next_tran_id, "tradeId": "",
                   "account": account.name}
            self._next_tran_id += 1
            self._add_income(row)
            rows.append(row)
            self._emit(account, account_update_event(account, symbol, mark, funding_time_ms,
                                                     reason="FUNDING_FEE"))
        return rows

    def income_history(self, account: Account, *, symbol: str | None = None, income_type: str | None = None,
                       start_ms: int | None = None, end_ms: int | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
        """``GET /fapi/v1/income`` rows of ``account``, oldest first; from ``start_ms`` the first
        ``limit``, otherwise the latest ``limit`` (as Binance pages them)."""
        if symbol is not None:
            source = self._income_by.get((account.name, symbol), [])
            if start_ms is not None:
                source = source[bisect.bisect_left(source, start_ms, key=_income_time):]
        else:
            source = self.income
        rows = [{k: v for k, v in r.items() if k != "account"} for r in source
                if r["account"] == account.name and (symbol is None or r["symbol"] == symbol)
                and (income_type is None or r["incomeType"] == income_type)
                and (start_ms is None or r["time"] >= start_ms) and (end_ms is None or r["time"] <= end_ms)]
        return rows[:limit] if start_ms is not None else rows[-limit:]
    def set_position_mode(self, account: Account, dual_side: bool) -> dict[str, Any]:
        """``POST /fapi/v1/positionSide/dual``: one mode for every symbol; refused while any
        symbol has a position (-4068) or an open order (-4067), -4059 when already so."""
        if account.dual_side_position == dual_side:
            raise errors.no_need_to_change_position_side()
        if any(p.amount != 0 for p in account.positions.values()):
            raise errors.position_side_locked_by_position()
        if self.open_orders(account):
            raise errors.position_side_locked_by_orders()
        account.dual_side_position = dual_side
        return {"code": 200, "msg": "success"}

    def set_multi_assets_mode(self, account: Account, multi_assets: bool) -> dict[str, Any]:
        """``POST /fapi/v1/multiAssetsMargin``: -4171 when already so; turning it on is refused
        while any symbol is set to isolated margin (-4167)."""
        if account.multi_assets_margin == multi_assets:
            raise errors.no_need_to_change_asset_mode()
        if multi_assets and any(account.margin_type_of(s) == "ISOLATED" for s in self.rules):
            raise errors.multi_assets_refused_by_isolated()
        account.multi_assets_margin = multi_assets
        return {"code": 200, "msg": "success"}

    def account_payload(self, account: Account, *, position_lag_ms: int = 0) -> dict[str, Any]:
        """``GET /fapi/v3/account``; its positions lag by ``position_lag_ms``, the rest is live."""
        summary = margin_summary(account, self.open_orders(account), self.market.mark_price)
        return account_v3_payload(account, summary,
                                  self.position_risk(account, lag_ms=position_lag_ms),
                                  self.market.now_ms)

    def position_risk(self, account: Account, symbol: str | None = None, *,
                      lag_ms: int = 0) -> list[dict[str, Any]]:
        """``GET /fapi/v3/positionRisk``: positions that are open or have open orders.

        With ``lag_ms``, each position is reported as it was that long ago (wall time), priced
        at the current mark.
        """
        if symbol is not None:
            self._rules(symbol)
        as_of = self.wall_clock() - lag_ms if lag_ms > 0 else None
        rows = []
        for sym in [symbol] if symbol else list(self.rules):
            pos = account.positions.get(sym)
            if as_of is not None:
                pos = self._position_as_of(account.name, sym, as_of, pos)
            orders = self.open_orders(account, sym)
            if (pos is None or pos.amount == 0) and not orders:
                continue
            order_margin = margin_summary(_only(account, sym), orders,
                                          self.market.mark_price).order_margin
            rows.append(position_risk_payload(account, sym, self.market.mark_price(sym),
                                              maintenance_bracket(self.rules[sym])[0], order_margin,
                                              position=pos,
                                              liquidation=self.liquidation_price(account, sym, pos)))
        return rows

    # --- liquidation and auto-deleveraging --------------------------------------------------

    def liquidation_price(self, account: Account, symbol: str,
                          position: Position | None = None) -> Decimal | None:
        """The isolated liquidation price of ``account``'s position on ``symbol`` (None: flat)."""
        pos = position if position is not None else account.positions.get(symbol)
        if pos is None or pos.amount == 0:
            return None
        rate, amount = maintenance_bracket(self.rules[symbol])
        return liquidation_price(pos, account.leverage_of(symbol), rate, amount)

    def check_liquidations(self, symbols: Iterable[str] | None = None) -> list[Order]:
        """Liquidate every position (of ``symbols``, default all) whose mark price has crossed
        its liquidation price; returns the liquidation orders."""
        wanted = None if symbols is None else set(symbols)
        done: list[Order] = []
        for account in self.accounts.values():
            for symbol, pos in list(account.positions.items()):
                if pos.amount == 0 or (wanted is not None and symbol not in wanted):
                    continue
                mark = self.market.mark_price(symbol)
                limit = self.liquidation_price(account, symbol, pos)
                if mark is None or limit is None:
                    continue
                if (pos.amount > 0 and mark <= limit) or (pos.amount < 0 and mark >= limit):
                    order = self.liquidate(account, symbol)
                    if order is not None:
                        done.append(order)
        return done

    def liquidate(self, account: Account, symbol: str, *, adl: bool = False) -> Order | None:
        """Close ``account``'s whole position on ``symbol`` now, at the mark price (to the tick),
        with a LIQUIDATION order (``adl``: an auto-deleveraging one); None when flat."""
        rules = self._rules(symbol)
        pos = account.positions.get(symbol)
        if pos is None or pos.amount == 0:
            return None
        mark = self.market.mark_price(symbol) or pos.entry_price
        price = (mark / rules.tick_size).to_integral_value() * rules.tick_size
        qty = abs(pos.amount)
        now = self.market.now_ms
        order_id = self._next_order_id
        self._next_order_id += 1
        order = Order(order_id=order_id,
                      client_order_id=ADL_CLIENT_ID if adl else f"{LIQUIDATION_CLIENT_PREFIX}{now}-{order_id}",
                      account=account.name, symbol=symbol, side="SELL" if pos.amount > 0 else "BUY",
                      order_type="LIQUIDATION", time_in_force="IOC", orig_qty=qty, price=price,
                      reduce_only=True, time_ms=now, update_ms=now)
        self.orders[order_id] = order
        self._by_client.setdefault((account.name, symbol, order.client_order_id), []).append(order_id)
        self._emit(account, order.ws_event("NEW", now))
        fee = (price * qty * self.fills.taker_fee_rate).quantize(Decimal("1E-8"))
        self._apply(account, order, FillResult((Fill(price, qty, fee, False),), qty, Decimal(0)), now,
                    execution_type="CALCULATED")
        return order

    def order_log(self) -> list[dict[str, Any]]:
        """Every order the venue has seen, all accounts, oldest first (admin view)."""
        return [dict(o.rest_payload(), account=o.account) for o in self.orders.values()]

    def positions_report(self) -> dict[str, Any]:
        """Wallets and non-zero positions of every account (admin view)."""
        report: dict[str, Any] = {}
        for account in self.accounts.values():
            report[account.name] = {
                "wallet_usdt": str(account.wallet),
                "fees_paid_usdt": str(account.fees_paid),
                "bnb": str(account.bnb),
                "funding_usdt": str(account.funding_paid),
                "positions": {s: {"amount": str(p.amount), "entry_price": str(p.entry_price),
                                  "realized_pnl": str(p.realized_pnl)}
                              for s, p in account.positions.items() if p.amount != 0},
            }
        return report

    # --- persistence -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "accounts": {n: a.to_state() for n, a in self.accounts.items()},
            "orders": [o.to_state() for o in self.orders.values()],
            "next_order_id": self._next_order_id,
            "next_trade_id": self._next_trade_id,
            "income": list(self.income),
            "next_tran_id": self._next_tran_id,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.reset()
        for name, data in state["accounts"].items():
            if name in self.accounts:
                self.accounts[name].load_state(data)
        for data in state["orders"]:
            order = Order.from_state(data)
            if order.symbol not in self.rules or order.account not in self.accounts:
                continue
            self.orders[order.order_id] = order
            key = (order.account, order.symbol, order.client_order_id)
            self._by_client.setdefault(key, []).append(order.order_id)
            if order.is_open:
                self._open[order.symbol][order.order_id] = order
        self._next_order_id = int(state["next_order_id"])
        self._next_trade_id = int(state["next_trade_id"])
        self.income = []
        self._income_by = {}
        for r in state.get("income", []):
            if r.get("account") in self.accounts:
                self._add_income(dict(r))
        self._next_tran_id = int(state.get("next_tran_id", 1))

    # --- internals -------------------------------------------------------------------------

    def has_income(self, account: Account, symbol: str, time_ms: int) -> bool:
        """True if ``account`` has an income row of ``symbol`` stamped ``time_ms`` (a funding time
        already charged). A bisect of the symbol's rows."""
        rows = self._income_by.get((account.name, symbol), [])
        i = bisect.bisect_left(rows, time_ms, key=_income_time)
        return i < len(rows) and _income_time(rows[i]) == time_ms

    def _add_income(self, row: dict[str, Any]) -> None:
        self.income.append(row)
        bisect.insort(self._income_by.setdefault((row["account"], row["symbol"]), []), row, key=_income_time)

    def _rules(self, symbol: str) -> SymbolRules:
        rules = self.rules.get(symbol)
        if rules is None:
            raise errors.invalid_symbol()
        return rules

    def _book(self, symbol: str) -> BookTop:
        book = self.market.book(symbol)
        if book is None:
            raise errors.server_busy()  # no quote yet: the venue is not ready for this market
        return book

    def _check_margin(self, account: Account, req: NewOrder, reference: Decimal,
                      position: Decimal) -> None:
        increase = increasing_qty(position, req.side, req.quantity)
        if increase <= 0:
            return
        required = increase * reference / account.leverage_of(req.symbol)
        summary = margin_summary(account, self.open_orders(account), self.market.mark_price)
        if required > summary.available:
            raise errors.margin_insufficient()

    def _fok_fillable(self, req: NewOrder, book: BookTop) -> bool:
        rules = replace(self._fill_rules[req.symbol], partial_fill_probability=0.0)
        spec = OrderSpec(req.side, req.quantity, "LIMIT", req.price)  # type: ignore[arg-type]
        return take_liquidity(spec, book, rules, random.Random(0)).remaining_qty == 0

    def _register(self, account: Account, req: NewOrder) -> Order:
        order_id = self._next_order_id
        self._next_order_id += 1
        now = self.market.now_ms
        order = Order(
            order_id=order_id,
            client_order_id=req.client_order_id or f"autoclientid-{order_id}",
            account=account.name, symbol=req.symbol, side=req.side, order_type=req.order_type,
            time_in_force=req.time_in_force, orig_qty=req.quantity,
            price=req.price if req.price is not None else Decimal(0),
            reduce_only=req.reduce_only, time_ms=now, update_ms=now,
        )
        self.orders[order_id] = order
        key = (account.name, req.symbol, order.client_order_id)
        self._by_client.setdefault(key, []).append(order_id)
        return order

    def _open_by_client(self, account: Account, symbol: str, client_id: str) -> bool:
        ids = self._by_client.get((account.name, symbol, client_id), [])
        return any(self.orders[i].is_open for i in ids)

    def _find(self, account: Account, ref: OrderRef) -> Order | None:
        self._rules(ref.symbol)
        if ref.order_id is not None:
            order = self.orders.get(ref.order_id)
            if order is None or order.account != account.name or order.symbol != ref.symbol:
                return None
            if ref.client_order_id is not None and order.client_order_id != ref.client_order_id:
                return None
            return order
        ids = self._by_client.get((account.name, ref.symbol, ref.client_order_id or ""), [])
        return self.orders[ids[-1]] if ids else None

    def _fee_rates(self, account: Account) -> tuple[Decimal, Decimal]:
        """(maker, taker) of ``account``: its own tier if configured, else the venue's."""
        maker = self.fills.maker_fee_rate if account.maker_fee_rate is None else account.maker_fee_rate
        taker = self.fills.taker_fee_rate if account.taker_fee_rate is None else account.taker_fee_rate
        return maker, taker

    def _account_rules(self, account: Account, symbol: str, partial_fill_probability: float) -> FillRules:
        maker, taker = self._fee_rates(account)
        return replace(self._fill_rules[symbol], partial_fill_probability=partial_fill_probability,
                       maker_fee_rate=maker, taker_fee_rate=taker)

    def _fee_in_asset(self, account: Account, fee_usdt: Decimal) -> tuple[Decimal, str, Decimal]:
        """(fee in the asset charged, that asset, its USDT value) for a fee of ``fee_usdt``.

        An account paying in BNB, with a BNB price known and enough BNB, pays the discounted
        fee in BNB (8 decimals); otherwise USDT at the full rate, as Binance falls back.
        """
        price = self.fills.bnb_price_usdt
        if account.pay_fees_in_bnb and price is not None and fee_usdt > 0:
            usdt = fee_usdt * (1 - self.fills.bnb_fee_discount)
            bnb = (usdt / price).quantize(_MONEY, rounding=ROUND_HALF_UP)
            if bnb <= account.bnb:
                return bnb, "BNB", bnb * price
        return fee_usdt, "USDT", fee_usdt

    def _take(self, account: Account, order: Order, book: BookTop) -> None:
        """Immediate matching of a just-accepted order, then rest or expire the remainder."""
        rules = self._account_rules(account, order.symbol,
                                    0.0 if order.time_in_force == "FOK"
                                    else self.faults.partial_fill_probability)
        if order.order_type == "MARKET" or is_marketable(order.side, order.price, book):
            spec = OrderSpec(order.side, order.remaining, order.order_type,  # type: ignore[arg-type]
                             order.price if order.order_type == "LIMIT" else None)
            self._apply(account, order, take_liquidity(spec, book, rules, self.faults.fill_rng()),
                        order.time_ms)
        if not order.is_open:
            return
        if order.order_type == "MARKET" or order.time_in_force in ("IOC", "FOK"):
            self._close(order, EXPIRED)
        else:
            self._open[order.symbol][order.order_id] = order

    def _fill_resting(self, order: Order, book: BookTop, now_ms: int) -> None:
        account = self.accounts[order.account]
        qty = order.remaining
        if order.reduce_only:
            position = account.position(order.symbol).amount
            if increasing_qty(position, order.side, order.remaining) == order.remaining:
                self._close(order, EXPIRED, now_ms)
                return
            qty = min(qty, abs(position))
        rules = self._account_rules(account, order.symbol, self.faults.partial_fill_probability)
        spec = OrderSpec(order.side, qty, "LIMIT", order.price)  # type: ignore[arg-type]
        try:
            result = fill_resting(spec, book, rules, self.faults.fill_rng())
        except InvalidBookError:
            return  # an untradeable quote: wait for the next one
        if result.fills:
            self._apply(account, order, result, now_ms)
            if not order.is_open:
                self._open[order.symbol].pop(order.order_id, None)

    def _apply(self, account: Account, order: Order, result: FillResult, now: int,
               execution_type: str = "TRADE") -> None:
        position = account.position(order.symbol)
        if not result.fills:
            return
        wall = self.wall_clock()
        history = self._position_history.get((account.name, order.symbol))
        if history is None:
            # the state before the first recorded change stands for "ever since"
            history = self._position_history[(account.name, order.symbol)] = deque(
                [(-1, replace(position))])
        for fill in result.fills:
            realized = position.apply_fill(order.side, fill.qty, fill.price, now)
            fee, fee_asset, fee_usdt = self._fee_in_asset(account, fill.fee)
            if fee_asset == "BNB":
                account.bnb -= fee
                account.wallet += realized
            else:
                account.wallet += realized - fee
            account.fees_paid += fee_usdt
            account.update_ms = now
            trade = TradeRecord(self._next_trade_id, fill.price, fill.qty, fee,
                                fill.is_maker, realized, now, fee_asset)
            self._trade_wall_ms[trade.trade_id] = wall
            self._next_trade_id += 1
            order.add_trade(trade)
            self._emit(account, order.ws_event(execution_type, now, trade))
            self._emit(account, account_update_event(account, order.symbol,
                                                     self.market.mark_price(order.symbol), now))
        history.append((wall, replace(position)))
        # keep only what the current lag can ask for: the newest change at or before the
        # cutoff (the state as of then) and everything after it
        cutoff = wall - self.faults.position_lag_ms
        while len(history) >= 2 and history[1][0] <= cutoff:
            history.popleft()

    def _position_as_of(self, account: str, symbol: str, as_of_wall_ms: int,
                        live: Position | None) -> Position | None:
        """The position of ``account`` in ``symbol`` as it was at ``as_of_wall_ms``."""
        history = self._position_history.get((account, symbol))
        if not history:
            return live
        for changed_ms, snapshot in reversed(history):
            if changed_ms <= as_of_wall_ms:
                return snapshot
        return history[0][1]  # older than the kept history: the oldest state known

    def _close(self, order: Order, status: str, now_ms: int | None = None) -> None:
        now = self.market.now_ms if now_ms is None else now_ms
        order.apply_status(status, now)
        self._open[order.symbol].pop(order.order_id, None)
        self._emit(self.accounts[order.account], order.ws_event(status, now))

    def _emit(self, account: Account, event: dict[str, Any]) -> None:
        if self.sink is not None:
            self.sink(account.name, event)


def _check_position_side(account: Account, req: NewOrder) -> None:
    """-4061 when the order's positionSide does not fit the account's position mode (hedge mode
    needs LONG or SHORT, one-way mode BOTH or none). Hedge-mode positions are not modelled."""
    if account.dual_side_position != (req.position_side != "BOTH"):
        raise errors.position_side_mismatch()
    if account.dual_side_position:
        raise errors.hedge_positions_not_modelled()


def _only(account: Account, symbol: str) -> Account:
    """A view of ``account`` with only ``symbol``'s position (for per-symbol order margin)."""
    view = Account(name=account.name, api_key=account.api_key, secret=account.secret,
                   wallet=account.wallet, default_leverage=account.default_leverage,
                   default_margin_type=account.default_margin_type,
                   leverage=account.leverage, margin_type=account.margin_type)
    if symbol in account.positions:
        view.positions[symbol] = account.positions[symbol]
    return view


def _income_time(row: dict[str, Any]) -> int:
    return int(row["time"])
