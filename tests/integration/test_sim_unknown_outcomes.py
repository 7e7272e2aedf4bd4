"""Orders whose outcome the client cannot know, through real ccxt against the simulator.

What each fault must look like to ccxt 4.5.90 (``create_order``), and what the venue holds
afterwards:

- lands late: connection dropped (ccxt ExchangeNotAvailable); "not found" until it lands, then
  FILLED; never placed once its ``timestamp + recvWindow`` has passed; refused (-4116) if its
  clientOrderId is held by an open order by then.
- HTTP 503 "Unknown error, please check your request or try again later." (no code): ccxt
  ExchangeNotAvailable; the order exists or not by the seeded coin.
- HTTP 408 -1007 "Timeout waiting for response from backend server...": ccxt RequestTimeout.
- trade and position lags: the order already says FILLED while ``userTrades`` and
  ``positionRisk`` still show the past.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlencode

import aiohttp
import ccxt
import pytest

from simulator import auth
from simulator.faults import FaultConfig, FaultInjector

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


async def _find(rest: Any, client_id: str, symbol: str = BTC) -> dict[str, Any]:
    return await rest.fetch_order(None, symbol, params={"origClientOrderId": client_id})


async def _wait_until_found(rest: Any, client_id: str, *, within: float) -> dict[str, Any]:
    """Poll the order by clientOrderId until it exists (bounded by ``within`` seconds)."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await _find(rest, client_id)
            except ccxt.OrderNotFound:
                await asyncio.sleep(0.03)


# --- lands late -------------------------------------------------------------------------------


async def test_late_order_is_not_found_first_then_found_filled(rest, sim) -> None:
    sim.set_faults(lands_late_probability=1.0, lands_late_ms=400)
    async with asyncio.timeout(10):
        sent = time.monotonic()
        with pytest.raises(ccxt.NetworkError) as caught:
            await rest.create_order(BTC, "market", "buy", 0.001,
                                    params={"newClientOrderId": "late-1"})
        assert type(caught.value) is ccxt.ExchangeNotAvailable  # a dropped connection
        sim.set_faults(lands_late_probability=0.0)  # the late order is already on its way
        with pytest.raises(ccxt.OrderNotFound, match="-2013"):
            await _find(rest, "late-1")
        assert sim.order_log() == []
        found = await _wait_until_found(rest, "late-1", within=3)
        landed_after = time.monotonic() - sent
    assert found["status"] == "closed" and found["filled"] == 0.001
    assert found["clientOrderId"] == "late-1"
    assert landed_after >= 0.4
    assert [o["clientOrderId"] for o in sim.order_log()] == ["late-1"]  # placed exactly once
    assert sim.stats()["faults_injected"] == {"lands_late": 1, "late_order_landed": 1}


async def test_late_order_past_its_recv_window_never_lands(rest, sim) -> None:
    sim.set_faults(lands_late_probability=1.0, lands_late_ms=500)
    async with asyncio.timeout(10):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await rest.create_order(BTC, "market", "buy", 0.001,
                                    params={"newClientOrderId": "late-exp", "recvWindow": 200})
        sim.set_faults(lands_late_probability=0.0)
        await asyncio.sleep(0.9)  # well past the landing time
        with pytest.raises(ccxt.OrderNotFound, match="-2013"):
            await _find(rest, "late-exp")
    assert sim.order_log() == []
    assert sim.positions()["default"]["positions"] == {}
    assert sim.stats()["faults_injected"] == {"lands_late": 1, "late_order_expired": 1}


