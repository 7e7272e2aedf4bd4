"""Instrument rules (tick, lot, notional, precision) parsed from a Binance exchangeInfo symbol.

What the matching engine checks every order against (``matching/filters.py``). The source of
the symbol object does not matter here: the simulator serves the recorded 2021 file with a
few derived or refined entries (``market_replay/markets.py``), the paper exchange passes what the
live venue answered (ccxt's ``market['info']``). Exact decimals throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

DEFAULT_MIN_NOTIONAL = Decimal("5")
# Max leverage per symbol as Binance offered it (BTC/ETH 125x, the others 75x or less):
# exchangeInfo carries no leverage brackets (the simulator serves these as leverageBracket).
_MAX_LEVERAGE = {"BTCUSDT": 125, "ETHUSDT": 100}
_DEFAULT_MAX_LEVERAGE = 50


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """Everything the engine checks an order against, as exact decimals.

    ``provenance`` is ``"recorded"``, ``"recorded, tick refined from X"``, ``"derived"`` (the
    simulator's data) or ``"live"`` (the paper exchange). ``info`` is the exchangeInfo symbol
    object the rules were read from (what the simulator serves to clients).
    """

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    price_precision: int
    quantity_precision: int
    maint_margin_ratio: Decimal
    max_leverage: int
    provenance: str
    info: dict[str, Any] = field(repr=False, compare=False)

    @property
    def price_decimals(self) -> int:
        """Decimal places of the tick (the most a valid price may carry)."""
        return decimal_places(self.tick_size)

    @property
    def qty_decimals(self) -> int:
        return decimal_places(self.step_size)


def rules_from_info(info: Mapping[str, Any], provenance: str) -> SymbolRules:
    """Parse one exchangeInfo symbol object into ``SymbolRules``."""
    filters = {f["filterType"]: f for f in info["filters"]}
    price, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
    market_lot = filters.get("MARKET_LOT_SIZE", lot)
    notional = filters.get("MIN_NOTIONAL", {}).get("notional", str(DEFAULT_MIN_NOTIONAL))
    symbol = info["symbol"]
    return SymbolRules(
        symbol=symbol,
        base_asset=info["baseAsset"],
        quote_asset=info["quoteAsset"],
        tick_size=Decimal(price["tickSize"]),
        min_price=Decimal(price["minPrice"]),
        max_price=Decimal(price["maxPrice"]),
        step_size=Decimal(lot["stepSize"]),
        min_qty=Decimal(lot["minQty"]),
        max_qty=Decimal(lot["maxQty"]),
        market_step_size=Decimal(market_lot["stepSize"]),
        market_min_qty=Decimal(market_lot["minQty"]),
        market_max_qty=Decimal(market_lot["maxQty"]),
        min_notional=Decimal(notional),
        price_precision=int(info["pricePrecision"]),
        quantity_precision=int(info["quantityPrecision"]),
        maint_margin_ratio=Decimal(info.get("maintMarginPercent", "2.5")) / 100,
        max_leverage=_MAX_LEVERAGE.get(symbol, _DEFAULT_MAX_LEVERAGE),
        provenance=provenance,
        info=dict(info),
    )


def maintenance_bracket(rules: SymbolRules) -> tuple[Decimal, Decimal]:
    """(maintenance margin rate, maintenance amount in USDT) of a position on ``rules``' symbol.

    One bracket per symbol (the recorded file has none): the rate is the recorded
    ``maintMarginPercent`` capped at half the initial margin of the symbol's maximum leverage,
    which is how Binance's first brackets are set (125x: 0.40 %, 100x: 0.50 %, 50x: 1.00 %,
    20x: 2.50 %), so a position at the maximum leverage is not liquidated at once. With a single
    bracket the maintenance amount (``cum``) is 0. Served as ``GET /fapi/v1/leverageBracket`` and
    used for the liquidation price (``matching/engine.py``).

    >>> from decimal import Decimal as D
    >>> maintenance_bracket(rules_from_info({"symbol": "BTCUSDT", "baseAsset": "BTC", "quoteAsset": "USDT",
    ...     "pricePrecision": 2, "quantityPrecision": 3, "maintMarginPercent": "2.5000", "filters": [
    ...     {"filterType": "PRICE_FILTER", "tickSize": "0.01", "minPrice": "1", "maxPrice": "1000000"},
    ...     {"filterType": "LOT_SIZE", "stepSize": "0.001", "minQty": "0.001", "maxQty": "1000"}]}, "test"))
    (Decimal('0.004'), Decimal('0'))
    """
    rate = min(rules.maint_margin_ratio, Decimal(1) / (2 * rules.max_leverage))
    return rate, Decimal(0)


def decimal_places(value: Decimal) -> int:
    """Significant decimal places: ``Decimal('0.0010')`` -> 3, ``Decimal('10')`` -> 0."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -int(exponent))
