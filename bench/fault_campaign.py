"""Fault campaign: many executions through real ccxt and the simulator under injected faults,
audited at every moment while they run and against the journal at the end. Prints one JSON
object on stdout.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/fault_campaign.py --executions 1000 --seed 1``
(a few minutes on a 2-core box; progress bar on stderr). Exit code 0 when the six audit
numbers (three of the moments, three of the end) are zero, 1 otherwise.

Setup, all in this process on one event loop:

* ``SimulatorServer`` replaying the bundled 5-minute candles of the legs of the shipped
  ``pairs_config.json`` (shared legs included: a symbol's net position is the sum of several
  pairs' legs), with ``--partial`` partial fills, ``--reject`` leg rejects (code -2010, a
  permanent refusal), ``--lost`` lost responses (the order is placed, the reply never comes),
  ``--latency-ms`` of REST latency, every WebSocket dropped each ``--ws-drop-seconds``, and a
  burst of ``--burst-size`` HTTP 429 on the next REST requests every ``--burst-every`` seconds.
* The bot's real ``MarketDataHub`` (ccxt.pro) streams every leg's bid/ask from it, and lives
  through the WebSocket drops; the ``ExecutionEngine`` trades through ``CcxtExchange`` (ccxt
  REST, ``enableRateLimit`` off, 3 retries with 20 ms backoff) with its own journal, startup
  reconciliation and a periodic one every 5 s.
* Signals are built here, not by the generators: a generator trades when the data says so,
  and a campaign needs a known number of executions with entries and exits alternating per
  pair. Each signal waits for a quote of its pair newer than the pair's last signal (so the
  signals follow the stream, and stall with it while the WebSocket is down) and carries the
  hub's latest mids of its legs and their replay-time timestamp. ``--concurrency`` signals on
  different pairs are submitted at once (the engine's lock serialises them) and every 50th is
  a re-submission of an earlier signal id (P1 must refuse it). An *execution* is one signal
  handled by ``ExecutionEngine.execute_signal``.

While the signals run, an ``ExposureMonitor`` (``bench/exposure_audit.py``, definitions there)
samples the book after every result and every ``--sample-ms`` in between, outside the pairs
``ExecutionEngine.busy_pairs()`` names: ``naked_seconds`` (a pair's journal-derived legs naked
or beyond one lot step of the hedge), ``belief_mismatches`` (a symbol whose true position in
the simulator's own state differs from the engine's belief) and ``max_unhedged_notional_usdt``;
``double_fills`` comes from the simulator's order log at the end.

At the end the faults are switched off, every execution has returned, and two reconciliation
passes run under the engine's lock (the second must find nothing left to do). Then
``audit_book`` compares the simulator's order log and positions with the journal (definitions
at the top of the audit section). The report has the six numbers that must be zero
(``MUST_BE_ZERO``), the protocol counters (``engine.counters``), the outcomes, the faults the
simulator injected, the seed and the elapsed time.

``--crash-restarts N`` runs the other campaign instead: the real bot as a process against a
standalone simulator, SIGKILLed N times mid-trade (``bench/crash_restarts.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from bench.exposure_audit import (ExposureMonitor, JournalBelief, PairLegs, double_fills,  # noqa: E402,F401
                                  hedge_problem, planned_legs, simulator_positions,
                                  within_one_step)  # PairLegs, within_one_step: re-exported
from core.config import (ExchangeConfig, ExecutionConfig, PairConfig, RiskConfig, Secrets,  # noqa: E402
                         compact_symbol, load_pairs_config, SignalConfig)
from core.types import PairState, Quote, SignalType, TradingSignal  # noqa: E402
from execution.engine import ExecutionEngine  # noqa: E402
from execution.exchange import CcxtExchange  # noqa: E402
from execution.journal import Journal  # noqa: E402
from execution.journal_models import OrderRecord, OrderStatus, PairPosition  # noqa: E402
from execution.reconcile import classify, derived_legs  # noqa: E402
from execution.results import PairSpec  # noqa: E402
from signals.generator import make_signal_id  # noqa: E402

ZERO = Decimal(0)
DEFAULT_PAIRS = ROOT / "pairs_config.json"
REJECT_CODE = -2010  # NEW_ORDER_REJECTED: ccxt InvalidOrder, a refusal for good
RESUBMIT_EVERY = 50  # every 50th signal re-submits an earlier signal id (P1 must refuse it)
FRESH_QUOTE_WAIT_SECONDS = 10.0
# The exit code is 0 only when all of these are 0: the end audit's three, then the moments'.
MUST_BE_ZERO = ("naked_legs", "orphan_open_orders", "journal_mismatches", "naked_seconds", "belief_mismatches",
                "double_fills")

# =============================================================================================
# The audit (pure; also used by bench/crash_restarts.py and the tests)
# =============================================================================================
# naked legs: for each symbol, the exchange's net position must equal the sum, over the pairs
#   trading it, of the journal-derived leg quantities (``reconcile.derived_legs``: the signed
#   filled quantities of the pair's orders); and for each pair both legs are non-zero or both
#   zero, with the signs of a spread position, and neither leg is one lot step or more beyond
#   the hedge of the other at the quantities its last entry planned (P2's acceptance rule).
# orphan open orders: orders still open on the exchange (the bot sends market orders only).
# journal mismatches: a ``pb-`` order on the exchange whose journal status or filled quantity
#   differs or that the journal lacks; a journal order claiming an exchange state the exchange
#   has no order for, or still unresolved; a pair position record that differs from its
#   derived legs; a symbol whose exchange position differs from the derived sum.
# Also counted, not among the three: clientOrderIds present more than once on the exchange
# (an intent sent twice) and orders whose recorded trades do not add up to their filled qty.
# The pair rule (``hedge_problem``) is shared with the audit of every moment while the campaign
# runs (``bench/exposure_audit.py``: naked seconds, belief mismatches, double fills).

OPEN_ON_EXCHANGE = frozenset({"NEW", "PARTIALLY_FILLED"})
_EXPECTED_STATUS = {"FILLED": {OrderStatus.FILLED}, "EXPIRED": {OrderStatus.EXPIRED},
                    "CANCELED": {OrderStatus.CANCELED}, "NEW": {OrderStatus.ACKED},
                    "PARTIALLY_FILLED": {OrderStatus.PARTIALLY_FILLED}}
_ON_EXCHANGE = frozenset({OrderStatus.ACKED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED,
                          OrderStatus.CANCELED, OrderStatus.EXPIRED})


@dataclass(slots=True)
class AuditResult:
    naked_legs: list[str] = field(default_factory=list)
    orphan_open_orders: list[str] = field(default_factory=list)
    journal_mismatches: list[str] = field(default_factory=list)
    duplicate_client_order_ids: list[str] = field(default_factory=list)
    fill_record_gaps: list[str] = field(default_factory=list)
    derived: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.naked_legs or self.orphan_open_orders or self.journal_mismatches)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in (
            "naked_legs", "orphan_open_orders", "journal_mismatches", "duplicate_client_order_ids",
            "fill_record_gaps")}

    def details(self, limit: int = 20) -> dict[str, list[str]]:
        return {name: getattr(self, name)[:limit] for name in self.counts() if getattr(self, name)}


def sim_account_positions(report: Mapping[str, Any], account: str = "default") -> dict[str, Decimal]:
    """``{EOSUSDT: signed amount}`` from the simulator's ``/sim/positions`` report."""
    rows = (report.get(account) or {}).get("positions") or {}
    return {symbol: Decimal(str(row["amount"])) for symbol, row in rows.items()}


