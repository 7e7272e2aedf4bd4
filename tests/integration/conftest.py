"""Fixtures for the integration suite: the in-process simulator and real ccxt clients.

Every network fixture binds 127.0.0.1 port 0, closes what it opens, and is used inside tests
that bound themselves with ``asyncio.timeout``. Market data are loaded once per session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest

from simulator.config import SimulatorConfig
from simulator.server import MarketData, SimulatorServer
from tests.sim_helpers import TEST_REPLAY, local_client


@pytest.fixture(scope="session")
def market_data() -> MarketData:
    """The bundled candles and exchangeInfo, read once for the whole session."""
    return MarketData.load(SimulatorConfig())


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Override in a test module to change the simulator a module's tests run against."""
    return SimulatorConfig(replay=TEST_REPLAY)


@pytest.fixture
async def sim(
    sim_config: SimulatorConfig, market_data: MarketData
) -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(replace(sim_config, port=0), data=market_data) as server:
        yield server


async def _loaded_client(klass: Any, sim: SimulatorServer) -> AsyncIterator[Any]:
    exchange = local_client(klass, sim)
    try:
        await exchange.load_markets()
        yield exchange
    finally:
        await exchange.close()


@pytest.fixture
async def rest(sim: SimulatorServer) -> AsyncIterator[Any]:
    """ccxt.async_support.binanceusdm against the simulator, markets loaded."""
    async for exchange in _loaded_client(ccxt_async.binanceusdm, sim):
        yield exchange


@pytest.fixture
async def pro(sim: SimulatorServer) -> AsyncIterator[Any]:
    """ccxt.pro.binanceusdm against the simulator, markets loaded."""
    async for exchange in _loaded_client(ccxt_pro.binanceusdm, sim):
        yield exchange


@pytest.fixture
async def make_client(sim: SimulatorServer) -> AsyncIterator[Callable[..., Any]]:
    """Factory for extra clients (other keys, options); all are closed after the test."""
    made: list[Any] = []

    def factory(cls: type = ccxt_async.binanceusdm, **overrides: Any) -> Any:
        exchange = local_client(cls, sim, **overrides)
        made.append(exchange)
        return exchange

    try:
        yield factory
    finally:
        for exchange in made:
            await exchange.close()