async def test_late_order_is_refused_when_its_client_id_is_open(rest, sim) -> None:
    async with asyncio.timeout(10):
        book = await rest.fetch_bids_asks([ETH])
        far = float(rest.price_to_precision(ETH, book[ETH]["bid"] * 0.8))
        sim.set_faults(lands_late_probability=1.0, lands_late_ms=300)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await rest.create_order(ETH, "limit", "buy", 0.01, far,
                                    params={"newClientOrderId": "late-dup"})
        sim.set_faults(lands_late_probability=0.0)
        resent = await rest.create_order(ETH, "limit", "buy", 0.01, far,
                                         params={"newClientOrderId": "late-dup"})
        assert resent["status"] == "open"
        await asyncio.sleep(0.6)
        log = sim.order_log()
        await rest.cancel_order(resent["id"], ETH)
    assert [(o["clientOrderId"], o["orderId"]) for o in log] == [("late-dup", int(resent["id"]))]
    assert sim.stats()["faults_injected"] == {"lands_late": 1, "late_order_duplicate": 1}


async def test_reset_drops_late_orders_in_flight(rest, sim) -> None:
    sim.set_faults(lands_late_probability=1.0, lands_late_ms=300)
    async with asyncio.timeout(10):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await rest.create_order(BTC, "market", "buy", 0.001,
                                    params={"newClientOrderId": "late-reset"})
        sim.reset()
        await asyncio.sleep(0.5)
    assert sim.order_log() == []
    assert sim.stats()["faults_injected"] == {"lands_late": 1, "late_order_dropped": 1}


async def test_resend_of_a_filled_client_order_id_is_a_second_position(rest, sim) -> None:
    async with asyncio.timeout(10):
        first = await rest.create_order(BTC, "market", "buy", 0.001,
                                        params={"newClientOrderId": "twice-1"})
        second = await rest.create_order(BTC, "market", "buy", 0.001,
                                         params={"newClientOrderId": "twice-1"})
        newest = await _find(rest, "twice-1")
        positions = await rest.fetch_positions([BTC])
    assert first["status"] == second["status"] == "closed"
    assert first["id"] != second["id"] and newest["id"] == second["id"]
    assert [o["clientOrderId"] for o in sim.order_log()] == ["twice-1", "twice-1"]
    assert len(positions) == 1 and positions[0]["contracts"] == 0.002


# --- "execution status unknown" answers -------------------------------------------------------


@pytest.mark.parametrize(("applied", "counter"), [(True, "unknown_503_applied"),
                                                  (False, "unknown_503_not_applied")])
async def test_unknown_503_is_exchange_not_available_with_or_without_the_order(
        rest, sim, applied: bool, counter: str) -> None:
    sim.set_faults(unknown_503_probability=1.0,
                   unknown_503_applied_probability=1.0 if applied else 0.0)
    async with asyncio.timeout(10):
        with pytest.raises(ccxt.ExchangeNotAvailable,
                           match="Unknown error, please check your request") as caught:
            await rest.create_order(BTC, "market", "buy", 0.001,
                                    params={"newClientOrderId": "u503-1"})
        sim.set_faults(unknown_503_probability=0.0)
        if applied:
            found = await _find(rest, "u503-1")
            assert found["status"] == "closed" and found["filled"] == 0.001
        else:
            with pytest.raises(ccxt.OrderNotFound, match="-2013"):
                await _find(rest, "u503-1")
    assert type(caught.value) is ccxt.ExchangeNotAvailable
    assert " 503 " in str(caught.value)  # ccxt fell back to the HTTP status: the body has no code
    assert [o["clientOrderId"] for o in sim.order_log()] == (["u503-1"] if applied else [])
    assert sim.stats()["faults_injected"] == {counter: 1}


@pytest.mark.parametrize(("applied", "counter"), [(True, "timeout_1007_applied"),
                                                  (False, "timeout_1007_not_applied")])
