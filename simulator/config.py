"""Configuration of a simulator run: typed, frozen, with units in the field names.

``SimulatorConfig`` is what both the CLI (``python -m simulator``) and the in-process handle
(``SimulatorServer``) are built from. Nothing here reads files or the environment.

The matching engine's parts (``FillConfig``, ``AccountConfig``, the default key pair) live in
``matching/config.py`` and are re-exported here, so one import configures a simulator run.
The default account is ``DEFAULT_API_KEY`` / ``DEFAULT_API_SECRET``: test credentials for a
local fake exchange, not secrets. Configure more accounts with ``accounts=(AccountConfig(...),)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from market_replay.config import ReplayConfig
from matching.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, AccountConfig, FillConfig
from simulator.faults import FaultConfig
from simulator.funding import FundingConfig
from simulator.rate_limits import RateLimitConfig

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "DEFAULT_DATA_DIR",
    "LOOPBACK_HOST",
    "REPO_ROOT",
    "AccountConfig",
    "FaultConfig",
    "FillConfig",
    "FundingConfig",
    "RateLimitConfig",
    "ReplayConfig",
    "SimulatorConfig",
]

LOOPBACK_HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data"


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything one simulator run needs.

    ``data_dir`` holds ``binance-usdm-perp-5m-2023-07/``, ``binance-usdm-ticks-2024/`` and
    ``exchange-info/``. ``symbols`` None serves every symbol with data. ``port`` 0 picks a free
    port. The host is always 127.0.0.1: the simulator never listens on another interface.
    ``state_file``: where engine state and the replay position are saved (on stop and every
    ``state_save_interval_seconds``) and restored from at start.
    ``funding``: the funding-rate schedule (``simulator/funding.py``; 0.0001 every 8 h by default).
    ``rate_limits``: Binance's request-weight and order-count limits, enforced by default
    (``simulator/rate_limits.py``); ``RateLimitConfig(enabled=False)`` turns them off.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    symbols: tuple[str, ...] | None = None
    port: int = 0
    replay: ReplayConfig = ReplayConfig()
    fills: FillConfig = FillConfig()
    faults: FaultConfig = FaultConfig()
    funding: FundingConfig = FundingConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    accounts: tuple[AccountConfig, ...] = (AccountConfig(),)
    recv_window_max_ms: int = 60_000
    ws_ticker_interval_ms: int = 1_000
    ws_max_buffer_bytes: int = 8 * 1024 * 1024
    loop_interval_ms: float = 1.0
    state_file: Path | None = None
    state_save_interval_seconds: float = 30.0
    first_order_id: int = 8_389_765_000_000_000

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65_535:
            raise ValueError("port must be within 0..65535 (0 = any free port)")
        if not self.accounts:
            raise ValueError("at least one account is needed")
        keys = [a.api_key for a in self.accounts]
        names = [a.name for a in self.accounts]
        if len(set(keys)) != len(keys) or len(set(names)) != len(names):
            raise ValueError("account names and api keys must be unique")
        if self.loop_interval_ms <= 0 or self.ws_ticker_interval_ms <= 0:
            raise ValueError("loop_interval_ms and ws_ticker_interval_ms must be positive")
        if self.ws_max_buffer_bytes < 64 * 1024:
            raise ValueError("ws_max_buffer_bytes must be >= 65536")

    @property
    def candles_dir(self) -> Path:
        return self.data_dir / "binance-usdm-perp-5m-2023-07"

    @property
    def ticks_dir(self) -> Path:
        return self.data_dir / "binance-usdm-ticks-2024"

    @property
    def exchange_info_file(self) -> Path:
        return self.data_dir / "exchange-info" / "binance_usdm_fapi_v1_exchangeInfo_2021-07-21.json"
