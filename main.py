"""pairs-bot: multi-pair statistical arbitrage on crypto perpetual futures.

``python main.py`` paper-trades the pairs of ``pairs_config.json`` on live market data;
``python main.py demo`` runs the whole bot offline against the bundled simulator;
``python main.py check-config`` validates both configuration files and prints the pairs.
``python main.py download`` stores OHLCV history for research (``app/download.py``).
Exit codes: 0 clean stop, 1 fatal runtime error (or the exchange unreachable until
exchange.startup_timeout_seconds), 2 invalid usage or configuration, or API keys refused.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from loguru import logger
from rich import box
from rich.console import Console
from rich.table import Table

from core.component import Component
from core.cli_args import positive_seconds, speed_factor
from core.config import AppConfig, PairConfig, Secrets, load_app_config, load_pairs_config, signal_params
from core.errors import AccountSetupError, AuthenticationError, ConfigurationError, RetryableError, UsageError
from core.errors import StartupFailed
from core.events import EventKind, Severity
from core.launch import ENV_KEY, ENV_SECRET, RunMode, load_secrets, resolve_run_mode, retry_start
from core.log_setup import LogPaths, RunContext, progress, reset_logging, setup_logging
from core.stats import SessionStats, final_statistics_text, new_session_id, render_tables
from research.cli import add_scan_parser, scan_command
from research.sweep_cli import add_sweep_parser, sweep_command

PROJECT_DIR = Path(__file__).resolve().parent
EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_FORCED = 0, 1, 2, 130
SHUTDOWN_TIMEOUT_SECONDS = 4.0  # docs/architecture.md, "Errors, logs, exit codes": stopped, stats printed, within 5 s
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class CliOptions:
    command: str
    config_path: Path
    pairs_path: Path
    live: bool
    duration_seconds: float | None
    log_level: str | None
    demo_speed: float = 600.0
    adopt: bool = False
    resume_halted: bool = False
    resume_pairs: tuple[str, ...] = ()
    command_args: Mapping[str, Any] = field(default_factory=dict)  # a subcommand's own options, as parsed


class TradingBot:
    """Orchestrates one run as a list of named steps; the components do the work."""

    def __init__(self, options: CliOptions, *, console: Console | None = None) -> None:
        self.options = options
        self.console = console or Console()
        self.config: AppConfig | None = None
        self.pairs: list[PairConfig] = []
        self.secrets: Secrets | None = None
        self.mode: RunMode | None = None
        self.stats: SessionStats | None = None
        self.log_paths: LogPaths | None = None
        self.components: list[Component] = []
        self._started: list[Component] = []
        self._stop_event = asyncio.Event()
        self._stop_reason = ""
        self._shutdown_done = False
        self._fatal_error: BaseException | None = None
        self._config_warnings: list[str] = []
        self._api_token: str | None = None
        self._handled_signals: list[int] = []
        self._start_task: asyncio.Task[int] | None = None
        self.pipeline: Any = None
        self.session_id = new_session_id()  # one per process run: statistics, trades.jsonl, report

    # -- step 1 ---------------------------------------------------------------------------------
    def load_configuration(self) -> None:
        """Validate everything before anything is started or written; raises on bad input."""
        self.config = load_app_config(self.options.config_path)
        self.pairs = load_pairs_config(self.options.pairs_path, self.config.signal, risk=self.config.risk)
        config_file = str(self.options.config_path)  # messages name the file the user gave
        self.secrets, self._config_warnings = load_secrets(self.config, config_file=config_file)
        self.mode = resolve_run_mode(self.config, live_flag=self.options.live, secrets=self.secrets,
                                     config_file=config_file,
                                     demo=self.options.command == "demo")
        from app.operator_api.bearer import api_token  # api.enabled with no token: exit 2 before anything starts

        self._api_token = api_token(self.config, config_file=config_file)

    # -- step 2 ---------------------------------------------------------------------------------
    def setup_logs(self) -> None:
        """Set up logging (once per run, whatever the start attempts), then the banner."""
        assert_loaded(self.config, self.mode, self.secrets)
        log_config = self.config.logging.model_copy(update={"dir": str(self._resolve(self.config.logging.dir))})
        redact = self.secrets.values() + ([self._api_token] if self._api_token else [])
        self.log_paths = setup_logging(log_config, secrets=redact, console_level=self.options.log_level,
                                       run=RunContext(mode=self.mode.value.lower(), session_id=self.session_id))
        for warning in self._config_warnings:
            logger.warning(warning)
        self._log_banner()

    # -- step 3 ---------------------------------------------------------------------------------
    async def start_with_retries(self) -> bool:
        """Build and start the pipeline, retrying a retryable failure until the startup deadline
        (``core.launch.retry_start``). False when a signal stopped the start; raises
        ``StartupFailed`` at the deadline and any other error at once (the caller closes)."""
        assert_loaded(self.config, self.mode, self.secrets)
        if self._stop_event.is_set():  # a signal arrived before anything was built
            return False
        task = asyncio.create_task(retry_start(self._start_attempt, cleanup=self._discard_pipeline,
                                               timeout_seconds=self.config.exchange.startup_timeout_seconds,
                                               on_retry=self._log_retry), name="startup")
        self._start_task = task  # the signal handler cancels it (_stop_the_start)
        try:
            await asyncio.wait({task})
        finally:
            self._start_task = None
            if not task.done():  # this run itself was cancelled (a second Ctrl+C): the start goes too
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            return False
        task.result()  # re-raises the start's failure
        return True

    async def _start_attempt(self) -> None:
        await self.initialize_components()
        await self.start_components()

    async def initialize_components(self) -> None:
        """Build the components this mode needs, from scratch (again after a failed attempt)."""
        assert_loaded(self.config, self.mode, self.secrets)
        config, mode, secrets = self.config, self.mode, self.secrets
        self.stats = SessionStats(mode=mode.value, session_id=self.session_id)
        from app.assemble import assemble  # imports ccxt and numba: only when actually running

        self.pipeline = await assemble(config=config, pairs=self.pairs, mode=mode, secrets=secrets,
                                       stats=self.stats, storage_dir=self._resolve(config.storage.dir),
                                       started=self._started, demo_speed=self.options.demo_speed,
                                       adopt=self.options.adopt, resume_halted=self.options.resume_halted,
                                       pairs_file=str(self.options.pairs_path),
                                       config_file=str(self.options.config_path))
        self.components = self.pipeline.components
        if self.pipeline.engine is not None:
            self.watch_engine(self.pipeline.engine)
        for component in self.components:
            self.stats.register_section(component.name, component.stats)

    async def start_components(self) -> None:
        """Start the components in order; each is recorded as started first, so a failure
        halfway still stops it."""
        for component in self.components:
            if component not in self._started:
                self._started.append(component)
            await component.start()
        self._announce("started", mode=self.mode.value if self.mode else None)

    # -- step 4 ---------------------------------------------------------------------------------
    async def monitor(self) -> int:
        """Wait for a stop request or the duration; the exit code the run has earned so far."""
        logger.info("running: {} pair(s) enabled | logs: {} | Ctrl+C stops gracefully",
                    sum(p.enabled for p in self.pairs), self.log_paths.directory if self.log_paths else "?")
        duration = self.options.duration_seconds
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=duration)
        except TimeoutError:
            self.request_stop(f"duration {duration:g}s reached")
        if self._fatal_error is not None:
            logger.error("fatal: {}; stopped safely, the next start reconciles", self._fatal_error)
            return EXIT_FATAL
        return EXIT_OK

    def watch_engine(self, engine: Any) -> None:
        """Stop the bot (exit code 1) when the engine reports it cannot trade safely."""
        engine.on_fatal = self._on_engine_fatal

    def _on_engine_fatal(self, exc: BaseException) -> None:
        """The engine cannot trade safely (its journal failed in the order path): stop, exit 1."""
        self._fatal_error = exc
        self.request_stop(f"fatal: journal failure in the order path: {exc}")

    def request_stop(self, reason: str) -> None:
        """Ask the bot to stop; safe to call from signal handlers and more than once."""
        if not self._stop_event.is_set():
            self._stop_reason = reason
            logger.info("stop requested: {}", reason)
            self._stop_event.set()

    # -- step 5 ---------------------------------------------------------------------------------
    async def shutdown_gracefully(self) -> None:
        """Stop components in reverse order (bounded), then print and save the statistics.

        Idempotent: a second call returns at once.
        """
        if self._shutdown_done:
            return
        self._shutdown_done = True
        logger.info("initiating graceful shutdown")
        self._announce("stopping", reason=self._stop_reason or "stopped")
        await self._stop_started()
        if self.stats is not None:
            self.stats.mark_stopped(self._stop_reason or "stopped")
            session_json = self._report_statistics()
            if session_json is not None and self.log_paths is not None:  # bounded; a failure is logged, not raised
                from app.session_report import report_at_stop
                await report_at_stop(series=getattr(self.pipeline, "series", None), session_json=session_json,
                                     logs_dir=self.log_paths.directory, session_id=self.session_id,
                                     mode=self.mode.value.lower() if self.mode else "?",
                                     timeout_seconds=self.config.logging.report_timeout_seconds if self.config else 0)
        if self.pipeline is not None and self.pipeline.journal is not None:
            self.pipeline.journal.close()
        logger.info("graceful shutdown complete")

    # -- the whole run --------------------------------------------------------------------------
    async def run(self) -> int:
        """Load, start (retrying what may pass), run, stop. Returns the process exit code."""
        self.load_configuration()
        self._install_signal_handlers()  # before anything connects: Ctrl+C while starting stops cleanly
        try:
            self.setup_logs()
            exit_code = await self._start_or_explain()
            if exit_code is None:
                exit_code = await self.monitor()
                await self.shutdown_gracefully()
            return exit_code
        finally:
            self._remove_signal_handlers()

    async def _start_or_explain(self) -> int | None:
        """Step 3 and its failures (docs/architecture.md, "Errors, logs, exit codes"). None when the
        bot is running; otherwise everything is closed, one line says why, and this is the exit code."""
        try:
            if await self.start_with_retries():
                return None
        except (ConfigurationError, UsageError):  # e.g. a pair's market is not listed: main() says it, exit 2
            await self._close_failed_start()
            raise
        except StartupFailed as exc:
            code, line, failure = EXIT_FATAL, f"{exc}; {self._network_hint()}", exc
        except AuthenticationError as exc:
            code, line, failure = EXIT_USAGE, (f"startup refused: the exchange rejected the API key: {exc}; "
                                          f"{self._key_hint()}"), exc
        except AccountSetupError as exc:  # hedge mode, or isolated in Multi-Assets mode: its line says what to change
            code, line, failure = EXIT_USAGE, str(exc), exc
        except Exception as exc:
            code, failure = EXIT_FATAL, exc
            line = (f"startup failed: {type(exc).__name__}: {exc} (traceback in "
                    f"{self.log_paths.main_log if self.log_paths else 'the log file'})")
        else:
            await self._close_failed_start()
            logger.info("stopped during startup ({}); every connection closed", self._stop_reason or "stop requested")
            return EXIT_OK
        logger.opt(exception=failure).debug("startup failure detail")  # the traceback: log file only
        await self._close_failed_start()
        logger.error("{}", " ".join(line.split()))  # the one line on stderr, even if the error had several
        return code

    async def _close_failed_start(self) -> None:
        """Close what the start left open. No statistics: the bot never ran."""
        self._shutdown_done = True
        await self._discard_pipeline()
        logger.debug("start abandoned: every started component stopped, every connection closed")

    async def _discard_pipeline(self) -> None:
        """Stop every started component (closing its connections) and the journal, and forget
        them, so that the next attempt builds everything afresh."""
        await self._stop_started()
        if self.pipeline is not None and self.pipeline.journal is not None:
            self.pipeline.journal.close()
        self.pipeline, self.components = None, []

    async def _stop_started(self) -> None:
        """Stop the started components in reverse start order, bounded, then forget them."""
        self._started.sort(key=self._stop_rank)
        # The engine lets executions in flight finish (its stop_grace_seconds) before it closes.
        bound = SHUTDOWN_TIMEOUT_SECONDS + max((getattr(c, "stop_grace_seconds", 0.0) for c in self._started),
                                               default=0.0)
        try:
            async with asyncio.timeout(bound):
                for component in reversed(self._started):
                    try:
                        await component.stop()
                    except Exception:
                        logger.exception("component {} failed to stop cleanly", component.name)
        except TimeoutError:
            logger.error("shutdown took longer than {}s; remaining components abandoned", bound)
        self._started.clear()

    # -- helpers --------------------------------------------------------------------------------
    def _announce(self, alert: str, **data: Any) -> None:
        """The run's start and stop on the operator stream (the notifications' summaries, /ws)."""
        events = getattr(self.pipeline, "events", None)
        if events is not None:
            events.publish(EventKind.ALERT, {"alert": alert, **data}, severity=Severity.INFO)

    def _log_retry(self, attempt: int, error: RetryableError, wait_seconds: float, seconds_left: float) -> None:
        progress().warning("start attempt {} failed: {}; next try in {:.1f} s ({:.0f} s left of "
                           "exchange.startup_timeout_seconds)", attempt, error, wait_seconds, seconds_left)

    def _network_hint(self) -> str:
        base_url = self.config.exchange.base_url if self.config else None
        where = f"exchange.base_url ({base_url})" if base_url else "exchange.id and exchange.use_testnet"
        return f"check the network connection and {where} in {self.options.config_path}"

    def _key_hint(self) -> str:
        source = self.secrets.source if self.secrets else "?"
        return (f"check the key and secret ({ENV_KEY}, {ENV_SECRET}; read from {source}), that the key "
                "may trade futures, and its IP whitelist")

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        presses = {"n": 0}

        def on_signal(signum: int) -> None:
            presses["n"] += 1
            name = signal.Signals(signum).name
            if presses["n"] == 1:
                self.request_stop(f"signal {name}")
                self._stop_the_start()
            else:
                logger.warning("second {}: forcing exit without waiting. UNSAFE: executions in flight are cut "
                               "where they stand; the next start resolves their orders", name)
                if main_task is not None:
                    main_task.cancel(msg="forced")

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
            self._handled_signals.append(signum)
        loop.add_signal_handler(signal.SIGHUP, self._reload_config)
        self._handled_signals.append(signal.SIGHUP)

    def _reload_config(self) -> None:
        """SIGHUP: re-read the configuration files while running (app/hot_reload.py)."""
        reloader = getattr(self.pipeline, "reloader", None)
        if reloader is None or self._stop_event.is_set():
            logger.warning("SIGHUP: nothing to reload yet (starting or stopping); ignored")
            return
        logger.info("SIGHUP: reloading {} and {}", self.options.config_path, self.options.pairs_path)
        reloader.reload_soon("SIGHUP")

    def _stop_the_start(self) -> None:
        """A signal during the start cancels it (an attempt, or the wait between two)."""
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel(msg="stop requested during startup")

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._handled_signals:
            loop.remove_signal_handler(signum)
        self._handled_signals.clear()

    def _stop_rank(self, component: Component) -> int:
        """Start order, with parts built before the components (simulator, hub) first."""
        return self.components.index(component) + 1 if component in self.components else 0

    def _resolve(self, path: str) -> Path:
        """Relative paths in config.json are relative to that file, not to the shell's cwd."""
        p = Path(path)
        return p if p.is_absolute() else self.options.config_path.resolve().parent / p

    def _log_banner(self) -> None:
        """Startup progress lines: stdout and the log file, not stderr (core/log_setup.py)."""
        config, mode = self.config, self.mode
        assert_loaded(config, mode, self.secrets)
        say = progress()
        enabled = [p for p in self.pairs if p.enabled]
        venue = config.exchange.base_url or ("testnet" if config.exchange.use_testnet else "production")
        say.info("pairs-bot starting | mode {} | exchange {} ({}) | {} pair(s), {} enabled",
                 mode.value, config.exchange.id, venue, len(self.pairs), len(enabled))
        say.info("signal: bar {}s, lookback {} bars, entry |z|>={}, exit {}, stop {} | "
                 "notional {} USDT per pair | max open pairs {} | keys {}",
                 config.signal.bar_seconds, config.signal.lookback_bars, config.signal.entry_threshold,
                 config.signal.exit_threshold, config.signal.stop_loss_threshold,
                 config.execution.notional_per_pair_usdt, config.risk.max_open_pairs,
                 "present" if self.secrets.present else "absent")
        say.info("logs: {} | start gives up after {:g} s of retrying (exchange.startup_timeout_seconds)",
                 self.log_paths.directory if self.log_paths else "?", config.exchange.startup_timeout_seconds)

    def _report_statistics(self) -> Path | None:
        """Print and save the final statistics; the saved file's path (None: not saved)."""
        stats = self.stats
        if stats is None:
            return None
        snapshot = stats.snapshot()
        text = final_statistics_text(snapshot)
        logger.debug("\n" + text)
        self.console.print(text, highlight=False)
        render_tables(snapshot, self.console)
        if self.log_paths is None:
            return None
        path = stats.write_json(self.log_paths.directory)
        logger.info("statistics saved to {}", path)
        return path


