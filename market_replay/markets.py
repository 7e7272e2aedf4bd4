"""The simulator's markets: which symbols it serves, with which exchangeInfo entries.

Reading an entry into ``SymbolRules`` is the matching engine's job (``matching/rules.py``);
this module picks the entries and builds the exchangeInfo and leverageBracket payloads.
The simulator serves ``GET /fapi/v1/exchangeInfo`` from a real recorded response
(``data/exchange-info/binance_usdm_fapi_v1_exchangeInfo_2021-07-21.json``) so ccxt parses the
same precision and limits it would on the venue. Two departures, both forced by the data and
both reported by ``GET /sim/markets`` (field ``provenance``):

- **Derived**: a symbol that has replay data but is absent from the 2021 file (CELOUSDT) gets
  plausible filters: ``tickSize`` is the finest decimal step seen in its recorded prices (the
  real tick must divide every recorded price, and Binance's ticks are powers of ten), ``stepSize``
  and ``minQty`` are the power of ten nearest below ``min_notional / price / 10`` (so the
  minimum notional is about ten lots), ``MIN_NOTIONAL`` as Binance documents it now
  (``DOCUMENTED_MIN_NOTIONAL``, else 5), ``maxPrice`` a thousand times
  the first price, quantity maxima 1,000,000 (limit) and 100,000 (market), margin ratios like
  a mid-cap (maintenance 2.5 %, initial 5 %).
- **Refined tick**: where the recorded prices are on a finer grid than the 2021 ``tickSize``
  (WAVESUSDT: 2021 tick 0.001, 2023 prices like 1.9302), the tick is refined to that grid and
  ``pricePrecision`` follows. Binance changed those ticks between 2021 and 2023; without this
  the replayed quotes could not be represented on the served tick.

Minimum notionals: a recorded symbol is served its recorded ``MIN_NOTIONAL`` (5 USDT for every
symbol in the 2021 file: Binance's rule from 2021-02-24, "Updates to USDⓈ-M Futures Trading
Rules"); only a derived symbol gets ``DOCUMENTED_MIN_NOTIONAL`` or 5. Binance has raised some
since (its "USDⓈ-Margined Futures Contract Specifications" page gives BTCUSDT 100 USDT);
``SimulatorServer.set_symbol_filters`` (``POST /sim/markets/{symbol}``) serves such a value at
run time.

Only symbols with replay data are served: a market ccxt can see but the simulator cannot price
would only fail later, at order time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from matching.rules import DEFAULT_MIN_NOTIONAL, SymbolRules, decimal_places, maintenance_bracket, rules_from_info

ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
               "TRAILING_STOP_MARKET"]
TIME_IN_FORCE = ["GTC", "IOC", "FOK", "GTX"]
#: Minimum notionals Binance documents today, for symbols missing from the recorded file: its
#: "USDⓈ-Margined Futures Contract Specifications" FAQ (binance.com/en/support/faq/360033161972)
#: names BTCUSDT at 100 USDT; every other symbol takes the long-standing 5 USDT default.
DOCUMENTED_MIN_NOTIONAL = {"BTCUSDT": Decimal("100")}


@dataclass(frozen=True, slots=True)
class PriceHint:
    """What the replay data say about a symbol's prices: a reference price and finest decimals."""

    reference_price: Decimal
    price_decimals: int


def load_exchange_info(path: Path) -> dict[str, Any]:
    """Read the recorded exchangeInfo response. Raises ``FileNotFoundError`` / ``ValueError``."""
    with path.open("r", encoding="utf-8") as handle:
        payload = json.load(handle)
    if not isinstance(payload, dict) or not isinstance(payload.get("symbols"), list):
        raise ValueError(f"{path}: not an exchangeInfo response (no 'symbols' list)")
    return payload


def build_rules(
    recorded: Mapping[str, Any], hints: Mapping[str, PriceHint]
) -> dict[str, SymbolRules]:
    """Rules for every symbol in ``hints`` (the symbols with replay data), in ``hints`` order."""
    by_symbol = {entry["symbol"]: entry for entry in recorded["symbols"]}
    rules: dict[str, SymbolRules] = {}
    for symbol, hint in hints.items():
        entry = by_symbol.get(symbol)
        if entry is not None and entry.get("contractType") == "PERPETUAL":
            info, provenance = _refine_recorded(entry, hint)
        else:
            info, provenance = derive_symbol_info(symbol, hint), "derived"
        rules[symbol] = rules_from_info(info, provenance)
    return rules


