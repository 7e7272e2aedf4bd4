"""Leg sizing and the precision protocol (P4), as pure functions.

Why pure: sizing decides money. Keeping it free of I/O lets the tests pin every rounding case,
and lets the engine refuse a signal before any order exists.

Conventions (docs/architecture.md, "Signals and sizing"), gross notional ``G`` per pair, hedge ratio ``beta``:
- log spread: value in Y ``V_y = G / (1 + beta)``, in X ``V_x = beta * V_y``; qty = value / mid.
- raw spread: units ``q_y = G / (P_y + beta * P_x)``, ``q_x = beta * q_y``.
Quantities are floored to the lot step by the exchange's own precision helper, each leg must pass
min qty and min notional, and the achieved hedge ratio after rounding must stay within
``max_hedge_error`` (relative) of beta, measured the way the spread is defined: in value for log
(``V_x / V_y``) and in units for raw (``q_x / q_y``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Protocol

from core.errors import InvalidOrderError
from core.types import SignalType


class SizingRefusal(str, Enum):
    BELOW_ONE_STEP = "below_one_step"
    BELOW_MIN_QTY = "below_min_qty"
    BELOW_MIN_NOTIONAL = "below_min_notional"
    ABOVE_MAX_QTY = "above_max_qty"
    HEDGE_ERROR = "hedge_error"
    BAD_PRICE = "bad_price"


class SizingRefused(InvalidOrderError):
    """The signal cannot be sized into valid orders. Action: refuse it; nothing was sent."""

    def __init__(self, reason: SizingRefusal, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason.value}: {detail}")


class PrecisionSource(Protocol):
    """The part of an exchange adapter that sizing needs."""

    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal: ...
    def rules(self, symbol: str) -> "RulesLike": ...


class RulesLike(Protocol):
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal
    max_qty: Decimal | None
    max_market_qty: Decimal | None


@dataclass(frozen=True, slots=True)
class LegOrder:
    symbol: str
    side: str  # "buy" / "sell"
    qty: Decimal


@dataclass(frozen=True, slots=True)
class EntryPlan:
    """Both legs of an entry, already valid for the exchange."""

    leg_a: LegOrder  # X
    leg_b: LegOrder  # Y
    hedge_error: Decimal  # relative distance of the achieved ratio from beta
    gross_notional: Decimal

    @property
    def ratio_a_per_b(self) -> Decimal:
        """Units of A per unit of B as planned: the hedge the repair protocol restores."""
        return self.leg_a.qty / self.leg_b.qty


def entry_sides(signal_type: SignalType) -> tuple[str, str]:
    """(side of A, side of B). LONG_SPREAD buys Y (B) and sells X (A); SHORT mirrors."""
    if signal_type is SignalType.ENTER_LONG_SPREAD:
        return "sell", "buy"
    if signal_type is SignalType.ENTER_SHORT_SPREAD:
        return "buy", "sell"
    raise ValueError(f"{signal_type} is not an entry")


def raw_quantities(*, gross_usdt: Decimal, beta: Decimal, mid_a: Decimal, mid_b: Decimal,
                   transform: str) -> tuple[Decimal, Decimal]:
    """Unrounded (qty_a, qty_b) for a gross notional.

    >>> raw_quantities(gross_usdt=Decimal(300), beta=Decimal(2), mid_a=Decimal(10), mid_b=Decimal(20),
    ...                transform="log")
    (Decimal('20'), Decimal('5'))
    """
    if mid_a <= 0 or mid_b <= 0:
        raise SizingRefused(SizingRefusal.BAD_PRICE, f"mids must be positive (a={mid_a}, b={mid_b})")
    if transform == "log":
        value_b = gross_usdt / (1 + beta)
        value_a = beta * value_b
        return value_a / mid_a, value_b / mid_b
    qty_b = gross_usdt / (mid_b + beta * mid_a)
    return beta * qty_b, qty_b


def plan_entry(*, signal_type: SignalType, symbol_a: str, symbol_b: str, gross_usdt: Decimal, beta: Decimal,
               mid_a: Decimal, mid_b: Decimal, transform: str, max_hedge_error: Decimal,
               precision: PrecisionSource) -> EntryPlan:
    """Size, round and validate both legs, or raise ``SizingRefused`` saying why."""
    raw_a, raw_b = raw_quantities(gross_usdt=gross_usdt, beta=beta, mid_a=mid_a, mid_b=mid_b, transform=transform)
    qty_a = _rounded_valid(precision, symbol_a, raw_a, mid_a)
    qty_b = _rounded_valid(precision, symbol_b, raw_b, mid_b)
    achieved = (qty_a * mid_a) / (qty_b * mid_b) if transform == "log" else qty_a / qty_b
    error = abs(achieved - beta) / beta
    if error > max_hedge_error:
        raise SizingRefused(SizingRefusal.HEDGE_ERROR,
                            f"rounded legs {symbol_a} {qty_a} / {symbol_b} {qty_b} give ratio {achieved:.6f}, "
                            f"{error:.2%} from beta {beta} (max {max_hedge_error:.2%}); raise the notional")
    side_a, side_b = entry_sides(signal_type)
    return EntryPlan(LegOrder(symbol_a, side_a, qty_a), LegOrder(symbol_b, side_b, qty_b), error,
                     qty_a * mid_a + qty_b * mid_b)


def check_order_limits(precision: PrecisionSource, symbol: str, qty: Decimal, price: Decimal, *,
                       reduce_only: bool) -> Decimal:
    """Round ``qty`` down to the step and check min qty (and min notional unless reduce-only).

    Reduce-only orders are exempt from min notional on Binance USD-M, which is what lets the
    repair and rollback protocols close any remainder.
    """
    return _rounded_valid(precision, symbol, qty, price, check_notional=not reduce_only)


def _rounded_valid(precision: PrecisionSource, symbol: str, qty: Decimal, price: Decimal, *,
                   check_notional: bool = True) -> Decimal:
    rules = precision.rules(symbol)
    if qty < rules.step_size:
        raise SizingRefused(SizingRefusal.BELOW_ONE_STEP, f"{symbol} qty {qty} is below one lot step {rules.step_size}")
    rounded = precision.amount_to_precision(symbol, qty)
    if rounded <= 0 or rounded < rules.min_qty:
        raise SizingRefused(SizingRefusal.BELOW_MIN_QTY, f"{symbol} qty {rounded} < min qty {rules.min_qty}")
    # A leg may go to market (every order but a resting limit, and a limit entry's completion),
    # where MARKET_LOT_SIZE bounds it, not LOT_SIZE: the smaller of the two caps applies.
    caps = [c for c in (rules.max_qty, rules.max_market_qty) if c is not None]
    if caps and rounded > min(caps):
        raise SizingRefused(SizingRefusal.ABOVE_MAX_QTY, f"{symbol} qty {rounded} > max qty {min(caps)}"
                                                          f" (LOT_SIZE {rules.max_qty}, MARKET_LOT_SIZE "
                                                          f"{rules.max_market_qty})")
    if check_notional and rounded * price < rules.min_notional:
        raise SizingRefused(SizingRefusal.BELOW_MIN_NOTIONAL,
                            f"{symbol} notional {rounded * price:.4f} < min notional {rules.min_notional}")
    return rounded
