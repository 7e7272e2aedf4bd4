"""ExecutionEngine: trades both legs of a pair as one unit, with the five safety protocols.

P1 lock: an execution holds the locks of its pair's two symbols (sorted order; a
   reconciliation pass holds all), so pairs sharing a symbol take turns and others run side by
   side; a signal id seen before (in memory or in the journal, so across restarts) is refused,
   and so is a second signal for a pair inside the duplicate window (also across restarts).
   Every change of a pair's state goes through ``PairLifecycle`` (execution/lifecycle.py).
P2 partial fills: after both legs are final, the short leg is topped up, then the long leg is
   trimmed, so the book never keeps more than one lot step of hedge imbalance.
P3 ghost orders: every order goes through ``OrderPlacer`` (journal first, lookup by
   clientOrderId before any retry); reconciliation runs at start and periodically. An order
   whose outcome stays unknown stops the execution (``OutcomeUnresolved``): the pair goes
   RESOLVING, takes no entry, and the resolution task runs reconciliation passes until the
   resolver knows (docs/architecture.md, "Order outcomes").
P4 precision: both legs are sized, rounded and checked before either is sent (``sizing``).
P5 rollback: a filled leg whose partner failed for good is closed with a reduce-only market
   order, retried with backoff; if that fails too the pair goes HALTED with a CRITICAL line.

``execute_signal`` never raises for market or exchange trouble; its result says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from loguru import logger

from core.config import ExecutionConfig, RiskConfig
from core.errors import AccountSetupError, PairsBotError, PermanentError, RetryableError
from core.events import EventBus, EventKind, Severity
from core.log_setup import log_trade_event
from core.types import IN_POSITION, PairState, SignalType, TradingSignal
from execution.exchange import (HEDGE_MODE_REFUSAL, MULTI_ASSETS_ISOLATED_REFUSAL, BalanceInfo, ExchangeAdapter,
                                FeeRates, offset_text)
from execution.entry_gate import EntryGate
from execution.funding import FundingCollector, OpenTrip
from execution.journal import Journal
from execution.journal_models import JournalError, OrderPurpose, PairPosition, position_event_data
from execution.lifecycle import PairEvent, PairLifecycle
from execution.locks import SymbolLocks
from execution.markets_watch import DisabledPairs
from execution.orders import (OrderPlacer, OrderRequest, OutcomeUnresolved, PlacedOrder, ProtocolCounters,
                              gather_all, known_filled)
from execution.resolver import OrderResolver
from execution.results import ExecutionResult, ExecutionStatus, PairSpec, Reason
from execution.reconcile import ReconcileReport, Reconciler
from execution.risk import RiskSnapshot, check_entry
from execution.sizing import EntryPlan, SizingRefused, check_order_limits, plan_entry

MidSource = Callable[[str], Decimal | None]
BookSource = Callable[[str], tuple[Decimal, Decimal] | None]  # (bid, ask) of a symbol
ZERO = Decimal(0)
_MAX_CLOSE_ATTEMPTS = 20  # per leg and purpose; the attempt number is part of the clientOrderId
_DAY_MS = 86_400_000
FINAL_BALANCE_TIMEOUT_SECONDS = 2.0  # the balance read at stop must not hold the shutdown up


class ExecutionEngine:
    """One engine for every pair; see the module docstring for the protocols."""

    name = "execution"

    def __init__(self, *, adapter: ExchangeAdapter, journal: Journal, pairs: list[PairSpec],
                 execution: ExecutionConfig, risk: RiskConfig, leverage: int, margin_mode: str,
                 mids: MidSource, external_positions_path: Path, adopt: bool = False,
                 books: BookSource | None = None, resume_halted: bool = False, seed: int | None = None,
                 events: EventBus | None = None) -> None:
        self.adapter = adapter
        self.events = events
        journal.event_bus = events
        self.journal = journal
        self.pairs = {p.pair_id: p for p in pairs}
        self._exec = execution
        self._risk = risk
        self._leverage = leverage
        self._margin_mode = margin_mode
        self._mids = mids
        self._books = books
        self.counters = ProtocolCounters()
        # Horizons by the exchange's clock: it compares a request's timestamp with ITS time.
        self.resolver = OrderResolver(adapter, journal, recv_window_ms=adapter.recv_window_ms,
                                      margin_ms=execution.clock_error_margin_ms,
                                      extra_budget_seconds=execution.resolve_extra_seconds, seed=seed,
                                      wall_ms=adapter.exchange_now_ms)
        self.placer = OrderPlacer(adapter, journal, self.counters, resolver=self.resolver,
                                  max_retries=execution.max_order_retries, backoff_ms=execution.retry_backoff_ms,
                                  final_wait_seconds=min(execution.order_timeout_seconds, 10.0),
                                  fill_wait_seconds=execution.fill_wait_seconds, seed=seed)
        self._locks = SymbolLocks()
        self._all_symbols = sorted({s for p in pairs for s in (p.symbol_a, p.symbol_b)})
        self._executions: set[asyncio.Task[ExecutionResult]] = set()
        #: Entries in flight (signal id -> (gross notional, margin)): counted by the risk check until
        #: the balance refreshed after them, so a burst of entries never sees margin twice.
        self._reserved: dict[str, tuple[str, Decimal, Decimal]] = {}  # signal -> (pair, notional, margin)
        self._seen: set[str] = set()
        self._last_signal_ts: dict[str, int] = {}
        self.positions: dict[str, PairPosition] = {}
        #: The only writer of ``positions`` (one transition table, journaled on every change).
        self.lifecycle = PairLifecycle(journal, self.positions, on_change=self._publish_position)
        self._free_margin = ZERO
        #: The account's last balance read (``total``: equity incl. unrealized), and the first one of
        #: this run: the final statistics' equity at start and at end (app/performance.py).
        self.balance: BalanceInfo | None = None
        self.balance_at_start: BalanceInfo | None = None
        #: The balance read by ``stop`` (the equity at end), or why there is none: a read that timed
        #: out or failed leaves ``balance`` at an older read, which must not pass for the end.
        self.balance_at_stop: BalanceInfo | None = None
        self.final_balance_error: str | None = None
        self._stopping = False
        self._refusals: dict[str, int] = {}
        #: Refusals per pair (re-checks of a held-back entry included): the status table's column.
        self.refusals_by_pair: dict[str, int] = {}
        self._outcomes: dict[str, int] = {}
        self._ack_ms: list[float] = []
        self._fill_ms: list[float] = []
        self._overhead_ms: list[float] = []
        self._periodic: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        #: The margin mode each leg really trades in (a symbol holding a position keeps its own).
        self.margin_modes: dict[str, str] = {}
        self._balance_tasks: set[asyncio.Task[None]] = set()  # one per execution; stop awaits them all
        self._last_refusal: dict[str, str] = {}
        self._said_persistent: set[tuple[str, Reason]] = set()  # (pair, persistent cause) said at INFO
        self._in_flight: dict[str, int] = {}  # pair -> executions/resolutions running on it
        self._reconciling = False
        self._resolution_task: asyncio.Task[None] | None = None
        #: Called once with the error when the journal fails in the order path: the bot must stop.
        self.on_fatal: Callable[[BaseException], None] | None = None
        self.fatal: BaseException | None = None
        self._resume_halted = resume_halted
        self.on_leg_vanished = execution.on_leg_vanished  # what reconciliation does with a vanished leg
        #: How much longer than other components the bot's shutdown gives this one (main.py).
        self.stop_grace_seconds = execution.shutdown_grace_seconds
        self.reconciler = Reconciler(self, adopt=adopt, external_path=external_positions_path)
        self.last_reconcile: ReconcileReport | None = None
        self.funding = FundingCollector(adapter, journal)
        self.fee_rates: dict[str, FeeRates] = {}
        self._funding_task: asyncio.Task[None] | None = None
        #: Pairs with a leg that stopped trading (execution/markets_watch.py): no entries, exited.
        self.disabled = DisabledPairs(journal)
        #: The operator's pause and per-pair disables: new entries only (execution/entry_gate.py).
        self.entry_gate = EntryGate()
        #: How a disabled pair's position is closed: the router's ``flatten`` when wired (its
        #: generator follows), else the engine's own FLATTEN signal (``flatten``).
        self.flatten_pair: Callable[[str, str], bool] | None = None
        self._markets_task: asyncio.Task[None] | None = None
        self._markets_refresh: asyncio.Task[None] | None = None
        self.placer.on_filter_rejection = self._on_filter_rejection
        #: Pairs removed by a hot reload (pair -> why): no entries; kept in ``pairs`` so that
        #: reconciliation still explains what they held (app/hot_reload.py).
        self.retired: dict[str, str] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    async def prepare(self) -> None:
        """Markets, the clock, the account's modes, leverage brackets, leverage and margin mode
        per leg, balance, and the journal's positions."""
        await self.adapter.load_markets()
        await self._sync_clock_at_start()
        await self._check_account()
        await self.adapter.load_leverage_brackets(self._all_symbols)
        for symbol in self._all_symbols:
            await self.adapter.set_leverage(symbol, self._leverage)
            self.margin_modes[symbol] = await self.adapter.set_margin_mode(symbol, self._margin_mode)
        await self._read_fee_rates()
        await self.refresh_balance()
        for pair_id, spec in self.pairs.items():
            last = self.journal.last_signal_ts(pair_id)
            if last is not None:  # the per-pair duplicate window holds across restarts too
                self._last_signal_ts[pair_id] = last
            stored = self.journal.get_position(pair_id)
            self.positions[pair_id] = stored or PairPosition(pair_id, PairState.FLAT, ZERO, ZERO,
                                                             spec.symbol_a, spec.symbol_b)
        self.disabled.restore()

    async def _sync_clock_at_start(self) -> None:
        """Measure the clock offset before the first signed request; the resolver's restart
        bound is then taken by the exchange's clock (and this machine's, whichever is later: a
        previous process may have signed with either)."""
        offset = await self.adapter.sync_clock()
        self.resolver.rebase_start()
        if abs(offset) >= 1_000:
            logger.warning("this machine's clock is {}; signed requests are corrected for it (re-measured every "
                           "{:g} s and on any -1021), but keep the clock synchronized (NTP)", offset_text(offset),
                           self.adapter.clock_sync_interval_seconds)
        else:
            logger.debug("clock: this machine is {}", offset_text(offset))

    async def _check_account(self) -> None:
        """Refuse to start on an account the bot cannot trade: hedge position mode (every order
        of ours would be refused with -4061, and LONG/SHORT rows would merge), or isolated margin
        asked for in Multi-Assets mode (Binance refuses it: -4168)."""
        modes = await self.adapter.fetch_account_modes()
        if modes.hedge_mode:
            raise AccountSetupError(HEDGE_MODE_REFUSAL)
        if modes.multi_assets and self._margin_mode == "isolated":
            raise AccountSetupError(MULTI_ASSETS_ISOLATED_REFUSAL)

    async def _sync_clock_periodically(self) -> None:
        interval = self.adapter.clock_sync_interval_seconds
        while not self._stopping:
            await asyncio.sleep(interval)
            before = getattr(self.adapter, "clock_offset_ms", 0)
            try:
                offset = await self.adapter.sync_clock()
            except (RetryableError, PermanentError) as exc:
                logger.warning("clock re-sync failed (next try in {:g} s): {}", interval, exc)
                continue
            level = "WARNING" if abs(offset - before) >= 1_000 else "DEBUG"
            logger.log(level, "clock re-synced: this machine is {} (was {})", offset_text(offset),
                       offset_text(before))

    async def start(self) -> None:
        """Prepare, reconcile with the exchange, then reconcile periodically (P3)."""
        await self.prepare()
        if self._resume_halted:  # run --resume-halted: the operator clears every sticky pair
            for pair_id in [p for p, pos in self.positions.items()
                            if pos.state in (PairState.HALTED, PairState.BLOCKED) or p in self.disabled]:
                self.resume(pair_id)
        async with self._lock:
            self.last_reconcile = await self._reconcile(startup=True)
        self._periodic = asyncio.create_task(self._reconcile_periodically(), name="execution.reconcile")
        self._funding_task = asyncio.create_task(self._collect_funding_periodically(), name="execution.funding")
        if self.adapter.clock_sync_interval_seconds > 0:
            self._clock_task = asyncio.create_task(self._sync_clock_periodically(), name="execution.clock")
        await self.check_symbols()
        self._markets_task = asyncio.create_task(self._refresh_markets_periodically(), name="execution.markets")
        if self.resolving_pairs():
            self.resolve_soon()

    async def _reconcile_periodically(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._exec.reconcile_interval_seconds)
            await self._locked_pass("periodic reconciliation")

    async def _collect_funding_periodically(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._exec.funding_poll_seconds)
            await self.collect_funding()

    def _open_trips(self, pair_ids: Iterable[str] | None = None) -> list[OpenTrip]:
        wanted = set(self.positions) if pair_ids is None else set(pair_ids)
        return [OpenTrip(pair_id, p.round_trip_id, (p.symbol_a, p.symbol_b)) for pair_id, p in self.positions.items()
                if pair_id in wanted and p.round_trip_id is not None and p.state is not PairState.FLAT]

    async def collect_funding(self, pair_ids: Iterable[str] | None = None) -> int:
        """Bring the funding payments of open round trips (all, or ``pair_ids``') into the journal."""
        try:
            return await self.funding.collect(self._open_trips(pair_ids))
        except JournalError as exc:
            logger.error("funding payments could not be journaled: {}", exc)
            return 0

    async def _locked_pass(self, what: str) -> None:
        """One reconciliation pass under the lock, unless the engine is stopping. A pass that
        fails is logged; the next one (periodic, or the resolution loop's) tries again."""
        async with self._lock:
            if self._stopping:
                return
            try:
                self.last_reconcile = await self._reconcile(startup=False)
            except (PairsBotError, JournalError) as exc:
                logger.error("{} failed: {}", what, exc)

    async def _reconcile(self, *, startup: bool) -> ReconcileReport:
        """One reconciliation pass (the caller holds the lock); every pair counts as busy."""
        self._reconciling = True
        try:
            report = await self.reconciler.run(startup=startup)
            await self.collect_funding()
            return report
        finally:
            self._reconciling = False

    @contextlib.contextmanager
    def _busy(self, pair_id: str) -> Iterator[None]:
        self._in_flight[pair_id] = self._in_flight.get(pair_id, 0) + 1
        try:
            yield
        finally:
            self._in_flight[pair_id] -= 1

    @staticmethod
    def journal_now_ms() -> int:
        return int(time.time() * 1000)

    async def _read_fee_rates(self) -> None:
        """The account's fee rates per leg (the venue's commissionRate, else the market's), kept
        in ``fee_rates`` and said in one line; fills carry the fees actually charged."""
        fetch = getattr(self.adapter, "fetch_fee_rates", None)
        if fetch is None:
            return
        for symbol in self._all_symbols:
            try:
                self.fee_rates[symbol] = await fetch(symbol)
            except (RetryableError, PermanentError) as exc:
                logger.warning("fee rates of {} unavailable: {}", symbol, exc)
        if self.fee_rates:
            logger.info("fee rates (maker/taker): {}", ", ".join(
                f"{s} {r.maker}/{r.taker} ({r.source})" for s, r in self.fee_rates.items()))

    async def refresh_balance(self) -> None:
        try:
            balance = await self.adapter.fetch_balance()
        except (RetryableError, PermanentError) as exc:
            logger.warning("balance refresh failed: {}", exc)
            return
        self._free_margin = balance.free
        self.balance = balance
        if self.balance_at_start is None:
            self.balance_at_start = balance

    async def stop(self) -> None:
        """Refuse new signals, wait (bounded by the caller) for the one in flight, close."""
        self._stopping = True
        await self._finish_executions()
        for task in (self._periodic, self._resolution_task, self._funding_task, self._clock_task, self._markets_task,
                     self._markets_refresh):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._periodic = self._resolution_task = self._funding_task = self._clock_task = None
        self._markets_task = self._markets_refresh = None
        async with self._lock:
            pass
        if self._balance_tasks:
            await asyncio.gather(*self._balance_tasks, return_exceptions=True)
        try:
            await self._read_final_balance()
        finally:
            await self.adapter.close()

    async def _read_final_balance(self) -> None:
        """The final statistics' equity at end: one read, bounded by FINAL_BALANCE_TIMEOUT_SECONDS and
        never in the way of the close. On success ``balance_at_stop`` holds it; otherwise
        ``final_balance_error`` says why and the end equity is unknown (app/equity.py)."""
        self.balance_at_stop = None
        if self.balance_at_start is None:
            self.final_balance_error = "no balance was read at start"
            return
        try:
            async with asyncio.timeout(FINAL_BALANCE_TIMEOUT_SECONDS):
                balance = await self.adapter.fetch_balance()
        except TimeoutError:
            self.final_balance_error = f"not read within {FINAL_BALANCE_TIMEOUT_SECONDS:g} s"
        except Exception as exc:  # statistics only: the stop goes on whatever the read did
            self.final_balance_error = f"{type(exc).__name__}: {exc}"
        else:
            self.balance = self.balance_at_stop = balance
            self.final_balance_error = None
            logger.info("final balance read at stop: equity {} {}", balance.total, balance.currency)
            return
        logger.warning("final balance not read at stop ({}); the equity at end is reported as unknown",
                       self.final_balance_error)

    @property
    def _lock(self) -> Any:
        """Every symbol's lock, in order: what a reconciliation pass (which may touch any pair)
        holds. An execution holds only its own two symbols (``_pair_lock``)."""
        return self._locks.hold(self._all_symbols)

    def _pair_lock(self, spec: PairSpec) -> Any:
        return self._locks.hold((spec.symbol_a, spec.symbol_b))

    @property
    def blocked(self) -> dict[str, str]:
        """Pairs kept out of trading because the exchange holds what the journal cannot explain."""
        return {p: pos.halted_reason or "blocked" for p, pos in self.positions.items()
                if pos.state is PairState.BLOCKED}

    def resume(self, pair_id: str) -> bool:
        """Operator: clear HALTED or BLOCKED; the pair is reconciled afresh (RESOLVING) at once.
        A disabled pair is enabled again if both its symbols trade (else it stays disabled).
        Returns False when the pair was none of these, or stays disabled."""
        enabled = False
        if pair_id in self.disabled:
            spec = self.pairs[pair_id]
            idle = [s for s in (spec.symbol_a, spec.symbol_b) if not self.adapter.is_trading(s)]
            if idle:
                logger.warning("{}: stays disabled: {} still not trading", pair_id, ", ".join(idle))
                return False
            enabled = self.disabled.enable(pair_id, by="operator")
        if self.pair_state(pair_id) not in (PairState.HALTED, PairState.BLOCKED):
            return enabled
        before = self.positions[pair_id]
        self.lifecycle.apply(pair_id, PairEvent.OPERATOR_RESUME, PairState.RESOLVING,
                             reason=f"operator resume from {before.state.value}: {before.halted_reason}")
        logger.warning("{}: {} cleared by the operator; reconciling it afresh", pair_id, before.state.value)
        self.resolve_soon()
        return True

    # -- hot reload (app/hot_reload.py) -----------------------------------------------------------
    def set_risk(self, risk: RiskConfig) -> None:
        """New pre-trade limits: the next entry is checked against them (open pairs are kept)."""
        self._risk = risk

    @property
    def risk(self) -> RiskConfig:
        return self._risk

    def replace_spec(self, spec: PairSpec) -> None:
        """A known pair's new hedge ratio, notional or transform. The hedge ratio and transform
        only while the pair is FLAT (an exit closes what is held, but the entry was sized on the old ratio)."""
        old = self.pairs[spec.pair_id]
        if (spec.symbol_a, spec.symbol_b) != (old.symbol_a, old.symbol_b):
            raise ValueError(f"{spec.pair_id}: legs cannot change on a running pair")
        if (spec.hedge_ratio, spec.price_transform, spec.hedge_ratio_mode) \
                != (old.hedge_ratio, old.price_transform, old.hedge_ratio_mode) \
                and self.pair_state(spec.pair_id) is not PairState.FLAT:
            raise ValueError(f"{spec.pair_id}: hedge ratio or transform changed while "
                             f"{self.pair_state(spec.pair_id).value}")
        self.pairs[spec.pair_id] = spec
        logger.info("{}: engine spec now hedge ratio {}, notional {} USDT, {}", spec.pair_id, spec.hedge_ratio,
                    spec.notional_usdt, spec.price_transform)

    async def add_pair(self, spec: PairSpec) -> None:
        """Trade a pair added while running, set up as at start: leverage, margin mode and fee
        rates of its new symbols, its journal position row (and a reconciliation pass if the
        journal says it holds something). A pair this run removed is taken back."""
        new_symbols = [s for s in dict.fromkeys((spec.symbol_a, spec.symbol_b)) if s not in self._all_symbols]
        if new_symbols:
            await self.adapter.load_leverage_brackets(new_symbols)
            for symbol in new_symbols:
                await self.adapter.set_leverage(symbol, self._leverage)
                self.margin_modes[symbol] = await self.adapter.set_margin_mode(symbol, self._margin_mode)
                fetch = getattr(self.adapter, "fetch_fee_rates", None)
                if fetch is not None:
                    try:
                        self.fee_rates[symbol] = await fetch(symbol)
                    except (RetryableError, PermanentError) as exc:
                        logger.warning("fee rates of {} unavailable: {}", symbol, exc)
        async with self._lock:  # no reconciliation pass is walking ``pairs`` while it grows
            known = spec.pair_id in self.pairs
            if known:
                self.replace_spec(spec)
            else:
                self.pairs[spec.pair_id] = spec
            self._all_symbols = sorted({s for p in self.pairs.values() for s in (p.symbol_a, p.symbol_b)})
            self.unretire(spec.pair_id)
            stored = self.positions.get(spec.pair_id) or self.journal.get_position(spec.pair_id)
            last = self.journal.last_signal_ts(spec.pair_id)
            if last is not None:
                self._last_signal_ts[spec.pair_id] = last
            if stored is None:
                stored = self.journal.save_position(PairPosition(spec.pair_id, PairState.FLAT, ZERO, ZERO,
                                                                 spec.symbol_a, spec.symbol_b))
            self.positions[spec.pair_id] = stored
        logger.info("{}: {} the engine: {} / {}, hedge ratio {}, notional {} USDT ({})", spec.pair_id,
                    "back in" if known else "added to", spec.symbol_a, spec.symbol_b, spec.hedge_ratio,
                    spec.notional_usdt, stored.state.value)
        if stored.state is not PairState.FLAT:
            await self._locked_pass(f"reconciliation of added pair {spec.pair_id}")
        await self.check_symbols()

    def retire(self, pair_id: str, reason: str) -> None:
        """A removed pair: no more entries; its exit goes through the usual protocols."""
        self.retired[pair_id] = reason

    def unretire(self, pair_id: str) -> None:
        """A removed pair put back before it was dropped: entries are allowed again."""
        self.retired.pop(pair_id, None)

    # -- symbol lifecycle and filters (execution/markets_watch.py) ------------------------------
    async def _refresh_markets_periodically(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._exec.markets_refresh_seconds)
            await self.refresh_markets("periodic")

    async def refresh_markets(self, why: str) -> None:
        """Re-read exchangeInfo (filters, statuses), then disable and exit the pairs whose legs
        stopped trading. A failed read is logged; the next refresh tries again."""
        try:
            await self.adapter.load_markets(reload=True)
        except (RetryableError, PermanentError) as exc:
            logger.warning("markets refresh ({}) failed: {}", why, exc)
            return
        logger.debug("markets refreshed ({})", why)
        await self.check_symbols()

    async def check_symbols(self) -> None:
        """Disable every pair with a leg the venue does not trade; close what such pairs hold."""
        for pair_id, spec in self.pairs.items():
            idle = [s for s in (spec.symbol_a, spec.symbol_b) if not self.adapter.is_trading(s)]
            if idle:
                self.disabled.disable(pair_id, idle)
        for pair_id in list(self.disabled.reasons):
            if self.pair_state(pair_id) in IN_POSITION \
                    and not self._in_flight.get(pair_id) and not self._stopping:
                reason = self.disabled.reasons[pair_id]
                if self.flatten_pair is None or not self.flatten_pair(pair_id, reason):
                    await self.flatten(pair_id, reason)

    async def flatten(self, pair_id: str, reason: str) -> ExecutionResult:
        """Close ``pair_id``'s position at market with a FLATTEN signal through every protocol."""
        position = self.positions[pair_id]
        spec = self.pairs[pair_id]
        last = self._last_signal_ts.get(pair_id)
        window_ms = int(self._exec.duplicate_window_seconds * 1000)
        ts = last + window_ms if last is not None else self.journal_now_ms()
        mid_a, mid_b = self._mids(spec.symbol_a), self._mids(spec.symbol_b)
        signal = TradingSignal(f"D{pair_id[:8]}-{ts:x}"[:26], pair_id, SignalType.FLATTEN, 0.0, 0.0, 0.0, 0.0,
                               float(mid_a or 0), float(mid_b or 0), float(spec.hedge_ratio), ts)
        logger.warning("{}: FLATTEN by the engine ({}) while {}", pair_id, reason, position.state.value)
        return await self.execute_signal(signal)

    def _on_filter_rejection(self, symbol: str, detail: str) -> None:
        """An order was refused by a filter: the venue's filters changed; re-read them soon."""
        if self._stopping or (self._markets_refresh is not None and not self._markets_refresh.done()):
            return
        logger.warning("{}: order refused by a filter ({}); re-reading the markets", symbol, detail[:200])
        self._markets_refresh = asyncio.create_task(self.refresh_markets(f"filter rejection on {symbol}"),
                                                    name="execution.markets_refresh")

    def busy_pairs(self) -> frozenset[str]:
        """Pairs whose book may legitimately be between two states right now: an execution or an
        order resolution of theirs is in flight, or a reconciliation pass (which may repair any
        pair) is running. Audits compare the exchange with the journal outside these windows."""
        if self._reconciling:
            return frozenset(self.pairs)
        busy = {p for p, n in self._in_flight.items() if n > 0}
        if self._resolution_task is not None and not self._resolution_task.done():
            busy |= set(self.resolving_pairs())
        return frozenset(busy)

    def resolving_pairs(self) -> list[str]:
        """Pairs with an order whose outcome is not known yet: no entries until it is."""
        return sorted(p for p, pos in self.positions.items() if pos.state is PairState.RESOLVING)

    async def _finish_executions(self) -> None:
        """Let every execution in flight finish (rollbacks included) within the grace; journal
        what is still unfinished as RESOLVING, for the next start to resume, then cancel it."""
        running = [t for t in self._executions if not t.done()]
        if not running:
            return
        grace = self._exec.shutdown_grace_seconds
        logger.warning("stopping: waiting up to {:.0f} s for {} execution(s) in flight", grace, len(running))
        _, pending = await asyncio.wait(running, timeout=grace)
        if not pending:
            return
        pairs = sorted(p for p, n in self._in_flight.items() if n > 0)
        logger.critical("stopping: {} execution(s) did not finish within {:.0f} s; pair(s) {} are journaled "
                        "RESOLVING and the next start resolves them", len(pending), grace, ", ".join(pairs))
        for pair in pairs:
            self.mark_resolving(pair, "the bot stopped during an execution of this pair")
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _publish_position(self, pair_id: str, before: PairState, position: PairPosition) -> None:
        """Lifecycle listener: every change goes to the operator stream; HALTED and BLOCKED are alerts."""
        if self.events is None:
            return
        data = {**position_event_data(position), "from_state": before.value}
        self.events.publish(EventKind.POSITION, data, pair_id=pair_id)
        if position.state is not before and position.state in (PairState.HALTED, PairState.BLOCKED):
            self.events.publish(EventKind.ALERT, {"alert": position.state.value.lower(), "from_state": before.value,
                                                  "reason": position.halted_reason,
                                                  "qty_a": str(position.qty_a), "qty_b": str(position.qty_b)},
                                pair_id=pair_id, severity=Severity.CRITICAL)

    def pair_state(self, pair_id: str) -> PairState:
        position = self.positions.get(pair_id)
        return position.state if position else PairState.FLAT

    # -- the entry point ------------------------------------------------------------------------
    async def execute_signal(self, signal: TradingSignal) -> ExecutionResult:
        """Run one signal through the protocols. Never raises for exchange trouble.

        The protocol runs in a task of the engine's, shielded from the caller's cancellation: a
        shutdown (or a cancelled caller) never cuts an execution or a rollback in half; ``stop``
        waits for it within ``shutdown_grace_seconds``.
        """
        if self._stopping:
            return self._refuse(signal, Reason.ENGINE_STOPPING, "the bot is stopping")
        task = asyncio.create_task(self._execute(signal, time.monotonic()), name=f"execution.{signal.signal_id}")
        self._executions.add(task)
        task.add_done_callback(self._executions.discard)
        return await asyncio.shield(task)

    async def _execute(self, signal: TradingSignal, received: float) -> ExecutionResult:
        spec = self.pairs.get(signal.pair_id)
        if spec is None:
            return self._refuse(signal, Reason.PAIR_UNKNOWN, "no such pair in this engine")
        if not signal.signal_type.is_entry and self.pair_state(signal.pair_id) is PairState.RESOLVING:
            if not await self._wait_resolved(signal.pair_id):
                logger.critical("{} {}: {} waited {:.0f} s for the pair's unresolved orders and is not sent; "
                                "the resolver keeps trying", signal.pair_id, signal.signal_id,
                                signal.signal_type.value, self._exec.resolving_wait_seconds)
        async with self._pair_lock(spec):
            with self._busy(signal.pair_id):
                try:
                    result = await self._execute_locked(signal, received)
                except JournalError as exc:
                    result = self._journal_failed(signal, exc)
        if result.status is not ExecutionStatus.REFUSED:
            self._refresh_balance_soon(release=signal.signal_id)
        self._count_outcome(result)
        return result

    def _journal_failed(self, signal: TradingSignal, exc: JournalError) -> ExecutionResult:
        """The journal failed in the order path. Every leg task of the execution has ended
        (``gather_all``); nothing more is sent, anywhere: an intent that cannot be committed must
        not leave. The bot is told to stop (exit code 1); the next start reconciles."""
        logger.critical("{} {}: JOURNAL FAILURE in the order path ({}); no new orders on any pair, "
                        "stopping the bot; the next start reconciles the journal with the exchange",
                        signal.pair_id, signal.signal_id, exc)
        self._stopping = True
        position = self.positions.get(signal.pair_id)
        if position is not None:  # in memory only: the journal cannot take it
            self.positions[signal.pair_id] = replace(position, state=PairState.RESOLVING)
        if self.fatal is None:
            self.fatal = exc
            if self.on_fatal is not None:
                self.on_fatal(exc)
        return ExecutionResult(signal.signal_id, signal.pair_id, signal.signal_type, ExecutionStatus.FAILED,
                               Reason.JOURNAL_ERROR, str(exc), state_after=self.pair_state(signal.pair_id))

    async def _wait_resolved(self, pair_id: str) -> bool:
        """Wait (bounded by ``resolving_wait_seconds``) until the pair is no longer RESOLVING."""
        deadline = time.monotonic() + self._exec.resolving_wait_seconds
        while self.pair_state(pair_id) is PairState.RESOLVING:
            if time.monotonic() >= deadline or self._stopping:
                return False
            await asyncio.sleep(0.05)
        return True

    def resolve_soon(self) -> None:
        """Run reconciliation passes (under the lock) until no pair is RESOLVING; one task at a time."""
        if self._stopping or (self._resolution_task is not None and not self._resolution_task.done()):
            return
        self._resolution_task = asyncio.create_task(self._resolve_until_done(), name="execution.resolve")

    async def _resolve_until_done(self) -> None:
        delay = 0.2
        while not self._stopping:
            await self._locked_pass("resolution pass")
            if not self.resolving_pairs():
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def mark_resolving(self, pair_id: str, detail: str) -> None:
        """The pair has an order whose outcome is unknown: RESOLVING, with its legs as the journal
        derives them now, until the resolver and reconciliation have the facts."""
        position = self.positions[pair_id]
        if position.state in (PairState.HALTED, PairState.BLOCKED):
            # Sticky: the order is still resolved (every pass looks up every open order), but the
            # pair waits for its operator.
            logger.warning("{} {}: {} (the pair stays {})", pair_id, position.state.value, detail,
                           position.state.value)
            return
        qa, qb = self.reconciler.derived(pair_id)
        if position.state is not PairState.RESOLVING:
            logger.warning("{} RESOLVING | {} | known legs {} {} , {} {} | no new entries until resolved",
                           pair_id, detail, position.symbol_a, qa, position.symbol_b, qb)
        self.lifecycle.apply(pair_id, PairEvent.OUTCOME_UNKNOWN, PairState.RESOLVING, qty_a=qa, qty_b=qb,
                             reason=detail[:500])
        self.resolve_soon()

    def _refresh_balance_soon(self, *, release: str | None = None) -> None:
        """Refresh free margin in the background, outside the lock, so the next signal never
        waits for a balance request. The entry's margin reservation (``release``) is dropped only
        once a refresh that started after the entry ended has returned: until then the risk check
        counts it, so a burst of entries never spends the same margin twice."""
        task = asyncio.create_task(self._refresh_then_release(release), name="execution.balance")
        self._balance_tasks.add(task)
        task.add_done_callback(self._balance_tasks.discard)

    async def _refresh_then_release(self, signal_id: str | None) -> None:
        try:
            await self.refresh_balance()
        finally:
            if signal_id is not None:
                self._reserved.pop(signal_id, None)

    def _record_outcome(self, signal: TradingSignal, result: ExecutionResult) -> None:
        """Store what became of a signal this engine recorded. Only then: a refused duplicate
        must not overwrite the outcome of the signal it duplicates."""
        try:
            self.journal.set_signal_outcome(signal.signal_id, result.status.value, result.reason.value)
        except JournalError as exc:
            logger.error("{}: could not record the outcome of {}: {}", signal.pair_id, signal.signal_id, exc)

    async def _execute_locked(self, signal: TradingSignal, received: float) -> ExecutionResult:
        spec = self.pairs.get(signal.pair_id)
        if spec is None:
            return self._refuse(signal, Reason.PAIR_UNKNOWN, "no such pair in this engine")
        if signal.signal_id in self._seen:
            return self._refuse(signal, Reason.DUPLICATE_SIGNAL, "signal id already handled")
        last = self._last_signal_ts.get(signal.pair_id)
        window_ms = int(self._exec.duplicate_window_seconds * 1000)
        if last is not None and 0 <= signal.ts_ms - last < window_ms:
            return self._refuse(signal, Reason.DUPLICATE_WINDOW,
                                f"{signal.ts_ms - last} ms after the previous signal (window {window_ms} ms)")
        position = self.positions[signal.pair_id]
        if position.state is PairState.BLOCKED:
            return self._refuse(signal, Reason.PAIR_BLOCKED, position.halted_reason or "blocked")
        if position.state is PairState.HALTED:
            return self._refuse(signal, Reason.PAIR_HALTED, position.halted_reason or "halted")
        if position.state is PairState.RESOLVING:
            return self._refuse(signal, Reason.PAIR_RESOLVING, "an order of the pair has an unknown outcome")
        if signal.signal_type.is_entry and position.state is not PairState.FLAT:
            return self._refuse(signal, Reason.ALREADY_IN_POSITION, position.state.value)
        if signal.signal_type.is_entry and signal.pair_id in self.retired:
            return self._refuse(signal, Reason.PAIR_REMOVED, self.retired[signal.pair_id])
        if signal.signal_type.is_entry and signal.pair_id in self.disabled:
            return self._refuse(signal, Reason.PAIR_DISABLED, self.disabled.reasons[signal.pair_id])
        gate = self.entry_gate.refusal(signal.pair_id) if signal.signal_type.is_entry else None
        if gate is not None:
            return self._refuse(signal, *gate)
        if not signal.signal_type.is_entry and position.state not in IN_POSITION:
            return self._refuse(signal, Reason.NOT_IN_POSITION, position.state.value)
        plan = None
        if signal.signal_type.is_entry:
            # P4 and risk before anything is written: a refused entry costs no journal commit,
            # which matters because a persistent refusal (max_open_pairs) recurs every cooldown.
            plan_or_refusal = self._plan_entry(signal, spec)
            if isinstance(plan_or_refusal, ExecutionResult):
                return plan_or_refusal
            plan = plan_or_refusal
        self._seen.add(signal.signal_id)
        # An entry's signal is recorded in the same transaction as its ENTERING state and its
        # order intents (``_entering``): one fsync before the legs leave, not two.
        if plan is None and not self.journal.record_signal(signal):
            self._reserved.pop(signal.signal_id, None)
            return self._refuse(signal, Reason.DUPLICATE_SIGNAL, "signal id already in the journal")
        self._last_signal_ts[signal.pair_id] = signal.ts_ms
        try:
            if plan is not None:
                result = await self._enter(signal, spec, plan, received)
            else:
                result = await self._exit(signal, spec, position, received)
        except _KnownSignal:
            self._reserved.pop(signal.signal_id, None)
            return self._refuse(signal, Reason.DUPLICATE_SIGNAL, "signal id already in the journal")
        except OutcomeUnresolved as unresolved:
            # An order's outcome is unknown: stop this execution here, send nothing more for it,
            # and let the resolver find out; the pair takes no entry meanwhile.
            self.mark_resolving(spec.pair_id, str(unresolved))
            result = self._result(signal, ExecutionStatus.RESOLVING, Reason.OUTCOME_UNKNOWN, str(unresolved),
                                  state=PairState.RESOLVING)
        self._record_outcome(signal, result)
        return result

    # -- entries --------------------------------------------------------------------------------
    def _plan_entry(self, signal: TradingSignal, spec: PairSpec) -> EntryPlan | ExecutionResult:
        """Size and check an entry (P4, then risk); the plan, or the refusal as a result."""
        try:
            plan = plan_entry(signal_type=signal.signal_type, symbol_a=spec.symbol_a, symbol_b=spec.symbol_b,
                              gross_usdt=spec.notional_usdt, beta=_entry_beta(signal, spec), mid_a=_dec(signal.mid_a),
                              mid_b=_dec(signal.mid_b), transform=spec.price_transform,
                              max_hedge_error=Decimal(str(self._exec.max_hedge_error)), precision=self.adapter)
        except SizingRefused as exc:
            self.counters.precision_refusals += 1
            return self._refuse(signal, Reason(exc.reason.value), str(exc))
        decision = check_entry(self._risk, self._risk_snapshot(signal.ts_ms), plan.gross_notional)
        if decision.refusal is not None:
            return self._refuse(signal, Reason(decision.refusal.value), decision.detail)
        self._reserved[signal.signal_id] = (signal.pair_id, plan.gross_notional,
                                            plan.gross_notional / Decimal(self._leverage))
        return plan

    async def _enter(self, signal: TradingSignal, spec: PairSpec, plan: EntryPlan,
                     received: float) -> ExecutionResult:
        logger.info("{} {}: sending {} {} {} | {} {} {}{}", spec.pair_id, signal.signal_type.value,
                    plan.leg_a.side, plan.leg_a.qty, spec.symbol_a, plan.leg_b.side, plan.leg_b.qty, spec.symbol_b,
                    " (limit at the touch)" if self._exec.use_limit_orders else "")
        self._overhead_ms.append((time.monotonic() - received) * 1000)
        if self._exec.use_limit_orders:
            legs = await self._limit_legs(signal, spec, plan, received)
            if isinstance(legs, ExecutionResult):
                return legs
            fa, fb, ack_ms = legs
        else:
            requests = [OrderRequest(signal.signal_id, spec.pair_id, "a", OrderPurpose.ENTRY, 0, spec.symbol_a,
                                     plan.leg_a.side, plan.leg_a.qty),
                        OrderRequest(signal.signal_id, spec.pair_id, "b", OrderPurpose.ENTRY, 0, spec.symbol_b,
                                     plan.leg_b.side, plan.leg_b.qty)]
            sent_a, sent_b = await self.placer.send_together(requests, prelude=self._entering(spec, signal))
            placed_a, placed_b = await gather_all(self.placer.finish(sent_a), self.placer.finish(sent_b))
            ack_ms = self._latency(received, placed_a, placed_b)
            fa, fb = known_filled(placed_a, placed_b)
        fill_ms = (time.monotonic() - received) * 1000
        sign_a = 1 if plan.leg_a.side == "buy" else -1
        sign_b = 1 if plan.leg_b.side == "buy" else -1
        if fa == 0 and fb == 0:
            self.lifecycle.apply(spec.pair_id, PairEvent.ENTRY_UNDONE, PairState.FLAT)
            return self._result(signal, ExecutionStatus.FAILED, Reason.BOTH_LEGS_FAILED,
                                "neither leg filled; nothing is open", ack_ms=ack_ms)
        if fa == 0 or fb == 0:
            return await self._rollback_single_leg(signal, spec, filled_leg="a" if fa > 0 else "b",
                                                   qty=fa if fa > 0 else fb,
                                                   side=plan.leg_a.side if fa > 0 else plan.leg_b.side,
                                                   ack_ms=ack_ms)
        if fa != plan.leg_a.qty or fb != plan.leg_b.qty:
            fa, fb = await self._repair_partial(signal, spec, plan.leg_a.qty, plan.leg_b.qty,
                                                fa, fb, plan.leg_a.side, plan.leg_b.side)
            off = self._hedge_off(spec, plan, fa, fb)
            if off and fa and fb:  # a trim that failed is never accepted silently
                round_trip = self.journal.open_round_trip(spec.pair_id, entry_signal_id=signal.signal_id,
                                                          opened_ts_ms=signal.ts_ms)
                reason = f"hedge repair failed: {off} beyond one lot step of the hedge"
                self._halt(spec, reason, sign_a * fa, sign_b * fb, round_trip, signal)
                return self._result(signal, ExecutionStatus.HALTED, Reason.ROLLBACK_FAILED, reason, fa, fb,
                                    ack_ms=ack_ms, state=PairState.HALTED)
        if fa == 0 or fb == 0:  # a repair can only get here if a trim closed a whole leg
            return await self._rollback_single_leg(signal, spec, filled_leg="a" if fa > 0 else "b",
                                                   qty=fa if fa > 0 else fb,
                                                   side=plan.leg_a.side if fa > 0 else plan.leg_b.side,
                                                   ack_ms=ack_ms)
        state = PairState.LONG_SPREAD if signal.signal_type is SignalType.ENTER_LONG_SPREAD else PairState.SHORT_SPREAD
        with self.journal.batch():  # the round trip and the position naming it: both or neither
            round_trip = self.journal.open_round_trip(spec.pair_id, entry_signal_id=signal.signal_id,
                                                      opened_ts_ms=signal.ts_ms)
            self.lifecycle.apply(spec.pair_id, PairEvent.ENTRY_FILLED, state, qty_a=sign_a * fa, qty_b=sign_b * fb,
                                 entry_signal_id=signal.signal_id, entry_ts_ms=signal.ts_ms, round_trip_id=round_trip)
        self._fill_ms.append(fill_ms)
        return self._result(signal, ExecutionStatus.EXECUTED, Reason.OK, f"holding {spec.symbol_a} {sign_a * fa}, "
                            f"{spec.symbol_b} {sign_b * fb}", fa, fb, ack_ms=ack_ms, fill_ms=fill_ms)

    async def _limit_legs(self, signal: TradingSignal, spec: PairSpec, plan: EntryPlan,
                          received: float) -> tuple[Decimal, Decimal, float | None] | ExecutionResult:
        """``use_limit_orders``: both legs rest at the touch (buy at the bid, sell at the ask) for
        ``order_timeout_seconds``; the unfilled part is cancelled, then completed at market if
        prices stayed within ``max_slippage_pct`` of the signal's mids, or the entry is unwound.

        The engine's lock is held while the limits rest, so one pair's patient entry delays the
        other pairs' signals by up to that timeout: a trade-off the option's user accepts.
        """
        requests = []
        for leg, symbol, order, mid in (("a", spec.symbol_a, plan.leg_a, signal.mid_a),
                                        ("b", spec.symbol_b, plan.leg_b, signal.mid_b)):
            price = self.adapter.price_to_precision(symbol, self._touch(symbol, order.side, _dec(mid)))
            requests.append(OrderRequest(signal.signal_id, spec.pair_id, leg, OrderPurpose.ENTRY, 0, symbol,
                                         order.side, order.qty, order_type="limit", price=price))
        sent = await self.placer.send_together(requests, prelude=self._entering(spec, signal))
        placed = await gather_all(*(self.placer.finish(s, working_seconds=self._exec.order_timeout_seconds)
                                    for s in sent))
        ack_ms = self._latency(received, *placed)
        filled = list(known_filled(*placed))
        missing = [(r, r.qty - f) for r, f in zip(requests, filled) if r.qty - f > 0]
        if not missing:
            return filled[0], filled[1], ack_ms
        moved = max(self._moved_fraction(r.symbol, _dec(signal.mid_a if r.leg == "a" else signal.mid_b))
                    for r, _ in missing)
        limit = Decimal(str(self._exec.max_slippage_pct))
        if moved <= limit:
            # P4 for the completions too: a remainder below the exchange's minimum is no order; it is
            # left to P2 (top-up or trim of the other leg), which checks its own sizes.
            chase = []
            for r, qty in missing:
                mid = _dec(signal.mid_a if r.leg == "a" else signal.mid_b)
                try:
                    chase.append(OrderRequest(signal.signal_id, spec.pair_id, r.leg, OrderPurpose.LIMIT_CHASE, 1,
                                              r.symbol, r.side, check_order_limits(self.adapter, r.symbol, qty, mid,
                                                                                   reduce_only=False)))
                except SizingRefused as exc:
                    self.counters.precision_refusals += 1
                    logger.info("{} {}: no completion of leg {} ({}); P2 repairs the hedge", spec.pair_id,
                                signal.signal_id, r.leg, exc)
            done = await gather_all(*(self.placer.place(c) for c in chase))
            for c, d in zip(chase, known_filled(*done)):
                filled[0 if c.leg == "a" else 1] += d
            return filled[0], filled[1], ack_ms
        logger.warning("{} {}: limits filled a={} b={} and prices moved {:.4%} (max {:.4%}); unwinding the entry",
                       spec.pair_id, signal.signal_id, filled[0], filled[1], moved, limit)
        return await self._unwind(signal, spec, plan, filled[0], filled[1], ack_ms)

    async def _unwind(self, signal: TradingSignal, spec: PairSpec, plan: EntryPlan, fa: Decimal, fb: Decimal,
                      ack_ms: float | None) -> ExecutionResult:
        """Close whatever an abandoned entry filled, both legs at once (P5 for a whole entry)."""
        legs = [(leg, symbol, order.side, qty) for leg, symbol, order, qty in
                (("a", spec.symbol_a, plan.leg_a, fa), ("b", spec.symbol_b, plan.leg_b, fb)) if qty > 0]
        if not legs:
            self.lifecycle.apply(spec.pair_id, PairEvent.ENTRY_UNDONE, PairState.FLAT)
            return self._result(signal, ExecutionStatus.FAILED, Reason.SLIPPAGE_EXCEEDED,
                                "no limit filled and prices moved beyond max_slippage_pct; nothing is open",
                                ack_ms=ack_ms)
        lefts = await gather_all(*(self._close_quantity(signal, spec, leg, symbol, _opposite(side), qty,
                                                        OrderPurpose.ROLLBACK)
                                   for leg, symbol, side, qty in legs))
        round_trip = self.journal.open_round_trip(spec.pair_id, entry_signal_id=signal.signal_id,
                                                  opened_ts_ms=signal.ts_ms)
        if all(left == 0 for left in lefts):
            self.counters.rollbacks += 1
            with self.journal.batch():
                self.journal.close_round_trip(round_trip, exit_signal_id=None, closed_ts_ms=signal.ts_ms,
                                              exit_reason="unwound")
                self.lifecycle.apply(spec.pair_id, PairEvent.ENTRY_UNDONE, PairState.FLAT)
            return self._result(signal, ExecutionStatus.ROLLED_BACK, Reason.SLIPPAGE_EXCEEDED,
                                f"entry unwound: filled a={fa} b={fb} closed", ack_ms=ack_ms)
        self.counters.rollbacks_failed += 1
        held = {leg: _signed(left, side) for (leg, _, side, _), left in zip(legs, lefts)}
        reason = (f"unwind failed: {spec.symbol_a} {held.get('a', ZERO)} and {spec.symbol_b} "
                  f"{held.get('b', ZERO)} still open")
        self._halt(spec, reason, held.get("a", ZERO), held.get("b", ZERO), round_trip, signal)
        return self._result(signal, ExecutionStatus.HALTED, Reason.ROLLBACK_FAILED, reason, ack_ms=ack_ms,
                            state=PairState.HALTED)

    def _touch(self, symbol: str, side: str, mid: Decimal) -> Decimal:
        """Our side's best price: the bid to buy, the ask to sell (the signal's mid if no book)."""
        book = self._books(symbol) if self._books is not None else None
        if book is None:
            return mid
        bid, ask = book
        return bid if side == "buy" else ask

    def _moved_fraction(self, symbol: str, signal_mid: Decimal) -> Decimal:
        now = self._mids(symbol)
        if now is None or signal_mid <= 0:
            return Decimal("Infinity")
        return abs(now - signal_mid) / signal_mid

    async def _repair_partial(self, signal: TradingSignal, spec: PairSpec, want_a: Decimal, want_b: Decimal,
                              fa: Decimal, fb: Decimal, side_a: str, side_b: str) -> tuple[Decimal, Decimal]:
        """P2: top up the short leg towards the other's hedge quantity, then trim the leg that
        still overshoots by its whole excess lot steps.

        The hedge is the planned ``want_a : want_b``. Afterwards the leg that is over its exact
        hedge is over by less than one of its own lot steps. Everything is computed by exact
        cross-multiplication (``_excess``, ``_hedge_ceil``), never through a rounded ratio
        (``77 * (737 / 77)`` is 736.99... in Decimal), and only the leg that is over is trimmed:
        trimming each leg to the *floored* hedge of the other, in turn, can leave the first leg
        many lot steps over again.
        """
        self.counters.partial_fills_repaired += 1
        logger.warning("{} {}: partial fill a={}/{} b={}/{}; repairing the hedge", spec.pair_id,
                       signal.signal_id, fa, want_a, fb, want_b)
        step_a = self.adapter.rules(spec.symbol_a).step_size
        step_b = self.adapter.rules(spec.symbol_b).step_size
        if _excess(fb, fa, want_b, want_a, step_b) > 0:  # b over, so a short: top a up
            target = min(want_a, _hedge_ceil(fb, want_a, want_b, step_a))
            fa = await self._top_up(signal, spec, "a", spec.symbol_a, side_a, target - fa, fa, _dec(signal.mid_a))
        elif _excess(fa, fb, want_a, want_b, step_a) > 0:
            target = min(want_b, _hedge_ceil(fa, want_b, want_a, step_b))
            fb = await self._top_up(signal, spec, "b", spec.symbol_b, side_b, target - fb, fb, _dec(signal.mid_b))
        excess_a = _excess(fa, fb, want_a, want_b, step_a)
        excess_b = _excess(fb, fa, want_b, want_a, step_b)
        if excess_a > 0:
            fa -= await self._trim(signal, spec, "a", spec.symbol_a, side_a, excess_a)
        elif excess_b > 0:
            fb -= await self._trim(signal, spec, "b", spec.symbol_b, side_b, excess_b)
        log_trade_event("partial_fill_repaired", pair_id=spec.pair_id, signal_id=signal.signal_id,
                        filled_a=str(fa), filled_b=str(fb))
        return fa, fb

    def _hedge_off(self, spec: PairSpec, plan: EntryPlan, fa: Decimal, fb: Decimal) -> str:
        """"" when the legs are within one lot step of the planned hedge (P2's promise), else what
        is over, e.g. "EOS/USDT:USDT 12.3"."""
        step_a = self.adapter.rules(spec.symbol_a).step_size
        step_b = self.adapter.rules(spec.symbol_b).step_size
        over_a = _excess(fa, fb, plan.leg_a.qty, plan.leg_b.qty, step_a)
        over_b = _excess(fb, fa, plan.leg_b.qty, plan.leg_a.qty, step_b)
        return f"{spec.symbol_a} {over_a}" if over_a else f"{spec.symbol_b} {over_b}" if over_b else ""

    async def _top_up(self, signal: TradingSignal, spec: PairSpec, leg: str, symbol: str, side: str,
                      missing: Decimal, have: Decimal, mid: Decimal) -> Decimal:
        try:
            qty = check_order_limits(self.adapter, symbol, missing, mid, reduce_only=False)
        except SizingRefused as exc:
            logger.info("{}: no top-up of {} ({}); trimming the other leg instead", spec.pair_id, symbol, exc)
            return have
        self.counters.top_ups += 1
        placed = await self.placer.place(OrderRequest(signal.signal_id, spec.pair_id, leg, OrderPurpose.TOP_UP, 0,
                                                      symbol, side, qty))
        return have + known_filled(placed)[0]

    async def _trim(self, signal: TradingSignal, spec: PairSpec, leg: str, symbol: str, entry_side: str,
                    excess: Decimal) -> Decimal:
        """Reduce an over-filled leg by ``excess``; returns what was taken off."""
        self.counters.trims += 1
        left = await self._close_quantity(signal, spec, leg, symbol, _opposite(entry_side), excess, OrderPurpose.TRIM)
        return excess - left

    async def _rollback_single_leg(self, signal: TradingSignal, spec: PairSpec, *, filled_leg: str, qty: Decimal,
                                   side: str, ack_ms: float | None) -> ExecutionResult:
        """P5: close the leg that filled alone; HALT the pair if it cannot be closed."""
        symbol = spec.symbol_a if filled_leg == "a" else spec.symbol_b
        logger.error("{} {}: only leg {} ({} {} {}) filled; rolling it back", spec.pair_id, signal.signal_id,
                     filled_leg, side, qty, symbol)
        left = await self._close_quantity(signal, spec, filled_leg, symbol, _opposite(side), qty,
                                          OrderPurpose.ROLLBACK)
        round_trip = self.journal.open_round_trip(spec.pair_id, entry_signal_id=signal.signal_id,
                                                  opened_ts_ms=signal.ts_ms)
        if left == 0:
            self.counters.rollbacks += 1
            with self.journal.batch():
                self.journal.close_round_trip(round_trip, exit_signal_id=None, closed_ts_ms=signal.ts_ms,
                                              exit_reason="rollback")
                self.lifecycle.apply(spec.pair_id, PairEvent.ENTRY_UNDONE, PairState.FLAT)
            log_trade_event("rollback", pair_id=spec.pair_id, signal_id=signal.signal_id, symbol=symbol, qty=str(qty))
            return self._result(signal, ExecutionStatus.ROLLED_BACK, Reason.ONE_LEG_FAILED,
                                f"leg {filled_leg} filled {qty} alone and was closed", ack_ms=ack_ms)
        self.counters.rollbacks_failed += 1
        signed = left if side == "buy" else -left
        held_a, held_b = (signed, ZERO) if filled_leg == "a" else (ZERO, signed)
        reason = f"rollback failed: {symbol} {signed} is open with no hedge"
        self._halt(spec, reason, held_a, held_b, round_trip, signal)
        return self._result(signal, ExecutionStatus.HALTED, Reason.ROLLBACK_FAILED, reason, ack_ms=ack_ms,
                            state=PairState.HALTED)

    async def _close_quantity(self, signal: TradingSignal, spec: PairSpec, leg: str, symbol: str, side: str,
                              qty: Decimal, purpose: OrderPurpose) -> Decimal:
        return await self.close_quantity(signal_id=signal.signal_id, pair_id=spec.pair_id, leg=leg, symbol=symbol,
                                         side=side, qty=qty, purpose=purpose)

    async def close_quantity(self, *, signal_id: str, pair_id: str, leg: str, symbol: str, side: str, qty: Decimal,
                             purpose: OrderPurpose, round_trip_id: int | None = None) -> Decimal:
        """The one close routine: exit, rollback, trim, unwind and reconciliation repair. Market-
        closes ``qty`` on ``side`` with retries and backoff; returns what is still open.

        An attempt that fills nothing costs one of ``max_order_retries`` and is followed by a
        backoff; an attempt that fills part (a thin book expiring the rest) is followed at once by
        one for the remainder, up to ``_MAX_CLOSE_ATTEMPTS`` in all. An attempt whose outcome is
        unknown stops the loop (``OutcomeUnresolved``): no attempt + 1 under a new id. Attempts
        whose clientOrderId the journal already has (a repair signal reused within a pass) are
        skipped.

        Reduce-only is decided on the account's net position on the symbol as the journal
        derives it now (every order's filled quantity, this loop's included) plus the adopted
        external positions: exactly what the exchange holds once reconciliation agreed. When the
        order cannot be reduce-only (another pair holds the other side of a shared leg) and is
        below the exchange's minimum, no such order exists (-4164): overshoot to the smallest
        tradeable size, then take the excess back reduce-only, which any size may be.
        """
        existing = {o.client_order_id for o in self.journal.orders_for_signal(signal_id)}
        left = qty  # below zero after an overshoot, until it is taken back
        failures = sent = attempt = 0
        while left != 0 and failures <= self._exec.max_order_retries and sent < _MAX_CLOSE_ATTEMPTS:
            back = left < 0
            order_side = _opposite(side) if back else side
            want = abs(left)
            reduce_only = self._reduce_only_ok(symbol, order_side, want)
            send = want if reduce_only or back else max(want, self.smallest_order(symbol))
            request = OrderRequest(signal_id, pair_id, leg, purpose, attempt, symbol, order_side, send,
                                   reduce_only=reduce_only, round_trip_id=round_trip_id)
            attempt += 1
            if request.cid in existing:
                continue
            if sent and purpose is OrderPurpose.EXIT:
                self.counters.exit_retries += 1
            sent += 1
            placed = await self.placer.place(request)
            (filled,) = known_filled(placed)  # unknown stops the loop: no attempt+1 under a new id
            left += filled if back else -filled
            if filled == 0:
                failures += 1
                if left != 0 and failures <= self._exec.max_order_retries:
                    await asyncio.sleep(self.placer.backoff(failures - 1))
        if left < 0:
            logger.critical("{} {}: closed {} {} more than held; the excess is open", pair_id, signal_id, -left,
                            symbol)
        return left

    # -- exits ----------------------------------------------------------------------------------
    async def _exit(self, signal: TradingSignal, spec: PairSpec, position: PairPosition,
                    received: float) -> ExecutionResult:
        """Close exactly what is held, both legs at once; retry a failing leg until flat."""
        legs = [("a", spec.symbol_a, position.qty_a), ("b", spec.symbol_b, position.qty_b)]
        self._overhead_ms.append((time.monotonic() - received) * 1000)
        self.lifecycle.apply(spec.pair_id, PairEvent.EXIT_SENT, PairState.EXITING)
        closes = [self._close_quantity(signal, spec, leg, symbol, "sell" if held > 0 else "buy", abs(held),
                                       OrderPurpose.EXIT) for leg, symbol, held in legs if held != 0]
        lefts = iter(await gather_all(*closes))
        left = {leg: (next(lefts) if held != 0 else ZERO) for leg, _, held in legs}
        fill_ms = (time.monotonic() - received) * 1000
        if left["a"] == 0 and left["b"] == 0:
            trip = None
            await self.collect_funding([spec.pair_id])  # the trip's net PnL includes the funding it paid
            with self.journal.batch():
                if position.round_trip_id is not None:
                    trip = self.journal.close_round_trip(position.round_trip_id, exit_signal_id=signal.signal_id,
                                                         closed_ts_ms=signal.ts_ms,
                                                         exit_reason=signal.signal_type.value)
                self.lifecycle.apply(spec.pair_id, PairEvent.EXIT_DONE, PairState.FLAT)
            self._fill_ms.append(fill_ms)
            pnl = f"net PnL {trip.net_pnl:.4f} USDT" if trip and trip.net_pnl is not None else "closed"
            return self._result(signal, ExecutionStatus.EXECUTED, Reason.OK, pnl, abs(position.qty_a),
                                abs(position.qty_b), fill_ms=fill_ms)
        held_a = _remaining(position.qty_a, left["a"])
        held_b = _remaining(position.qty_b, left["b"])
        reason = (f"exit incomplete after retries: {spec.symbol_a} {held_a} and {spec.symbol_b} {held_b} "
                  "still open")
        self._halt(spec, reason, held_a, held_b, position.round_trip_id, signal)
        return self._result(signal, ExecutionStatus.HALTED, Reason.EXIT_INCOMPLETE, reason, state=PairState.HALTED)

    # -- helpers --------------------------------------------------------------------------------
    def _halt(self, spec: PairSpec, reason: str, held_a: Decimal, held_b: Decimal, round_trip: int | None,
              signal: TradingSignal) -> None:
        self.counters.halts += 1
        logger.critical("{} HALTED | {} | open: {} {} , {} {} | signal {} | no new entries on this pair",
                        spec.pair_id, reason, spec.symbol_a, held_a, spec.symbol_b, held_b, signal.signal_id)
        log_trade_event("halt", pair_id=spec.pair_id, reason=reason, qty_a=str(held_a), qty_b=str(held_b))
        self.lifecycle.apply(spec.pair_id, PairEvent.HALT, PairState.HALTED, qty_a=held_a, qty_b=held_b,
                             reason=reason, round_trip_id=round_trip)

    def _entering(self, spec: PairSpec, signal: TradingSignal) -> Callable[[], None]:
        """The signal and ENTERING, committed in the same transaction as the entry's intents. A
        signal id the journal already has aborts that transaction (nothing is sent)."""
        def prelude() -> None:
            if not self.journal.record_signal(signal):
                raise _KnownSignal(signal.signal_id)
            self.lifecycle.apply(spec.pair_id, PairEvent.ENTRY_SENT, PairState.ENTERING)
        return prelude

    def _reduce_only_ok(self, symbol: str, side: str, qty: Decimal) -> bool:
        """Reduce-only only when the account's net position on the symbol can absorb it.

        Pairs share legs and the account is one-way, so a pair's leg can point against the net
        position; a reduce-only order would then be refused (-2022) and the leg left open. The
        net is the journal's (every order's filled quantity, whichever pair or purpose, so fills
        of this execution not yet in ``positions`` count) plus the adopted external positions,
        the same figure reconciliation compares with the exchange. Orders still open on the
        symbol (an unknown outcome the resolver is looking up, a market order answered NEW) may
        yet fill: the net must absorb the order even if every one of them on the other side
        does, or the order goes without reduce-only (its quantity is this pair's own either way).
        """
        net = self.journal.net_filled(symbol) + self.reconciler.external.get(symbol, ZERO)
        if side == "sell":
            return net - self.journal.open_order_qty(symbol, "sell") >= qty
        return net + self.journal.open_order_qty(symbol, "buy") <= -qty

    def smallest_order(self, symbol: str) -> Decimal:
        """The smallest quantity of ``symbol`` the exchange takes without reduce-only: min qty
        and min notional with 20% room for the price to move, at the latest known price."""
        rules = self.adapter.rules(symbol)
        price = self._mids(symbol) or self._last_fill_price(symbol)
        if not price or not rules.min_notional:
            return rules.min_qty
        need = max(rules.min_qty, rules.min_notional * Decimal("1.2") / price)
        return (need / rules.step_size).to_integral_value(rounding=ROUND_CEILING) * rules.step_size

    def _last_fill_price(self, symbol: str) -> Decimal | None:
        """The average price of the newest filled order on ``symbol`` in the journal (any pair)."""
        latest: tuple[int, Decimal] | None = None
        for pair_id, spec in self.pairs.items():
            if symbol not in (spec.symbol_a, spec.symbol_b):
                continue
            for order in self.journal.orders_for_pair(pair_id):
                if order.symbol == symbol and order.avg_price and (latest is None or order.updated_ms >= latest[0]):
                    latest = (order.updated_ms, order.avg_price)
        return latest[1] if latest else None

    def _risk_snapshot(self, now_ms: int) -> RiskSnapshot:
        """``now_ms`` is the signal's exchange time: round trips are closed with signal times,
        so "today" for the daily loss must be the UTC day of that clock too (in a replay it is
        not the wall clock's day, and a wall-clock day never saw a replayed loss)."""
        open_pairs = sum(p.state is not PairState.FLAT for p in self.positions.values())  # ENTERING counts
        exposure = ZERO
        for p in self.positions.values():
            for symbol, qty in ((p.symbol_a, p.qty_a), (p.symbol_b, p.qty_b)):
                if qty:
                    exposure += abs(qty) * (self._mids(symbol) or ZERO)
        realized = self.journal.realized_pnl_since(now_ms - now_ms % _DAY_MS)
        # Entries in flight, or done but not yet seen by a balance refresh, count as spent.
        # Margin: until a balance refresh has seen the entry. Exposure: while its legs are not in
        # ``positions`` yet (ENTERING), so a finished entry is not counted twice.
        reserved_notional = sum((n for pair, n, _ in self._reserved.values()
                                 if self.pair_state(pair) is PairState.ENTERING), ZERO)
        reserved_margin = sum((m for _, _, m in self._reserved.values()), ZERO)
        return RiskSnapshot(open_pairs, exposure + reserved_notional, realized, self._free_margin - reserved_margin,
                            self._leverage)

    def _latency(self, received: float, *placed: PlacedOrder) -> float | None:
        acks = [p.acked_at for p in placed]
        if any(a is None for a in acks):
            return None
        ms = (max(a for a in acks if a is not None) - received) * 1000
        self._ack_ms.append(ms)
        return ms

    def _refuse(self, signal: TradingSignal, reason: Reason, detail: str) -> ExecutionResult:
        self._refusals[reason.value] = self._refusals.get(reason.value, 0) + 1
        self.refusals_by_pair[signal.pair_id] = self.refusals_by_pair.get(signal.pair_id, 0) + 1
        # A refusal that repeats for a pair is said once at INFO; the repeats go to the debug log
        # and to the refusal counters. A persistent cause (max_open_pairs, exposure, daily loss,
        # margin) is said once per pair for the whole run: it recurs with every cooldown and with
        # every slot that opens and fills again, and its count is in the statistics.
        if reason.is_persistent:
            repeat = (signal.pair_id, reason) in self._said_persistent
            self._said_persistent.add((signal.pair_id, reason))
        else:
            repeat = self._last_refusal.get(signal.pair_id) == reason.value
        log = logger.debug if repeat else logger.info
        self._last_refusal[signal.pair_id] = reason.value
        log("{} {} refused: {} ({})", signal.pair_id, signal.signal_id, reason.value, detail)
        return ExecutionResult(signal.signal_id, signal.pair_id, signal.signal_type, ExecutionStatus.REFUSED, reason,
                               detail, state_after=self.pair_state(signal.pair_id))

    def _result(self, signal: TradingSignal, status: ExecutionStatus, reason: Reason, detail: str,
                filled_a: Decimal = ZERO, filled_b: Decimal = ZERO, *, ack_ms: float | None = None,
                fill_ms: float | None = None, state: PairState | None = None) -> ExecutionResult:
        self._last_refusal.pop(signal.pair_id, None)
        return ExecutionResult(signal.signal_id, signal.pair_id, signal.signal_type, status, reason, detail,
                               filled_a, filled_b, state or self.pair_state(signal.pair_id), ack_ms, fill_ms)

    def _count_outcome(self, result: ExecutionResult) -> None:
        self._outcomes[result.status.value] = self._outcomes.get(result.status.value, 0) + 1

    def stats(self) -> dict[str, Any]:
        trips = self.journal.round_trips()
        closed = [t for t in trips if not t.is_open and t.net_pnl is not None]
        return {
            "outcomes": dict(self._outcomes),
            "refused_by_reason": dict(self._refusals),
            "protocols": self.counters.as_dict(),
            "latency_ms": {
                "ack_p50": _pct(self._ack_ms, 50), "ack_p99": _pct(self._ack_ms, 99),
                "filled_p50": _pct(self._fill_ms, 50), "filled_p99": _pct(self._fill_ms, 99),
                "engine_overhead_p50": _pct(self._overhead_ms, 50),
            },
            "round_trips": len(closed),
            "realized_pnl_usdt": float(sum((t.net_pnl for t in closed if t.net_pnl is not None), ZERO)),
            "funding_usdt": float(sum((f.amount for f in self.journal.funding_since(0)), ZERO)),
            "funding_payments_recorded": self.funding.recorded,
            "funding_read_failures": self.funding.failures,
            "halted_pairs": sorted(p for p, pos in self.positions.items() if pos.state is PairState.HALTED),
            "resolving_pairs": self.resolving_pairs(),
            "resolver": dataclasses.asdict(self.resolver.counters),
            "blocked_pairs": dict(self.blocked),
            "disabled_pairs": dict(self.disabled.reasons),
        }

    def latencies(self) -> dict[str, list[float]]:
        return {"ack_ms": list(self._ack_ms), "fill_ms": list(self._fill_ms), "overhead_ms": list(self._overhead_ms)}