async def test_timeout_1007_is_request_timeout_with_or_without_the_order(
        rest, sim, applied: bool, counter: str) -> None:
    sim.set_faults(timeout_1007_probability=1.0,
                   timeout_1007_applied_probability=1.0 if applied else 0.0)
    async with asyncio.timeout(10):
        with pytest.raises(ccxt.RequestTimeout, match="-1007") as caught:
            await rest.create_order(BTC, "market", "sell", 0.001,
                                    params={"newClientOrderId": "t1007-1"})
        sim.set_faults(timeout_1007_probability=0.0)
        if applied:
            found = await _find(rest, "t1007-1")
            assert found["status"] == "closed" and found["filled"] == 0.001
        else:
            with pytest.raises(ccxt.OrderNotFound, match="-2013"):
                await _find(rest, "t1007-1")
    assert type(caught.value) is ccxt.RequestTimeout
    assert [o["clientOrderId"] for o in sim.order_log()] == (["t1007-1"] if applied else [])
    assert sim.stats()["faults_injected"] == {counter: 1}


async def test_applied_unknown_outcome_of_an_invalid_order_leaves_nothing(rest, sim) -> None:
    sim.set_faults(unknown_503_probability=1.0, unknown_503_applied_probability=1.0)
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.ExchangeNotAvailable):  # -4164 behind it, which nobody hears
            await rest.fapiPrivatePostOrder({"symbol": "DOGEUSDT", "side": "BUY",
                                             "type": "MARKET", "quantity": "10"})
    assert sim.order_log() == []
    assert sim.stats()["faults_injected"] == {"unknown_503_refused": 1}


@pytest.mark.parametrize(("knob", "status", "body"), [
    ("unknown_503_probability", 503,
     {"path": "/fapi/v1/order",
      "msg": "Unknown error, please check your request or try again later."}),
    ("timeout_1007_probability", 408,
     {"code": -1007, "msg": "Timeout waiting for response from backend server. Send status "
                            "unknown; execution status unknown."}),
])
async def test_unknown_outcome_wire_format(sim, knob: str, status: int,
                                           body: dict[str, Any]) -> None:
    sim.set_faults(**{knob: 1.0})
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
              "timestamp": str(int(time.time() * 1000))}
    query = urlencode(params)
    signed = f"{query}&signature={auth.sign(query, sim.api_secret)}"
    async with asyncio.timeout(5), aiohttp.ClientSession() as http:
        async with http.post(f"{sim.base_url}/fapi/v1/order", data=signed,
                             headers={"X-MBX-APIKEY": sim.api_key,
                                      "Content-Type": "application/x-www-form-urlencoded"}) as r:
            got_status, got = r.status, await r.json()
    assert got_status == status
    if status == 503:
        assert abs(got.pop("timestamp") - time.time() * 1000) < 5000  # wall time, like Binance
    assert got == body


# --- reporting lags ---------------------------------------------------------------------------


async def test_trade_lag_hides_fresh_trades_but_not_the_fill(rest, sim) -> None:
    sim.set_faults(trade_lag_ms=500)
    async with asyncio.timeout(10):
        order = await rest.create_order(BTC, "market", "buy", 0.001,
                                        params={"newClientOrderId": "lag-t-1"})
        early = await rest.fetch_my_trades(BTC)
        found = await _find(rest, "lag-t-1")
        await asyncio.sleep(0.6)
        late = await rest.fetch_my_trades(BTC)
    assert order["status"] == "closed" and found["filled"] == 0.001
    assert early == []
    assert [(t["order"], t["amount"]) for t in late] == [(order["id"], 0.001)]


