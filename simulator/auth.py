"""Request authentication exactly as Binance checks it: API key, timestamp window, HMAC.

Why the server's wall clock: ccxt signs ``timestamp`` with the local wall clock
(``milliseconds()`` minus ``options['timeDifference']``), and Binance compares it with its own
clock. Here that clock is the host's wall clock plus the ``clock_skew_ms`` fault
(``RestApi.server_ms``). The replay clock (exchange time of market events) can be years in the
past, so authentication must never use it.

Rules (USD-M):

- ``X-MBX-APIKEY`` missing or malformed -> -2014; unknown -> -2015 (HTTP 401).
- ``timestamp`` missing -> -1102; ``recvWindow`` above the maximum -> -1131;
  ``timestamp >= server_time + 1000`` -> -1021 (ahead); ``server_time - timestamp >
  recvWindow`` (default 5000 ms) -> -1021 (outside the window).
- ``signature`` = hex HMAC-SHA256 of the secret over "totalParams": the query string
  concatenated with the body, the ``signature`` parameter itself left out. Wrong -> -1022.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl

from matching import errors

DEFAULT_RECV_WINDOW_MS = 5_000


def parse_params(query_string: str, body: str) -> dict[str, str]:
    """All request parameters; a name in both the query and the body takes the query's value."""
    params = dict(parse_qsl(body, keep_blank_values=True)) if body else {}
    params.update(parse_qsl(query_string, keep_blank_values=True))
    return params


def signature_payload(query_string: str, body: str) -> tuple[str, str | None]:
    """``(totalParams without the signature, signature)`` of a request."""
    signature: str | None = None
    parts: list[str] = []
    for raw in (query_string, body):
        kept = []
        for item in raw.split("&") if raw else []:
            if item.startswith("signature="):
                signature = item[len("signature="):]
            else:
                kept.append(item)
        parts.append("&".join(kept))
    return "".join(parts), signature


def sign(payload: str, secret: str) -> str:
    """Hex HMAC-SHA256, as Binance and ccxt compute it."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def require_api_key(headers: Mapping[str, str]) -> str:
    """The ``X-MBX-APIKEY`` header, or -2014 when it is absent or not a plausible key."""
    key = headers.get("X-MBX-APIKEY", "")
    if not key or len(key) > 256 or not key.isprintable() or " " in key:
        raise errors.api_key_format_invalid()
    return key


def check_timestamp(params: Mapping[str, str], now_wall_ms: int, max_recv_window_ms: int) -> None:
    """Raise -1102 / -1131 / -1021 unless ``timestamp`` is within ``recvWindow`` of now."""
    raw = params.get("timestamp")
    if not raw:
        raise errors.mandatory_param("timestamp")
    try:
        timestamp = int(raw)
    except ValueError:
        raise errors.illegal_chars("timestamp") from None
    window_raw = params.get("recvWindow")
    try:
        window = int(window_raw) if window_raw else DEFAULT_RECV_WINDOW_MS
    except ValueError:
        raise errors.illegal_chars("recvWindow") from None
    if window > max_recv_window_ms or window <= 0:
        raise errors.recv_window_too_large()
    if timestamp >= now_wall_ms + 1000:
        raise errors.timestamp_ahead()
    if now_wall_ms - timestamp > window:
        raise errors.timestamp_outside_window()


def request_deadline_ms(params: Mapping[str, str]) -> int:
    """``timestamp + recvWindow``: the last wall-clock ms at which Binance still processes it.

    Only for a request ``check_timestamp`` has already accepted (both values parse).
    """
    window_raw = params.get("recvWindow")
    window = int(window_raw) if window_raw else DEFAULT_RECV_WINDOW_MS
    return int(params["timestamp"]) + window


def check_signature(query_string: str, body: str, secret: str) -> None:
    """Raise -1022 unless the request's ``signature`` matches the secret."""
    payload, signature = signature_payload(query_string, body)
    if not signature:
        raise errors.mandatory_param("signature")
    if not hmac.compare_digest(sign(payload, secret), signature.lower()):
        raise errors.bad_signature()
