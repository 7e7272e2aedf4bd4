"""Every rejection the simulator sends, and the ccxt exception class it becomes.

Orders go through ccxt's implicit API (``fapiPrivatePostOrder``) where ccxt's own precision
helpers would otherwise stop the request before it reaches the venue: the point is what the
VENUE answers and how ccxt maps it, with the error tables that ``core.venue`` installs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ccxt
import pytest

from simulator.faults import FaultConfig

ORDER_CASES = [
    # (code, ccxt class, raw order params)
    (-1111, ccxt.BadRequest, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                              "quantity": "0.0001"}),
    (-4164, ccxt.InvalidOrder, {"symbol": "DOGEUSDT", "side": "BUY", "type": "MARKET",
                                "quantity": "10"}),
    (-1013, ccxt.InvalidOrder, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                "quantity": "1001"}),
    (-2019, ccxt.InsufficientFunds, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                     "quantity": "100"}),
    (-2022, ccxt.InvalidOrder, {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET",
                                "quantity": "0.01", "reduceOnly": "true"}),
    (-4003, ccxt.BadRequest, {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET",
                              "quantity": "0"}),
    (-1111, ccxt.BadRequest, {"symbol": "WAVESUSDT", "side": "BUY", "type": "LIMIT",
                              "quantity": "10", "price": "1.00005", "timeInForce": "GTC"}),
    (-4013, ccxt.BadRequest, {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                              "quantity": "0.1", "price": "100", "timeInForce": "GTC"}),
    (-4002, ccxt.BadRequest, {"symbol": "DOGEUSDT", "side": "SELL", "type": "LIMIT",
                              "quantity": "100", "price": "11", "timeInForce": "GTC"}),
    (-1121, ccxt.BadSymbol, {"symbol": "NOPEUSDT", "side": "BUY", "type": "MARKET",
                             "quantity": "1"}),
    (-4015, ccxt.BadRequest, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                              "quantity": "0.001", "newClientOrderId": "has space"}),
    (-4120, ccxt.InvalidOrder, {"symbol": "BTCUSDT", "side": "BUY", "type": "STOP_MARKET",
                                "quantity": "0.001", "stopPrice": "40000"}),
    (-1102, ccxt.BadRequest, {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                              "quantity": "0.001", "price": "20000"}),
]


@pytest.mark.parametrize(("code", "error", "params"), ORDER_CASES,
                         ids=[f"{c[0]}-{c[2]['symbol']}" for c in ORDER_CASES])
async def test_order_rejections_map_to_ccxt_classes(rest, code: int, error: type,
                                                    params: dict[str, Any]) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(error, match=str(code)) as caught:
            await rest.fapiPrivatePostOrder(dict(params))
    assert _exact_class(caught.value) is error


async def test_unified_create_order_below_min_notional_is_invalid_order(rest) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.InvalidOrder, match="-4164"):
            await rest.create_order("DOGE/USDT:USDT", "market", "buy", 10)


@pytest.mark.parametrize(("call", "code"), [("cancel", -2011), ("fetch", -2013)])
async def test_unknown_orders_are_order_not_found(rest, call: str, code: int) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.OrderNotFound, match=str(code)):
            if call == "cancel":
                await rest.cancel_order("42", "BTC/USDT:USDT")
            else:
                await rest.fetch_order("42", "BTC/USDT:USDT")


async def test_stale_timestamp_is_invalid_nonce(rest) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await rest.fetch_balance({"timestamp": int(time.time() * 1000) - 60_000})
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await rest.fetch_balance({"timestamp": int(time.time() * 1000) + 5_000})


async def test_wrong_secret_is_authentication_error(make_client) -> None:
    client = make_client(secret="not-the-secret")
    async with asyncio.timeout(5):
        await client.load_markets()  # public: still works
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            await client.fetch_balance()


async def test_unknown_api_key_is_authentication_error(make_client) -> None:
    client = make_client(api_key="unknown-key", secret="whatever")
    async with asyncio.timeout(5):
        await client.load_markets()
        with pytest.raises(ccxt.AuthenticationError, match="-2015"):
            await client.fetch_balance()


async def test_duplicate_open_client_order_id_is_invalid_order(rest) -> None:
    params = {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.01",
              "price": "1000", "timeInForce": "GTC", "newClientOrderId": "same-id"}
    async with asyncio.timeout(5):
        await rest.fapiPrivatePostOrder(dict(params))
        with pytest.raises(ccxt.InvalidOrder, match="-4116"):
            await rest.fapiPrivatePostOrder(dict(params))


@pytest.mark.parametrize(("status", "error"), [
    (429, ccxt.DDoSProtection),
    (418, ccxt.DDoSProtection),
    (500, ccxt.OperationFailed),
    (502, ccxt.ExchangeNotAvailable),
    (503, ccxt.ExchangeNotAvailable),
    (504, ccxt.RequestTimeout),
])
async def test_http_error_bursts_map_to_network_classes(rest, sim, status: int,
                                                        error: type) -> None:
    sim.inject_http_errors(status, 2)
    async with asyncio.timeout(5):
        for _ in range(2):
            with pytest.raises(error) as caught:
                await rest.fetch_ticker("BTC/USDT:USDT")
            assert _exact_class(caught.value) is error
        ticker = await rest.fetch_ticker("BTC/USDT:USDT")  # the burst is over
    assert ticker["last"] > 0


async def test_http_error_probability_is_seeded(rest, sim) -> None:
    async def failures() -> list[bool]:
        sim.set_fault_config(FaultConfig(seed=5, http_error_probability=0.5))
        outcome = []
        for _ in range(12):
            try:
                await rest.fetch_time()
                outcome.append(False)
            except ccxt.DDoSProtection:
                outcome.append(True)
        return outcome

    async with asyncio.timeout(10):
        first, second = await failures(), await failures()
    assert first == second and any(first) and not all(first)


async def test_latency_is_added_to_requests(rest, sim) -> None:
    sim.set_faults(latency_ms=150)
    async with asyncio.timeout(5):
        started = time.perf_counter()
        await rest.fetch_time()
    assert time.perf_counter() - started >= 0.15


async def test_without_the_linear_error_table_ccxt_loses_the_mapping(make_client, sim) -> None:
    """Why ``point_at_local_exchange`` copies ccxt's USD-M table: without it -4164 is generic."""
    client = make_client()
    client.exceptions["exact"] = {k: v for k, v in client.exceptions["exact"].items()
                                  if k != "-4164"}
    async with asyncio.timeout(5):
        await client.load_markets()
        with pytest.raises(ccxt.ExchangeError) as caught:
            await client.create_order("DOGE/USDT:USDT", "market", "buy", 10)
    assert not isinstance(caught.value, ccxt.InvalidOrder)


def _exact_class(exc: BaseException) -> type:
    return type(exc)