def derive_symbol_info(symbol: str, hint: PriceHint, quote_asset: str = "USDT") -> dict[str, Any]:
    """A plausible exchangeInfo entry for a perpetual missing from the recorded file.

    See the module docstring for the rule behind each number.
    """
    if not symbol.endswith(quote_asset):
        raise ValueError(f"{symbol}: only {quote_asset}-margined perpetuals can be derived")
    if hint.reference_price <= 0:
        raise ValueError(f"{symbol}: reference price must be positive")
    tick = Decimal(1).scaleb(-hint.price_decimals)
    min_notional = DOCUMENTED_MIN_NOTIONAL.get(symbol, DEFAULT_MIN_NOTIONAL)
    lots_for_min = min_notional / hint.reference_price / 10
    step = Decimal(1).scaleb(math.floor(math.log10(float(lots_for_min))))
    step = min(step, Decimal(1000))
    max_price = _round_sig(hint.reference_price * 1000)
    step_text, tick_text = _plain(step), _plain(tick)
    return {
        "symbol": symbol,
        "pair": symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": symbol[: -len(quote_asset)],
        "quoteAsset": quote_asset,
        "marginAsset": quote_asset,
        "pricePrecision": decimal_places(tick),
        "quantityPrecision": decimal_places(step),
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012000",
        "marketTakeBound": "0.30",
        "filters": [
            {"minPrice": tick_text, "maxPrice": _plain(max_price), "filterType": "PRICE_FILTER",
             "tickSize": tick_text},
            {"stepSize": step_text, "filterType": "LOT_SIZE", "maxQty": "1000000",
             "minQty": step_text},
            {"stepSize": step_text, "filterType": "MARKET_LOT_SIZE", "maxQty": "100000",
             "minQty": step_text},
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
            {"notional": _plain(min_notional), "filterType": "MIN_NOTIONAL"},
            {"multiplierDown": "0.8500", "multiplierUp": "1.1500", "multiplierDecimal": "4",
             "filterType": "PERCENT_PRICE"},
        ],
        "orderTypes": list(ORDER_TYPES),
        "timeInForce": list(TIME_IN_FORCE),
    }


def exchange_info_payload(
    recorded: Mapping[str, Any], rules: Iterable[SymbolRules], server_time_ms: int
) -> dict[str, Any]:
    """The ``GET /fapi/v1/exchangeInfo`` body: recorded header fields, served symbols only."""
    return {
        "timezone": recorded.get("timezone", "UTC"),
        "serverTime": server_time_ms,
        "futuresType": recorded.get("futuresType", "U_MARGINED"),
        "rateLimits": recorded.get("rateLimits", []),
        "exchangeFilters": recorded.get("exchangeFilters", []),
        "assets": recorded.get("assets", []),
        "symbols": [r.info for r in rules],
    }


def leverage_bracket_payload(rules: Iterable[SymbolRules]) -> list[dict[str, Any]]:
    """``GET /fapi/v1/leverageBracket``: one bracket per symbol (the file has none recorded).

    One tier from 0 to 50M notional at the symbol's maximum leverage and the maintenance rate
    and amount of ``matching.rules.maintenance_bracket`` (what liquidations use too);
    notional-dependent tiers are not simulated.
    """
    return [
        {
            "symbol": r.symbol,
            "notionalCoef": 1.0,
            "brackets": [
                {
                    "bracket": 1,
                    "initialLeverage": r.max_leverage,
                    "notionalCap": 50_000_000,
                    "notionalFloor": 0,
                    "maintMarginRatio": float(maintenance_bracket(r)[0]),
                    "cum": float(maintenance_bracket(r)[1]),
                }
            ],
        }
        for r in rules
    ]


def _refine_recorded(entry: Mapping[str, Any], hint: PriceHint) -> tuple[dict[str, Any], str]:
    """The recorded entry, with the tick refined if the data need a finer price grid."""
    info = json.loads(json.dumps(entry))  # deep copy: the recorded payload stays untouched
    price_filter = next(f for f in info["filters"] if f["filterType"] == "PRICE_FILTER")
    tick = Decimal(price_filter["tickSize"])
    data_tick = Decimal(1).scaleb(-hint.price_decimals)
    if hint.price_decimals <= decimal_places(tick):
        return info, "recorded"
    price_filter["tickSize"] = _plain(data_tick)
    info["pricePrecision"] = max(int(info["pricePrecision"]), hint.price_decimals)
    return info, f"recorded, tick refined from {tick} to {_plain(data_tick)}"


def _plain(value: Decimal) -> str:
    """Decimal as a plain string without exponent or trailing zeros (``'0.001'``, ``'5'``)."""
    text = f"{value.normalize():f}"
    return text


def _round_sig(value: Decimal) -> Decimal:
    """Round up to one significant digit (a tidy maxPrice)."""
    exponent = math.floor(math.log10(float(value)))
    unit = Decimal(1).scaleb(exponent)
    return (value / unit).to_integral_value(rounding="ROUND_CEILING") * unit
