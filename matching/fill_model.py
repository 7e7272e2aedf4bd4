"""How an order fills against a best bid/ask: the one fill model of the project.

The matching engine (``matching/engine.py``), behind both the offline simulator and the paper
exchange (``execution/paper.py``), fills orders with these functions, so a strategy behaves the
same in a dry run and against the simulator. The module is pure: no I/O, no clock, no globals;
the caller passes the book, the order, the rules and a seeded ``random.Random``, and gets fills
back.

Money is exact. Prices, quantities and fees are ``Decimal``; nothing here compares floats.

The liquidity model, stated plainly so results can be reasoned about:

- Only the top of book is known (bid, ask and their sizes). Behind it the model assumes
  ``depth_levels`` more levels per side, each ``level_step = max(tick, ask - bid)`` further away
  and holding the same size as the top. Beyond the last level there is no liquidity: the rest
  of a market order is not filled (the caller expires it, as Binance does for an IOC remainder).
- A taker pays ``taker_fee_rate`` on notional and suffers ``slippage_bps`` of adverse price
  move on every fill, rounded away from it to the tick (a buy pays more, a sell receives less),
  but never beyond a limit price.
- A resting limit order fills as maker at its own limit price once the opposite best price
  reaches it (buy: ask <= limit; sell: bid >= limit), at most the size shown at the top.
- With probability ``partial_fill_probability`` a fill is cut to a random whole number of lot
  steps short of the quantity asked (at least one step filled). That is how the simulator and
  the paper exchange exercise partial-fill handling; the coin draws from the ``random.Random``
  passed in (the engine gets it from its ``VenueFaults``), never from a global.

>>> import random
>>> book = BookTop(bid=Decimal("100.0"), ask=Decimal("100.1"), bid_qty=Decimal("5"),
...                ask_qty=Decimal("5"))
>>> rules = FillRules(tick_size=Decimal("0.1"), step_size=Decimal("0.001"))
>>> result = take_liquidity(OrderSpec(side="BUY", qty=Decimal("2"), order_type="MARKET"),
...                         book, rules, random.Random(1))
>>> [(f.price, f.qty, f.fee) for f in result.fills]
[(Decimal('100.1'), Decimal('2'), Decimal('0.08008000'))]
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Literal

Side = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT"]

_BPS = Decimal("0.0001")


class InvalidBookError(ValueError):
    """The quote cannot be traded against (non-positive or crossed prices, negative sizes).

    Action for the caller: do not fill now; wait for the next good quote.
    """


@dataclass(frozen=True, slots=True)
class BookTop:
    """Best bid and ask with the quantities shown there (base units)."""

    bid: Decimal
    ask: Decimal
    bid_qty: Decimal
    ask_qty: Decimal

    def validate(self) -> None:
        """Raise ``InvalidBookError`` unless this quote is tradeable."""
        if not (self.bid > 0 and self.ask > 0):
            raise InvalidBookError(f"non-positive price: bid={self.bid} ask={self.ask}")
        if self.ask < self.bid:
            raise InvalidBookError(f"crossed book: bid={self.bid} > ask={self.ask}")
        if self.bid_qty < 0 or self.ask_qty < 0:
            raise InvalidBookError(f"negative size: {self.bid_qty} / {self.ask_qty}")

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(frozen=True, slots=True)
class FillRules:
    """Market rules and cost assumptions for filling one instrument.

    Rates are fractions of notional (0.0004 = 4 bps). ``slippage_bps`` is in basis points of
    price. ``depth_levels`` is how many synthetic levels sit behind the top of book.
    """

    tick_size: Decimal
    step_size: Decimal
    taker_fee_rate: Decimal = Decimal("0.0004")
    maker_fee_rate: Decimal = Decimal("0.0002")
    slippage_bps: Decimal = Decimal("0")
    depth_levels: int = 5
    partial_fill_probability: float = 0.0
    fee_decimals: int = 8

    def __post_init__(self) -> None:
        if self.tick_size <= 0 or self.step_size <= 0:
            raise ValueError("tick_size and step_size must be positive")
        if self.depth_levels < 0:
            raise ValueError("depth_levels must be >= 0")
        if not 0.0 <= self.partial_fill_probability <= 1.0:
            raise ValueError("partial_fill_probability must be within [0, 1]")
        if self.slippage_bps < 0:
            raise ValueError("slippage_bps must be >= 0")


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """What is being filled: side, the quantity still open, type and limit price (LIMIT only)."""

    side: Side
    qty: Decimal
    order_type: OrderType
    limit_price: Decimal | None = None

    def __post_init__(self) -> None:
        if self.side not in ("BUY", "SELL"):
            raise ValueError(f"side must be BUY or SELL, not {self.side!r}")
        if self.qty <= 0:
            raise ValueError("qty must be positive")
        if self.order_type == "LIMIT" and (self.limit_price is None or self.limit_price <= 0):
            raise ValueError("a LIMIT order needs a positive limit_price")


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution: price, base quantity, fee in quote currency, and whether it was maker."""

    price: Decimal
    qty: Decimal
    fee: Decimal
    is_maker: bool

    @property
    def notional(self) -> Decimal:
        return self.price * self.qty


