"""What the operator API reads and acts on: the running pipeline's parts, in one object.

The routes never reach into ``main.py``; they get this, built once by the component from
``app.assemble.Pipeline``. ``reloader`` is optional: hot reload is another component's job
(``reload.ConfigReloader``); the pipeline's own ``reloader`` attribute is used when present.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from core.config import AppConfig, PairConfig
from core.events import EventBus
from execution.engine import ExecutionEngine
from execution.journal import Journal

from app.operator_api.reload import ConfigReloader


@dataclass(slots=True)
class ApiContext:
    config: AppConfig
    pairs: list[PairConfig]
    mode: str
    engine: ExecutionEngine
    journal: Journal
    router: Any  # app.pipeline.SignalRouter
    hub: Any  # signals.market_data.MarketDataHub
    events: EventBus
    equity: Any = None  # app.equity.EquityRecorder
    pipeline: Any = None
    reloader: ConfigReloader | None = None
    secrets_present: bool = False
    started_wall: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)

    def current_reloader(self) -> ConfigReloader | None:
        return self.reloader if self.reloader is not None else getattr(self.pipeline, "reloader", None)

    def known_pair(self, pair_id: str) -> bool:
        return pair_id in self.engine.pairs