def audit_book(*, pairs: list[PairLegs], journal_orders: Mapping[str, list[OrderRecord]],
               journal_positions: Mapping[str, PairPosition | None], sim_orders: list[Mapping[str, Any]],
               sim_positions: Mapping[str, Decimal], recorded_fill_qty: Mapping[str, Decimal] | None = None,
               prefix: str = "pb-", account: str = "default") -> AuditResult:
    """Compare the journal with the exchange (definitions above).

    ``journal_orders``: every order of each pair, oldest first (``Journal.orders_for_pair``).
    ``sim_orders``: the simulator's order log. ``recorded_fill_qty``: per clientOrderId the sum
    of the trades recorded in the journal (None skips that check).
    """
    result = AuditResult()
    ours = [o for o in sim_orders if o.get("account", account) == account]
    _audit_orders(result, pairs, journal_orders, ours, prefix)
    _audit_positions(result, pairs, journal_orders, journal_positions, sim_positions)
    if recorded_fill_qty is not None:
        for orders in journal_orders.values():
            for order in orders:
                recorded = recorded_fill_qty.get(order.client_order_id, ZERO)
                if recorded != order.filled_qty:
                    result.fill_record_gaps.append(f"{order.client_order_id}: filled {order.filled_qty}, "
                                                   f"trades recorded {recorded}")
    return result


def _audit_orders(result: AuditResult, pairs: list[PairLegs], journal_orders: Mapping[str, list[OrderRecord]],
                  sim_orders: list[Mapping[str, Any]], prefix: str) -> None:
    legs = {p.pair_id: p for p in pairs}
    journal = {o.client_order_id: o for orders in journal_orders.values() for o in orders}
    seen = Counter(str(o["clientOrderId"]) for o in sim_orders)
    result.duplicate_client_order_ids = sorted(f"{cid} x{n}" for cid, n in seen.items()
                                               if n > 1 and cid.startswith(prefix))
    on_exchange: dict[str, Mapping[str, Any]] = {}
    for row in sim_orders:
        cid = str(row["clientOrderId"])
        on_exchange[cid] = row
        if row["status"] in OPEN_ON_EXCHANGE:
            result.orphan_open_orders.append(f"{cid} {row['symbol']} {row['side']} {row['origQty']} {row['status']}")
        if not cid.startswith(prefix):
            continue
        record = journal.get(cid)
        if record is None:
            result.journal_mismatches.append(f"{cid}: on the exchange ({row['status']} {row['executedQty']}) "
                                             "but not in the journal")
            continue
        filled = Decimal(str(row["executedQty"]))
        if record.status not in _EXPECTED_STATUS.get(row["status"], set()) or record.filled_qty != filled:
            result.journal_mismatches.append(f"{cid}: exchange {row['status']} filled {filled}, journal "
                                             f"{record.status.value} filled {record.filled_qty}")
        pair = legs.get(record.pair_id)
        symbol = None if pair is None else (pair.symbol_a if record.leg.value == "a" else pair.symbol_b)
        if symbol not in (None, row["symbol"]):
            result.journal_mismatches.append(f"{cid}: exchange symbol {row['symbol']}, journal {symbol}")
    for cid, record in journal.items():
        if record.status.is_open:
            result.journal_mismatches.append(f"{cid}: still unresolved in the journal ({record.status.value})")
        elif cid not in on_exchange and (record.status in _ON_EXCHANGE or record.filled_qty > 0):
            result.journal_mismatches.append(f"{cid}: journal says {record.status.value} filled "
                                             f"{record.filled_qty}; the exchange has no such order")


