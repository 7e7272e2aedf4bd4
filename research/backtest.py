"""``python main.py backtest``: every pair in one portfolio timeline, on the bot's own code.

What runs is what a session runs (docs/architecture.md, "Backtest"):

- quotes: the demo's replay of the bundled candles (``research/replay_feed.py``), warm-up from its
  klines, fed through the same ``SignalRouter`` (app/pipeline.py) into the same ``SignalGenerator``s;
- orders: the same ``ExecutionEngine`` and its protocols, on a ``PaperExchange`` (the matching
  engine and fill model of paper mode: fees, slippage, partial fills) fed the replayed quotes,
  journaling into a temporary sqlite whose clock is the replay's exchange time;
- one simulated clock: every execution finishes before the next quote (``SignalRouter.settle``),
  so an execution takes no exchange time; the engine's wall-clock timers (periodic
  reconciliation, clock sync, markets refresh, funding poll) are not started: funding is
  collected at each funding time of the replay instead, and the one account is the paper
  exchange in this process, so there is nothing for a reconciliation to find;
- at the end every open pair is closed through its generator's FLATTEN, so the PnL is realized
  and equals the cash flows of ``fills.csv`` (signed notional, fees, funding);
- the session report of a live session (``app/session_report.py``), from the same files: the
  run's journal (``journal-backtest.sqlite``), its statistics (``session-backtest.json``, marked
  ``"clock": "exchange"`` so the report shows replay time) and the ``SeriesRecorder``'s spread/z
  per bar (``series-backtest.json``), drawn into ``report.html`` beside ``fills.csv``.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from loguru import logger
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from app.equity import OpenMark, performance_section
from app.performance import EquityPoint
from app.pipeline import SignalRouter
from app.series import MAX_BARS_PER_PAIR, SeriesRecorder
from app.session_report import report_at_stop
from core.config import AppConfig, PairConfig, compact_symbol, signal_params
from core.errors import UsageError
from core.events import EventBus
from core.files import write_json_atomically
from core.stats import SessionStats, final_statistics_text, render_tables
from execution.engine import ExecutionEngine
from execution.journal import Journal
from execution.paper import PaperExchange
from execution.results import PairSpec
from market_replay.config import ReplayConfig, demo_replay_config
from market_replay.datasets import CANDLE_SUFFIX, CandleSeries, DatasetError, load_candles
from market_replay.markets import build_rules, load_exchange_info
from research.fast_replay import FastReplay, ReplayDiverged
from research.replay_feed import FundingSchedule, OfflineMarkets, ReplayFeed, bar_index, unified_symbol
from signals.generator import SignalGenerator
from signals.spread import ReplayUnsupported

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "binance-usdm-perp-5m-2023-07"
EXCHANGE_INFO = Path(__file__).resolve().parent.parent / "data" / "exchange-info" / \
    "binance_usdm_fapi_v1_exchangeInfo_2021-07-21.json"
FILL_COLUMNS = ("ts", "pair", "symbol", "side", "qty", "price", "fee", "funding")
#: The run's files in ``--out`` besides fills.csv and summary.json: what the session report reads
#: (``python main.py report --session <out>/session-backtest.json`` draws it again).
JOURNAL_FILE, STATS_FILE = "journal-backtest.sqlite", "session-backtest.json"
#: The report is drawn after the replay, not at a shutdown: a wider bound than a session's 15 s.
REPORT_TIMEOUT_SECONDS = 120.0
ZERO = Decimal(0)
Audit = Callable[[int, ExecutionEngine, PaperExchange], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BacktestRequest:
    """What to replay: the data, the range (UTC ms, end exclusive), where to write."""

    data_dir: Path = DEFAULT_DATA_DIR
    from_ms: int | None = None
    to_ms: int | None = None
    out_dir: Path | None = None
    progress: bool = True
    seed: int | None = None  # the replay's seed (None: the demo's)
    report_timeout_seconds: float = REPORT_TIMEOUT_SECONDS  # 0: the series file only, no report.html
    per_quote: bool = False  # the reference loop: every quote through the router (research/fast_replay.py)


@dataclass(slots=True)
class BacktestResult:
    summary: dict[str, Any]
    signals: list[tuple[str, str, int]] = field(default_factory=list)  # (signal_id, type, ts_ms), in order
    executed: dict[str, bool] = field(default_factory=dict)  # signal_id -> True for every executed one
    out_dir: Path | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None  # report.html (None: not written; the ERROR line says why)


def parse_date(text: str, *, end: bool = False) -> int:
    """UTC ms of ``YYYY-MM-DD`` (with ``end``: the end of that day) or of an ISO date-time.

    >>> parse_date("2023-07-02"), parse_date("2023-07-02", end=True)
    (1688256000000, 1688342400000)
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"backtest: {text!r} is not a date (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    if end and len(text) == 10:
        moment += timedelta(days=1)
    return int(moment.timestamp() * 1000)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_market(request: BacktestRequest, pairs: list[PairConfig]) -> tuple[dict[str, CandleSeries], dict[str, Any]]:
    """The legs' candles and rules; a missing folder or leg is a usage error (one line)."""
    if not request.data_dir.is_dir():
        raise UsageError(f"backtest: data folder {request.data_dir} not found")
    legs = sorted({compact_symbol(leg) for p in pairs for leg in (p.leg_a, p.leg_b)})
    for pair in pairs:
        for leg in (pair.leg_a, pair.leg_b):
            if not (request.data_dir / f"{compact_symbol(leg)}{CANDLE_SUFFIX}").is_file():
                raise UsageError(f"backtest: pair {pair.pair_id}: no candles for {leg} "
                                 f"({compact_symbol(leg)}{CANDLE_SUFFIX}) in {request.data_dir}")
    try:
        candles = load_candles(request.data_dir, legs)
    except DatasetError as exc:
        raise UsageError(f"backtest: {exc}") from exc
    rules = build_rules(load_exchange_info(EXCHANGE_INFO), {s: candles[s].price_hint() for s in legs})
    return candles, rules


