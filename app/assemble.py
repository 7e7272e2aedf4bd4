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

from app.equity import EquityRecorder
from app.hot_reload import ConfigReloader
from app.pipeline import SignalRouter
from app.report import StatusReporter, pnl_rows, totals
from app.series import SeriesRecorder
from core.component import Component
from core.config import AppConfig, PairConfig, Secrets, signal_params
from core.errors import ConfigurationError
from core.events import EventBus
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
    events: EventBus = field(default_factory=EventBus)  # operator stream: API /ws, notifications
    equity: EquityRecorder | None = None
    status: StatusReporter | None = None
    series: SeriesRecorder | None = None  # spread/z per bar for the session report
    reloader: ConfigReloader | None = None  # hot reload: SIGHUP, file changes, the API's POST /config/reload


async def assemble(*, config: AppConfig, pairs: list[PairConfig], mode: RunMode, secrets: Secrets,
                   stats: SessionStats, storage_dir: Path, started: list[Component], demo_speed: float,
                   adopt: bool, resume_halted: bool = False, pairs_file: str = "pairs_config.json",
                   config_file: str | None = None) -> Pipeline:
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
                                      speed=demo_speed, warmup_bars=max(1000, max_lookback + 50),
                                      demo=config.demo)
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
    for pair, symbol_a, symbol_b in tradable_pairs(hub, enabled, pairs_file=pairs_file, venue=exchange_config.id):
        params = signal_params(config.signal, pair)
        generators[pair.pair_id] = SignalGenerator(params, symbol_a=symbol_a, symbol_b=symbol_b)
        notional = pair.notional_usdt or config.execution.notional_per_pair_usdt
        specs.append(PairSpec(pair.pair_id, symbol_a, symbol_b, Decimal(repr(pair.hedge_ratio)),
                              Decimal(repr(notional)), params.price_transform, params.hedge_ratio_mode))

    journal = Journal.open(_journal_path(config, mode, storage_dir), mode=mode.value)
    pipeline.journal = journal
    adapter, observers = _adapter(mode, exchange_config, order_secrets, config, storage_dir, started)
    engine = ExecutionEngine(adapter=adapter, journal=journal, pairs=specs, execution=config.execution,
                             risk=config.risk, leverage=config.exchange.leverage,
                             margin_mode=config.exchange.margin_mode, mids=lambda s: router.mid(s),
                             books=lambda s: router.book(s),
                             external_positions_path=storage_dir / f"external-positions-{mode.value.lower()}.json",
                             adopt=adopt, resume_halted=resume_halted, seed=config.paper.seed,
                             events=pipeline.events)
    pipeline.engine = engine
    pipeline.series = SeriesRecorder(generators, journal=journal)
    router = SignalRouter(generators=generators, engine=engine, stats=stats, history=hub.fetch_history,
                          observers=[*observers, pipeline.series.on_quote], on_feed_loss=config.signal.on_feed_loss, events=pipeline.events)
    pipeline.router = router
    engine.flatten_pair = router.flatten  # a disabled pair exits through its generator's FLATTEN
    for symbol in router.symbols:
        hub.subscribe(symbol, router.on_quote)
    hub.on_stale_change(lambda symbol, stale: logger.debug("stale {} -> {}", symbol, stale))
    hub.on_feed_change(router.on_feed_change)
    interval = config.logging.status_interval_seconds
    if mode is RunMode.DEMO:  # replayed time runs fast: show the table often enough to watch it move
        interval = min(interval, DEMO_STATUS_INTERVAL_SECONDS)
    status = StatusReporter(generators, interval, hub=hub, engine=engine, journal=journal, mids=router.mid)
    equity = EquityRecorder(engine=engine, journal=journal, mids=router.mid, interval_seconds=interval)
    router.after_execution = equity.on_execution
    pipeline.equity, pipeline.status = equity, status
    pipeline.components = [engine, router, hub, status, equity]  # equity after the engine: its start balance
    if secrets.notification_urls:  # first: it starts before and stops after everything it reports on
        from app.notifications import Notifier, PipelineFacts

        pipeline.components.insert(0, Notifier(settings=config.notifications, urls=secrets.notification_urls,
                                                events=pipeline.events,
                                                facts=PipelineFacts(engine, journal, stats, mode.value)))
    if config_file is not None:  # a run from files (not a test's in-memory config): they can be reloaded
        pipeline.reloader = ConfigReloader(
            config_path=Path(config_file), pairs_path=Path(pairs_file), config=config, pairs=pairs, router=router,
            engine=engine, hub=hub, events=pipeline.events,
            resolve=lambda added: tradable_pairs(hub, added, pairs_file=pairs_file, venue=exchange_config.id))
        pipeline.components.append(pipeline.reloader)
    if config.api.enabled:  # last: started after the engine, stopped first (app/operator_api/server.py)
        from app.operator_api.wiring import operator_api

        pipeline.components.append(operator_api(pipeline, config=config, pairs=enabled, mode=mode.value,
                                                secrets=secrets))
    stats.register_section("pnl", lambda: _pnl_section(journal, engine, router))
    return pipeline


def tradable_pairs(hub: MarketDataHub, pairs: list[PairConfig], *, pairs_file: str,
                   venue: str) -> list[tuple[PairConfig, str, str]]:
    """Each enabled pair with its two resolved symbols; a pair with a leg the venue does not list,
    or lists as inactive (``market['active']`` false: delisted, settling), is dropped with a
    warning so the others start, as freqtrade does. None left is a configuration error (exit 2).
    """
    kept: list[tuple[PairConfig, str, str]] = []
    for pair in pairs:
        try:
            symbols = [hub.resolve_symbol(leg, pair_id=pair.pair_id) for leg in (pair.leg_a, pair.leg_b)]
        except ConfigurationError as exc:
            logger.warning("{}: dropped, not traded this run: {} ({})", pair.pair_id, exc.value, exc.expected)
            continue
        inactive = [s for s in symbols if hub.market(s).get("active") is False]
        if inactive:
            logger.warning("{}: dropped, not traded this run: {} listed as inactive by {}", pair.pair_id,
                           ", ".join(inactive), venue)
            continue
        kept.append((pair, symbols[0], symbols[1]))
    if pairs and not kept:
        raise ConfigurationError(file=pairs_file, field="pairs", value=[p.pair_id for p in pairs],
                                 expected=f"at least one pair whose legs {venue} lists as active perpetuals")
    return kept


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
