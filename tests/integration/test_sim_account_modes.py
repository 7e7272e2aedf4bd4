"""The simulator's account modes and clock, as Binance USD-M rules them, through real ccxt.

Position mode (``/fapi/v1/positionSide/dual``) and Multi-Assets mode (``/fapi/v1/multiAssetsMargin``)
are per account; the clock of signed requests and ``/fapi/v1/time`` follows ``clock_skew_ms``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ccxt
import pytest

from simulator.server import SimulatorServer

BTC = "BTC/USDT:USDT"
TIMEOUT_S = 10


async def test_position_mode_is_per_account_and_cannot_change_with_a_position_or_open_orders(
        rest: Any, sim: SimulatorServer) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        assert (await rest.fetch_position_mode())["hedged"] is False
        with pytest.raises(ccxt.OperationRejected, match="-4059"):  # already one-way
            await rest.set_position_mode(False)
        await rest.set_position_mode(True)
        assert (await rest.fetch_position_mode())["hedged"] is True
        with pytest.raises(ccxt.OperationRejected, match="-4061"):  # hedge mode: no positionSide is refused
            await rest.create_order(BTC, "market", "buy", 0.01)
        assert sim.order_log() == []
        await rest.set_position_mode(False)
        with pytest.raises(ccxt.OperationRejected, match="-4061"):  # one-way: LONG is refused
            await rest.create_order(BTC, "market", "buy", 0.01, None, {"positionSide": "LONG"})
        await rest.create_order(BTC, "market", "buy", 0.01)
        with pytest.raises(ccxt.OperationRejected, match="-4068"):  # a position on any symbol
            await rest.set_position_mode(True)
        await rest.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True})
        price = float(sim.replay.book("BTCUSDT").bid) * 0.9
        await rest.create_order(BTC, "limit", "buy", 0.01, round(price, 1))
        with pytest.raises(ccxt.OperationRejected, match="-4067"):  # an open order on any symbol
            await rest.set_position_mode(True)


async def test_multi_assets_mode_and_isolated_margin_exclude_each_other(rest: Any) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        assert (await rest.fapiPrivateGetMultiAssetsMargin())["multiAssetsMargin"] is False
        await rest.set_margin_mode("isolated", BTC)
        with pytest.raises(ccxt.BadRequest, match="-4167"):  # a symbol in isolated margin
            await rest.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"})
        await rest.set_margin_mode("cross", BTC)
        await rest.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"})
        with pytest.raises(ccxt.OperationRejected, match="-4171"):  # already on
            await rest.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"})
        with pytest.raises(ccxt.BadRequest, match="-4168"):
            await rest.set_margin_mode("isolated", BTC)


@pytest.mark.parametrize("skew_ms", [3_000, -3_000])
async def test_clock_skew_moves_server_time_and_the_timestamp_check(rest: Any, sim: SimulatorServer,
                                                                   skew_ms: int) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        rest.options["recvWindow"] = 1_000
        await rest.fetch_balance()
        sim.set_faults(clock_skew_ms=skew_ms)
        assert abs(await rest.fetch_time() - time.time() * 1000 - skew_ms) < 500
        message = "outside of the recvWindow" if skew_ms > 0 else "1000ms ahead of the server's time"
        with pytest.raises(ccxt.InvalidNonce, match=message):
            await rest.fetch_balance()
        await rest.load_time_difference()  # ccxt's own correction makes it pass again
        await rest.fetch_balance()