def _audit_positions(result: AuditResult, pairs: list[PairLegs], journal_orders: Mapping[str, list[OrderRecord]],
                     journal_positions: Mapping[str, PairPosition | None],
                     sim_positions: Mapping[str, Decimal]) -> None:
    expected: dict[str, Decimal] = {}
    for pair in pairs:
        orders = journal_orders.get(pair.pair_id, [])
        qa, qb = derived_legs(orders, "a"), derived_legs(orders, "b")
        result.derived[pair.pair_id] = [str(qa), str(qb)]
        expected[pair.symbol_a] = expected.get(pair.symbol_a, ZERO) + qa
        expected[pair.symbol_b] = expected.get(pair.symbol_b, ZERO) + qb
        verdict = classify(qa, qb)
        problem = hedge_problem(pair, qa, qb, planned_legs(orders))
        if problem is not None:
            result.naked_legs.append(problem)
        position = journal_positions.get(pair.pair_id)
        held = (position.qty_a, position.qty_b) if position is not None else (ZERO, ZERO)
        if held != (qa, qb):
            result.journal_mismatches.append(f"{pair.pair_id}: position record {held[0]} / {held[1]} "
                                             f"but its orders derive {qa} / {qb}")
        state = position.state if position is not None else PairState.FLAT
        if verdict.value in PairState.__members__ and state.value != verdict.value:
            result.journal_mismatches.append(f"{pair.pair_id}: state {state.value} but its legs are "
                                             f"{verdict.value}")
    for symbol in sorted(expected):
        held = sim_positions.get(symbol, ZERO)
        if held != expected[symbol]:
            result.naked_legs.append(f"{symbol}: exchange holds {held}, the pairs' journal explains "
                                     f"{expected[symbol]}")
            result.journal_mismatches.append(f"{symbol}: exchange position differs by {held - expected[symbol]}")
    for symbol, held in sorted(sim_positions.items()):
        if symbol not in expected and held != 0:
            result.naked_legs.append(f"{symbol}: exchange holds {held}, traded by no pair")


def audit_journal(journal: Journal, pairs: list[PairLegs], *, sim_orders: list[Mapping[str, Any]],
                  sim_positions: Mapping[str, Decimal], account: str = "default") -> AuditResult:
    """``audit_book`` with the journal's side read from an open ``Journal``; ``account``: the
    simulator account the bot trades on (``paper`` for a paper account file)."""
    orders = {p.pair_id: journal.orders_for_pair(p.pair_id) for p in pairs}
    recorded: dict[str, Decimal] = {}
    for pair in pairs:
        for fill in journal.fills_for_pair_since(pair.pair_id, 0):
            recorded[fill.client_order_id] = recorded.get(fill.client_order_id, ZERO) + fill.qty
    return audit_book(pairs=pairs, journal_orders=orders,
                      journal_positions={p.pair_id: journal.get_position(p.pair_id) for p in pairs},
                      sim_orders=sim_orders, sim_positions=sim_positions, recorded_fill_qty=recorded,
                      account=account)


# =============================================================================================
# The campaign
# =============================================================================================

