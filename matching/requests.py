"""Typed request parameters: Binance's form/query strings parsed once, with Binance's errors.

The simulator's HTTP layer hands a flat ``{name: text}`` mapping here, and the paper exchange
builds the same mapping, so a paper order is parsed as a sent one would be. What comes back is
typed, or a ``BinanceError`` with the code the venue would send (-1102 missing, -1100 illegal
characters, -1116/-1117/-1115 bad enums, -4015 bad client order id, -4061 position side).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from matching import errors

_NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
SUPPORTED_TYPES = frozenset({"LIMIT", "MARKET"})
ALGO_TYPES = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET"})
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "GTX"})


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A validated ``POST /fapi/v1/order`` request (types and enums checked, not filters)."""

    symbol: str
    side: str
    order_type: str
    quantity: Decimal
    price: Decimal | None
    time_in_force: str
    client_order_id: str | None
    reduce_only: bool
    response_type: str
    position_side: str = "BOTH"  # checked against the account's position mode by the engine


@dataclass(frozen=True, slots=True)
class OrderRef:
    """Which order a query or cancel means: by exchange id or by client order id."""

    symbol: str
    order_id: int | None
    client_order_id: str | None


def text(params: Mapping[str, str], name: str) -> str:
    """A required parameter, or -1102."""
    value = params.get(name)
    if value is None or value == "":
        raise errors.mandatory_param(name)
    return value


def optional_text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return None if value in (None, "") else value


def decimal_param(params: Mapping[str, str], name: str) -> Decimal:
    """A required unsigned decimal parameter, or -1102 / -1100."""
    raw = text(params, name)
    if not _NUMBER.match(raw):
        raise errors.illegal_chars(name)
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise errors.illegal_chars(name) from None


def int_param(params: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        if default is None:
            raise errors.mandatory_param(name)
        return default
    try:
        return int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise errors.illegal_chars(name) from None


def optional_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise errors.illegal_chars(name) from None


def bool_param(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw in (None, ""):
        return False
    lowered = raw.lower()  # type: ignore[union-attr]
    if lowered not in ("true", "false"):
        raise errors.invalid_param(name)
    return lowered == "true"


def parse_new_order(params: Mapping[str, str]) -> NewOrder:
    """Parse and check a new-order request's parameters (not yet against symbol filters)."""
    symbol = text(params, "symbol").upper()
    side = text(params, "side").upper()
    if side not in ("BUY", "SELL"):
        raise errors.invalid_side()
    order_type = text(params, "type").upper()
    if order_type in ALGO_TYPES:
        raise errors.order_type_needs_algo_api()
    if order_type not in SUPPORTED_TYPES:
        raise errors.invalid_order_type()
    position_side = (optional_text(params, "positionSide") or "BOTH").upper()
    if position_side not in ("BOTH", "LONG", "SHORT"):
        raise errors.invalid_param("positionSide")
    quantity = decimal_param(params, "quantity")
    price: Decimal | None = None
    time_in_force = "GTC"
    if order_type == "LIMIT":
        price = decimal_param(params, "price")
        time_in_force = text(params, "timeInForce").upper()
        if time_in_force not in TIME_IN_FORCE:
            raise errors.invalid_time_in_force()
    client_order_id = optional_text(params, "newClientOrderId")
    if client_order_id is not None and not _CLIENT_ID.match(client_order_id):
        raise errors.invalid_client_order_id()
    response_type = (optional_text(params, "newOrderRespType") or "ACK").upper()
    if response_type not in ("ACK", "RESULT"):
        raise _invalid_response_type()
    return NewOrder(symbol, side, order_type, quantity, price, time_in_force, client_order_id,
                    bool_param(params, "reduceOnly"), response_type, position_side)


def parse_order_ref(params: Mapping[str, str]) -> OrderRef:
    """``symbol`` plus ``orderId`` or ``origClientOrderId`` (one is required)."""
    symbol = text(params, "symbol").upper()
    order_id = optional_int(params, "orderId")
    client_order_id = optional_text(params, "origClientOrderId")
    if order_id is None and client_order_id is None:
        raise errors.BinanceError(
            -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
        )
    return OrderRef(symbol, order_id, client_order_id)


def _invalid_response_type() -> errors.BinanceError:
    return errors.BinanceError(-1136, "Invalid newOrderRespType")