def assert_loaded(config: AppConfig | None, mode: RunMode | None, secrets: Secrets | None) -> None:
    """Steps must run in order; calling one early is a programming error, said plainly."""
    if config is None or mode is None or secrets is None:
        raise RuntimeError("load_configuration() must run before this step")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                        help="bot settings (default: config.json next to main.py)")
    common.add_argument("--pairs", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                        help="the pairs to trade (default: pairs_config.json next to main.py)")
    live = argparse.ArgumentParser(add_help=False)  # not for the demo, which is always offline
    live.add_argument("--live", action="store_true", default=argparse.SUPPRESS,
                      help="send real orders; also needs \"dry_run\": false and API keys")
    trading = argparse.ArgumentParser(add_help=False)  # `run` options, also valid without the word run
    trading.add_argument("--adopt", action="store_true", default=argparse.SUPPRESS,
                         help="at start, accept exchange positions the journal cannot explain as not the bot's "
                              "(it never trades them) instead of keeping those pairs out of trading")
    trading.add_argument("--resume-halted", action="store_true", default=argparse.SUPPRESS,
                         help="at start, clear every HALTED or BLOCKED pair and reconcile it afresh")
    common.add_argument("--duration", type=positive_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="stop by itself after this many seconds, as gracefully as Ctrl+C")
    common.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=argparse.SUPPRESS,
                        metavar="LEVEL", help=f"console log level, one of {', '.join(LOG_LEVELS)} "
                                              "(default: config.json logging.level)")
    parser = argparse.ArgumentParser(
        prog="main.py", parents=[common, live, trading],
        description="Multi-pair statistical arbitrage bot for crypto perpetual futures.",
        epilog="Exit codes: 0 clean stop, 1 fatal runtime error (or the exchange unreachable for "
               "exchange.startup_timeout_seconds), 2 invalid usage or configuration, or API keys refused. "
               "Ctrl+C stops gracefully, also while starting; a second Ctrl+C forces an exit.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", parents=[common, live, trading],
                   help="trade (paper unless --live) on live market data (default)")
    resume = sub.add_parser("resume", parents=[common, live],
                            help="clear HALTED or BLOCKED pairs in the journal (bot stopped); the next start "
                                 "reconciles them")
    resume.add_argument("resume_pairs", nargs="+", metavar="PAIR", help="pair ids, e.g. EOS_AXS")
    demo = sub.add_parser("demo", parents=[common], help="run offline against the bundled exchange simulator")
    demo.add_argument("--speed", type=speed_factor, default=argparse.SUPPRESS, metavar="X",
                      help="replay speed: exchange seconds per wall second (default 600: a 5m bar each 0.5 s)")
    sub.add_parser("check-config", parents=[common, live], help="validate both files, print the pairs, exit")
    from app.download import add_download_parser
    add_download_parser(sub)
    report = sub.add_parser("report", parents=[common],
                            help="write the HTML session report (and its PNG charts) under the logs folder")
    scope = report.add_mutually_exclusive_group()
    scope.add_argument("--session", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                       help="a session statistics file (logs/session-*.json; default: the newest)")
    scope.add_argument("--since", default=argparse.SUPPRESS, metavar="DATE",
                       help="every session of the configured mode (paper or live) from this ISO date (UTC)")
    add_scan_parser(sub)
    add_sweep_parser(sub)
    backtest = sub.add_parser("backtest", parents=[common],
                              help="replay the bundled candles through the bot's signals, engine and paper fills")
    backtest.add_argument("--data", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                          help="folder of <SYMBOL>-5m.csv.gz candles (default: data/binance-usdm-perp-5m-2023-07)")
    backtest.add_argument("--from", dest="date_from", default=argparse.SUPPRESS, metavar="DATE",
                          help="first day (YYYY-MM-DD, UTC) or moment (YYYY-MM-DDTHH:MM); default: after the warm-up")
    backtest.add_argument("--to", dest="date_to", default=argparse.SUPPRESS, metavar="DATE",
                          help="last day (inclusive) or moment (exclusive); default: the end of the data")
    backtest.add_argument("--out", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                          help="where fills.csv and summary.json go (default: logs/backtest-<UTC time>)")
    backtest.add_argument("--compare-hedge", dest="compare_hedge", action="store_true", default=argparse.SUPPRESS,
                          help="run the range twice, every pair on the static and then on the rolling-OLS hedge "
                               "ratio; both summaries side by side in summary.json, a two-column table printed")
    backtest.add_argument("--per-quote", dest="per_quote", action="store_true", default=argparse.SUPPRESS,
                          help="the reference loop: every quote through the router as in a session (same result, "
                               "slower than the default replay kernel)")
    return parser


