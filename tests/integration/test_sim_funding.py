"""The simulator's fee and funding endpoints as ccxt's binanceusdm reads them (issue 11 items 4, 5)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest

from simulator.config import AccountConfig, FundingConfig, SimulatorConfig
from simulator.server import SimulatorServer
from tests.sim_helpers import TEST_REPLAY

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"
D = Decimal


@pytest.fixture
def sim_config() -> SimulatorConfig:
    return SimulatorConfig(symbols=("BTCUSDT", "ETHUSDT"), replay=replace(TEST_REPLAY, speed=300.0),
                           accounts=(AccountConfig(taker_fee_rate=D("0.0004"), maker_fee_rate=D("0.00016")),),
                           funding=FundingConfig(default_interval_seconds=600, rates={"ETHUSDT": D("-0.0002")},
                                                 interval_seconds={"ETHUSDT": 1_200}))


async def test_commission_rate_is_the_accounts_own_tier(rest) -> None:
    async with asyncio.timeout(10):
        fee = await rest.fetch_trading_fee(BTC)
        assert (fee["maker"], fee["taker"]) == (0.00016, 0.0004)


async def test_premium_index_funding_history_and_intervals_follow_the_schedule(rest, sim: SimulatorServer) -> None:
    async with asyncio.timeout(10):
        now = sim.replay.now_ms
        rate = await rest.fetch_funding_rate(ETH)
        assert rate["fundingRate"] == -0.0002 and rate["fundingTimestamp"] == now - now % 1_200_000 + 1_200_000
        assert rate["markPrice"] == float(sim.replay.mark_price("ETHUSDT"))
        intervals = await rest.fetch_funding_intervals()
        # Binance lists the symbols whose interval is not 8 h (here both: 10 and 20 minutes)
        assert {s: i["interval"] for s, i in intervals.items()} == {BTC: f"{600 / 3600}h", ETH: f"{1200 / 3600}h"}
        start = sim.replay.now_ms
        while not [r for r in sim.funding.history if r["symbol"] == "ETHUSDT"]:
            await asyncio.sleep(0.02)
        history = await rest.fetch_funding_rate_history(ETH, start)
        assert history and all(h["fundingRate"] == -0.0002 and h["timestamp"] % 1_200_000 == 0 for h in history)


async def test_a_funding_payment_moves_the_wallet_and_is_an_income_row(rest, sim: SimulatorServer) -> None:
    async with asyncio.timeout(15):
        sim.pause()
        await rest.create_order(BTC, "market", "sell", 0.01)
        wallet = D(sim.positions()["default"]["wallet_usdt"])
        start = sim.replay.now_ms
        sim.resume()
        while not [r for r in sim.funding.history if r["symbol"] == "BTCUSDT" and r["fundingTime"] > start]:
            await asyncio.sleep(0.02)
        sim.pause()
        (payment,) = [p for p in await rest.fetch_funding_history(BTC, start) if p["timestamp"] > start][:1]
        settle = next(h for h in sim.funding.history if h["fundingTime"] == payment["timestamp"]
                      and h["symbol"] == "BTCUSDT")
        income = D(payment["info"]["income"])
        assert income == (D("0.01") * D(settle["markPrice"]) * D("0.0001")).quantize(D("1E-8"))  # a short receives
        assert payment["info"]["incomeType"] == "FUNDING_FEE" and payment["id"]
        paid = sum((D(p["info"]["income"]) for p in await rest.fetch_funding_history(BTC, start)), D(0))
        assert D(sim.positions()["default"]["wallet_usdt"]) == wallet + paid
