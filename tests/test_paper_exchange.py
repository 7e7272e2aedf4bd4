"""PaperExchange: the dry-run adapter over the simulator's engine, fed real recorded quotes.

The markets object is a small test double of OUR market interface (not of ccxt), built from the
real recorded exchangeInfo; the quotes are the real bookTicker capture of 2024-07-18.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import json
import random
import time
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from core.config import PaperConfig
from core.errors import (InsufficientFundsError, InvalidOrderError, OrderNotFoundError, PermanentError,
                         RetryableError)
from core.types import Quote
from execution.exchange import ExchangeOrderStatus, MarketRules
from execution.paper import PaperExchange, translate_binance_error
from matching.errors import BinanceError
from matching.fill_model import BookTop, FillRules, OrderSpec, take_liquidity
from matching.rules import rules_from_info
from market_replay.markets import load_exchange_info

DATA = Path(__file__).resolve().parent.parent / "data"
EXCHANGE_INFO = DATA / "exchange-info" / "binance_usdm_fapi_v1_exchangeInfo_2021-07-21.json"
TICKS = DATA / "binance-usdm-ticks-2024"
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
UNIFIED = {"BTCUSDT": BTC, "ETHUSDT": ETH}


class RecordedMarkets:
    """Markets, rules and precision from the recorded exchangeInfo (floors qty to the step)."""

    def __init__(self) -> None:
        symbols = load_exchange_info(EXCHANGE_INFO)["symbols"]
        self.infos = {UNIFIED[s["symbol"]]: s for s in symbols if s["symbol"] in UNIFIED}
        self.loads = 0
        self.closed = False

    async def load_markets(self) -> None:
        self.loads += 1

    def market_info(self, symbol: str) -> dict[str, Any]:
        return self.infos[symbol]

    def rules(self, symbol: str) -> MarketRules:
        if symbol not in self.infos:
            raise InvalidOrderError(f"unknown market {symbol}")
        r = rules_from_info(self.infos[symbol], "recorded")
        return MarketRules(symbol, r.symbol, r.step_size, r.tick_size, r.min_qty, r.min_notional, r.max_qty)

    def resolve_symbol(self, raw: str) -> str:
        for symbol in self.infos:
            if raw in (symbol, symbol.replace("/", "").split(":")[0]):
                return symbol
        raise InvalidOrderError(f"unknown market {raw}")

    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal:
        step = self.rules(symbol).step_size
        floored = (qty / step).to_integral_value(rounding=ROUND_DOWN) * step
        if floored <= 0:
            raise InvalidOrderError(f"{qty} is below one lot of {symbol}")
        return floored

    def price_to_precision(self, symbol: str, price: Decimal) -> Decimal:
        tick = self.rules(symbol).tick_size
        return (price / tick).to_integral_value(rounding=ROUND_HALF_UP) * tick

    async def close(self) -> None:
        self.closed = True


@lru_cache(maxsize=None)
def recorded_quotes(exchange_id: str, rows: int = 20_000) -> tuple[Quote, ...]:
    path = TICKS / f"hftbacktest_binance_usdm_{exchange_id}_20240718_bookTicker.csv.gz"
    out = []
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if i >= rows:
                break
            out.append(Quote(symbol=UNIFIED[exchange_id], bid=float(row["bid_price"]),
                             ask=float(row["ask_price"]), ts_ms=int(row["event_time_ms"]),
                             bid_qty=float(row["bid_qty"]), ask_qty=float(row["ask_qty"])))
    return tuple(out)


def book_of(q: Quote) -> BookTop:
    return BookTop(Decimal(repr(q.bid)), Decimal(repr(q.ask)), Decimal(repr(q.bid_qty)), Decimal(repr(q.ask_qty)))


def make(state_path: Path | None = None, markets: RecordedMarkets | None = None, **paper: Any) -> PaperExchange:
    markets = markets or RecordedMarkets()
    return PaperExchange(markets=markets, paper=PaperConfig(**paper), state_path=state_path,
                         market_info=markets.market_info)


async def ready(state_path: Path | None = None, **paper: Any) -> PaperExchange:
    """A loaded paper exchange that has seen the first BTC and ETH quotes."""
    ex = make(state_path, **paper)
    await ex.load_markets()
    ex.on_quote(recorded_quotes("BTCUSDT")[0])
    ex.on_quote(recorded_quotes("ETHUSDT")[0])
    return ex


def fill_rules(paper: PaperConfig) -> FillRules:
    return FillRules(tick_size=Decimal("0.01"), step_size=Decimal("0.001"),
                     taker_fee_rate=Decimal(repr(paper.taker_fee_rate)),
                     maker_fee_rate=Decimal(repr(paper.maker_fee_rate)),
                     slippage_bps=Decimal(repr(paper.slippage_bps)))


async def test_identity_and_precision_come_from_markets() -> None:
    markets = RecordedMarkets()
    ex = make(markets=markets)
    await ex.load_markets()
    assert (ex.name, ex.sends_orders, markets.loads) == ("paper", False, 1)
    assert ex.rules(BTC).exchange_symbol == "BTCUSDT"
    assert ex.resolve_symbol("ETHUSDT") == ETH
    assert ex.amount_to_precision(BTC, Decimal("0.0129")) == Decimal("0.012")
    assert ex.price_to_precision(BTC, Decimal("63943.904")) == Decimal("63943.90")


@pytest.mark.parametrize("side", ["buy", "sell"])
async def test_market_order_fills_like_the_fill_model(side: str) -> None:
    paper = PaperConfig(slippage_bps=3.0)
    ex = await ready(slippage_bps=3.0)
    quote = recorded_quotes("BTCUSDT")[0]
    qty = Decimal("0.200")  # more than the 0.095 BTC shown at the ask: a buy walks the synthetic levels
    order = await ex.create_order(symbol=BTC, side=side, qty=qty, order_type="market", client_order_id=f"m-{side}")
    spec = OrderSpec("BUY" if side == "buy" else "SELL", qty, "MARKET")
    expected = take_liquidity(spec, book_of(quote), fill_rules(paper), random.Random(0))
    assert expected.filled_qty == qty and expected.fee > 0
    assert len(expected.fills) == (3 if side == "buy" else 1)
    assert (order.status, order.filled, order.symbol, order.side) == (ExchangeOrderStatus.CLOSED, qty, BTC, side)
    assert order.avg_price == expected.avg_price
    assert order.ts_ms == quote.ts_ms and order.price is None
    reference = Decimal(repr(quote.ask if side == "buy" else quote.bid))
    assert (order.avg_price > reference) if side == "buy" else (order.avg_price < reference)  # slippage
    fills = await ex.fetch_order_fills(symbol=BTC, exchange_order_id=order.exchange_order_id or "")
    assert [(f.qty, f.price, f.fee) for f in fills] == [(f.qty, f.price, f.fee) for f in expected.fills]
    assert all(f.client_order_id == f"m-{side}" and f.symbol == BTC and f.side == side for f in fills)
    positions = await ex.fetch_positions([BTC])
    assert positions[BTC].qty == (qty if side == "buy" else -qty)


async def test_partial_fill_expires_the_rest_and_fills_sum_to_filled() -> None:
    ex = await ready(partial_fill_probability=1.0, seed=3)
    qty = Decimal("0.050")
    order = await ex.create_order(symbol=BTC, side="buy", qty=qty, order_type="market", client_order_id="p-1")
    assert order.status is ExchangeOrderStatus.EXPIRED
    assert 0 < order.filled < qty
    fills = await ex.fetch_order_fills(symbol=BTC, exchange_order_id=order.exchange_order_id or "")
    assert sum((f.qty for f in fills), Decimal(0)) == order.filled
    assert len({f.trade_id for f in fills}) == len(fills)
    assert (await ex.fetch_positions([BTC]))[BTC].qty == order.filled


async def test_reduce_only_closes_exactly_and_is_refused_when_flat() -> None:
    ex = await ready()
    qty = Decimal("0.005")
    await ex.create_order(symbol=ETH, side="sell", qty=qty, order_type="market", client_order_id="o-1")
    assert (await ex.fetch_positions([ETH]))[ETH].qty == -qty
    close = await ex.create_order(symbol=ETH, side="buy", qty=qty, order_type="market", client_order_id="c-1",
                                  reduce_only=True)
    assert (close.status, close.filled, close.reduce_only) == (ExchangeOrderStatus.CLOSED, qty, True)
    assert await ex.fetch_positions([ETH]) == {}
    with pytest.raises(InvalidOrderError, match="-2022"):
        await ex.create_order(symbol=ETH, side="buy", qty=qty, order_type="market", client_order_id="c-2",
                              reduce_only=True)


async def test_insufficient_margin_is_insufficient_funds() -> None:
    ex = await ready(starting_balance_usdt=100.0)
    before = await ex.fetch_balance()
    with pytest.raises(InsufficientFundsError):
        await ex.create_order(symbol=BTC, side="buy", qty=Decimal("1"), order_type="market", client_order_id="big")
    assert await ex.fetch_balance() == before
    with pytest.raises(OrderNotFoundError):
        await ex.fetch_order(symbol=BTC, client_order_id="big")


@pytest.mark.parametrize(("qty", "price", "code"), [
    (Decimal("0.001"), None, "-4164"),  # 0.001 ETH is about 3.4 USDT, below the 5 USDT minimum
    (Decimal("0.0015"), None, "-1111"),  # more decimals than the market allows
    (Decimal("-1"), None, "-1100"),
    (Decimal("0.01"), Decimal("3000.001"), "-1111"),
])
async def test_invalid_orders_are_invalid_order_errors(qty: Decimal, price: Decimal | None, code: str) -> None:
    ex = await ready()
    with pytest.raises(InvalidOrderError, match=code):
        await ex.create_order(symbol=ETH, side="buy", qty=qty, order_type="limit" if price else "market",
                              client_order_id="bad", price=price)
    assert await ex.fetch_open_orders() == []


async def test_fetch_order_by_client_id_and_unknown_ids() -> None:
    ex = await ready()
    sent = await ex.create_order(symbol=BTC, side="buy", qty=Decimal("0.002"), order_type="market",
                                 client_order_id="pb-sig-aE0")
    found = await ex.fetch_order(symbol=BTC, client_order_id="pb-sig-aE0")
    assert found == sent
    with pytest.raises(OrderNotFoundError):
        await ex.fetch_order(symbol=BTC, client_order_id="pb-unknown")
    with pytest.raises(OrderNotFoundError):
        await ex.cancel_order(symbol=BTC, client_order_id="pb-unknown")
    assert await ex.fetch_order_fills(symbol=BTC, exchange_order_id="999999") == []


def first_cross(quotes: tuple[Quote, ...], side: str) -> tuple[int, Decimal]:
    """The first later quote that improves on the first one's price for ``side``, and that price.

    A limit at that price does not cross the first quote, so it rests; every quote before the
    returned one leaves it untouched, and the returned one fills it as maker.
    """
    if side == "buy":
        i = next(i for i, q in enumerate(quotes) if q.ask < quotes[0].ask)
        return i, Decimal(repr(quotes[i].ask))
    i = next(i for i, q in enumerate(quotes) if q.bid > quotes[0].bid)
    return i, Decimal(repr(quotes[i].bid))


async def test_limit_order_rests_then_fills_as_maker_on_a_crossing_quote() -> None:
    paper = PaperConfig()
    ex = await ready()
    quotes = recorded_quotes("BTCUSDT")  # a rising morning: a sell limit above the bid gets hit
    dip, limit = first_cross(quotes, "sell")
    qty = Decimal("0.001")
    order = await ex.create_order(symbol=BTC, side="sell", qty=qty, order_type="limit", price=limit,
                                  client_order_id="lim-1")
    assert (order.status, order.filled, order.price) == (ExchangeOrderStatus.OPEN, 0, limit)
    for quote in quotes[1:dip]:
        ex.on_quote(quote)
    assert [o.client_order_id for o in await ex.fetch_open_orders(BTC)] == ["lim-1"]
    ex.on_quote(quotes[dip])
    done = await ex.fetch_order(symbol=BTC, client_order_id="lim-1")
    assert (done.status, done.filled, done.avg_price) == (ExchangeOrderStatus.CLOSED, qty, limit)
    fills = await ex.fetch_order_fills(symbol=BTC, exchange_order_id=done.exchange_order_id or "")
    maker_fee = (limit * qty * Decimal(repr(paper.maker_fee_rate))).quantize(Decimal("1E-8"), ROUND_HALF_UP)
    assert [(f.qty, f.price, f.fee, f.ts_ms) for f in fills] == [(qty, limit, maker_fee, quotes[dip].ts_ms)]
    assert await ex.fetch_open_orders() == []


async def test_cancel_a_resting_order() -> None:
    ex = await ready()
    price = Decimal("60000.00")
    await ex.create_order(symbol=BTC, side="buy", qty=Decimal("0.002"), order_type="limit", price=price,
                          client_order_id="c-1")
    free_with_order = (await ex.fetch_balance()).free
    canceled = await ex.cancel_order(symbol=BTC, client_order_id="c-1")
    assert (canceled.status, canceled.filled) == (ExchangeOrderStatus.CANCELED, 0)
    assert await ex.fetch_open_orders(BTC) == []
    assert (await ex.fetch_balance()).free > free_with_order  # the order's margin is released
    with pytest.raises(OrderNotFoundError):
        await ex.cancel_order(symbol=BTC, client_order_id="c-1")


async def test_round_trip_balance_changes_by_realized_pnl_minus_fees() -> None:
    ex = await ready(slippage_bps=1.0)
    start = await ex.fetch_balance()
    assert start.total == start.free == Decimal("10000.0")
    quotes = recorded_quotes("ETHUSDT")
    qty = Decimal("0.020")
    buy = await ex.create_order(symbol=ETH, side="buy", qty=qty, order_type="market", client_order_id="rt-b")
    for quote in quotes[1:3000]:
        ex.on_quote(quote)
    sell = await ex.create_order(symbol=ETH, side="sell", qty=qty, order_type="market", client_order_id="rt-s",
                                 reduce_only=True)
    fills = [f for o in (buy, sell)
             for f in await ex.fetch_order_fills(symbol=ETH, exchange_order_id=o.exchange_order_id or "")]
    assert sum((f.qty for f in fills if f.side == "buy"), Decimal(0)) == buy.filled == qty
    realized = sum((f.qty * f.price * (1 if f.side == "sell" else -1) for f in fills), Decimal(0))
    fees = sum((f.fee for f in fills), Decimal(0))
    end = await ex.fetch_balance()
    assert end.total - start.total == realized - fees
    assert end.free == end.total
    assert await ex.fetch_positions([]) == {}


async def test_account_survives_a_restart_on_the_same_state_path(tmp_path: Path) -> None:
    path = tmp_path / "paper" / "account.json"
    ex = await ready(path)
    await ex.set_leverage(BTC, 3)
    await ex.set_margin_mode(BTC, "isolated")
    await ex.create_order(symbol=BTC, side="sell", qty=Decimal("0.004"), order_type="market", client_order_id="s-1")
    resting = await ex.create_order(symbol=ETH, side="buy", qty=Decimal("0.010"), order_type="limit",
                                    price=Decimal("3000.00"), client_order_id="r-1")
    positions, balance = await ex.fetch_positions([]), await ex.fetch_balance()
    await ex.close()
    assert json.loads(path.read_text())["symbols"] == {"BTCUSDT": BTC, "ETHUSDT": ETH}
    assert not list(path.parent.glob(".*.tmp"))

    again = make(path)
    await again.load_markets()
    assert await again.fetch_positions([]) == positions
    assert [o.exchange_order_id for o in await again.fetch_open_orders()] == [resting.exchange_order_id]
    assert (await again.fetch_order(symbol=BTC, client_order_id="s-1")).filled == Decimal("0.004")
    await again.set_margin_mode(BTC, "isolated")  # restored: already set, not an error
    again.on_quote(recorded_quotes("BTCUSDT")[0])
    again.on_quote(recorded_quotes("ETHUSDT")[0])
    assert await again.fetch_balance() == balance
    new = await again.create_order(symbol=BTC, side="buy", qty=Decimal("0.004"), order_type="market",
                                   client_order_id="b-1", reduce_only=True)
    assert int(new.exchange_order_id or 0) > int(resting.exchange_order_id or 0)
    assert await again.fetch_positions([BTC]) == {}


async def test_restored_wallet_equals_saved_wallet(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    ex = await ready(path)
    await ex.create_order(symbol=ETH, side="buy", qty=Decimal("0.010"), order_type="market", client_order_id="w-1")
    await ex.create_order(symbol=ETH, side="sell", qty=Decimal("0.010"), order_type="market", client_order_id="w-2")
    flat = await ex.fetch_balance()
    assert flat.total < Decimal("10000")  # fees paid
    again = make(path, starting_balance_usdt=50_000.0)  # the saved account wins over the config
    await again.load_markets()
    assert await again.fetch_balance() == flat


async def test_resting_fill_is_saved_without_any_further_call(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    ex = await ready(path)
    quotes = recorded_quotes("ETHUSDT")
    dip, limit = first_cross(quotes, "buy")
    await ex.create_order(symbol=ETH, side="buy", qty=Decimal("0.010"), order_type="limit", price=limit,
                          client_order_id="lim-s")
    for quote in quotes[1:dip + 1]:
        ex.on_quote(quote)
    again = make(path)  # as after a crash: the first instance never closed
    await again.load_markets()
    assert (await again.fetch_positions([ETH]))[ETH].qty == Decimal("0.010")


async def test_no_state_path_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ex = await ready(None)
    await ex.create_order(symbol=BTC, side="buy", qty=Decimal("0.001"), order_type="market", client_order_id="n-1")
    await ex.close()
    assert list(tmp_path.iterdir()) == []


async def test_damaged_state_file_is_a_permanent_error(tmp_path: Path) -> None:
    path = tmp_path / "account.json"
    path.write_text('{"version": 99}')
    with pytest.raises(PermanentError, match="delete it"):
        await make(path).load_markets()


async def test_no_quote_yet_is_retryable() -> None:
    ex = make()
    await ex.load_markets()
    with pytest.raises(RetryableError, match="no quote yet"):
        await ex.create_order(symbol=BTC, side="buy", qty=Decimal("0.001"), order_type="market", client_order_id="q")


async def test_quotes_before_load_markets_are_kept() -> None:
    ex = make()
    ex.on_quote(recorded_quotes("BTCUSDT")[0])
    await ex.load_markets()
    order = await ex.create_order(symbol=BTC, side="buy", qty=Decimal("0.001"), order_type="market",
                                  client_order_id="e-1")
    assert order.status is ExchangeOrderStatus.CLOSED


async def test_latency_is_honoured() -> None:
    ex = await ready(latency_ms=40)
    resolution = time.get_clock_info("monotonic").resolution
    started = asyncio.get_running_loop().time()
    await ex.create_order(symbol=BTC, side="buy", qty=Decimal("0.001"), order_type="market", client_order_id="l-1")
    assert asyncio.get_running_loop().time() - started >= 0.040 - resolution


async def test_leverage_and_margin_mode() -> None:
    ex = await ready()
    await ex.set_margin_mode(ETH, "cross")  # the default already: not an error
    await ex.set_margin_mode(ETH, "isolated")
    await ex.set_margin_mode(ETH, "isolated")
    await ex.set_leverage(ETH, 10)
    with pytest.raises(InvalidOrderError):
        await ex.set_leverage(ETH, 500)
    with pytest.raises(InvalidOrderError):
        await ex.set_margin_mode(ETH, "portfolio")


async def test_close_leaves_the_markets_open() -> None:
    markets = RecordedMarkets()
    ex = PaperExchange(markets=markets, paper=PaperConfig(), state_path=None)  # market_info from markets
    await ex.load_markets()
    await ex.close()
    assert markets.closed is False


def test_market_info_is_required() -> None:
    class Bare:
        pass

    with pytest.raises(TypeError, match="market_info"):
        PaperExchange(markets=Bare(), paper=PaperConfig(), state_path=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("error", "expected"), [
    (BinanceError(-2019, "Margin is insufficient."), InsufficientFundsError),
    (BinanceError(-2011, "Unknown order sent."), OrderNotFoundError),
    (BinanceError(-2013, "Order does not exist."), OrderNotFoundError),
    (BinanceError(-1111, "Precision"), InvalidOrderError),
    (BinanceError(-4164, "notional"), InvalidOrderError),
    (BinanceError(-1013, "Filter failure: LOT_SIZE"), InvalidOrderError),
    (BinanceError(-2022, "ReduceOnly Order is rejected."), InvalidOrderError),
    (BinanceError(-4116, "ClientOrderId is duplicated."), InvalidOrderError),
    (BinanceError(-2010, "NEW_ORDER_REJECTED"), InvalidOrderError),
    (BinanceError(-1001, "Internal error", http_status=500), RetryableError),
    (BinanceError(-1008, "Server busy", http_status=503), RetryableError),
    (BinanceError(-1003, "Too many requests", http_status=429), RetryableError),
])
def test_binance_codes_translate_by_action(error: BinanceError, expected: type[Exception]) -> None:
    translated = translate_binance_error(error, "create_order", "ctx")
    assert type(translated) is expected
    assert str(error.code) in str(translated)


async def test_duplicate_open_client_id_is_refused() -> None:
    ex = await ready()
    args: dict[str, Any] = dict(symbol=BTC, side="buy", qty=Decimal("0.002"), order_type="limit",
                                price=Decimal("60000.00"), client_order_id="dup")
    await ex.create_order(**args)
    with pytest.raises(InvalidOrderError, match="-4116"):
        await ex.create_order(**args)