async def test_position_lag_reports_the_position_as_it_was(rest, sim) -> None:
    sim.set_faults(position_lag_ms=500)

    async def amounts() -> tuple[list[float], str | None, str | None]:
        v3 = [p["contracts"] for p in await rest.fetch_positions([BTC])]
        v2 = await rest.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})
        account = await rest.fapiPrivateV3GetAccount()
        in_account = [p["positionAmt"] for p in account["positions"] if p["symbol"] == "BTCUSDT"]
        return (v3, v2[0]["positionAmt"] if v2 else None,
                in_account[0] if in_account else None)

    async with asyncio.timeout(10):
        first = await rest.create_order(BTC, "market", "buy", 0.001)
        just_after_first = await amounts()
        await asyncio.sleep(0.6)
        settled_first = await amounts()
        second = await rest.create_order(BTC, "market", "buy", 0.002)
        just_after_second = await amounts()
        await asyncio.sleep(0.6)
        settled_second = await amounts()
    assert first["filled"] == 0.001 and second["filled"] == 0.002
    assert just_after_first == ([], None, None)  # flat, as it was 500 ms ago
    assert settled_first == ([0.001], "0.001", "0.001")
    assert just_after_second == ([0.001], "0.001", "0.001")
    assert settled_second == ([0.003], "0.003", "0.003")
    assert sim.positions()["default"]["positions"]["BTCUSDT"]["amount"] == "0.003"  # the truth


# --- knobs ------------------------------------------------------------------------------------


def test_unknown_outcome_decisions_are_seeded_per_stream() -> None:
    def decisions(config: FaultConfig) -> list[object]:
        injector = FaultInjector(config)
        return [(injector.land_late(), injector.unknown_outcome()) for _ in range(40)]

    base = FaultConfig(seed=3, lands_late_probability=0.3, unknown_503_probability=0.3,
                       timeout_1007_probability=0.5)
    first = decisions(base)
    assert first == decisions(base)
    outcomes = {o for _, o in first}
    assert {("unknown_503", True), ("unknown_503", False), ("timeout_1007", True),
            ("timeout_1007", False), None} <= outcomes
    # the applied coin has its own stream: a coin that never lands (0: no draw at all) leaves
    # which orders are hit unchanged
    moved = decisions(FaultConfig(seed=3, lands_late_probability=0.3, unknown_503_probability=0.3,
                                  timeout_1007_probability=0.5,
                                  unknown_503_applied_probability=0.0))
    assert [(late, o and o[0]) for late, o in moved] == [(late, o and o[0]) for late, o in first]
    assert ("unknown_503", True) not in {o for _, o in moved}
    assert FaultInjector(FaultConfig()).unknown_outcome() is None


def test_new_knobs_are_validated_and_parsed() -> None:
    with pytest.raises(ValueError, match="unknown_503_applied_probability"):
        FaultConfig(unknown_503_applied_probability=1.5)
    with pytest.raises(ValueError, match="lands_late_ms"):
        FaultConfig(lands_late_ms=-1)
    with pytest.raises(ValueError, match="position_lag_ms"):
        FaultConfig.from_mapping({"position_lag_ms": "soon"})
    config = FaultConfig.from_mapping({"lands_late_probability": "0.2", "lands_late_ms": "250",
                                       "trade_lag_ms": 100, "timeout_1007_probability": 1})
    assert (config.lands_late_probability, config.lands_late_ms, config.trade_lag_ms,
            config.timeout_1007_probability) == (0.2, 250, 100, 1.0)
    defaults = FaultConfig()
    assert (defaults.lands_late_ms, defaults.unknown_503_applied_probability,
            defaults.timeout_1007_applied_probability) == (300, 0.5, 0.5)


async def test_new_knobs_are_settable_over_http(sim) -> None:
    async with asyncio.timeout(5), aiohttp.ClientSession() as http:
        async with http.post(f"{sim.base_url}/sim/faults",
                             json={"lands_late_probability": 0.5, "lands_late_ms": 700,
                                   "position_lag_ms": 250}) as response:
            assert response.status == 200
            echoed = await response.json()
        async with http.post(f"{sim.base_url}/sim/faults",
                             json={"trade_lag_ms": -5}) as response:
            refused = response.status, (await response.json())["error"]
    assert (echoed["lands_late_probability"], echoed["lands_late_ms"],
            echoed["position_lag_ms"]) == (0.5, 700, 250)
    assert sim.faults.config.lands_late_ms == 700
    assert refused[0] == 400 and "trade_lag_ms" in refused[1]
