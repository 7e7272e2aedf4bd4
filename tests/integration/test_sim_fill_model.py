"""The shared fill model (pure): prices, depth, slippage, fees, partial fills, exactness."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest

from matching.fill_model import (
    BookTop,
    FillRules,
    InvalidBookError,
    OrderSpec,
    fee_for,
    fill_resting,
    is_marketable,
    take_liquidity,
)

BOOK = BookTop(bid=D("100.0"), ask=D("100.2"), bid_qty=D("1.5"), ask_qty=D("2"))
RULES = FillRules(tick_size=D("0.1"), step_size=D("0.001"))


def test_market_buy_within_top_fills_at_ask_with_taker_fee() -> None:
    result = take_liquidity(OrderSpec("BUY", D("1.25"), "MARKET"), BOOK, RULES, random.Random(0))
    assert [(f.price, f.qty, f.is_maker) for f in result.fills] == [(D("100.2"), D("1.25"), False)]
    assert result.fills[0].fee == D("0.05010000")  # 100.2 * 1.25 * 0.0004, exact
    assert result.remaining_qty == 0 and result.avg_price == D("100.2")


def test_market_sell_walks_synthetic_levels_one_spread_apart() -> None:
    result = take_liquidity(OrderSpec("SELL", D("4"), "MARKET"), BOOK, RULES, random.Random(0))
    assert [(f.price, f.qty) for f in result.fills] == [
        (D("100.0"), D("1.5")), (D("99.8"), D("1.5")), (D("99.6"), D("1.0"))]
    assert result.filled_qty == D("4")


def test_market_order_beyond_all_levels_leaves_a_remainder() -> None:
    rules = FillRules(tick_size=D("0.1"), step_size=D("0.001"), depth_levels=1)
    result = take_liquidity(OrderSpec("BUY", D("5"), "MARKET"), BOOK, rules, random.Random(0))
    assert result.filled_qty == D("4") and result.remaining_qty == D("1")
    assert not result.cut_short


def test_limit_never_fills_beyond_its_price() -> None:
    spec = OrderSpec("BUY", D("5"), "LIMIT", limit_price=D("100.4"))
    result = take_liquidity(spec, BOOK, RULES, random.Random(0))
    assert max(f.price for f in result.fills) <= D("100.4")
    assert result.filled_qty == D("4")  # levels 100.2 and 100.4 only


def test_slippage_moves_price_against_the_taker_rounded_to_tick() -> None:
    rules = FillRules(tick_size=D("0.1"), step_size=D("0.001"), slippage_bps=D("5"))
    buy = take_liquidity(OrderSpec("BUY", D("1"), "MARKET"), BOOK, rules, random.Random(0))
    sell = take_liquidity(OrderSpec("SELL", D("1"), "MARKET"), BOOK, rules, random.Random(0))
    assert buy.fills[0].price == D("100.3")   # 100.2 * 1.0005 = 100.2501 -> up to 100.3
    assert sell.fills[0].price == D("99.9")   # 100.0 * 0.9995 = 99.95 -> down to 99.9


def test_resting_limit_fills_as_maker_at_its_price_when_reached() -> None:
    spec = OrderSpec("BUY", D("3"), "LIMIT", limit_price=D("100.2"))
    result = fill_resting(spec, BOOK, RULES, random.Random(0))
    assert [(f.price, f.qty, f.is_maker) for f in result.fills] == [(D("100.2"), D("2"), True)]
    assert result.fills[0].fee == fee_for(D("200.4"), RULES.maker_fee_rate)
    assert result.remaining_qty == D("1")
    not_reached = fill_resting(OrderSpec("BUY", D("3"), "LIMIT", D("100.1")), BOOK, RULES,
                               random.Random(0))
    assert not_reached.fills == () and not_reached.remaining_qty == D("3")


def test_partial_fill_coin_cuts_to_whole_steps_and_is_seeded() -> None:
    rules = FillRules(tick_size=D("0.1"), step_size=D("0.001"), partial_fill_probability=1.0)
    spec = OrderSpec("BUY", D("1"), "MARKET")
    first = take_liquidity(spec, BOOK, rules, random.Random(42))
    again = take_liquidity(spec, BOOK, rules, random.Random(42))
    assert first == again and first.cut_short
    assert D("0.001") <= first.filled_qty < D("1")
    assert first.filled_qty % D("0.001") == 0
    one_step = take_liquidity(OrderSpec("BUY", D("0.001"), "MARKET"), BOOK, rules,
                              random.Random(1))
    assert one_step.filled_qty == D("0.001")  # a single step cannot be split


def test_quantities_add_up_exactly_over_many_random_orders() -> None:
    rng = random.Random(7)
    rules = FillRules(tick_size=D("0.01"), step_size=D("0.001"), partial_fill_probability=0.3,
                      slippage_bps=D("1.5"))
    for _ in range(500):
        qty = D(rng.randint(1, 9000)) / 1000
        side = rng.choice(["BUY", "SELL"])
        result = take_liquidity(OrderSpec(side, qty, "MARKET"), BOOK, rules, rng)  # type: ignore[arg-type]
        assert sum(f.qty for f in result.fills) + result.remaining_qty == qty
        assert all(f.price % D("0.01") == 0 for f in result.fills)


def test_invalid_books_are_refused() -> None:
    spec = OrderSpec("BUY", D("1"), "MARKET")
    for book in (BookTop(D("101"), D("100"), D(1), D(1)), BookTop(D("0"), D("1"), D(1), D(1))):
        with pytest.raises(InvalidBookError):
            take_liquidity(spec, book, RULES, random.Random(0))


def test_marketability() -> None:
    assert is_marketable("BUY", D("100.2"), BOOK) and not is_marketable("BUY", D("100.1"), BOOK)
    assert is_marketable("SELL", D("100.0"), BOOK) and not is_marketable("SELL", D("100.1"), BOOK)


def test_order_spec_validation() -> None:
    with pytest.raises(ValueError):
        OrderSpec("BUY", D("0"), "MARKET")
    with pytest.raises(ValueError):
        OrderSpec("BUY", D("1"), "LIMIT")
    with pytest.raises(ValueError):
        FillRules(tick_size=D("0.1"), step_size=D("0.001"), partial_fill_probability=1.5)