def replay_window(request: BacktestRequest, candles: dict[str, CandleSeries], history_bars: int) -> tuple[int, int]:
    """(first bar replayed, end ms exclusive): the range clipped to the data, leaving the
    warm-up's history before it. Raises ``UsageError`` for an inverted or empty range."""
    if request.from_ms is not None and request.to_ms is not None and request.from_ms >= request.to_ms:
        raise UsageError(f"backtest: --from {_iso(request.from_ms)} is not before --to {_iso(request.to_ms)}")
    series = next(iter(candles.values()))
    if len({(s.open_ms[0], len(s)) for s in candles.values()}) != 1:
        raise UsageError("backtest: the legs' candle files do not cover the same bars")
    data_end = series.open_ms[-1] + series.interval_ms
    start = max(history_bars, bar_index(series, request.from_ms) if request.from_ms is not None else 0)
    end_ms = min(data_end, request.to_ms) if request.to_ms is not None else data_end
    if start >= len(series) or series.open_ms[start] >= end_ms:
        first = _iso(series.open_ms[min(history_bars, len(series) - 1)])
        raise UsageError(f"backtest: no bar to replay in the range (the data run {_iso(series.open_ms[0])} to "
                         f"{_iso(data_end)}; the first {history_bars} bars are the warm-up, so replay starts at "
                         f"{first} at the earliest)")
    return start, end_ms


