"""Binance symbol filters (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL) as pure checks.

Each check raises the ``BinanceError`` Binance sends, in Binance's order: precision first
(-1111), then range and step. Exact decimal arithmetic throughout.

Order of checks and codes (USD-M):

- quantity <= 0 -> -4003; more decimals than ``quantityPrecision`` -> -1111; off the step or
  outside ``minQty``..``maxQty`` -> -1013 ``Filter failure: LOT_SIZE`` (``MARKET_LOT_SIZE``
  for market orders; ccxt turns any body naming LOT_SIZE into InvalidOrder).
- price <= 0 -> -4001; more decimals than ``pricePrecision`` -> -1111; below ``minPrice`` ->
  -4013; above ``maxPrice`` -> -4002; off the tick -> -4014.
- notional below ``MIN_NOTIONAL`` and not reduce-only -> -4164.
"""

from __future__ import annotations

from decimal import Decimal

from matching import errors
from matching.rules import SymbolRules


def check_quantity(rules: SymbolRules, qty: Decimal, *, market_order: bool) -> None:
    """Raise unless ``qty`` passes the lot filters for a LIMIT or MARKET order."""
    if qty <= 0:
        raise errors.quantity_not_positive()
    if _decimals(qty) > rules.quantity_precision:
        raise errors.precision_over_maximum()
    step = rules.market_step_size if market_order else rules.step_size
    min_qty = rules.market_min_qty if market_order else rules.min_qty
    max_qty = rules.market_max_qty if market_order else rules.max_qty
    failure = errors.market_lot_size_failure if market_order else errors.lot_size_failure
    if qty % step != 0 or qty < min_qty or qty > max_qty:
        raise failure()


def check_price(rules: SymbolRules, price: Decimal) -> None:
    """Raise unless ``price`` passes PRICE_FILTER and the price precision."""
    if price <= 0:
        raise errors.price_not_positive()
    if _decimals(price) > rules.price_precision:
        raise errors.precision_over_maximum()
    if price < rules.min_price:
        raise errors.price_below_min()
    if price > rules.max_price:
        raise errors.price_above_max()
    if price % rules.tick_size != 0:
        raise errors.price_not_on_tick()


def check_notional(rules: SymbolRules, notional: Decimal, *, reduce_only: bool) -> None:
    """Raise -4164 when an opening order's notional is below the symbol's minimum."""
    if not reduce_only and notional < rules.min_notional:
        raise errors.notional_below_min(rules.min_notional)


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise errors.illegal_chars("quantity")
    if exponent >= 0:
        return 0
    # "0.0010" has 4 written decimals but only 3 significant ones: Binance counts the latter.
    return max(0, -int(value.normalize().as_tuple().exponent))
