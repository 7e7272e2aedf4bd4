"""The offline demo's exchange: the bundled simulator, run in-process as a bot component.

Why in-process: ``python main.py demo`` must work from a fresh clone with nothing else running.
The bot still talks to it only through real ccxt over loopback, exactly as it talks to Binance.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from loguru import logger

from core.config import DemoConfig, compact_symbol
from market_replay.config import demo_replay_config
from simulator.config import FundingConfig, SimulatorConfig
from simulator.server import SimulatorServer

DEFAULT_DEMO_SPEED = 600.0


class EmbeddedSimulator:
    """Starts the simulator on a free 127.0.0.1 port with the legs of the configured pairs."""

    name = "simulator"

    def __init__(self, *, legs: Iterable[str], speed: float, warmup_bars: int,
                 demo: DemoConfig | None = None) -> None:
        symbols = tuple(sorted({compact_symbol(leg) for leg in legs}))
        demo = demo or DemoConfig()
        rate = Decimal(repr(demo.funding_rate))
        funding = FundingConfig(enabled=rate != 0, default_rate=rate,
                                default_interval_seconds=int(demo.funding_interval_hours * 3600))
        self._config = SimulatorConfig(
            symbols=symbols, port=0,
            replay=demo_replay_config(speed=speed, warmup_bars=warmup_bars), funding=funding)
        self._server: SimulatorServer | None = None

    async def start(self) -> None:
        self._server = SimulatorServer(self._config)
        await self._server.start()
        logger.info("demo exchange: simulator on {} replaying {} symbols of real 5m data at {}x",
                    self._server.base_url, len(self._config.symbols or ()), self._config.replay.speed)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    @property
    def server(self) -> SimulatorServer:
        if self._server is None:
            raise RuntimeError("the demo simulator is not started")
        return self._server

    def stats(self) -> dict[str, Any]:
        if self._server is None:
            return {}
        stats = self._server.stats()
        return {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