class Backtest:
    """One run; ``await run()`` replays, then writes ``fills.csv`` and ``summary.json``."""

    def __init__(self, *, config: AppConfig, pairs: list[PairConfig], request: BacktestRequest,
                 console: Console | None = None, audit: Audit | None = None) -> None:
        """``audit(ts_ms, engine, paper)`` is awaited after every execution (tests check the
        portfolio at that moment, not only at the end)."""
        self.audit = audit
        self.config = config
        self.pairs = [p for p in pairs if p.enabled]
        self.request = request
        self.console = console or Console()
        if not self.pairs:
            raise UsageError("backtest: no enabled pair")

    def replay_config(self, start_bar: int, bar_seconds: int = 300) -> ReplayConfig:
        """The demo's replay from ``start_bar`` (its seed unless the request names one) on
        candles of ``bar_seconds``."""
        if self.request.seed is None:
            return demo_replay_config(warmup_bars=start_bar, bar_seconds=bar_seconds)
        return demo_replay_config(warmup_bars=start_bar, seed=self.request.seed, bar_seconds=bar_seconds)

    async def run(self) -> BacktestResult:
        candles, rules = load_market(self.request, self.pairs)
        params = {p.pair_id: signal_params(self.config.signal, p) for p in self.pairs}
        history_bars = max(sp.lookback_bars for sp in params.values()) + 5  # SignalRouter's warm-up fetch
        start_bar, end_ms = replay_window(self.request, candles, history_bars)
        replay = self.replay_config(start_bar, next(iter(candles.values())).interval_ms // 1000)
        feed = ReplayFeed(rules=rules, candles=candles, config=replay)
        demo = self.config.demo
        funding = FundingSchedule(Decimal(repr(demo.funding_rate)), int(demo.funding_interval_hours * 3_600_000))
        markets = OfflineMarkets(rules, funding)
        markets.now_ms = feed.now_ms
        out_dir = self.request.out_dir or default_out_dir()
        out_dir.mkdir(parents=True, exist_ok=True)
        journal_path = out_dir / JOURNAL_FILE
        for stale in (journal_path, journal_path.with_name(f"{JOURNAL_FILE}-wal"),
                      journal_path.with_name(f"{JOURNAL_FILE}-shm")):
            stale.unlink(missing_ok=True)  # an earlier run's journal in the same --out: this run's replaces it
        with tempfile.TemporaryDirectory(prefix="backtest-") as tmp:
            # The journal is kept in --out (the report reads it); its clock is the replay's.
            journal = Journal.open(journal_path, mode="paper", now_ms=lambda: markets.now_ms, durable=False)
            try:
                result = await self._replay(feed, markets, journal, params, end_ms, replay, Path(tmp), out_dir)
            finally:
                journal.close()
        return result

    async def _replay(self, feed: ReplayFeed, markets: OfflineMarkets, journal: Journal,
                      params: dict[str, Any], end_ms: int, replay: ReplayConfig, tmp: Path,
                      out_dir: Path) -> BacktestResult:
        config = self.config
        stats = SessionStats(mode="BACKTEST")
        generators: dict[str, SignalGenerator] = {}
        specs: list[PairSpec] = []
        for pair in self.pairs:
            sa, sb = unified_symbol(compact_symbol(pair.leg_a)), unified_symbol(compact_symbol(pair.leg_b))
            generators[pair.pair_id] = SignalGenerator(params[pair.pair_id], symbol_a=sa, symbol_b=sb)
            notional = pair.notional_usdt or config.execution.notional_per_pair_usdt
            specs.append(PairSpec(pair.pair_id, sa, sb, Decimal(repr(pair.hedge_ratio)), Decimal(repr(notional)),
                                  params[pair.pair_id].price_transform, params[pair.pair_id].hedge_ratio_mode))
        # latency_ms is a wall-clock sleep in the paper exchange; on the replay's clock an execution
        # takes no time (docs/architecture.md, "Backtest"), so it is left out here.
        paper_config = config.paper.model_copy(update={"latency_ms": 0})
        paper = PaperExchange(markets=markets, paper=paper_config, state_path=None, market_info=markets.market_info)
        events = EventBus()
        router: SignalRouter
        engine = ExecutionEngine(adapter=paper, journal=journal, pairs=specs, execution=config.execution,
                                 risk=config.risk, leverage=config.exchange.leverage,
                                 margin_mode=config.exchange.margin_mode, mids=lambda s: router.mid(s),
                                 books=lambda s: router.book(s),
                                 external_positions_path=tmp / "external-positions.json",
                                 seed=config.paper.seed, events=events)
        # Spread/z per bar for the report, as app/assemble.py attaches it; room for every bar of the range.
        series = SeriesRecorder(generators, journal=journal,
                                max_bars=max(MAX_BARS_PER_PAIR, (end_ms - feed.now_ms) // feed.bar_ms + 2))
        router = SignalRouter(generators=generators, engine=engine, stats=stats, history=feed.history,
                              observers=[paper.on_quote, series.on_quote], on_feed_loss="hold", events=events)
        signals: list[tuple[str, str, int]] = []
        executed: dict[str, bool] = {}
        closed_any = [False]

        def on_result(result: Any) -> None:  # the router calls it for every executed signal
            executed[result.signal_id] = True
            closed_any[0] = True

        router.after_execution = on_result
        for gen in generators.values():
            gen.register_signal_callback(_recorder(signals, executed))
        await engine.prepare()  # markets, account modes, leverage, margin mode, balance, positions
        await router.start()  # the engine's positions, then the warm-up from the replay's klines
        start_balance = engine.balance.total if engine.balance is not None else None
        samples = [EquityPoint(feed.now_ms, start_balance)] if start_balance is not None else []
        stats.register_section("signals", router.stats)
        stats.register_section("execution", engine.stats)

        bar_ms = feed.bar_ms
        first_ms = feed.next_ms() or end_ms
        total_bars = max(1, -(-(end_ms - first_ms) // bar_ms))
        next_funding = markets.funding.next_after(first_ms - 1)
        wall0 = time.perf_counter()
        progress = Progress(TextColumn("backtest"), BarColumn(), TaskProgressColumn(),
                            TextColumn("{task.completed:,.0f}/{task.total:,.0f} bars"),
                            TextColumn("{task.fields[rate]} bars/s"), TimeRemainingColumn(),
                            console=Console(stderr=True), disable=not self.request.progress, transient=True)
        async def after_signal() -> None:
            """The replay clock stands still until the execution is done (both loops)."""
            await router.settle()
            if self.audit is not None:
                await self.audit(markets.now_ms, engine, paper)
            if closed_any[0]:
                closed_any[0] = False
                await engine.collect_funding()  # learn the next funding time of a new position
                await engine.refresh_balance()
                if engine.balance is not None:
                    samples.append(EquityPoint(markets.now_ms, engine.balance.total))

        with progress:
            task = progress.add_task("replay", total=total_bars, rate="-")

            def on_progress(now_ms: int) -> None:
                done = min(total_bars, max(0, now_ms // bar_ms - first_ms // bar_ms))
                elapsed = time.perf_counter() - wall0
                progress.update(task, completed=done, rate=f"{done / max(elapsed, 1e-9):,.0f}")

            fast = None if self.request.per_quote else self._fast_replay(
                feed=feed, markets=markets, router=router, paper=paper, recorder=series, generators=generators,
                after_signal=after_signal, collect_funding=engine.collect_funding)
            split: dict[str, float] = {}
            if fast is None:
                loop = "per_quote"
                quotes = await _per_quote_loop(feed, markets, router, end_ms, next_funding, after_signal,
                                               engine.collect_funding, on_progress)
            else:
                loop = "kernel"
                await fast.run(end_ms, next_funding, on_progress)
                quotes = fast.quotes
                split = dict(fast.seconds)
            progress.update(task, completed=total_bars)
        wall = time.perf_counter() - wall0
        flattened = router.flatten_all("backtest end")
        await router.settle()
        await engine.collect_funding()
        await engine.refresh_balance()
        end_balance = engine.balance
        if end_balance is not None:
            samples.append(EquityPoint(markets.now_ms, end_balance.total))
        await engine.stop()
        await router.stop()
        stats.mark_stopped("end of range")
        trips = journal.round_trips()
        open_positions = {pid: pos for pid, pos in engine.positions.items() if pos.state.value != "FLAT"}
        # Every pair was flattened above; one still open (a refused close) is marked at zero, as before.
        marks = {pid: OpenMark(None, None, ZERO) for pid in open_positions}
        perf = performance_section(session_trips=trips, all_trips=trips, marks=marks,
                                   positions=engine.positions, start_equity=start_balance, end_balance=end_balance,
                                   samples=samples)
        stats.register_section("performance", lambda: perf)
        fills, funding_rows = _journal_cash_flows(journal)
        summary = _summary(perf=perf, fills=fills, funding_rows=funding_rows, trips=trips, stats=stats,
                           config=config, replay=replay, request=self.request, first_ms=first_ms, end_ms=end_ms,
                           bars=total_bars, quotes=quotes, wall=wall, loop=loop, split=split, pairs=[p.pair_id for p in self.pairs],
                           open_positions=sorted(open_positions), flattened=flattened, signals=len(signals))
        _write_fills(out_dir / "fills.csv", fills, funding_rows)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        snapshot = stats.snapshot()
        report = await self._report(snapshot, series, out_dir, summary)
        return BacktestResult(summary=summary, signals=signals, executed=executed, out_dir=out_dir, snapshot=snapshot,
                              report=report)

    @staticmethod
    def _fast_replay(**parts: Any) -> FastReplay | None:
        """The kernel loop, or None (one WARNING line) when a pair needs the per-quote loop."""
        try:
            return FastReplay(**parts)
        except ReplayUnsupported as exc:
            logger.warning("backtest: the per-quote loop replays this run ({}); it is slower, not different", exc)
            return None

    async def _report(self, snapshot: dict[str, Any], series: SeriesRecorder, out_dir: Path,
                      summary: dict[str, Any]) -> Path | None:
        """The live session's report (same function, bounded, never fatal) into ``out_dir``:
        the statistics file it reads, marked with the replay's clock and range, then the series
        file and ``report.html``."""
        stats_json = write_json_atomically(out_dir / STATS_FILE, {
            **snapshot, "clock": "exchange", "replay_from_utc": summary["from"], "replay_to_utc": summary["to"]},
            indent=2, default=str)
        return await report_at_stop(series=series, session_json=stats_json, logs_dir=out_dir,
                                    session_id=snapshot["session_id"], mode="backtest",
                                    timeout_seconds=self.request.report_timeout_seconds, report_dir=out_dir)

    def print_statistics(self, result: BacktestResult) -> None:
        """The final statistics screen of a live session, from the same code."""
        self.console.print(final_statistics_text(result.snapshot), highlight=False)
        render_tables(result.snapshot, self.console)
        s = result.summary
        self.console.print(f"backtest: {s['bars']:,} bars x {len(s['pairs'])} pairs in {s['wall_seconds']:.1f} s "
                           f"({s['bars_per_second']:,.0f} bars/s); fills.csv and summary.json in {result.out_dir}",
                           highlight=False)
        if result.report is not None:
            self.console.print(f"backtest report: {result.report}", highlight=False)
        elif self.request.report_timeout_seconds <= 0:
            self.console.print(f"backtest report: off; python main.py report --session {result.out_dir / STATS_FILE} "
                               "draws it", highlight=False)
        else:
            self.console.print("backtest report: not written (the ERROR line above says why)", highlight=False)


async def _per_quote_loop(feed: ReplayFeed, markets: OfflineMarkets, router: SignalRouter, end_ms: int,
                          next_funding: int, after_signal: Callable[[], Awaitable[None]],
                          collect_funding: Callable[[], Awaitable[None]], on_progress: Callable[[int], None]) -> int:
    """The reference loop (``--per-quote``): every quote through the router, as a session; returns
    the number of quotes. ``research/fast_replay.py`` must give the same run (tests/test_backtest.py)."""
    quotes = 0
    last_bar = feed.now_ms // feed.bar_ms
    while True:
        nxt = feed.next_ms()
        if nxt is None or nxt >= end_ms:
            return quotes
        for quote in feed.step():
            markets.now_ms = quote.ts_ms
            router.on_quote(quote)
            quotes += 1
            if router.in_flight:
                await after_signal()
        if feed.now_ms >= next_funding:
            await collect_funding()
            next_funding = markets.funding.next_after(feed.now_ms)
        bar = feed.now_ms // feed.bar_ms
        if bar - last_bar >= 64:
            last_bar = bar
            on_progress(feed.now_ms)


def _recorder(signals: list[tuple[str, str, int]], executed: dict[str, bool]) -> Any:
    """A second callback on each generator: notes every signal in order (the identity test's sequence)."""
    async def record(signal: Any) -> bool:
        signals.append((signal.signal_id, signal.signal_type.value, signal.ts_ms))
        return False  # "done" is the router's word: a False here changes nothing
    return record


def default_out_dir() -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path("logs") / f"backtest-{stamp}"


def _journal_cash_flows(journal: Journal) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every fill (ts, pair, symbol, side, qty, price, fee) and funding payment (ts, pair, symbol, amount)."""
    conn = journal._conn  # noqa: SLF001 - read-only export of the run's own temporary journal
    fills = conn.execute("SELECT ts_ms, pair_id, symbol, side, qty, price, fee FROM fills "
                         "ORDER BY ts_ms, rowid").fetchall()
    funding = conn.execute("SELECT ts_ms, pair_id, symbol, amount FROM funding ORDER BY ts_ms, rowid").fetchall()
    return [tuple(r) for r in fills], [tuple(r) for r in funding]


def cash_pnl(fills: list[tuple[Any, ...]], funding_rows: list[tuple[Any, ...]]) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(net, signed notional, fees, funding): sells bring qty x price in, buys pay it, fees are paid."""
    notional = sum(((Decimal(q) * Decimal(p)) * (1 if side == "sell" else -1) for _, _, _, side, q, p, _ in fills), ZERO)
    fees = sum((Decimal(f) for *_, f in fills), ZERO)
    funding = sum((Decimal(a) for *_, a in funding_rows), ZERO)
    return notional - fees + funding, notional, fees, funding


def _write_fills(path: Path, fills: list[tuple[Any, ...]], funding_rows: list[tuple[Any, ...]]) -> None:
    rows = [(ts, pair, symbol, side, qty, price, fee, "0") for ts, pair, symbol, side, qty, price, fee in fills]
    rows += [(ts, pair or "", symbol, "", "0", "0", "0", amount) for ts, pair, symbol, amount in funding_rows]
    rows.sort(key=lambda r: int(r[0]))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FILL_COLUMNS)
        writer.writerows(rows)


def _summary(*, perf: dict[str, Any], fills: list[tuple[Any, ...]], funding_rows: list[tuple[Any, ...]],
             trips: list[Any], stats: SessionStats, config: AppConfig, replay: ReplayConfig,
             request: BacktestRequest, first_ms: int, end_ms: int, bars: int, quotes: int, wall: float, loop: str,
             split: dict[str, float],
             pairs: list[str], open_positions: list[str], flattened: list[str], signals: int) -> dict[str, Any]:
    net, notional, fees, funding = cash_pnl(fills, funding_rows)
    session = perf["session"]
    realized = Decimal(session["realized_usdt"])
    unattributed = sum((Decimal(a) for _, pair, _, a in funding_rows if pair is None), ZERO)
    return {
        "pairs": pairs, "from": _iso(first_ms - first_ms % 60_000), "to": _iso(end_ms), "bars": bars, "quotes": quotes,
        "replay_loop": loop,  # "kernel" (research/fast_replay.py) or "per_quote" (every quote through the router)
        # the kernel loop's wall split; "signal_pass" is the rest (quote blocks and the kernel)
        "replay_seconds": {**{k: round(v, 3) for k, v in split.items()},
                           "signal_pass": round(wall - sum(split.values()), 3)} if split else None,
        "wall_seconds": wall, "bars_per_second": bars / wall if wall > 0 else None,
        "pnl_usdt": str(net),  # = signed notional - fees + funding over fills.csv (every position closed)
        "signed_notional_usdt": str(notional), "fees_usdt": str(fees), "funding_usdt": str(funding),
        "realized_round_trips_usdt": str(realized), "unattributed_funding_usdt": str(unattributed),
        "round_trips": session["round_trips"], "wins": session["wins"], "losses": session["losses"],
        "win_rate_pct": session["win_rate_pct"], "profit_factor": session["profit_factor"],
        "expectancy_usdt": session["expectancy_usdt"], "avg_holding_seconds": session["avg_holding_seconds"],
        "max_drawdown_usdt": session["max_drawdown_usdt"], "max_drawdown_pct": session["max_drawdown_pct"],
        "sharpe": session["sharpe"], "sortino": session["sortino"], "return_pct": session["return_pct"],
        "equity_start_usdt": session["equity_start_usdt"], "equity_end_usdt": session["equity_end_usdt"],
        "best_pair": session["best_pair"], "worst_pair": session["worst_pair"],
        "signals": signals, "signals_processed": stats.signals_processed, "trades_executed": stats.trades_executed,
        "signals_refused": dict(stats.signals_refused), "fills": len(fills), "funding_payments": len(funding_rows),
        "closed_at_end": flattened, "open_positions_at_end": open_positions,
        "settings": {
            "data_dir": str(request.data_dir), "steps_per_bar": replay.steps_per_bar,
            "spread_range_fraction": replay.spread_range_fraction, "stamp_jitter": replay.stamp_jitter,
            "seed": replay.seed, "taker_fee_rate": config.paper.taker_fee_rate,
            "maker_fee_rate": config.paper.maker_fee_rate, "slippage_bps": config.paper.slippage_bps,
            "partial_fill_probability": config.paper.partial_fill_probability,
            "funding_rate": config.demo.funding_rate, "funding_interval_hours": config.demo.funding_interval_hours,
            "starting_balance_usdt": config.paper.starting_balance_usdt,
            "hedge_ratio_mode": config.signal.hedge_ratio_mode,  # the default; a pair may override it
        },
        "performance": {k: v for k, v in perf.items() if k != "equity_curve"},
    }


def run_backtest(*, config: AppConfig, pairs: list[PairConfig], request: BacktestRequest,
                 console: Console) -> int:
    """The CLI's entry: quiet logs (WARNING+ on stderr), replay, write, print. Exit code 0; 1 (one
    ERROR line, the run's journal kept in ``--out``) when the replay kernel meets what it cannot replay."""
    import asyncio
    import sys

    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{time:HH:mm:ss} {level} {message}")
    bt = Backtest(config=config, pairs=pairs, request=request, console=console)
    try:
        result = asyncio.run(bt.run())
    except ReplayDiverged as exc:
        logger.error("backtest stopped: {}", exc)
        return 1
    bt.print_statistics(result)
    return 0