@dataclass(frozen=True, slots=True)
class CampaignOptions:
    executions: int = 1000
    seed: int = 1
    partial_fill_probability: float = 0.20
    reject_probability: float = 0.05
    lost_response_probability: float = 0.05
    ws_drop_seconds: float = 30.0
    burst_every_seconds: float = 5.0
    burst_size: int = 1  # a client that honours Retry-After meets no second 429 in a row on Binance
    latency_ms: int = 5
    latency_jitter_ms: int = 10
    # Binance's unknown outcomes (issue 8): a lost response whose order lands later, a 503
    # "execution status unknown" and a -1007, each applied or not by seed; trades and positions
    # that lag the fills.
    lands_late_probability: float = 0.03
    lands_late_ms: int = 300
    unknown_503_probability: float = 0.02
    timeout_1007_probability: float = 0.01
    trade_lag_ms: int = 150
    position_lag_ms: int = 300
    recv_window_ms: int = 1000  # horizon of an unknown order: recvWindow + 200 ms margin
    # Venue realism (issue 11): market orders answered NEW or PARTIALLY_FILLED with the fills
    # later, and the exchange's clock jumping by +-clock_skew_ms every skew_every_seconds
    # (the bot must re-sync on the first -1021, never lose or double an order). Binance's rate
    # limits are enforced by the simulator by default.
    market_delay_probability: float = 0.05
    market_delay_ms: int = 200
    clock_skew_ms: int = 3000
    skew_every_seconds: float = 20.0
    concurrency: int = 3
    speed: float = 60.0
    sample_interval_seconds: float = 0.05  # the exposure monitor's timer (it also samples after each result)
    cache_check_seconds: float = 10.0  # how often the monitor's cached belief is checked uncached
    notional_usdt: float = 400.0
    pairs_file: Path = DEFAULT_PAIRS
    workdir: Path | None = None
    progress: bool = True


@dataclass(slots=True)
class _Quotes:
    """The hub's latest quote per symbol (what the signals are priced from)."""

    latest: dict[str, Quote] = field(default_factory=dict)

    def on_quote(self, quote: Quote) -> None:
        self.latest[quote.symbol] = quote

    def mid(self, symbol: str) -> Decimal | None:
        quote = self.latest.get(symbol)
        return None if quote is None else Decimal(repr(quote.mid))

    async def wait_newer(self, symbols: Iterable[str], after_ts_ms: int, timeout: float) -> bool:
        """Wait until one of ``symbols`` has a quote stamped after ``after_ts_ms``; False on timeout."""
        deadline = time.monotonic() + timeout
        while not any(q is not None and q.ts_ms > after_ts_ms for q in map(self.latest.get, symbols)):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True


async def run_campaign(options: CampaignOptions) -> dict[str, Any]:
    """Run the campaign (see the module docstring) and return the report."""
    if options.workdir is None:
        with tempfile.TemporaryDirectory(prefix="fault-campaign-") as tmp:
            return await _run(options, Path(tmp))
    options.workdir.mkdir(parents=True, exist_ok=True)
    return await _run(options, options.workdir)


async def _run(options: CampaignOptions, workdir: Path) -> dict[str, Any]:
    from simulator.config import AccountConfig, ReplayConfig, SimulatorConfig
    from simulator.faults import FaultConfig
    from signals.market_data import MarketDataHub
    from simulator.server import SimulatorServer

    log_sink = logger.add(workdir / "campaign.log", level="DEBUG", enqueue=False)
    pairs_config = [p for p in load_pairs_config(options.pairs_file, SignalConfig()) if p.enabled]
    symbols = tuple(sorted({compact_symbol(leg) for p in pairs_config for leg in (p.leg_a, p.leg_b)}))
    sim = SimulatorServer(SimulatorConfig(
        symbols=symbols, port=0, loop_interval_ms=5.0,
        replay=ReplayConfig(speed=options.speed, steps_per_bar=60, seed=options.seed),
        accounts=(AccountConfig(starting_balance_usdt=Decimal(10_000_000)),)))
    await sim.start()
    faults = FaultConfig(seed=options.seed, partial_fill_probability=options.partial_fill_probability,
                         reject_probability=options.reject_probability, reject_code=REJECT_CODE,
                         lost_response_probability=options.lost_response_probability,
                         ws_disconnect_every_seconds=options.ws_drop_seconds, latency_ms=options.latency_ms,
                         latency_jitter_ms=options.latency_jitter_ms,
                         lands_late_probability=options.lands_late_probability, lands_late_ms=options.lands_late_ms,
                         unknown_503_probability=options.unknown_503_probability,
                         timeout_1007_probability=options.timeout_1007_probability,
                         trade_lag_ms=options.trade_lag_ms, position_lag_ms=options.position_lag_ms,
                         market_delay_probability=options.market_delay_probability,
                         market_delay_ms=options.market_delay_ms)
    exchange = ExchangeConfig(base_url=sim.base_url, enable_rate_limit=False,
                              request_timeout_ms=3000, leverage=5, recv_window_ms=options.recv_window_ms)
    hub = MarketDataHub(exchange_config=exchange, max_quote_age_ms=5000, watch_timeout_s=2.0, seed=options.seed)
    quotes = _Quotes()
    journal: Journal | None = None
    engine: ExecutionEngine | None = None
    belief: JournalBelief | None = None
    try:
        await hub.connect()
        specs = [_spec(p, hub, options.notional_usdt) for p in pairs_config]
        for symbol in sorted({s for spec in specs for s in (spec.symbol_a, spec.symbol_b)}):
            hub.subscribe(symbol, quotes.on_quote)
        await hub.start()
        journal = Journal.open(workdir / "journal-campaign.sqlite", mode="live")
        engine = ExecutionEngine(
            adapter=CcxtExchange(exchange, Secrets(sim.api_key, sim.api_secret, "simulator")), journal=journal,
            pairs=specs, execution=ExecutionConfig(
                notional_per_pair_usdt=options.notional_usdt, max_order_retries=3, retry_backoff_ms=20,
                order_timeout_seconds=2, reconcile_interval_seconds=5, duplicate_window_seconds=0,
                clock_error_margin_ms=200, resolve_extra_seconds=1.0,
                # Trades that lag are not waited for here: the periodic reconciliation records
                # them and reprices the round trips they belong to (issue 8, scenario 4).
                fill_wait_seconds=0.05),
            risk=RiskConfig(max_open_pairs=len(specs), max_gross_exposure_usdt=1e9, max_daily_loss_usdt=1e9),
            leverage=5, margin_mode="cross", mids=quotes.mid,
            external_positions_path=workdir / "external-positions.json", seed=options.seed)
        await engine.start()
        await _wait_for_quotes(quotes, specs)
        legs = [_legs(engine, s) for s in specs]
        belief = JournalBelief(engine, legs)
        monitor = ExposureMonitor(legs, belief, simulator_positions(sim), sim.replay.mark_price)
        sim.set_fault_config(faults)
        started = time.monotonic()
        drive = await _drive(engine, sim, quotes, specs, options, monitor, belief)
        elapsed = time.monotonic() - started
        sim.set_fault_config(FaultConfig())  # the audit needs an exchange that answers
        # The final passes below run outside busy_pairs() (not through the engine's own pass),
        # so the monitor has stopped sampling before them; the end audit covers what follows.
        async with engine._lock:  # the same lock the periodic pass takes: nothing is in flight
            final = await engine.reconciler.run(startup=False)
            settle = await engine.reconciler.run(startup=False)
        sim_orders = sim.order_log()
        audit = audit_journal(journal, legs, sim_orders=sim_orders,
                              sim_positions=sim_account_positions(sim.positions()))
        moments = _moments(monitor, belief, drive, double_fills(sim_orders))
        return _report(options, engine, sim, hub, drive, audit, moments, final.as_dict(), settle.as_dict(),
                       elapsed)
    finally:
        if belief is not None:
            belief.close()
        if engine is not None:
            await engine.stop()
        await hub.stop()
        await sim.stop()
        if journal is not None:
            journal.close()
        logger.remove(log_sink)