@dataclass(frozen=True, slots=True)
class FillResult:
    """All fills of one matching pass, with what is left of the order afterwards.

    ``cut_short`` is True when the partial-fill coin, not the available liquidity, stopped it.
    """

    fills: tuple[Fill, ...]
    filled_qty: Decimal
    remaining_qty: Decimal
    cut_short: bool = False

    @property
    def avg_price(self) -> Decimal | None:
        if self.filled_qty == 0:
            return None
        return sum((f.notional for f in self.fills), Decimal(0)) / self.filled_qty

    @property
    def fee(self) -> Decimal:
        return sum((f.fee for f in self.fills), Decimal(0))


def is_marketable(side: Side, limit_price: Decimal, book: BookTop) -> bool:
    """Would a limit order at ``limit_price`` trade immediately against ``book``?"""
    return limit_price >= book.ask if side == "BUY" else limit_price <= book.bid


def take_liquidity(
    order: OrderSpec, book: BookTop, rules: FillRules, rng: random.Random
) -> FillResult:
    """Fill an arriving taker order (MARKET, or a LIMIT that crosses) against the book.

    Walks the top level and the synthetic levels behind it, never beyond a limit price; what
    cannot be filled is returned as ``remaining_qty`` for the caller to rest or expire.
    """
    book.validate()
    target = _apply_partial_coin(order.qty, rules, rng)
    cut_short = target < order.qty
    buy = order.side == "BUY"
    top_price = book.ask if buy else book.bid
    top_qty = _floor_to_step(book.ask_qty if buy else book.bid_qty, rules.step_size)
    level_step = max(rules.tick_size, book.ask - book.bid)
    fills: list[Fill] = []
    left = target
    for level in range(rules.depth_levels + 1):
        if left <= 0 or top_qty <= 0:
            break
        level_price = top_price + level_step * level if buy else top_price - level_step * level
        if level_price <= 0:
            break
        if order.limit_price is not None and not _within_limit(buy, level_price, order.limit_price):
            break
        price = _slipped(level_price, buy, rules)
        if order.limit_price is not None:
            price = min(price, order.limit_price) if buy else max(price, order.limit_price)
        qty = min(left, top_qty)
        fills.append(_make_fill(price, qty, rules.taker_fee_rate, False, rules))
        left -= qty
    filled = target - left
    return FillResult(tuple(fills), filled, order.qty - filled, cut_short)


def fill_resting(
    order: OrderSpec, book: BookTop, rules: FillRules, rng: random.Random
) -> FillResult:
    """Fill a resting LIMIT order as maker if the book has reached its price.

    At most the size shown at the opposite top of book fills per call; call again on the next
    quote for the rest. Returns an empty result when the price is not reached.
    """
    if order.order_type != "LIMIT" or order.limit_price is None:
        raise ValueError("only LIMIT orders rest on the book")
    book.validate()
    buy = order.side == "BUY"
    if not is_marketable(order.side, order.limit_price, book):
        return FillResult((), Decimal(0), order.qty)
    shown = _floor_to_step(book.ask_qty if buy else book.bid_qty, rules.step_size)
    if shown <= 0:
        return FillResult((), Decimal(0), order.qty)
    target = _apply_partial_coin(order.qty, rules, rng)
    qty = min(target, shown)
    fill = _make_fill(order.limit_price, qty, rules.maker_fee_rate, True, rules)
    return FillResult((fill,), qty, order.qty - qty, target < order.qty)


def fee_for(notional: Decimal, rate: Decimal, decimals: int = 8) -> Decimal:
    """Fee in quote currency for ``notional`` at ``rate``, rounded half-up to ``decimals``."""
    return (notional * rate).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _make_fill(
    price: Decimal, qty: Decimal, rate: Decimal, is_maker: bool, rules: FillRules
) -> Fill:
    return Fill(price, qty, fee_for(price * qty, rate, rules.fee_decimals), is_maker)


def _within_limit(buy: bool, price: Decimal, limit: Decimal) -> bool:
    return price <= limit if buy else price >= limit


def _slipped(price: Decimal, buy: bool, rules: FillRules) -> Decimal:
    """``price`` moved against the taker by ``slippage_bps``, rounded outward to the tick."""
    if rules.slippage_bps == 0:
        return price
    factor = rules.slippage_bps * _BPS
    moved = price * (1 + factor) if buy else price * (1 - factor)
    ticks = moved / rules.tick_size
    rounded = ticks.to_integral_value(rounding=ROUND_CEILING if buy else ROUND_FLOOR)
    return rounded * rules.tick_size if rounded > 0 else price


def _floor_to_step(qty: Decimal, step: Decimal) -> Decimal:
    return (qty / step).to_integral_value(rounding=ROUND_DOWN) * step


def _apply_partial_coin(qty: Decimal, rules: FillRules, rng: random.Random) -> Decimal:
    """``qty``, or with ``partial_fill_probability`` a random whole number of steps below it.

    The coin is always tossed when the probability is positive, so a run's random stream does
    not depend on order sizes.
    """
    if rules.partial_fill_probability <= 0.0:
        return qty
    hit = rng.random() < rules.partial_fill_probability
    steps = int((qty / rules.step_size).to_integral_value(rounding=ROUND_DOWN))
    pick = rng.random()
    if not hit or steps < 2:
        return qty
    kept = 1 + int(pick * (steps - 1))  # 1 .. steps-1
    return rules.step_size * kept