def parse_options(argv: list[str] | None) -> CliOptions:
    args = vars(build_parser().parse_args(argv))
    return CliOptions(
        command=args.get("command") or "run",
        config_path=args.get("config", PROJECT_DIR / "config.json"),
        pairs_path=args.get("pairs", PROJECT_DIR / "pairs_config.json"),
        live=bool(args.get("live", False)),
        duration_seconds=args.get("duration"),
        log_level=args.get("log_level"),
        demo_speed=args.get("speed", 600.0),
        adopt=bool(args.get("adopt", False)),
        resume_halted=bool(args.get("resume_halted", False)),
        resume_pairs=tuple(args.get("resume_pairs", ())),
        command_args=args,
    )


def backtest(options: CliOptions, console: Console) -> int:
    """``python main.py backtest``: validate, then replay (research/backtest.py); bad input exits 2."""
    from research.backtest import DEFAULT_DATA_DIR, BacktestRequest, parse_date, run_backtest

    args = options.command_args
    config = load_app_config(options.config_path)
    pairs = load_pairs_config(options.pairs_path, config.signal, risk=config.risk)
    request = BacktestRequest(
        data_dir=args.get("data") or DEFAULT_DATA_DIR,
        from_ms=None if args.get("date_from") is None else parse_date(args["date_from"]),
        to_ms=None if args.get("date_to") is None else parse_date(args["date_to"], end=True),
        out_dir=args.get("out"), progress=sys.stderr.isatty(), per_quote=bool(args.get("per_quote", False)))
    if args.get("compare_hedge", False):
        from research.hedge_compare import run_comparison
        return run_comparison(config=config, pairs=pairs, request=request, console=console)
    return run_backtest(config=config, pairs=pairs, request=request, console=console)


