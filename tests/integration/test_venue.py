"""core.venue: pointing real ccxt instances at a local server, and the client config."""

from __future__ import annotations

from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest

from core.venue import VenueError, ccxt_client_config, point_at_local_exchange


def _all_strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _all_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _all_strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.mark.parametrize("cls", [ccxt_async.binanceusdm, ccxt_pro.binanceusdm],
                         ids=["async_support", "pro"])
async def test_every_url_moves_to_loopback_and_paths_are_kept(cls: type) -> None:
    exchange = cls({**ccxt_client_config(api_key=None, secret=None, timeout_ms=1000,
                                         enable_rate_limit=True), "timeout_on_exit": 0})
    try:
        point_at_local_exchange(exchange, base_url="http://127.0.0.1:9001")
        urls = [u for section in ("api", "test", "demo")
                for u in _all_strings(exchange.urls[section])]
        assert urls and all(u.startswith(("http://127.0.0.1:9001/", "ws://127.0.0.1:9001/"))
                            for u in urls)
        api = exchange.urls["api"]
        assert api["fapiPublic"] == "http://127.0.0.1:9001/fapi/v1"
        assert api["fapiPrivateV3"] == "http://127.0.0.1:9001/fapi/v3"
        assert api["sapi"] == "http://127.0.0.1:9001/sapi/v1"
        if "ws" in api:
            assert api["ws"]["linear"] == "ws://127.0.0.1:9001/ws"
            assert exchange.get_ws_url("linear", "public") == "ws://127.0.0.1:9001/public/ws"
            assert not any("/stream" in u for u in _all_strings(api["ws"]))
    finally:
        await exchange.close()


async def test_linear_error_table_and_options_are_installed() -> None:
    exchange = ccxt_async.binanceusdm({"timeout_on_exit": 0})
    try:
        assert exchange.exceptions["exact"].get("-4164") is not ccxt.InvalidOrder
        point_at_local_exchange(exchange, base_url="http://127.0.0.1:9001",
                                ws_url="ws://127.0.0.1:9002/ws")
        exact = exchange.exceptions["exact"]
        assert exact["-4164"] is ccxt.InvalidOrder
        assert exact["-2022"] is ccxt.InvalidOrder
        assert exact["-2019"] is ccxt.InsufficientFunds
        assert exact["-4116"] is ccxt.InvalidOrder
        assert exact["-1021"] is ccxt.InvalidNonce  # generic entries are kept
        assert exchange.options["fetchCurrencies"] is False
        assert exchange.options["warnOnFetchOpenOrdersWithoutSymbol"] is False
        other = ccxt_async.binanceusdm({"timeout_on_exit": 0})
        assert other.exceptions["exact"].get("-4164") is not ccxt.InvalidOrder  # per instance
        await other.close()
    finally:
        await exchange.close()


async def test_explicit_ws_url_with_or_without_ws_suffix() -> None:
    for ws_url in ("ws://127.0.0.1:9002", "ws://127.0.0.1:9002/ws"):
        exchange = ccxt_pro.binanceusdm({"timeout_on_exit": 0})
        try:
            point_at_local_exchange(exchange, base_url="http://127.0.0.1:9001", ws_url=ws_url)
            assert exchange.urls["api"]["ws"]["linear"] == "ws://127.0.0.1:9002/ws"
            assert exchange.urls["api"]["fapiPublic"] == "http://127.0.0.1:9001/fapi/v1"
        finally:
            await exchange.close()


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(VenueError, match="base_url"):
        point_at_local_exchange(ccxt_async.binanceusdm(), base_url="ftp://x")
    with pytest.raises(VenueError, match="ws_url"):
        point_at_local_exchange(ccxt_async.binanceusdm(), base_url="http://127.0.0.1:1",
                                ws_url="http://127.0.0.1:2")
    with pytest.raises(VenueError, match="not a ccxt exchange"):
        point_at_local_exchange(object(), base_url="http://127.0.0.1:1")
    with pytest.raises(VenueError):
        ccxt_client_config(api_key="k", secret=None, timeout_ms=1000, enable_rate_limit=True)
    with pytest.raises(VenueError):
        ccxt_client_config(api_key=None, secret=None, timeout_ms=0, enable_rate_limit=True)


def test_client_config_carries_keys_only_when_given() -> None:
    config = ccxt_client_config(api_key="k", secret="s", timeout_ms=2500, enable_rate_limit=False)
    assert config["apiKey"] == "k" and config["secret"] == "s"
    assert config["timeout"] == 2500 and config["enableRateLimit"] is False
    assert config["options"]["fetchCurrencies"] is False
    public = ccxt_client_config(api_key=None, secret=None, timeout_ms=1, enable_rate_limit=True)
    assert "apiKey" not in public and "secret" not in public
