"""Helpers for the simulator integration tests (their fixtures: tests/integration/conftest.py)."""

from __future__ import annotations

from typing import Any

from core.venue import ccxt_client_config, point_at_local_exchange
from simulator.config import ReplayConfig
from simulator.server import SimulatorServer

# Fast enough that quotes flow every few ms, slow enough that prices stay put within a test.
TEST_REPLAY = ReplayConfig(speed=300.0, steps_per_bar=60, warmup_bars=1000, seed=11)


def local_client(cls: type, sim: SimulatorServer, **overrides: Any) -> Any:
    """A ccxt instance of ``cls`` pointed at ``sim``, default test account unless overridden."""
    config = ccxt_client_config(api_key=overrides.pop("api_key", sim.api_key),
                                secret=overrides.pop("secret", sim.api_secret),
                                timeout_ms=overrides.pop("timeout_ms", 3000),
                                enable_rate_limit=False)
    config.update(overrides)
    exchange = cls(config)
    point_at_local_exchange(exchange, base_url=sim.base_url, ws_url=sim.ws_url)
    # ccxt sleeps 250 ms in close() to let TLS connections wind down; loopback HTTP needs none.
    exchange.timeout_on_exit = 0
    return exchange