CHECK_CONFIG_COLUMNS = ("pair", "legs", "hedge", "z", "window", "price", "half-life",
                        "max hold", "USDT", "on", "scan")


def check_config(options: CliOptions, console: Console) -> int:
    """Validate both files and print each pair's effective settings (its override, else config.json).

    Narrow enough for an 80-column terminal: one-space column gaps, headers that wrap at their
    spaces, the legs in one cell (X above Y), z thresholds in one cell; a cell too long for its
    column folds instead of being cut. An empty setting prints as ``-``.
    """
    config = load_app_config(options.config_path)
    pairs = load_pairs_config(options.pairs_path, config.signal, risk=config.risk)
    table = Table(title=f"{len(pairs)} pairs from {options.pairs_path}", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for column in CHECK_CONFIG_COLUMNS:
        table.add_column(column, justify="left" if column in ("pair", "legs", "price", "on", "scan") else "right",
                         overflow="fold")
    for pair in pairs:
        params = signal_params(config.signal, pair)
        notional = pair.notional_usdt or config.execution.notional_per_pair_usdt
        hedge = f"{pair.hedge_ratio:g}" if params.hedge_ratio_mode == "static" else f"ols({pair.hedge_ratio:g})"
        table.add_row(pair.pair_id, f"{pair.leg_a}\n{pair.leg_b}", hedge,
                      f"{params.entry_z:g}/{params.exit_z:g}/{params.stop_z:g}", str(params.lookback_bars),
                      params.price_transform, "-" if pair.half_life_candles is None else f"{pair.half_life_candles:g}",
                      "-" if params.max_holding_bars is None else str(params.max_holding_bars),
                      f"{notional:g}", "yes" if pair.enabled else "no",
                      "-" if pair.scan is None else ("pass" if pair.scan.passed else "fail"))
    console.print(table)
    console.print("legs: X (leg_a) above Y (leg_b); z: entry/exit/stop thresholds; window (lookback), half-life, "
                  "max hold: bars; price: the spread's price transform; USDT: notional per pair; scan: whether the "
                  "pair passed `main.py scan`'s checks (README, \"Choosing pairs\")", highlight=False)
    mode = "paper (dry_run)" if config.dry_run else "live (needs --live and API keys)"
    console.print(f"config OK: {options.config_path} | exchange {config.exchange.id} | {mode}")
    return EXIT_OK


def session_report(options: CliOptions) -> Path:
    """``report``: the report's HTML path. Bad input raises ``UsageError`` (one line, exit 2)."""
    from app.session_report import config_scope, report_command

    config = load_app_config(options.config_path)
    base = options.config_path.resolve().parent  # relative dirs in config.json are relative to it

    def since_scope() -> dict[str, Any]:
        pairs = load_pairs_config(options.pairs_path, config.signal, risk=config.risk)
        return config_scope(config, pairs, storage_dir=base / config.storage.dir)

    return report_command(logs_dir=base / config.logging.dir, session=options.command_args.get("session"),
                          since=options.command_args.get("since"), since_scope=since_scope)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_options(argv)
    except SystemExit as exc:  # argparse already printed usage or help
        return int(exc.code or 0)
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        if options.command == "check-config":
            return check_config(options, console)
        if options.command == "download":
            from app.download import download_command
            return download_command(options.command_args, config_path=options.config_path, console=console)
        if options.command == "scan":
            return scan_command(argparse.Namespace(**options.command_args), console)
        if options.command == "backtest":
            return backtest(options, console)
        if options.command == "sweep":
            return sweep_command(argparse.Namespace(**options.command_args), console)
        if options.command == "resume":
            from app.resume import resume_pairs
            for line in resume_pairs(load_app_config(options.config_path), options.config_path,
                                     list(options.resume_pairs)):
                console.print(line)
            return EXIT_OK
        if options.command == "report":
            print(session_report(options))
            return EXIT_OK
        bot = TradingBot(options, console=console)
        try:
            return asyncio.run(bot.run())
        except asyncio.CancelledError:
            print("forced exit: shutdown was interrupted", file=sys.stderr)
            return EXIT_FORCED
    except (ConfigurationError, UsageError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    finally:
        reset_logging()


if __name__ == "__main__":
    sys.exit(main())
