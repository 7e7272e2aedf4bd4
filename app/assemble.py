"""Builds the bot's parts for one mode, in the order they depend on each other.

PAPER: live market data, ``PaperExchange`` fills, paper journal and paper account file.
LIVE: live market data, ``CcxtExchange`` with the API keys, live journal.
DEMO: the bundled simulator in-process; market data and orders both go to it through real
ccxt, with a fresh demo journal per run (the simulator starts fresh too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from loguru import logger

from app.pipeline import SignalRouter
from app.report import StatusReporter, pnl_rows, totals
from core.component import Component
from core.config import AppConfig, PairConfig, Secrets, signal_params
from core.launch import RunMode
from core.stats import SessionStats
from execution.engine import ExecutionEngine
from execution.exchange import CcxtExchange, ExchangeAdapter
from execution.journal import Journal
from execution.results import PairSpec
from signals.generator import SignalGenerator
from signals.market_data import MarketDataHub


DEMO_STATUS_INTERVAL_SECONDS = 5.0


@dataclass(slots=True)
class Pipeline:
    """The parts of one run; ``components`` in start order."""

    components: list[Component] = field(default_factory=list)
    router: SignalRouter | None = None
    engine: ExecutionEngine | None = None
    hub: MarketDataHub | None = None
    journal: Journal | None = None
    simulator: Any = None


async def assemble(*, config: AppConfig, pairs: list[PairConfig], mode: RunMode, secrets: Secrets,
                   stats: SessionStats, storage_dir: Path, started: list[Component], demo_speed: float,
                   adopt: bool, resume_halted: bool = False) -> Pipeline:
    """Build everything; parts that hold connections are appended to ``started`` at once, so
    a failure halfway still closes them."""
    pipeline = Pipeline()
    enabled = [p for p in pairs if p.enabled]
    exchange_config = config.exchange
    order_secrets = secrets
    if mode is RunMode.DEMO:
        from app.demo import EmbeddedSimulator

        max_lookback = max((signal_params(config.signal, p).lookback_bars for p in enabled), default=60)
        simulator = EmbeddedSimulator(legs=[leg for p in enabled for leg in (p.leg_a, p.leg_b)],
                                      speed=demo_speed, warmup_bars=max(1000, max_lookback + 50))
        await simulator.start()
        started.append(simulator)
        stats.register_section("simulator", simulator.stats)
        pipeline.simulator = simulator
        server = simulator.server
        exchange_config = exchange_config.model_copy(update={"base_url": server.base_url, "ws_url": server.ws_url,
                                                             "enable_rate_limit": False, "use_testnet": False})
        order_secrets = Secrets(server.api_key, server.api_secret, "demo simulator")

    hub = MarketDataHub(exchange_config=exchange_config, secrets=None,
                        max_quote_age_ms=config.signal.max_quote_age_ms,
                        max_feed_outage_s=config.signal.max_feed_outage_seconds)
    started.append(hub)  # its stop() closes the ccxt client even if start() never ran
    await hub.connect()
    pipeline.hub = hub

    generators: dict[str, SignalGenerator] = {}
    specs: list[PairSpec] = []
    for pair in enabled:
        symbol_a = hub.resolve_symbol(pair.leg_a, pair_id=pair.pair_id)
        symbol_b = hub.resolve_symbol(pair.leg_b, pair_id=pair.pair_id)
        params = signal_params(config.signal, pair)
        generators[pair.pair_id] = SignalGenerator(params, symbol_a=symbol_a, symbol_b=symbol_b)
        notional = pair.notional_usdt or config.execution.notional_per_pair_usdt
        specs.append(PairSpec(pair.pair_id, symbol_a, symbol_b, Decimal(repr(pair.hedge_ratio)),
                              Decimal(repr(notional)), params.price_transform))

    journal = Journal.open(_journal_path(config, mode, storage_dir), mode=mode.value)
    pipeline.journal = journal
    adapter, observers = _adapter(mode, exchange_config, order_secrets, config, storage_dir, started)
    engine = ExecutionEngine(adapter=adapter, journal=journal, pairs=specs, execution=config.execution,
                             risk=config.risk, leverage=config.exchange.leverage,
                             margin_mode=config.exchange.margin_mode, mids=lambda s: router.mid(s),
                             books=lambda s: router.book(s),
                             external_positions_path=storage_dir / f"external-positions-{mode.value.lower()}.json",
                             adopt=adopt, resume_halted=resume_halted, seed=config.paper.seed)
    pipeline.engine = engine
    router = SignalRouter(generators=generators, engine=engine, stats=stats, history=hub.fetch_history,
                          observers=observers, on_feed_loss=config.signal.on_feed_loss)
    pipeline.router = router
    for symbol in router.symbols:
        hub.subscribe(symbol, router.on_quote)
    hub.on_stale_change(lambda symbol, stale: logger.debug("stale {} -> {}", symbol, stale))
    hub.on_feed_change(router.on_feed_change)
    interval = config.logging.status_interval_seconds
    if mode is RunMode.DEMO:  # replayed time runs fast: show the table often enough to watch it move
        interval = min(interval, DEMO_STATUS_INTERVAL_SECONDS)
    status = StatusReporter(generators, interval, hub=hub)
    pipeline.components = [engine, router, hub, status]
    stats.register_section("pnl", lambda: _pnl_section(journal, engine, router))
    return pipeline


class _ClientCloser:
    """Owns a ccxt client that no component closes (the paper exchange's market source)."""

    def __init__(self, name: str, client: CcxtExchange) -> None:
        self.name = name
        self._client = client

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._client.close()

    def stats(self) -> dict[str, Any]:
        return {}


def _adapter(mode: RunMode, exchange_config: Any, secrets: Secrets, config: AppConfig,
             storage_dir: Path, started: list[Component]) -> tuple[ExchangeAdapter, list[Any]]:
    if mode is RunMode.PAPER:
        from execution.paper import PaperExchange

        markets = CcxtExchange(exchange_config, None)
        started.append(_ClientCloser("paper_markets", markets))
        paper = PaperExchange(markets=markets, market_info=markets.market_info, paper=config.paper,
                              state_path=storage_dir / "paper-account.json")
        return paper, [paper.on_quote]
    return CcxtExchange(exchange_config, secrets), []


def _journal_path(config: AppConfig, mode: RunMode, storage_dir: Path) -> Path:
    if mode is RunMode.LIVE:
        return storage_dir / config.storage.journal_live
    if mode is RunMode.PAPER:
        return storage_dir / config.storage.journal_paper
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return storage_dir / f"journal-demo-{stamp}.sqlite"


def _pnl_section(journal: Journal, engine: ExecutionEngine, router: SignalRouter) -> dict[str, Any]:
    rows = pnl_rows(journal, engine.positions, router.mid)
    return {"rows": rows, "total": totals(rows)}
