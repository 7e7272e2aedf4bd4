"""Pointing a ccxt exchange at a local Binance-compatible server: the one place that knows how.

Why here and without importing ccxt: only ``signals/market_data.py`` and
``execution/exchange.py`` may import ccxt. Both build their instance and call
``point_at_local_exchange`` on it, so the rules below live once.

What pointing means, and why each step (measured with ccxt 4.5.90's binanceusdm):

1. Every URL string under ``urls['api']`` (and ``urls['test']`` / ``urls['demo']``, so no
   mode switch can reach the internet) gets the local scheme and host; the path is kept
   (``https://fapi.binance.com/fapi/v1`` -> ``http://127.0.0.1:PORT/fapi/v1``,
   ``wss://fstream.binance.com/ws`` -> ``ws://127.0.0.1:PORT/ws``). Keeping the ``/ws``
   ending matters: ccxt.pro derives ``/public/ws``, ``/market/ws`` and ``/private/ws`` from it.
2. ccxt chooses its USD-M error table by hostname (``fapi.binance.com``); on a local URL it
   would fall back to the generic table, where -4164 (min notional), -2022 (reduce-only) and
   -2019 (margin) are not mapped. The ``linear`` exact/broad tables are therefore copied over
   the generic ones.
3. ``options['fetchCurrencies'] = False``: otherwise ``load_markets`` with API keys also calls
   the spot host's ``/sapi/v1/capital/config/getall``.
   ``options['warnOnFetchOpenOrdersWithoutSymbol'] = False``: reconciliation lists all open
   orders at once.

Never use ``set_sandbox_mode`` for this: it swaps in Binance's public testnet URLs.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from core.config import compact_symbol

LOCAL_OPTIONS: dict[str, Any] = {
    "fetchCurrencies": False,
    "warnOnFetchOpenOrdersWithoutSymbol": False,
}
_URL_SECTIONS = ("api", "test", "demo")
_WS_SCHEMES = ("ws", "wss")
_HTTP_SCHEMES = ("http", "https")


class VenueError(ValueError):
    """The exchange object or a URL cannot be pointed as asked."""


def point_at_local_exchange(exchange: object, *, base_url: str, ws_url: str | None = None) -> None:
    """Rewrite ``exchange`` (a ccxt instance) in place to talk only to ``base_url``/``ws_url``.

    ``base_url``: ``http://host:port`` (a path prefix is allowed and prepended).
    ``ws_url``: ``ws://host:port`` or ``ws://host:port/ws``; None derives it from ``base_url``.
    Raises ``VenueError`` if a URL is not http(s)/ws(s) or the object has no ccxt ``urls``.

    >>> class Fake:
    ...     urls = {"api": {"fapiPublic": "https://fapi.binance.com/fapi/v1",
    ...                     "ws": {"linear": "wss://fstream.binance.com/ws"}}}
    ...     exceptions = {"exact": {}, "broad": {}, "linear": {"exact": {"-4164": "X"}}}
    ...     options = {}
    >>> fake = Fake()
    >>> point_at_local_exchange(fake, base_url="http://127.0.0.1:8765")
    >>> fake.urls["api"]["fapiPublic"], fake.urls["api"]["ws"]["linear"]
    ('http://127.0.0.1:8765/fapi/v1', 'ws://127.0.0.1:8765/ws')
    >>> fake.exceptions["exact"]["-4164"], fake.options["fetchCurrencies"]
    ('X', False)
    """
    http_root = _root(base_url, _HTTP_SCHEMES, "base_url")
    ws_root = _root(ws_url, _WS_SCHEMES, "ws_url") if ws_url else _ws_from_http(http_root)
    urls = getattr(exchange, "urls", None)
    if not isinstance(urls, dict) or not isinstance(urls.get("api"), dict):
        raise VenueError("not a ccxt exchange: it has no urls['api'] dictionary")
    for section in _URL_SECTIONS:
        if isinstance(urls.get(section), dict):
            urls[section] = _rewrite(urls[section], http_root, ws_root, in_ws=False)
    _adopt_linear_errors(exchange)
    options = getattr(exchange, "options", None)
    if not isinstance(options, dict):
        raise VenueError("not a ccxt exchange: it has no options dictionary")
    options.update(LOCAL_OPTIONS)
    # ccxt sleeps this long in close() to let TLS connections wind down; loopback has no TLS,
    # and the 250 ms default would eat a twentieth of the 5 s shutdown budget per client.
    if hasattr(exchange, "timeout_on_exit"):
        exchange.timeout_on_exit = 0


def ccxt_client_config(
    *,
    api_key: str | None,
    secret: str | None,
    timeout_ms: int,
    enable_rate_limit: bool,
) -> dict[str, Any]:
    """The constructor dict for a ccxt binanceusdm instance (live venue or local server).

    Keys are left out when absent so public-only instances stay public. The options are safe
    on the real venue too: USD-M needs no spot currency list, and listing all open orders is
    intended.

    >>> ccxt_client_config(api_key=None, secret=None, timeout_ms=5000, enable_rate_limit=True)
    {'timeout': 5000, 'enableRateLimit': True, 'options': {'fetchCurrencies': False, \
'warnOnFetchOpenOrdersWithoutSymbol': False, 'defaultType': 'swap'}}
    """
    if timeout_ms <= 0:
        raise VenueError(f"timeout_ms must be positive, got {timeout_ms}")
    if bool(api_key) != bool(secret):
        raise VenueError("api_key and secret must be given together")
    config: dict[str, Any] = {
        "timeout": int(timeout_ms),
        "enableRateLimit": bool(enable_rate_limit),
        "options": {**LOCAL_OPTIONS, "defaultType": "swap"},
    }
    if api_key and secret:
        config["apiKey"] = api_key
        config["secret"] = secret
    return config


def _rewrite(node: Any, http_root: tuple[str, str, str], ws_root: tuple[str, str, str],
             *, in_ws: bool) -> Any:
    """A copy of ``node`` with every URL string moved to the local roots."""
    if isinstance(node, dict):
        return {k: _rewrite(v, http_root, ws_root, in_ws=in_ws or k == "ws")
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite(v, http_root, ws_root, in_ws=in_ws) for v in node]
    if isinstance(node, str) and "://" in node:
        parts = urlsplit(node)
        if parts.scheme in _WS_SCHEMES or (in_ws and parts.scheme not in _HTTP_SCHEMES):
            scheme, netloc, prefix = ws_root
        else:
            scheme, netloc, prefix = http_root
        return urlunsplit((scheme, netloc, prefix + parts.path, parts.query, parts.fragment))
    return node


def _adopt_linear_errors(exchange: object) -> None:
    table = getattr(exchange, "exceptions", None)
    if not isinstance(table, dict):
        raise VenueError("not a ccxt exchange: it has no exceptions dictionary")
    linear = table.get("linear")
    if not isinstance(linear, dict):
        return
    for kind in ("exact", "broad"):
        extra = linear.get(kind)
        if isinstance(extra, dict):
            merged = dict(table.get(kind) or {})
            merged.update(extra)
            table[kind] = merged


def _root(url: str, schemes: tuple[str, ...], name: str) -> tuple[str, str, str]:
    """``(scheme, host:port, path prefix)`` of ``url``; a trailing ``/ws`` is not a prefix."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.netloc:
        raise VenueError(f"{name} {url!r}: expected {'/'.join(schemes)}://host:port")
    prefix = parts.path.rstrip("/")
    if name == "ws_url" and prefix.endswith("/ws"):
        prefix = prefix[: -len("/ws")]
    return parts.scheme, parts.netloc, prefix


def _ws_from_http(http_root: tuple[str, str, str]) -> tuple[str, str, str]:
    scheme, netloc, prefix = http_root
    return ("wss" if scheme == "https" else "ws"), netloc, prefix


def find_perpetual(markets: Mapping[str, Mapping[str, Any]], raw: str) -> str | None:
    """The unified symbol of the linear perpetual that ``raw`` names, from ccxt's loaded markets.

    ``BTC/USDT``, ``BTCUSDT`` and ``BTC/USDT:USDT`` all find ``BTC/USDT:USDT``; None if there is
    no such market. Pure: both ccxt users (market data and orders) resolve symbols through it.

    >>> find_perpetual({"BTC/USDT:USDT": {"swap": True, "linear": True}}, "BTCUSDT")
    'BTC/USDT:USDT'
    """
    market = markets.get(raw)
    if market is not None and market.get("swap"):
        return raw
    wanted = compact_symbol(raw)
    for symbol, market in markets.items():
        if market.get("swap") and market.get("linear") and compact_symbol(symbol) == wanted:
            return symbol
    return None

