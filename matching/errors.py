"""Binance USD-M error replies: the one catalog, for the matching engine and the simulator.

Why a catalog: ccxt maps Binance's numeric ``code`` (and for a few legacy cases the ``msg`` text,
e.g. ``LOT_SIZE`` or ``No need to change margin type.``) to its exception classes. The client
code under test must meet the same code *and* message as on the real venue, so every rejection
the simulator can produce is built here, once, with Binance's wording. It is kept whole rather
than split by layer: the engine raises the order, filter and account rejections, the
simulator's HTTP layer (``simulator/auth.py``, ``rest_api.py``, ``server.py``) the
authentication, rate-limit and route ones, and the paper exchange translates them by code and
status (``execution/paper.py``). Nothing here does I/O.

Each factory returns a ``BinanceError``; the simulator's HTTP layer turns it into
``{"code": -NNNN, "msg": "..."}`` with the HTTP status Binance uses (400 for request errors,
401 for key errors, 404 for unknown orders is *not* used: Binance answers 400 there too).
"""

from __future__ import annotations

from decimal import Decimal


class BinanceError(Exception):
    """A rejection with Binance's code, message and HTTP status.

    Raised by the engine and the request layer; the server renders it. ``http_status`` is 400
    unless Binance uses something else for that case (401 for API-key problems, 429 and 418
    for rate limits, 5xx for server trouble).
    """

    def __init__(self, code: int, msg: str, *, http_status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status

    def payload(self) -> dict[str, object]:
        """The JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


# --- request and authentication (1xxx, 2014/2015) -----------------------------------------


def mandatory_param(name: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def illegal_chars(name: str) -> BinanceError:
    return BinanceError(
        -1100,
        f"Illegal characters found in parameter '{name}'; "
        "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
    )


def invalid_param(name: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")


def invalid_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


def invalid_interval() -> BinanceError:
    return BinanceError(-1120, "Invalid interval.")


def invalid_side() -> BinanceError:
    return BinanceError(-1117, "Invalid side.")


def invalid_order_type() -> BinanceError:
    return BinanceError(-1116, "Invalid orderType.")


def invalid_time_in_force() -> BinanceError:
    return BinanceError(-1115, "Invalid timeInForce.")


def timestamp_outside_window() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")


def timestamp_ahead() -> BinanceError:
    return BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def recv_window_too_large() -> BinanceError:
    return BinanceError(-1131, "recvWindow must be less than 60000")


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def api_key_format_invalid() -> BinanceError:
    return BinanceError(-2014, "API-key format invalid.", http_status=401)


def invalid_api_key() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", http_status=401)


def invalid_listen_key() -> BinanceError:
    return BinanceError(-1125, "This listenKey does not exist.")


def too_many_requests() -> BinanceError:
    return BinanceError(
        -1003,
        "Too many requests; current limit of IP(127.0.0.1) is 2400 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
        http_status=429,
    )


def ip_banned() -> BinanceError:
    return BinanceError(-1003, "Way too many requests; IP(127.0.0.1) banned.", http_status=418)


def internal_error() -> BinanceError:
    return BinanceError(
        -1001, "Internal error; unable to process your request. Please try again.", http_status=500
    )


def server_busy() -> BinanceError:
    return BinanceError(
        -1008,
        "Server is currently overloaded with other requests. Please try again in a few minutes.",
        http_status=503,
    )


def backend_timeout() -> BinanceError:
    """-1007 on HTTP 408: the gateway gave up waiting for the matching engine.

    USD-M's "HTTP Return Codes" give 408 to "a timeout has occurred while waiting for a response
    from the backend server", which is -1007's own wording. ccxt maps the code (RequestTimeout)
    before it looks at the status, so the class does not hang on the 408.
    """
    return BinanceError(
        -1007,
        "Timeout waiting for response from backend server. Send status unknown; execution "
        "status unknown.",
        http_status=408,
    )


UNKNOWN_ERROR_503_MSG = "Unknown error, please check your request or try again later."


def unknown_error_503_payload(path: str, now_wall_ms: int) -> dict[str, object]:
    """The body of USD-M's HTTP 503 "execution status unknown" answer.

    It is not a ``{"code", "msg"}`` error: Binance's gateway sends
    ``{"timestamp", "path", "msg"}`` (as logged from fapi in the wild), so ccxt finds no code,
    matches no message, and falls back to the HTTP status: 503 -> ExchangeNotAvailable.
    """
    return {"timestamp": now_wall_ms, "path": path, "msg": UNKNOWN_ERROR_503_MSG}


def path_not_found(path: str) -> BinanceError:
    return BinanceError(-5000, f"Path {path}, Method GET is invalid", http_status=404)


# --- order filters (precision, lot size, notional) -----------------------------------------


def precision_over_maximum() -> BinanceError:
    return BinanceError(-1111, "Precision is over the maximum defined for this asset.")


def quantity_not_positive() -> BinanceError:
    return BinanceError(-4003, "Quantity less than or equal to zero.")


def lot_size_failure() -> BinanceError:
    # ccxt turns any body containing "LOT_SIZE" into InvalidOrder, whatever the code.
    return BinanceError(-1013, "Filter failure: LOT_SIZE")


def market_lot_size_failure() -> BinanceError:
    return BinanceError(-1013, "Filter failure: MARKET_LOT_SIZE")


def price_not_positive() -> BinanceError:
    return BinanceError(-4001, "Price less than 0.")


def price_below_min() -> BinanceError:
    return BinanceError(-4013, "Price less than min price.")


def price_above_max() -> BinanceError:
    return BinanceError(-4002, "Price greater than max price.")


def price_not_on_tick() -> BinanceError:
    return BinanceError(-4014, "Price not increased by tick size.")


def notional_below_min(min_notional: Decimal) -> BinanceError:
    return BinanceError(
        -4164,
        f"Order's notional must be no smaller than {min_notional.normalize():f} "
        "(unless you choose reduce only).",
    )


# --- order state and account ---------------------------------------------------------------


def margin_insufficient() -> BinanceError:
    return BinanceError(-2019, "Margin is insufficient.")


def reduce_only_rejected() -> BinanceError:
    return BinanceError(-2022, "ReduceOnly Order is rejected.")


def unknown_order_cancel() -> BinanceError:
    return BinanceError(-2011, "Unknown order sent.")


def order_does_not_exist() -> BinanceError:
    return BinanceError(-2013, "Order does not exist.")


def duplicate_client_order_id() -> BinanceError:
    return BinanceError(-4116, "ClientOrderId is duplicated.")


def invalid_client_order_id() -> BinanceError:
    return BinanceError(-4015, "Client order id is not valid.")


def position_side_mismatch() -> BinanceError:
    return BinanceError(-4061, "Order's position side does not match user's setting.")


def order_type_needs_algo_api() -> BinanceError:
    return BinanceError(
        -4120,
        "Order type not supported for this endpoint. Please use the Algo Order API endpoints "
        "instead.",
    )


def fok_not_filled() -> BinanceError:
    return BinanceError(
        -5021, "Due to the order could not be filled immediately, the FOK order has been rejected."
    )


def post_only_would_take() -> BinanceError:
    return BinanceError(
        -5022,
        "Due to the order could not be executed as maker, the Post Only order will be rejected.",
    )


def no_need_to_change_margin_type() -> BinanceError:
    # ccxt matches this exact message (not only the code) to raise MarginModeAlreadySet.
    return BinanceError(-4046, "No need to change margin type.")


def margin_type_locked_by_position() -> BinanceError:
    return BinanceError(-4048, "Margin type cannot be changed if there exists position.")


def margin_type_locked_by_orders() -> BinanceError:
    return BinanceError(-4047, "Margin type cannot be changed if there exists open orders.")


def no_need_to_change_position_side() -> BinanceError:
    return BinanceError(-4059, "No need to change position side.")


def position_side_locked_by_orders() -> BinanceError:
    return BinanceError(-4067, "Position side cannot be changed if there exists open orders.")


def position_side_locked_by_position() -> BinanceError:
    return BinanceError(-4068, "Position side cannot be changed if there exists position.")


def multi_assets_refused_by_isolated() -> BinanceError:
    return BinanceError(
        -4167,
        "Unable to adjust to Multi-Assets mode with symbols of USD\u24c8-M Futures under "
        "isolated-margin mode.",
    )


def isolated_refused_in_multi_assets() -> BinanceError:
    return BinanceError(-4168, "Unable to adjust to isolated-margin mode under the Multi-Assets mode.")


def no_need_to_change_asset_mode() -> BinanceError:
    return BinanceError(
        -4171, "Adjusted asset mode is currently set and does not need to be adjusted repeatedly."
    )


def hedge_positions_not_modelled() -> BinanceError:
    """Not a Binance answer: the model has one-way positions only (a documented gap). A hedge-mode
    order with positionSide LONG/SHORT gets this rather than a made-up Binance success."""
    return BinanceError(-1000, "simulator: hedge-mode (LONG/SHORT) positions are not modelled")


def invalid_leverage(leverage: str) -> BinanceError:
    return BinanceError(-4028, f"Leverage {leverage} is not valid")


def invalid_margin_type() -> BinanceError:
    return BinanceError(-4044, "The margin type is invalid.")


def new_order_rejected() -> BinanceError:
    return BinanceError(-2010, "NEW_ORDER_REJECTED")


def error_for_code(code: int) -> BinanceError:
    """The canned rejection for ``code``, used by fault injection's random rejects.

    Raises ``ValueError`` for a code the catalog does not produce on purpose.
    """
    factories = {
        -1001: internal_error,
        -1008: server_busy,
        -2010: new_order_rejected,
        -2019: margin_insufficient,
        -1003: too_many_requests,
    }
    try:
        return factories[code]()
    except KeyError:
        raise ValueError(
            f"reject_code {code} is not one of {sorted(factories)} (the codes fault injection "
            "can send)"
        ) from None


REJECT_CODES: tuple[int, ...] = (-1001, -1003, -1008, -2010, -2019)
