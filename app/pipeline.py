"""Where the layers meet: quotes -> generators -> signals -> engine -> back to the generators.

``signals`` never imports ``execution``; this module is the only place that holds both, as the
design's callback seam. It also owns the tasks that run executions, so the market-data loop
never waits for an order: a generator's ``update`` runs inline on every quote (the window stays
current), and a signal is dispatched in a task; while it is in flight that generator emits
nothing more (its own rule), and the other pairs keep trading.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Awaitable, Callable

from loguru import logger

from core.backoff import jittered_backoff_seconds
from core.events import EventBus, EventKind, Severity
from core.config import SignalParams
from core.stats import SessionStats
from core.types import IN_POSITION, PairState, Quote, SignalType, TradingSignal
from execution.engine import ExecutionEngine
from execution.journal import SIGNAL_RECEIVED, Journal
from execution.results import ExecutionResult, ExecutionStatus, PairSpec, Reason
from signals.generator import SignalGenerator


HistorySource = Callable[..., Awaitable[dict[str, list[list[float]]]]]
BACKFILL_RETRY_FIRST_MS, BACKFILL_RETRY_MAX_MS = 2_000, 30_000


@dataclass(slots=True)
class RouterCounters:
    signals: int = 0  # decisions: new signals, not the re-checks of a held-back one
    executed: int = 0
    not_executed: int = 0
    rechecks: int = 0  # re-fires of an entry held back by a persistent refusal, refused again
    callback_errors: int = 0


class SignalRouter:
    """Fans quotes out to generators and routes their signals into the one engine."""

    name = "signals"

    def __init__(self, *, generators: dict[str, SignalGenerator], engine: ExecutionEngine | None,
                 stats: SessionStats, history: HistorySource,
                 observers: list[Callable[[Quote], None]] | None = None, on_feed_loss: str = "hold",
                 events: EventBus | None = None) -> None:
        self.generators = generators
        self.events = events
        self._daily_loss_alert_day: int | None = None
        self.engine = engine
        self._history = history
        self._stats = stats
        self._observers = observers or []
        self._by_symbol: dict[str, list[SignalGenerator]] = {}
        for gen in generators.values():
            for symbol in (gen.symbol_a, gen.symbol_b):
                self._by_symbol.setdefault(symbol, []).append(gen)
        #: Hot reload: a new window (and the engine's new spec) waiting for its pair to be flat.
        self._rewindow: dict[str, tuple[SignalParams, PairSpec | None]] = {}
        self._tasks: set[asyncio.Task[bool]] = set()
        self._backfill_pending: dict[str, SignalGenerator] = {}
        self._backfill_task: asyncio.Task[None] | None = None
        self._rng = random.Random()
        self._on_feed_loss = on_feed_loss
        self.feed_lost = False
        self._held_back: dict[str, tuple[SignalType, Reason]] = {}  # pair -> (signal type, persistent refusal)
        self.counters = RouterCounters()
        self._accepting = True
        self.latest: dict[str, Quote] = {}
        #: Called after each executed signal (the equity curve samples when a round trip closed).
        self.after_execution: Callable[[ExecutionResult], None] | None = None
        for gen in generators.values():
            gen.register_signal_callback(self._make_callback(gen))

    @property
    def symbols(self) -> list[str]:
        return sorted(self._by_symbol)

    @property
    def backfilling(self) -> list[str]:
        """Pairs waiting for the candles of a gap (WARMING)."""
        return sorted(self._backfill_pending)

    def on_quote(self, quote: Quote) -> None:
        """Hub consumer (sync, O(pairs of this symbol)): update generators, dispatch signals."""
        self.latest[quote.symbol] = quote
        for observer in self._observers:
            observer(quote)
        engine = self.engine
        for gen in self._by_symbol.get(quote.symbol, ()):
            if engine is not None:
                self._follow_engine(gen, engine.pair_state(gen.pair_id))
            if self._rewindow and gen.pair_id in self._rewindow:
                self._rewindow_if_flat(gen)
            signal = gen.update(quote)
            if gen.needs_backfill and gen.pair_id not in self._backfill_pending:
                self._request_backfill(gen)
            if signal is not None:
                self.submit(gen, signal)

    def submit(self, gen: SignalGenerator, signal: TradingSignal) -> None:
        """Execute ``gen``'s in-flight ``signal`` through the engine (``on_quote``'s dispatch; the
        backtest's replay kernel hands its signals here too); refused once stopping."""
        if self._accepting:
            self._spawn(gen, signal)
        else:
            gen.complete(signal, False)

    def follow_engine(self, gen: SignalGenerator) -> bool:
        """Apply the engine's word on ``gen``'s state now (``on_quote`` does it before every quote);
        True when it moved the generator."""
        if self.engine is None:
            return False
        before = gen.state
        self._follow_engine(gen, self.engine.pair_state(gen.pair_id))
        return gen.state is not before

    def _follow_engine(self, gen: SignalGenerator, state: PairState) -> None:
        """The generator takes the engine's word where the engine's lifecycle moved on its own.

        HALTED and BLOCKED (sticky, set by an execution or by reconciliation) stop the
        generator's signals; RESOLVING pauses them; when reconciliation has repaired, resolved or
        an operator has cleared the pair, the generator follows it back to FLAT or into position.
        ENTERING and EXITING belong to the execution in flight, whose result moves the generator.
        """
        if state is gen.state or state in (PairState.ENTERING, PairState.EXITING):
            return
        if state in (PairState.HALTED, PairState.BLOCKED):
            if gen.state is not PairState.HALTED:
                gen.halt(f"{state.value} in the engine")
        elif state is PairState.RESOLVING:
            gen.set_state(PairState.RESOLVING)
        elif gen.state in (PairState.HALTED, PairState.RESOLVING):
            logger.warning("{}: {} by reconciliation; trading resumes from {}", gen.pair_id,
                           "resolved" if gen.state is PairState.RESOLVING else "repaired", state.value)
            gen.set_state(state)

    def on_feed_change(self, lost: bool) -> None:
        """Hub listener: the whole feed was lost (every pair STALE) or is back.

        ``on_feed_loss: flatten`` closes every open pair at market through the engine; ``hold``
        keeps them, their exits and stops waiting for the feed.
        """
        self.feed_lost = lost
        if self.events is not None:
            self.events.publish(EventKind.ALERT, {"alert": "feed_lost" if lost else "feed_back",
                                                  "policy": self._on_feed_loss},
                                severity=Severity.CRITICAL if lost else Severity.INFO)
        if not lost:
            return
        if self._on_feed_loss == "flatten":
            sent = self.flatten_all("feed lost")
            logger.critical("feed lost: on_feed_loss=flatten: closing {} open pair(s) at market: {}", len(sent),
                            ", ".join(sent) or "none open")
        else:
            held = [p for p, g in self.generators.items() if g.state in IN_POSITION]
            logger.critical("feed lost: on_feed_loss=hold: {} open pair(s) keep their positions with no exit or "
                            "stop until quotes return: {}", len(held), ", ".join(held) or "none")

    # -- hot reload (app/hot_reload.py) ---------------------------------------------------------
    def add_generator(self, gen: SignalGenerator) -> None:
        """Trade a pair added while running: it takes the engine's state and the journal's
        cooldown as at start, then warms up (backfill) before its first decision."""
        if gen.pair_id in self.generators:
            raise ValueError(f"{gen.pair_id}: already routed")
        gen.register_signal_callback(self._make_callback(gen))
        self.generators[gen.pair_id] = gen
        for symbol in (gen.symbol_a, gen.symbol_b):
            self._by_symbol.setdefault(symbol, []).append(gen)
        if self.engine is not None:
            position = self.engine.positions.get(gen.pair_id)
            journal: Journal | None = getattr(self.engine, "journal", None)
            cooldown = None if journal is None else restored_cooldown_until(journal, gen)
            if position is not None and position.state is not PairState.FLAT:
                gen.restore_state(position.state, position.entry_ts_ms, stop_cooldown_until_ms=cooldown)
            elif cooldown is not None:
                gen.restore_state(PairState.FLAT, stop_cooldown_until_ms=cooldown)
        gen.request_warm_up()
        self._request_backfill(gen)

    def remove_generator(self, pair_id: str) -> SignalGenerator:
        """Stop routing a pair (it is flat and idle: the caller checked); its quotes are ignored."""
        gen = self.generators[pair_id]
        if gen.in_flight or gen.state in IN_POSITION:
            raise ValueError(f"{pair_id}: not removed while {gen.state.value} or with a signal in flight")
        del self.generators[pair_id]
        for symbol in (gen.symbol_a, gen.symbol_b):
            routed = [g for g in self._by_symbol.get(symbol, []) if g is not gen]
            if routed:
                self._by_symbol[symbol] = routed
            else:
                self._by_symbol.pop(symbol, None)
        for pending in (self._backfill_pending, self._held_back, self._rewindow):
            pending.pop(pair_id, None)
        return gen

    def schedule_rewindow(self, pair_id: str, params: SignalParams, spec: PairSpec | None) -> bool:
        """Give ``pair_id`` a new window (and the engine ``spec``) once it is flat and idle: at once
        if it is, else on the first quote after its exit. True when applied now."""
        self._rewindow[pair_id] = (params, spec)
        return self._rewindow_if_flat(self.generators[pair_id])

    def pending_rewindow(self, pair_id: str) -> SignalParams | None:
        """The parameters of the new window waiting for ``pair_id`` to be flat, if any."""
        pending = self._rewindow.get(pair_id)
        return None if pending is None else pending[0]

    def cancel_rewindow(self, pair_id: str) -> None:
        self._rewindow.pop(pair_id, None)

    def _rewindow_if_flat(self, gen: SignalGenerator) -> bool:
        engine = self.engine
        if gen.state is not PairState.FLAT or gen.in_flight \
                or (engine is not None and engine.pair_state(gen.pair_id) is not PairState.FLAT):
            return False
        params, spec = self._rewindow.pop(gen.pair_id)
        old = gen.params
        gen.rewindow(params)
        if engine is not None and spec is not None:
            engine.replace_spec(spec)
        logger.info("{}: flat: new window applied (hedge ratio {} -> {}, lookback {} -> {}, transform {} -> {}); "
                    "warming up", gen.pair_id, old.hedge_ratio, params.hedge_ratio, old.lookback_bars,
                    params.lookback_bars, old.price_transform, params.price_transform)
        self._request_backfill(gen)
        return True

    def set_feed_loss_policy(self, policy: str) -> None:
        self._on_feed_loss = policy

    def flatten(self, pair_id: str, reason: str) -> bool:
        """Close ``pair_id``'s position at market through the engine (every protocol applies).

        False when the pair holds nothing or a signal of it is in flight.
        """
        return self.flatten_task(pair_id, reason) is not None

    def flatten_task(self, pair_id: str, reason: str) -> tuple[TradingSignal, asyncio.Task[bool]] | None:
        """``flatten`` for a caller that waits for the outcome (the operator API's close): the
        FLATTEN signal and the task running it (True when executed); None as ``flatten``'s False."""
        gen = self.generators[pair_id]
        signal = gen.flatten_signal(reason)
        if signal is None:
            return None
        return signal, self._spawn(gen, signal)

    def flatten_all(self, reason: str) -> list[str]:
        return [pair_id for pair_id in self.generators if self.flatten(pair_id, reason)]

    def mid(self, symbol: str) -> Decimal | None:
        quote = self.latest.get(symbol)
        return Decimal(repr(quote.mid)) if quote is not None else None

    def book(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        quote = self.latest.get(symbol)
        return (Decimal(repr(quote.bid)), Decimal(repr(quote.ask))) if quote is not None else None

    def _spawn(self, gen: SignalGenerator, signal: TradingSignal) -> asyncio.Task[bool]:
        task = asyncio.create_task(self._run(gen, signal), name=f"signal.{signal.signal_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, gen: SignalGenerator, signal: TradingSignal) -> bool:
        return await gen.dispatch(signal)

    def _make_callback(self, gen: SignalGenerator) -> Callable[[TradingSignal], Any]:
        async def on_signal(signal: TradingSignal) -> bool:
            held = self._held_back.get(signal.pair_id)
            recheck = held is not None and held[0] is signal.signal_type
            if not recheck:
                self._held_back.pop(signal.pair_id, None)
                self._count_signal(signal)
            if self.engine is None:
                logger.info("signal {} counted, not traded: no execution engine in this run", signal.signal_id)
                return False
            result = await self.engine.execute_signal(signal)
            if recheck and held is not None:
                if result.status is ExecutionStatus.REFUSED and result.reason is held[1]:
                    self.counters.rechecks += 1
                    self._stats.signals_rechecked += 1
                    return False
                self._held_back.pop(signal.pair_id, None)
                self._count_signal(signal)  # the cause changed: this is a decision of its own
            self._apply(gen, result, signal.ts_ms)
            return result.executed

        return on_signal

    def _count_signal(self, signal: TradingSignal) -> None:
        self.counters.signals += 1
        self._stats.signals_processed += 1
        logger.info("SIGNAL RECEIVED #{} | {} {} | Z={:.2f}", self._stats.signals_processed,
                    signal.signal_type.side_label, signal.pair_id, signal.z)
        if self.events is not None:
            self.events.publish(EventKind.SIGNAL, signal_event_data(signal), pair_id=signal.pair_id)

    def _apply(self, gen: SignalGenerator, result: ExecutionResult, signal_ts_ms: int) -> None:
        if self.events is not None:
            self._publish_result(result, signal_ts_ms)
        if result.executed:
            self.counters.executed += 1
            self._stats.trades_executed += 1
            logger.info("TRADE EXECUTED #{} | Pair: {} | Signal: {} | {}", self._stats.trades_executed,
                        result.pair_id, result.signal_type.value, result.detail)
            if self.after_execution is not None:
                self.after_execution(result)
        else:
            self.counters.not_executed += 1
            if result.status is ExecutionStatus.REFUSED:
                self._stats.count_refusal(result.reason.value)
                # Its re-fires are re-checks of the same decision, not new signals.
                if result.reason.is_persistent and result.signal_type.is_entry:
                    self._held_back[result.pair_id] = (result.signal_type, result.reason)
            else:
                self._stats.signals_failed += 1
            # A refusal was already logged by the engine with its reason; other outcomes matter here.
            log = logger.debug if result.status is ExecutionStatus.REFUSED else logger.warning
            log("signal {} not executed: {} ({}) {}", result.signal_id, result.status.value,
                result.reason.value, result.detail)
        if result.status is ExecutionStatus.HALTED or result.state_after is PairState.HALTED:
            gen.halt(result.detail)
        elif result.state_after is PairState.RESOLVING:
            gen.set_state(PairState.RESOLVING)  # no signals until the engine knows what is held

    def _publish_result(self, result: ExecutionResult, signal_ts_ms: int) -> None:
        assert self.events is not None
        self.events.publish(EventKind.EXECUTION, {
            "signal_id": result.signal_id, "signal_type": result.signal_type.value, "status": result.status.value,
            "reason": result.reason.value, "detail": result.detail,
            "state_after": None if result.state_after is None else result.state_after.value}, pair_id=result.pair_id)
        day = signal_ts_ms // 86_400_000  # the engine's "today" for the daily loss: the signal's exchange-time UTC day
        if result.reason is Reason.MAX_DAILY_LOSS and self._daily_loss_alert_day != day:  # account-wide: once a day
            self._daily_loss_alert_day = day
            self.events.publish(EventKind.ALERT, {"alert": "daily_loss_stop", "detail": result.detail},
                                pair_id=result.pair_id, severity=Severity.CRITICAL)

    def restore_from_engine(self) -> None:
        """After startup reconciliation each generator takes the engine's word for its pair."""
        if self.engine is None:
            return
        journal: Journal | None = getattr(self.engine, "journal", None)
        for pair_id, gen in self.generators.items():
            position = self.engine.positions.get(pair_id)
            if position is not None and position.state is PairState.BLOCKED:
                gen.halt(f"blocked by reconciliation: {position.halted_reason}")
                continue
            cooldown = None if journal is None else restored_cooldown_until(journal, gen)
            if position is not None and position.state is not PairState.FLAT:
                gen.restore_state(position.state, position.entry_ts_ms, stop_cooldown_until_ms=cooldown)
            elif cooldown is not None:
                gen.restore_state(PairState.FLAT, stop_cooldown_until_ms=cooldown)
                logger.info("{}: no entry before {} (exchange ms): cooldown of the journal's last stop",
                            pair_id, cooldown)

    async def start(self) -> None:
        """Take the engine's positions, then fill every window from history (warm-up)."""
        self.restore_from_engine()
        await self.warm_up()
        self._accepting = True

    def _history_shape(self) -> tuple[int, int]:
        """(bar seconds, bars per leg) that fill every window, with a margin."""
        bar_seconds = {g.params.bar_seconds for g in self.generators.values()}
        if len(bar_seconds) != 1:
            raise ValueError(f"all pairs must share one bar size, got {sorted(bar_seconds)}")
        return bar_seconds.pop(), max(g.params.lookback_bars for g in self.generators.values()) + 5

    def _request_backfill(self, gen: SignalGenerator) -> None:
        """Queue ``gen`` for a backfill; one task serves every pair that has a gap (shared legs)."""
        self._backfill_pending[gen.pair_id] = gen
        if self._backfill_task is None or self._backfill_task.done():
            self._backfill_task = asyncio.create_task(self._backfill_loop(), name="signals.backfill")

    async def _backfill_loop(self) -> None:
        """Fetch the candles of every pair that lost bars, rebuild its window, until none is left.

        A pair whose gap grew again while its candles were in flight (``gap_epoch`` moved) is
        fetched once more. A failed fetch is retried with backoff and jitter: the pair stays
        WARMING (no decisions) meanwhile, which is the point.
        """
        failures = 0
        while self._backfill_pending:
            bar_seconds, bars = self._history_shape()  # per pass: a hot reload may add a longer window
            gens = list(self._backfill_pending.values())
            calcs = {g.pair_id: g.calculator for g in gens}
            epochs = {g.pair_id: g.calculator.gap_epoch for g in gens}
            missing = {g.pair_id: g.calculator.bars_missing for g in gens}
            symbols = sorted({s for g in gens for s in (g.symbol_a, g.symbol_b)})
            try:
                history = await self._history(symbols, bar_seconds=bar_seconds, bars=bars)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed's REST side is down too: keep the pairs WARMING, try again
                failures += 1
                delay = jittered_backoff_seconds(failures, self._rng, first_ms=BACKFILL_RETRY_FIRST_MS,
                                                 max_ms=BACKFILL_RETRY_MAX_MS)
                logger.opt(exception=exc).debug("backfill failure detail")
                logger.warning("backfill of {} failed ({}: {}); pairs stay WARMING, retry #{} in {:.1f}s",
                               ", ".join(epochs), type(exc).__name__, exc, failures, delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            for gen in gens:
                if gen.calculator is not calcs[gen.pair_id]:  # a new window meanwhile: fetch for it again
                    continue
                gen.warm_up(history.get(gen.symbol_a, []), history.get(gen.symbol_b, []))
                if gen.calculator.gap_epoch == epochs[gen.pair_id]:
                    self._backfill_pending.pop(gen.pair_id, None)
                    logger.info("{}: backfilled after a gap of {} bar(s); {} of {} bars in window", gen.pair_id,
                                missing[gen.pair_id], gen.calculator.bars_in_window, gen.params.lookback_bars - 1)

    async def warm_up(self) -> None:
        """Fetch enough completed bars for every window, concurrently, and seed the generators."""
        if not self.generators:
            return
        bar_seconds, bars = self._history_shape()
        history = await self._history(self.symbols, bar_seconds=bar_seconds, bars=bars)
        warm = 0
        for pair_id, gen in self.generators.items():
            gen.warm_up(history.get(gen.symbol_a, []), history.get(gen.symbol_b, []))
            warm += gen.calculator.is_ready
            if not gen.calculator.is_ready:
                logger.warning("{}: window not full after warm-up ({} bars); it fills live", pair_id,
                               gen.calculator.bars_in_window)
        logger.info("warm-up: {}/{} pair windows full from {} bars of history per leg", warm,
                    len(self.generators), bars)

    async def stop(self) -> None:
        """No new signals; let in-flight executions finish (the caller bounds the wait)."""
        self._accepting = False
        if self._backfill_task is not None:
            self._backfill_task.cancel()
            await asyncio.gather(self._backfill_task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def in_flight(self) -> int:
        """Signals whose execution task has not finished."""
        return len(self._tasks)

    async def settle(self) -> None:
        """Wait until no signal is in flight: the backtest's clock stands still meanwhile, so an
        execution takes no exchange time (research/backtest.py)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        rows = []
        for pair_id, gen in self.generators.items():
            snap = gen.snapshot()
            rows.append({"pair": pair_id, "state": snap.state.value, "z": _round(snap.z),
                         "bars": snap.bars_in_window, "window_full": snap.window_full,
                         "signals": sum(snap.signals_emitted.values()), "executed": snap.signals_executed,
                         "rejected_quotes": sum(snap.rejects.values())})
        return {"rows": rows, "signals": self.counters.signals, "executed": self.counters.executed,
                "not_executed": self.counters.not_executed, "rechecks": self.counters.rechecks,
                "warm_pairs": sum(1 for g in self.generators.values() if g.calculator.is_ready)}


# Outcomes of a stop that count for its cooldown: done, or still unknown when the process ended
# (the safe side is to wait). A refused or failed stop closed nothing, so it starts none.
_COOLDOWN_STATUSES = frozenset({ExecutionStatus.EXECUTED.value, ExecutionStatus.RESOLVING.value, SIGNAL_RECEIVED})


def restored_cooldown_until(journal: Journal, gen: SignalGenerator) -> int | None:
    """End of the cooldown of the pair's newest stop-loss or time stop in the journal, or None.

    Why the journal: the engine records every signal, with its exchange time, before it trades,
    so the cooldown needs no store of its own and cannot disagree with what was traded. Looking
    back from the pair's newest signal by the longest cooldown is enough: the exchange clock is
    past that signal, so any older stop's cooldown is over. Reconciliation's repair signals
    (``R...``, wall-clock stamped) are not the generator's decisions and do not count.
    """
    last = journal.last_signal_ts(gen.pair_id)
    if last is None:
        return None
    until: int | None = None
    for record in journal.signals_for_pair_since(gen.pair_id, last - math.ceil(gen.cooldown_ms)):
        signal = record.signal
        if signal.signal_id.startswith("R") or record.status not in _COOLDOWN_STATUSES:
            continue
        end = gen.cooldown_end(signal.signal_type, signal.ts_ms)
        if end is not None:
            until = end if until is None else max(until, end)
    return until


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def signal_event_data(signal: TradingSignal) -> dict[str, Any]:
    """A signal as the operator event stream shows it (the fields an audit of it needs)."""
    return {"signal_id": signal.signal_id, "pair_id": signal.pair_id, "signal_type": signal.signal_type.value,
            "z": signal.z, "spread": signal.spread, "mean": signal.mean, "std": signal.std,
            "mid_a": signal.mid_a, "mid_b": signal.mid_b, "hedge_ratio": signal.hedge_ratio, "ts_ms": signal.ts_ms}