class _KnownSignal(PairsBotError):
    """The journal already holds this signal id (a restart's duplicate): refuse it, send nothing."""


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


def _entry_beta(signal: TradingSignal, spec: PairSpec) -> Decimal:
    """The hedge ratio an entry is sized with: the configured one, or under ``rolling_ols`` the
    beta the signal carries (fitted at the quote that fired; a static spec's ratio never moves)."""
    if spec.hedge_ratio_mode == "rolling_ols":
        return _dec(signal.hedge_ratio)
    return spec.hedge_ratio


def _excess(have: Decimal, other: Decimal, want: Decimal, want_other: Decimal, step: Decimal) -> Decimal:
    """Whole lot steps by which ``have`` exceeds the exact hedge of ``other`` at the planned
    ``want : want_other`` (0 when it does not). Exact: cross-multiplied, no rounded ratio.

    >>> _excess(Decimal(737), Decimal(77), Decimal(737), Decimal(77), Decimal("0.1"))
    Decimal('0')
    >>> _excess(Decimal(20), Decimal(650), Decimal(20), Decimal(651), Decimal(1))
    Decimal('0')
    >>> _excess(Decimal(650), Decimal(19), Decimal(651), Decimal(20), Decimal("0.1"))
    Decimal('31.5')
    """
    over = have * want_other - other * want
    if over <= 0:
        return ZERO
    return (over // (want_other * step)) * step


def _hedge_ceil(other: Decimal, want: Decimal, want_other: Decimal, step: Decimal) -> Decimal:
    """The smallest quantity on the ``step`` grid that fully hedges ``other`` at ``want : want_other``.

    >>> _hedge_ceil(Decimal(77), Decimal(737), Decimal(77), Decimal("0.1"))
    Decimal('737.0')
    >>> _hedge_ceil(Decimal(650), Decimal(20), Decimal(651), Decimal(1))
    Decimal('20')
    """
    exact = other * want
    units = exact // (want_other * step)
    if units * want_other * step < exact:
        units += 1
    return units * step


def _signed(qty: Decimal, side: str) -> Decimal:
    """The position change of a fill of ``qty`` on ``side``."""
    return qty if side == "buy" else -qty


def _opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


def _remaining(held: Decimal, left: Decimal) -> Decimal:
    """What is still held on a leg after closing all but ``left`` (keeps the sign)."""
    return left if held > 0 else -left


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return round(ordered[index], 3)