def _spec(pair: PairConfig, hub: Any, notional: float) -> PairSpec:
    return PairSpec(pair.pair_id, hub.resolve_symbol(pair.leg_a, pair_id=pair.pair_id),
                    hub.resolve_symbol(pair.leg_b, pair_id=pair.pair_id), Decimal(repr(pair.hedge_ratio)),
                    Decimal(repr(pair.notional_usdt or notional)), pair.price_transform or "log")


def _legs(engine: ExecutionEngine, spec: PairSpec) -> PairLegs:
    ra, rb = engine.adapter.rules(spec.symbol_a), engine.adapter.rules(spec.symbol_b)
    return PairLegs(spec.pair_id, ra.exchange_symbol, rb.exchange_symbol, ra.step_size, rb.step_size)


async def _wait_for_quotes(quotes: _Quotes, specs: list[PairSpec], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    wanted = {s for spec in specs for s in (spec.symbol_a, spec.symbol_b)}
    while not wanted <= quotes.latest.keys():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no quotes for {sorted(wanted - quotes.latest.keys())} after {timeout}s")
        await asyncio.sleep(0.05)


@dataclass(slots=True)
class _DriveStats:
    executions: int = 0
    entries: int = 0
    exits: int = 0
    resubmissions: int = 0
    signals_on_old_quotes: int = 0
    http_bursts: int = 0
    clock_jumps: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    cache_checks: int = 0
    cache_errors: list[str] = field(default_factory=list)
    cache_check_cost_seconds: float = 0.0


async def _drive(engine: ExecutionEngine, sim: Any, quotes: _Quotes, specs: list[PairSpec],
                 options: CampaignOptions, monitor: ExposureMonitor, belief: JournalBelief) -> _DriveStats:
    """Submit ``options.executions`` signals, ``concurrency`` at a time, with 429 bursts meanwhile.

    Each new signal of a pair waits for a quote of one of its legs newer than the pair's last
    signal (up to ``FRESH_QUOTE_WAIT_SECONDS``), so signals follow the live stream, and stall
    with it while the WebSocket is down. ``monitor`` samples after every result and, in a task
    of its own, every ``sample_interval_seconds``; every ``cache_check_seconds`` its cached
    belief is compared with the engine's uncached one (``JournalBelief.verify``).
    """
    rng = random.Random(options.seed)
    stats = _DriveStats()
    last_ts: dict[str, int] = {}
    handled: list[TradingSignal] = []

    async def bursts() -> None:
        while True:
            await asyncio.sleep(options.burst_every_seconds)
            if sim.faults.pending_http_errors:
                continue  # the last burst has not hit anything yet: a rate limit does not pile up
            sim.inject_http_errors(429, options.burst_size)
            stats.http_bursts += 1

    async def skews() -> None:
        """The exchange's clock jumps: 0, +skew, -skew, 0, ... (a drifting PC, an NTP step)."""
        if options.clock_skew_ms == 0 or options.skew_every_seconds <= 0:
            return
        steps = (options.clock_skew_ms, -options.clock_skew_ms, 0)
        n = 0
        while True:
            await asyncio.sleep(options.skew_every_seconds)
            sim.set_clock_skew(steps[n % len(steps)])  # no reseed: the other faults' draws go on
            stats.clock_jumps += 1
            n += 1

    async def one(spec: PairSpec, resubmit: TradingSignal | None) -> tuple[TradingSignal, Any]:
        signal = resubmit
        if signal is None:
            if not await quotes.wait_newer((spec.symbol_a, spec.symbol_b), last_ts.get(spec.pair_id, 0),
                                           FRESH_QUOTE_WAIT_SECONDS):
                stats.signals_on_old_quotes += 1
            signal = _signal(engine, spec, quotes, rng, last_ts)
        result = await engine.execute_signal(signal)
        monitor.sample("after_result")
        return signal, result

    async def check_cache() -> None:
        while True:
            await asyncio.sleep(options.cache_check_seconds)
            began = time.perf_counter()
            problems = belief.verify()
            stats.cache_check_cost_seconds += time.perf_counter() - began
            stats.cache_checks += 1
            stats.cache_errors.extend(problems[:max(0, 20 - len(stats.cache_errors))])

    monitor.sample("start")
    burst_task = asyncio.create_task(bursts(), name="campaign.bursts")
    owned = [burst_task, asyncio.create_task(monitor.run(options.sample_interval_seconds), name="campaign.sampler"),
             asyncio.create_task(check_cache(), name="campaign.cache_check"),
             asyncio.create_task(skews(), name="campaign.clock_skew")]
    try:
        with progress_bar(options.executions, label="executions", enabled=options.progress) as advance:
            while stats.executions < options.executions:
                batch_size = min(options.concurrency, options.executions - stats.executions)
                jobs = []
                for spec in rng.sample(specs, min(batch_size, len(specs))):
                    due = (stats.executions + len(jobs)) % RESUBMIT_EVERY == RESUBMIT_EVERY // 2
                    resubmit = rng.choice(handled) if handled and due else None
                    stats.resubmissions += resubmit is not None
                    jobs.append(one(spec, resubmit))
                for signal, result in await asyncio.gather(*jobs):
                    stats.executions += 1
                    stats.entries += signal.signal_type.is_entry
                    stats.exits += not signal.signal_type.is_entry
                    stats.outcomes[f"{result.status.value}:{result.reason.value}"] += 1
                    handled.append(signal)
                advance(len(jobs))
        monitor.sample("end")
        problems = belief.verify()
        stats.cache_checks += 1
        stats.cache_errors.extend(problems[:max(0, 20 - len(stats.cache_errors))])
    finally:
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
    for task in owned:  # a sampler that died would leave the moments unaudited: say so
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{task.get_name()} failed") from task.exception()
    return stats


def _signal(engine: ExecutionEngine, spec: PairSpec, quotes: _Quotes, rng: random.Random,
            last_ts: dict[str, int]) -> TradingSignal:
    """The pair's next signal: an entry (random side) when flat, else an exit of some kind."""
    qa, qb = quotes.latest[spec.symbol_a], quotes.latest[spec.symbol_b]
    if engine.pair_state(spec.pair_id) is PairState.FLAT:
        kind = rng.choice((SignalType.ENTER_LONG_SPREAD, SignalType.ENTER_SHORT_SPREAD))
        z = -2.5 if kind is SignalType.ENTER_LONG_SPREAD else 2.5
    else:
        kind = rng.choices((SignalType.EXIT, SignalType.STOP_LOSS, SignalType.TIME_STOP), (8, 1, 1))[0]
        z = 0.0
    ts = max(qa.ts_ms, qb.ts_ms, last_ts.get(spec.pair_id, 0) + 1)
    last_ts[spec.pair_id] = ts
    return TradingSignal(make_signal_id(spec.pair_id, ts, kind), spec.pair_id, kind, z, 0.0, 0.0, 1.0,
                         qa.mid, qb.mid, float(spec.hedge_ratio), ts)


class progress_bar:
    """A rich progress bar of ``total`` steps on stderr (or nothing); ``advance(n)`` moves it."""

    def __init__(self, total: int, *, label: str, enabled: bool = True) -> None:
        self._enabled = enabled
        self._total = total
        self._label = label
        self._bar: Any = None

    def __enter__(self) -> Any:
        if not self._enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn(self._label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=False)
        self._bar.start()
        task = self._bar.add_task(self._label, total=self._total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _moments(monitor: ExposureMonitor, belief: JournalBelief, drive: _DriveStats,
             doubles: list[str]) -> dict[str, Any]:
    """The audit of every moment: the monitor's numbers, the double fills, and how the monitor
    itself fared (its cache checked against the engine's uncached belief, its cost)."""
    report = monitor.report()
    report["double_fills"] = len(doubles)
    report["details"]["double_fills_first"] = doubles[:20]
    report["details"]["monitor"] = {
        "cache_checks": drive.cache_checks, "cache_errors": drive.cache_errors,
        "cache_check_cost_seconds": round(drive.cache_check_cost_seconds, 3), "journal_pair_reads": belief.pair_reads,
        "journal_order_reads": belief.order_reads, "change_feed_failures": belief.feed_failures}
    return report


def _report(options: CampaignOptions, engine: ExecutionEngine, sim: Any, hub: Any, drive: _DriveStats,
            audit: AuditResult, moments: dict[str, Any], final: dict[str, Any], settle: dict[str, Any],
            elapsed: float) -> dict[str, Any]:
    counts = audit.counts()
    sim_stats = sim.stats()
    engine_stats = engine.stats()
    return {
        "seed": options.seed,
        "executions": drive.executions,
        "elapsed_seconds": round(elapsed, 2),
        "executions_per_second": round(drive.executions / elapsed, 2) if elapsed else None,
        "naked_legs": counts["naked_legs"],
        "orphan_open_orders": counts["orphan_open_orders"],
        "journal_mismatches": counts["journal_mismatches"],
        "naked_seconds": moments["naked_seconds"],
        "belief_mismatches": moments["belief_mismatches"],
        "double_fills": moments["double_fills"],
        "max_unhedged_notional_usdt": moments["max_unhedged_notional_usdt"],
        "duplicate_client_order_ids": counts["duplicate_client_order_ids"],
        "fill_record_gaps": counts["fill_record_gaps"],
        "problems": audit.details(),
        "moments": moments["details"],
        "signals": {"entries": drive.entries, "exits": drive.exits, "resubmitted": drive.resubmissions,
                    "priced_on_quotes_older_than_the_last_signal": drive.signals_on_old_quotes},
        "outcomes": dict(sorted(drive.outcomes.items())),
        "engine_outcomes": engine_stats["outcomes"],
        "refused_by_reason": engine_stats["refused_by_reason"],
        "protocols": engine.counters.as_dict(),
        "faults": {
            "settings": {"partial_fill_probability": options.partial_fill_probability,
                         "reject_probability": options.reject_probability, "reject_code": REJECT_CODE,
                         "lost_response_probability": options.lost_response_probability,
                         "latency_ms": options.latency_ms, "latency_jitter_ms": options.latency_jitter_ms,
                         "ws_drop_every_seconds": options.ws_drop_seconds,
                         "http_429_burst": {"every_seconds": options.burst_every_seconds,
                                            "size": options.burst_size},
                         "market_delay": {"probability": options.market_delay_probability,
                                          "ms": options.market_delay_ms},
                         "clock_skew": {"ms": options.clock_skew_ms, "every_seconds": options.skew_every_seconds}},
            "injected": sim_stats["faults_injected"],
            "http_429_bursts_queued": drive.http_bursts,
            "clock_jumps": drive.clock_jumps,
            "ws_connections_dropped": sim_stats["ws"].get("connections_dropped", 0),
        },
        "market_data": {k: hub.stats()[k] for k in ("quotes_processed", "reconnects", "watch_timeouts")},
        "exchange_errors_seen_by_ccxt_adapter": dict(engine.adapter.counters.errors),
        # The venue's rate limits (answered 429/418, violations) and the order client's governor.
        "rate_limits": {"simulator": sim_stats["rate_limits"],
                        "governor": engine.adapter.governor.stats()},
        "orders": {"simulator": len(sim.order_log()), "journal": sum(len(engine.journal.orders_for_pair(p))
                                                                    for p in engine.pairs)},
        "resolver": engine_stats["resolver"],
        "resolving_pairs": engine_stats["resolving_pairs"],
        "halted_pairs": engine_stats["halted_pairs"],
        "blocked_pairs": engine_stats["blocked_pairs"],
        "final_reconciliation": {k: v for k, v in final.items() if v},
        "second_reconciliation": {k: v for k, v in settle.items() if v and k != "restored"},
        "open_positions_at_end": {p: legs for p, legs in audit.derived.items() if any(Decimal(q) for q in legs)},
    }


def build_parser() -> argparse.ArgumentParser:
    d = CampaignOptions()
    p = argparse.ArgumentParser(
        prog="bench/fault_campaign.py", description=__doc__.split("\n\n")[0],
        epilog="Prints one JSON object; exit code 0 when naked_legs, orphan_open_orders, "
               "journal_mismatches, naked_seconds, belief_mismatches and double_fills are all 0, 1 otherwise.")
    p.add_argument("--executions", type=int, default=d.executions, help="signals to execute (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of faults, signals and replay (default %(default)s)")
    p.add_argument("--partial", type=float, default=d.partial_fill_probability, help="partial fill probability")
    p.add_argument("--reject", type=float, default=d.reject_probability, help="leg reject probability")
    p.add_argument("--lost", type=float, default=d.lost_response_probability, help="lost response probability")
    p.add_argument("--ws-drop-seconds", type=float, default=d.ws_drop_seconds,
                   help="drop every WebSocket this often (default %(default)s; 0 = never)")
    p.add_argument("--burst-every", type=float, default=d.burst_every_seconds,
                   help="seconds between HTTP 429 bursts (default %(default)s)")
    p.add_argument("--burst-size", type=int, default=d.burst_size, help="requests failed per burst")
    p.add_argument("--latency-ms", type=int, default=d.latency_ms, help="REST latency added by the simulator")
    p.add_argument("--latency-jitter-ms", type=int, default=d.latency_jitter_ms, help="random extra REST latency")
    p.add_argument("--lands-late", type=float, default=d.lands_late_probability,
                   help="probability that an order's response is lost and it lands --lands-late-ms later")
    p.add_argument("--lands-late-ms", type=int, default=d.lands_late_ms, help="delay of a late order")
    p.add_argument("--unknown-503", type=float, default=d.unknown_503_probability,
                   help="probability of a 503 'execution status unknown' on an order (applied or not)")
    p.add_argument("--timeout-1007", type=float, default=d.timeout_1007_probability,
                   help="probability of a -1007 on an order (applied or not)")
    p.add_argument("--trade-lag-ms", type=int, default=d.trade_lag_ms, help="userTrades lag behind fills")
    p.add_argument("--position-lag-ms", type=int, default=d.position_lag_ms, help="positionRisk lag behind fills")
    p.add_argument("--market-delay", type=float, default=d.market_delay_probability,
                   help="probability that a market order is answered NEW/PARTIALLY_FILLED, fills later")
    p.add_argument("--market-delay-ms", type=int, default=d.market_delay_ms, help="when those fills come")
    p.add_argument("--clock-skew-ms", type=int, default=d.clock_skew_ms,
                   help="the exchange clock jumps by +-this (0 = never)")
    p.add_argument("--skew-every", type=float, default=d.skew_every_seconds, help="seconds between clock jumps")
    p.add_argument("--recv-window-ms", type=int, default=d.recv_window_ms, help="the order client's recvWindow")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="signals submitted at once")
    p.add_argument("--speed", type=float, default=d.speed, help="replay speed (default %(default)s)")
    p.add_argument("--sample-ms", type=float, default=d.sample_interval_seconds * 1000,
                   help="exposure monitor: ms between timer samples (default %(default)s; it also samples "
                        "after every result)")
    p.add_argument("--pairs", type=Path, default=d.pairs_file, help="pairs file (default: the shipped one)")
    p.add_argument("--workdir", type=Path, default=None, help="keep journal and log here (default: a temp dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--crash-restarts", type=int, default=0, metavar="N",
                   help="instead: run the real bot against a standalone simulator, SIGKILL it N times "
                        "mid-trade and restart it, then audit (bench/crash_restarts.py)")
    return p


def options_from_args(argv: list[str] | None = None) -> CampaignOptions:
    a = build_parser().parse_args(argv)
    if a.executions < 1 or a.concurrency < 1:
        raise SystemExit("--executions and --concurrency must be >= 1")
    if a.sample_ms <= 0:
        raise SystemExit("--sample-ms must be > 0")
    return CampaignOptions(executions=a.executions, seed=a.seed, partial_fill_probability=a.partial,
                           reject_probability=a.reject, lost_response_probability=a.lost,
                           ws_drop_seconds=a.ws_drop_seconds, burst_every_seconds=a.burst_every,
                           burst_size=a.burst_size, latency_ms=a.latency_ms,
                           latency_jitter_ms=a.latency_jitter_ms, lands_late_probability=a.lands_late,
                           lands_late_ms=a.lands_late_ms, unknown_503_probability=a.unknown_503,
                           timeout_1007_probability=a.timeout_1007, trade_lag_ms=a.trade_lag_ms,
                           position_lag_ms=a.position_lag_ms, recv_window_ms=a.recv_window_ms,
                           market_delay_probability=a.market_delay, market_delay_ms=a.market_delay_ms,
                           clock_skew_ms=a.clock_skew_ms, skew_every_seconds=a.skew_every,
                           concurrency=a.concurrency, speed=a.speed,
                           sample_interval_seconds=a.sample_ms / 1000, pairs_file=a.pairs, workdir=a.workdir,
                           progress=not a.no_progress)


def campaign_clean(report: Mapping[str, Any]) -> bool:
    """The exit criterion: the end audit's three numbers and the moments' three are all zero,
    and the monitor's cached belief always matched the engine's uncached one."""
    return all(report[name] == 0 for name in MUST_BE_ZERO) and not report["moments"]["monitor"]["cache_errors"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.crash_restarts > 0:
        from bench.crash_restarts import CrashOptions, run_crash_restarts

        report = run_crash_restarts(CrashOptions(restarts=args.crash_restarts, seed=args.seed, workdir=args.workdir,
                                                 progress=not args.no_progress))
        print(json.dumps(report, indent=2, default=str))
        return 0 if report["problem_count"] == 0 else 1
    options = options_from_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="CRITICAL")
    report = asyncio.run(run_campaign(options))
    print(json.dumps(report, indent=2, default=str))
    return 0 if campaign_clean(report) else 1


if __name__ == "__main__":
    sys.exit(main())
