"""The operator API rig: the whole bot assembled in-process against the simulator, API on a free port.

``app.assemble`` builds every part as ``main.py`` does (LIVE mode: a real ``CcxtExchange``, real
ccxt, signed orders to an in-process simulator on 127.0.0.1), with ``api.enabled`` and port 0;
the components start in order, so uvicorn really serves on loopback and tests call it with
aiohttp. Thresholds make every pair enter at once and hold (exit at z = +/-5 on the other
side, stop at 7): a test that needs a position has one within seconds, and only the operator
closes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.config import AppConfig, PairConfig, Secrets
from core.launch import RunMode
from core.stats import SessionStats
from core.types import PairState
from simulator.config import SimulatorConfig
from simulator.server import MarketData, SimulatorServer
from tests.engine_rig import REPLAY, SYMBOLS

TOKEN_ENV = "PAIRS_BOT_TEST_API_TOKEN"
TOKEN = "test-token-0123456789abcdef"
IN_POSITION = (PairState.LONG_SPREAD, PairState.SHORT_SPREAD)
PAIRS = [PairConfig(pair_id="EOS_AXS", leg_a="EOS/USDT", leg_b="AXS/USDT", hedge_ratio=1.1664),
         PairConfig(pair_id="DOT_ETH", leg_a="DOT/USDT", leg_b="ETH/USDT", hedge_ratio=0.9),
         PairConfig(pair_id="BTC_ETH", leg_a="BTC/USDT", leg_b="ETH/USDT", hedge_ratio=1.0)]


def rig_config(base_url: str, **api: Any) -> AppConfig:
    return AppConfig.model_validate({
        "dry_run": False,
        "exchange": {"base_url": base_url, "enable_rate_limit": False, "recv_window_ms": 5000},
        "signal": {"entry_threshold": 0.3, "exit_threshold": -5.0, "stop_loss_threshold": 7.0,
                   "cooldown_seconds": 1.0, "max_holding_bars": 100_000},
        "execution": {"notional_per_pair_usdt": 1000.0, "reconcile_interval_seconds": 3600,
                      "duplicate_window_seconds": 0.5, "retry_backoff_ms": 5},
        "risk": {"max_open_pairs": 5, "max_gross_exposure_usdt": 50_000.0, "max_daily_loss_usdt": 1_000.0},
        "api": {"enabled": True, "port": 0, "token_env": TOKEN_ENV, "metric_interval_seconds": 0.3, **api},
    }, strict=False)


@dataclass
class ApiRig:
    sim: SimulatorServer
    pipeline: Any
    api: Any  # app.operator_api.server.OperatorApi
    base_url: str

    @property
    def engine(self) -> Any:
        return self.pipeline.engine

    def headers(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def sim_qty(self, symbol: str) -> Decimal:
        exchange_symbol = self.engine.adapter.rules(symbol).exchange_symbol
        held = self.sim.positions()["default"]["positions"].get(exchange_symbol)
        return Decimal(held["amount"]) if held else Decimal(0)

    async def wait_state(self, pair_id: str, states: tuple[PairState, ...], timeout_s: float = 20.0) -> PairState:
        async with asyncio.timeout(timeout_s):
            while (state := self.engine.pair_state(pair_id)) not in states:
                await asyncio.sleep(0.02)
        return state


@pytest.fixture
async def api_rig(sim_data: MarketData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> AsyncIterator[Callable[..., Awaitable[ApiRig]]]:
    """``await api_rig()``: a started bot with its API; everything is stopped at teardown."""
    from app.assemble import assemble

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    opened: list[tuple[SimulatorServer, list[Any], Any]] = []

    async def make(config_files: tuple[Path, Path] | None = None, **api: Any) -> ApiRig:
        """``config_files``: (config.json, pairs_config.json) to write the rig's settings to, so
        the run has a real hot-reload component reading them, as ``main.py`` runs do."""
        sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=REPLAY), data=sim_data)
        await sim.start()
        started: list[Any] = []
        opened.append((sim, started, None))
        config = rig_config(sim.base_url, **api)
        files: dict[str, str] = {}
        if config_files is not None:
            config_path, pairs_path = config_files
            config_path.write_text(config.model_dump_json(exclude_none=True))
            pairs_path.write_text(json.dumps({"pairs": [p.model_dump(exclude_none=True) for p in PAIRS]}))
            files = {"config_file": str(config_path), "pairs_file": str(pairs_path)}
        pipeline = await assemble(config=config, pairs=PAIRS, mode=RunMode.LIVE,
                                  secrets=Secrets(sim.api_key, sim.api_secret, "test"),
                                  stats=SessionStats(mode="LIVE"), storage_dir=tmp_path / "store", started=started,
                                  demo_speed=600.0, adopt=False, **files)
        opened[-1] = (sim, started, pipeline)
        for component in pipeline.components:  # as TradingBot.start_components
            if component not in started:
                started.append(component)
            await component.start()
        server = pipeline.components[-1]
        assert server.name == "operator_api"
        return ApiRig(sim, pipeline, server, server.base_url)

    yield make
    for sim, started, pipeline in reversed(opened):
        for component in reversed(started):  # the API first: it was started last
            await component.stop()
        if pipeline is not None and pipeline.journal is not None:
            pipeline.journal.close()
        await sim.stop()
