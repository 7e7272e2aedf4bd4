"""SignalGenerator: one pair's quotes in, trading signals out (docs/architecture.md, "Signals and sizing").

One generator per pair. The hub calls :meth:`SignalGenerator.on_quote` with every quote of
either leg; the generator validates it, keeps each leg's latest mid, updates the spread and
its live Z (``signals.spread``) and runs the state machine. A signal goes to the registered
async callbacks (the execution engine, wired in ``main.py``: ``signals`` never imports
``execution``), and the pair's state only moves when a callback reports the trade done.

Decision path, in order (the first that applies wins):

1. bad input is rejected at the door (:class:`RejectReason`), counted, logged at DEBUG, and
   never raises or moves any state;
2. the spread is updated (every accepted quote, so the window stays right even while no
   signal may fire);
3. gates (:class:`Gate`): the other leg never quoted, a signal in flight, HALTED, bars missing
   after a gap (WARMING, until the backfill), window not full, ``std <= min_std``, or the other leg's last quote older than ``max_quote_age_ms``
   of exchange time at this quote;
4. rules: FLAT & -entry_max < z <= -entry -> ENTER_LONG_SPREAD, FLAT & entry <= z < entry_max
   -> ENTER_SHORT_SPREAD (``entry_max`` defaults to the stop: never enter where the stop would
   fire on the next quote); LONG: z <= -stop -> STOP_LOSS, else z >= -exit -> EXIT, else held
   longer than ``max_holding_bars * bar_seconds`` -> TIME_STOP (SHORT mirrored). Stop before exit before
   time stop: a stop is the most urgent, and a position that has reverted is an EXIT even if
   it is also old;
5. suppression (:class:`Suppression`): an entry within ``stop_loss_cooldown_seconds`` of a
   stop-loss or ``time_stop_cooldown_seconds`` of a time stop, or a signal of the same kind
   within ``cooldown_seconds`` (at least 1 ms, which also makes ``signal_id`` unique) of the
   last one.

All times are exchange times (quote ``ts_ms``), never the wall clock, so a replay decides
exactly as live did. Holding time is measured from the entry signal's timestamp.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np
from loguru import logger

from core.config import SignalParams
from core.types import PairState, Quote, SignalType, TradingSignal
from signals import replay_kernel as rk
from signals.spread import ReplayUnsupported, RollingOLSCalculator, SpreadCalculator

SignalCallback = Callable[[TradingSignal], Awaitable[bool]]

_INF = math.inf
_NAN = math.nan
_FLAT = PairState.FLAT
_LONG = PairState.LONG_SPREAD
_SHORT = PairState.SHORT_SPREAD
_HALTED = PairState.HALTED
_RESOLVING = PairState.RESOLVING
_EL = SignalType.ENTER_LONG_SPREAD
_ES = SignalType.ENTER_SHORT_SPREAD
_EXIT = SignalType.EXIT
_STOP = SignalType.STOP_LOSS
_TSTOP = SignalType.TIME_STOP
_FLATTEN = SignalType.FLATTEN

_TYPE_CODES: dict[SignalType, str] = {_EL: "EL", _ES: "ES", _EXIT: "X", _STOP: "SL", _TSTOP: "TS", _FLATTEN: "FL"}
SIGNAL_ID_MAX_LEN = 26
#: Parameters that shape the window: changing one needs a new window (``rewindow``), not ``retune``.
WINDOW_FIELDS = ("hedge_ratio", "lookback_bars", "bar_seconds", "price_transform", "hedge_ratio_mode")
HEDGE_RATIO_MODES = ("static", "rolling_ols")


class RejectReason(str, Enum):
    """Why a quote was refused at the door."""

    UNKNOWN_SYMBOL = "unknown_symbol"  # neither leg of this pair
    MALFORMED = "malformed"  # not quote-shaped: missing attributes or non-numeric fields
    NON_FINITE = "non_finite"  # NaN or +-inf bid/ask
    NON_POSITIVE = "non_positive"  # bid or ask <= 0
    CROSSED_BOOK = "crossed_book"  # bid > ask (bid == ask, a locked book, is accepted)
    BAD_TIMESTAMP = "bad_timestamp"  # negative or NaN exchange time
    OUT_OF_ORDER = "out_of_order"  # older than this leg's last accepted quote
    # Same exchange ms *and* same mid as this leg's last accepted quote: a resent message or a
    # size-only update, nothing new for a mid-based signal. Real Binance bookTicker streams send
    # ~50% of messages in the same ms as the previous one, ~2% of them with a new price; those
    # are accepted (they are newer book states, and dropping them would freeze a stale mid).
    DUPLICATE = "duplicate"


class Gate(str, Enum):
    """Why an accepted quote could not produce a decision."""

    NO_QUOTE = "no_quote"  # the other leg has not quoted yet
    IN_FLIGHT = "in_flight"  # a signal of this pair is being executed
    HALTED = "halted"
    WINDOW_NOT_FULL = "window_not_full"
    LOW_STD = "low_std"  # std <= min_std (or a flat window)
    WARMING = "warming"  # bars are missing after a gap; no decision until they are backfilled
    STALE_LEG = "stale_leg"  # the other leg's quote is older than max_quote_age_ms
    BAD_BETA = "bad_beta"  # rolling_ols: the window's beta is <= 0, no entry can be sized with it


class Suppression(str, Enum):
    """Why a rule that fired did not emit."""

    STOP_COOLDOWN = "stop_cooldown"  # an entry inside the cooldown of a stop-loss or a time stop
    DUPLICATE = "duplicate"


_R = {reason: i for i, reason in enumerate(RejectReason)}
#: The replay kernel's codes (signals/replay_kernel.py) of states, kinds and counters.
_REPLAY_STATES = {_FLAT: rk.S_FLAT, _LONG: rk.S_LONG, _SHORT: rk.S_SHORT, _HALTED: rk.S_PAUSED, _RESOLVING: rk.S_PAUSED}
_REPLAY_KINDS = (_EL, _ES, _EXIT, _STOP, _TSTOP, _FLATTEN)
_G = {gate: i for i, gate in enumerate(Gate)}
_G_NO_QUOTE, _G_IN_FLIGHT, _G_HALTED, _G_NOT_FULL, _G_LOW_STD, _G_WARMING, _G_STALE, _G_BAD_BETA = range(len(Gate))


def pair_tag(pair_id: str) -> str:
    """8 hex chars of BLAKE2b(pair_id): stable across processes (unlike ``hash()``)."""
    return hashlib.blake2b(pair_id.encode("utf-8"), digest_size=4).hexdigest()


def make_signal_id(pair_id: str, ts_ms: int, signal_type: SignalType) -> str:
    """``<pair tag>-<ts_ms>-<type code>``: 25 characters for a 13-digit timestamp.

    Why this shape: the engine derives Binance clientOrderIds (<= 36 chars of
    ``[.A-Z:/a-z0-9_-]``) from it plus a short leg/attempt suffix, and pair_ids run to 40 chars,
    so the pair becomes a 32-bit tag. The id is stable (a replay of the same decision gets the
    same id, so the journal recognises it) and unique: a generator emits at most one signal of
    a kind per pair per millisecond. Two pairs collide only with equal tags *and* equal ts and
    type (~n^2 / 2^33 for n pairs). The exchange timestamp stays readable for audits.

    >>> make_signal_id("ETH_BTC", 1688474400000, SignalType.ENTER_LONG_SPREAD)
    '8696c9ce-1688474400000-EL'
    """
    return f"{pair_tag(pair_id)}-{int(ts_ms)}-{_TYPE_CODES[signal_type]}"


@dataclass(frozen=True, slots=True)
class GeneratorSnapshot:
    """Status of one generator, for the status line and for persistence.

    Quote ages are in exchange time: the pair's latest event time minus each leg's last quote
    time (the generator never reads the wall clock). ``bars_in_window`` counts completed bars
    (at most ``lookback_bars - 1``; the current bar makes the N-th).
    """

    pair_id: str
    state: PairState
    z: float
    spread: float
    mean: float
    std: float
    bars_in_window: int
    lookback_bars: int
    window_full: bool
    last_ts_ms: int | None
    quote_age_a_ms: int | None
    quote_age_b_ms: int | None
    entry_ts_ms: int | None
    stop_cooldown_until_ms: int | None
    in_flight_signal_id: str | None
    halt_reason: str | None
    quotes_accepted: int
    rejects: dict[str, int] = field(default_factory=dict)
    gated: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    signals_emitted: dict[str, int] = field(default_factory=dict)
    signals_executed: int = 0
    signals_failed: int = 0
    callback_errors: int = 0
    bars_closed: int = 0
    gaps: int = 0
    gap_resets: int = 0
    warming: bool = False  # bars missing after a gap, waiting for the backfill

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values, NaN as None."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            out[name] = value
        return out


class SignalGenerator:
    """Per-pair state machine over the live Z of the pair's spread.

    Build it from a ``core.config.SignalParams``. Quotes arrive with the resolved unified symbol
    (``'BTC/USDT:USDT'``); pass ``symbol_a``/``symbol_b`` or call :meth:`bind_symbols` when it
    differs from ``params.leg_a``/``leg_b``.

    Entry points: ``update(quote)`` is the synchronous decision (returns the signal or None,
    marks it in flight), ``await dispatch(signal)`` runs the callbacks and applies the outcome
    (``complete(signal, done)`` applies one directly), ``await on_quote(quote)`` does it all. A callback is
    ``async def cb(signal) -> bool``: only a real ``True`` means "executed" (a truthy result
    object does not), and the state moves if any callback says so -- observers that only log
    should return False. Callbacks run one after the other, in registration order.
    """

    __slots__ = (
        "params", "pair_id", "symbol_a", "symbol_b", "_calc", "_tag",
        "_entry", "_entry_max", "_exit", "_stop", "_min_std", "_max_age", "_dup_ms", "_stop_cd_ms", "_tstop_cd_ms",
        "_max_hold_ms", "_no_entry",
        "_state", "_entry_ts", "_stop_until", "_halt_reason",
        "_mid_a", "_mid_b", "_ts_a", "_ts_b", "_clock", "_live",
        "_busy", "_busy_from", "_last_emit",
        "_callbacks", "_accepted", "_rejects", "_gated", "_suppressed", "_emitted",
        "_executed", "_failed", "_cb_errors",
    )

    def __init__(self, params: SignalParams, *, symbol_a: str | None = None,
                 symbol_b: str | None = None) -> None:
        _validate_params(params)
        self.params = params
        self.pair_id = params.pair_id
        self._tag = pair_tag(params.pair_id)
        self._calc = _make_calculator(params)
        self._set_thresholds(params)
        self._no_entry: str | None = None
        self.bind_symbols(symbol_a or params.leg_a, symbol_b or params.leg_b)
        self._state = _FLAT
        self._entry_ts: float | None = None
        self._stop_until = -_INF
        self._halt_reason: str | None = None
        self._mid_a = self._mid_b = _NAN
        self._ts_a = self._ts_b = -1
        self._clock = -1
        self._live = False
        self._busy: TradingSignal | None = None
        self._busy_from = _FLAT
        self._last_emit: dict[SignalType, float] = {t: -_INF for t in SignalType}
        self._callbacks: list[SignalCallback] = []
        self._accepted = 0
        self._rejects = [0] * len(RejectReason)
        self._gated = [0] * len(Gate)
        self._suppressed = {s: 0 for s in Suppression}
        self._emitted = {t: 0 for t in SignalType}
        self._executed = self._failed = self._cb_errors = 0

    def _set_thresholds(self, params: SignalParams) -> None:
        self._entry, self._exit, self._stop = float(params.entry_z), float(params.exit_z), float(params.stop_z)
        self._entry_max = float(params.entry_max)
        self._min_std = float(params.min_std)
        self._max_age = int(params.max_quote_age_ms)
        self._dup_ms = max(1.0, float(params.cooldown_seconds) * 1000.0)
        self._stop_cd_ms = float(params.stop_loss_cooldown_seconds) * 1000.0
        self._tstop_cd_ms = float(params.time_stop_cooldown) * 1000.0
        hold = params.max_holding_bars
        self._max_hold_ms = _INF if hold is None else float(hold) * params.bar_seconds * 1000.0

    # -- hot reload (app/hot_reload.py) ---------------------------------------------------------

    def retune(self, params: SignalParams) -> None:
        """Take new thresholds, cooldowns, holding limit, quote age and min std in place: the next
        quote decides with them. The window's shape (hedge ratio, lookback, bar, transform) must
        not change here (:meth:`rewindow`). A cooldown already running keeps its end."""
        _validate_params(params)
        changed = [f for f in WINDOW_FIELDS + ("pair_id", "leg_a", "leg_b")
                   if getattr(params, f) != getattr(self.params, f)]
        if changed:
            raise ValueError(f"{self.pair_id}: retune cannot change {', '.join(changed)} (a new window)")
        self._set_thresholds(params)
        self.params = params

    def rewindow(self, params: SignalParams) -> None:
        """Start a new window for new ``params`` (hedge ratio, lookback, bar size or transform).

        Only while FLAT with nothing in flight: a position's exit must be judged on the spread it
        was entered on. The pair is WARMING (``needs_backfill``) until the caller backfills it.
        """
        _validate_params(params)
        if self._state is not _FLAT or self._busy is not None:
            raise ValueError(f"{self.pair_id}: a new window only while FLAT and idle (now {self._state.value})")
        self._calc = _make_calculator(params)
        self._set_thresholds(params)
        self.params = params
        self.request_warm_up()

    def request_warm_up(self) -> None:
        """Mark the window as needing its candles (a pair added while running, or a new window):
        no decision until ``warm_up`` has filled it."""
        self._calc.awaiting_backfill = True
        self._live = False

    def block_entries(self, reason: str | None) -> None:
        """No new entries while ``reason`` is set (a pair removed from the configuration); exits
        and stops still fire. None allows entries again."""
        self._no_entry = reason

    @property
    def entries_blocked(self) -> str | None:
        return self._no_entry

    @property
    def in_flight(self) -> bool:
        """A signal of this pair is being executed."""
        return self._busy is not None

    # -- wiring -------------------------------------------------------------------------------

    def bind_symbols(self, symbol_a: str, symbol_b: str) -> None:
        """Set the symbols quotes will carry for leg_a (X) and leg_b (Y)."""
        if not symbol_a or not symbol_b or symbol_a == symbol_b:
            raise ValueError(f"{self.pair_id}: two different leg symbols needed, got {symbol_a!r}, {symbol_b!r}")
        self.symbol_a = symbol_a
        self.symbol_b = symbol_b

    def register_signal_callback(self, callback: SignalCallback) -> None:
        """Add ``async def callback(signal) -> bool`` (True: the trade was executed)."""
        if not callable(callback):
            raise TypeError("callback must be an async callable taking a TradingSignal")
        self._callbacks.append(callback)

    # -- hot path -----------------------------------------------------------------------------

    def update(self, quote: Quote) -> TradingSignal | None:
        """Validate one quote, update the spread, decide. Never raises for bad input.

        Returns the emitted signal (now in flight: call :meth:`complete` with the outcome) or
        None. Creates no objects but floats when no signal fires: this is the per-quote cost
        ``bench/bench_signals.py`` measures.
        """
        try:
            sym = quote.symbol
            bid = quote.bid
            ask = quote.ask
            ts = quote.ts_ms
            if sym == self.symbol_a:
                is_a = True
                last_ts = self._ts_a
            elif sym == self.symbol_b:
                is_a = False
                last_ts = self._ts_b
            else:
                return self._reject(RejectReason.UNKNOWN_SYMBOL, quote)
            if not 0.0 < bid <= ask < _INF:
                return self._reject(_price_reason(bid, ask), quote)
            mid = (bid + ask) * 0.5
            if not ts > last_ts:
                reason = self._ts_reason(ts, last_ts, mid, is_a)
                if reason is not None:
                    return self._reject(reason, quote)
        except (AttributeError, TypeError, ValueError):
            return self._reject(RejectReason.MALFORMED, quote)
        if is_a:
            self._mid_a = mid
            self._ts_a = ts
            other_ts = self._ts_b
        else:
            self._mid_b = mid
            self._ts_b = ts
            other_ts = self._ts_a
        self._accepted += 1
        if ts > self._clock:
            self._clock = ts
        if other_ts < 0:
            self._gated[_G_NO_QUOTE] += 1
            return None
        calc = self._calc
        z = calc.update(ts, self._mid_a, self._mid_b)
        self._live = True
        if self._busy is not None:
            self._gated[_G_IN_FLIGHT] += 1
            return None
        state = self._state
        if state is _HALTED or state is _RESOLVING:  # the engine is finding out what is held
            self._gated[_G_HALTED] += 1
            return None
        if calc.awaiting_backfill:
            self._gated[_G_WARMING] += 1
            return None
        if not calc.std > self._min_std:  # NaN while the window fills, 0 when flat
            self._gated[_G_LOW_STD if calc.is_ready else _G_NOT_FULL] += 1
            return None
        if ts - other_ts > self._max_age:
            self._gated[_G_STALE] += 1
            return None
        if state is _FLAT:
            if self._no_entry is not None:
                return None
            if -self._entry_max < z <= -self._entry:
                kind = _EL
            elif self._entry <= z < self._entry_max:
                kind = _ES
            else:  # inside the band, or beyond entry_max where the stop would fire at once
                return None
            if not calc.hedge_ratio > 0.0:  # rolling_ols only (a static ratio is > 0): cannot be sized
                self._gated[_G_BAD_BETA] += 1
                return None
            if ts < self._stop_until:
                self._suppressed[Suppression.STOP_COOLDOWN] += 1
                return None
        elif state is _LONG:
            if z <= -self._stop:
                kind = _STOP
            elif z >= -self._exit:
                kind = _EXIT
            elif self._held_too_long(ts):
                kind = _TSTOP
            else:
                return None
        else:  # SHORT_SPREAD
            if z >= self._stop:
                kind = _STOP
            elif z <= self._exit:
                kind = _EXIT
            elif self._held_too_long(ts):
                kind = _TSTOP
            else:
                return None
        if ts - self._last_emit[kind] < self._dup_ms:
            self._suppressed[Suppression.DUPLICATE] += 1
            return None
        return self._emit(kind, ts, z)

    def _held_too_long(self, ts: int) -> bool:
        if self._entry_ts is None:  # restored without an entry time: the clock starts now
            self._entry_ts = ts
        return ts - self._entry_ts > self._max_hold_ms

    def _emit(self, kind: SignalType, ts: int, z: float) -> TradingSignal:
        calc = self._calc
        ts_ms = int(ts)
        signal = TradingSignal(
            signal_id=f"{self._tag}-{ts_ms}-{_TYPE_CODES[kind]}", pair_id=self.pair_id,
            signal_type=kind, z=z, spread=calc.spread, mean=calc.mean, std=calc.std,
            mid_a=self._mid_a, mid_b=self._mid_b, hedge_ratio=calc.hedge_ratio, ts_ms=ts_ms,
        )
        self._busy = signal
        self._busy_from = self._state
        self._last_emit[kind] = ts
        self._emitted[kind] += 1
        logger.debug("{} signal {} z={:.4f} in {}", self.pair_id, signal.signal_id, z, self._state.value)
        return signal

    def flatten_signal(self, reason: str) -> TradingSignal | None:
        """A FLATTEN signal for the position held (now in flight), or None when flat or busy.

        Not a z rule: the caller decided (a lost feed, an operator). Stamped with the pair's
        exchange clock, at least 1 ms after its last signal of the kind, so the id is unique.
        """
        if self._state not in (_LONG, _SHORT) or self._busy is not None:
            return None
        ts = int(max(self._clock, self._last_emit[_FLATTEN] + 1, 0))
        logger.warning("{}: FLATTEN requested ({}) while {}", self.pair_id, reason, self._state.value)
        signal = self._emit(_FLATTEN, ts, self._calc.z)
        # No z decides a flatten, and the window may have none (a feed gap): the journal keeps
        # numbers, so an undefined statistic is recorded as 0.0; the signal type says why it fired.
        numbers = {k: v if math.isfinite(v) else 0.0 for k, v in
                   (("z", signal.z), ("spread", signal.spread), ("mean", signal.mean), ("std", signal.std))}
        signal = replace(signal, **numbers)
        self._busy = signal
        return signal

    # -- outcome ------------------------------------------------------------------------------

    def complete(self, signal: TradingSignal, done: bool) -> None:
        """Apply the outcome of the in-flight ``signal``: the state moves only if ``done``.

        A failed entry leaves FLAT; a failed exit stays in position (the rule fires again after
        ``cooldown_seconds``). If the engine changed the state meanwhile (``set_state``/
        ``halt``), its word wins and the transition is skipped.
        """
        if self._busy is not signal:
            logger.warning("{}: completion for {} which is not in flight; ignored", self.pair_id,
                           getattr(signal, "signal_id", signal))
            return
        self._busy = None
        if not done:
            self._failed += 1
            logger.debug("{}: {} not executed; state stays {}", self.pair_id, signal.signal_id, self._state.value)
            return
        self._executed += 1
        if self._state is not self._busy_from:
            logger.warning("{}: state set to {} while {} was in flight; keeping it", self.pair_id,
                           self._state.value, signal.signal_id)
            return
        kind = signal.signal_type
        if kind is _EL or kind is _ES:
            self._state = _LONG if kind is _EL else _SHORT
            self._entry_ts = signal.ts_ms
        else:
            self._state = _FLAT
            self._entry_ts = None
            if kind is _STOP:
                self._stop_until = signal.ts_ms + self._stop_cd_ms
            elif kind is _TSTOP:  # z is still near where it was: the next bar would re-enter the same side
                self._stop_until = signal.ts_ms + self._tstop_cd_ms

    async def on_quote(self, quote: Quote) -> TradingSignal | None:
        """Feed one quote; if a signal fires, :meth:`dispatch` it. Returns the signal or None.

        This awaits the execution. A hub that must not stall market data meanwhile calls
        ``update`` inline and runs ``dispatch(signal)`` in a task it owns instead.
        """
        signal = self.update(quote)
        if signal is not None:
            await self.dispatch(signal)
        return signal

    async def dispatch(self, signal: TradingSignal) -> bool:
        """Run the callbacks for the in-flight ``signal`` and apply the outcome; True if done.

        A callback that raises is logged and counts as not done; on cancellation the signal is
        released (not done) and ``CancelledError`` propagates.
        """
        done = False
        try:
            for callback in tuple(self._callbacks):
                try:
                    result = await callback(signal)
                except Exception:  # noqa: BLE001 - a callback bug must not kill the market-data loop
                    self._cb_errors += 1
                    logger.exception("{}: signal callback failed for {}", self.pair_id, signal.signal_id)
                    continue
                done = done or result is True
        finally:
            self.complete(signal, done)
        return done

    # -- state for the engine and restarts ------------------------------------------------------

    def set_state(self, state: PairState | str) -> None:
        """Engine override (after reconciliation, rollback...). FLAT clears the entry time;
        entering a position this way starts the holding clock at the next quote."""
        new = PairState(state)
        if new is _FLAT or (new is not self._state and new in (_LONG, _SHORT)):
            self._entry_ts = None
        if new is not _HALTED:
            self._halt_reason = None
        logger.info("{}: state {} -> {} (set)", self.pair_id, self._state.value, new.value)
        self._state = new

    def halt(self, reason: str) -> None:
        """No more signals for this pair until ``set_state`` says otherwise."""
        logger.warning("{}: HALTED: {}", self.pair_id, reason)
        self._state = _HALTED
        self._halt_reason = reason

    def restore_state(self, state: PairState | str, entry_ts_ms: int | None = None, *,
                      stop_cooldown_until_ms: int | None = None) -> None:
        """Restart reconciliation: the journal's state, entry time and stop cooldown.

        ``stop_cooldown_until_ms`` is the exchange time before which no entry may fire (the end
        of the cooldown of the last stop-loss or time stop: :meth:`cooldown_end` of it).

        ``entry_ts_ms`` None for a position means unknown: the holding clock starts at the next
        quote rather than guessing.
        """
        new = PairState(state)
        self._state = new
        self._entry_ts = entry_ts_ms if new in (_LONG, _SHORT) else None
        self._stop_until = -_INF if stop_cooldown_until_ms is None else float(stop_cooldown_until_ms)
        self._halt_reason = "restored as HALTED" if new is _HALTED else None
        logger.info("{}: state restored to {} (entry {})", self.pair_id, new.value, entry_ts_ms)

    def cooldown_end(self, signal_type: SignalType, ts_ms: int) -> int | None:
        """When the cooldown a done ``signal_type`` at ``ts_ms`` starts would end; None if that
        kind starts none. Lets a restart rebuild the cooldown from the journal's last stop."""
        if signal_type is _STOP:
            return int(ts_ms + self._stop_cd_ms)
        if signal_type is _TSTOP:
            return int(ts_ms + self._tstop_cd_ms)
        return None

    @property
    def cooldown_ms(self) -> float:
        """The longest cooldown a stop of this pair starts (how far back a restart must look)."""
        return max(self._stop_cd_ms, self._tstop_cd_ms)

    @property
    def state(self) -> PairState:
        """The pair's position state as the generator believes it (the engine can override)."""
        return self._state

    @property
    def quotes_accepted(self) -> int:
        """Quotes that passed validation (a cheap counter, for callers that sample it often)."""
        return self._accepted

    @property
    def calculator(self) -> SpreadCalculator:
        """The pair's spread calculator (read it, don't feed it: quotes go through update)."""
        return self._calc

    # -- warm-up --------------------------------------------------------------------------------

    def warm_up(self, bars_a: Sequence[Sequence[float]], bars_b: Sequence[Sequence[float]]) -> int:
        """Fill the window from historical OHLCV rows ``[open_ts_ms, o, h, l, c, v]`` per leg.

        Rows are inner-joined on timestamp; closes stand in for mids (README, "Bars and prices").
        A candle stamped ``T`` (its OPEN time) covers ``[T, T + bar_ms)`` and closes at
        ``T + bar_ms``: it is live bucket ``T // bar_ms``, see :meth:`SpreadCalculator.seed_bar`.
        The last candle becomes the open bar: a live quote in the same bucket overwrites its
        close, a later one closes it into the window. If live quotes already arrived (a backfill
        after a gap), the window is rebuilt from the candles before the live bar and the live
        bar is kept. A candle missing on either leg is never invented: the window restarts after
        the hole, and the log says how many bars were missing. Rows with a non-positive or
        non-finite close are skipped. Returns the number of candles used.
        """
        bar_ms = self._calc.bar_ms
        rows = _join_closes(bars_a, bars_b, bar_ms)
        calc = self._calc
        live_bucket = calc.open_bucket if self._live else -1
        live_value = calc.open_value
        calc.reset()
        used = 0
        for ts, close_a, close_b in rows:
            if live_bucket >= 0 and ts // bar_ms >= live_bucket:
                break
            if not (0.0 < close_a < _INF and 0.0 < close_b < _INF):
                continue
            used += calc.seed_bar(ts, calc.bar_value(close_a, close_b))
        if live_bucket >= 0:
            calc.seed_bar(live_bucket * bar_ms, live_value)
        if calc.seed_missing:
            logger.warning("{}: history lacks {} bar(s) (the exchange has none for them either): the window "
                           "restarts after the last hole with {} of {} bars; it fills live", self.pair_id,
                           calc.seed_missing, calc.bars_in_window, self.params.lookback_bars - 1)
        logger.info("{}: warm-up used {} of {} joined bars; {} of {} bars in window", self.pair_id, used,
                    len(rows), calc.bars_in_window, self.params.lookback_bars - 1)
        return used

    # -- the backtest's replay kernel (signals/replay_kernel.py) ----------------------------------

    def export_replay(self) -> rk.ReplayState:
        """This generator's state for ``replay_kernel.run_pair``: the window arrays shared, the rest
        copied. Raises ``ReplayUnsupported`` for what the kernel does not model."""
        code = _REPLAY_STATES.get(self._state)
        if self._busy is not None or code is None:
            raise ReplayUnsupported(f"{self.pair_id}: {self._state.value}"
                                    + (f" with {self._busy.signal_id} in flight" if self._busy else ""))
        calc = self._calc
        f = [0.0] * rk.F_SIZE  # Python lists, one array each at the end: item writes into numpy cost 10x
        iv = [0] * rk.I_SIZE
        calc.export_replay(f, iv)
        f[rk.F_MID_A], f[rk.F_MID_B] = self._mid_a, self._mid_b
        f[rk.F_STOP_UNTIL] = self._stop_until
        f[rk.F_ENTRY_TS] = _NAN if self._entry_ts is None else self._entry_ts
        for k, kind in enumerate(_REPLAY_KINDS):
            f[rk.F_LAST_EMIT + k] = self._last_emit[kind]
        f[rk.F_ENTRY], f[rk.F_ENTRY_MAX], f[rk.F_EXIT], f[rk.F_STOP] = self._entry, self._entry_max, self._exit, \
            self._stop
        f[rk.F_MIN_STD], f[rk.F_DUP_MS], f[rk.F_MAX_HOLD] = self._min_std, self._dup_ms, self._max_hold_ms
        iv[rk.I_TS_A], iv[rk.I_TS_B], iv[rk.I_CLOCK] = self._ts_a, self._ts_b, self._clock
        iv[rk.I_STATE], iv[rk.I_NO_ENTRY], iv[rk.I_LIVE] = code, int(self._no_entry is not None), int(self._live)
        iv[rk.I_ACCEPTED], iv[rk.I_MAX_AGE] = self._accepted, self._max_age
        iv[rk.I_FIRE_KIND] = -1
        suppressed = (self._suppressed[Suppression.STOP_COOLDOWN], self._suppressed[Suppression.DUPLICATE])
        return rk.ReplayState(np.array(f), np.array(iv, dtype=np.int64), np.array(self._gated, dtype=np.int64),
                              np.array(self._rejects, dtype=np.int64), np.array(suppressed, dtype=np.int64),
                              *calc.window_arrays)

    def import_replay(self, st: rk.ReplayState) -> None:
        """Take back what ``run_pair`` changed: mids, times, counters, the window's scalars."""
        f, iv = st.f.tolist(), st.iv.tolist()
        self._calc.import_replay(f, iv)
        self._mid_a, self._mid_b = f[rk.F_MID_A], f[rk.F_MID_B]
        self._ts_a, self._ts_b, self._clock = iv[rk.I_TS_A], iv[rk.I_TS_B], iv[rk.I_CLOCK]
        self._live = bool(iv[rk.I_LIVE])
        self._accepted = iv[rk.I_ACCEPTED]
        if self._entry_ts is None and math.isfinite(f[rk.F_ENTRY_TS]):  # the holding clock started
            self._entry_ts = int(f[rk.F_ENTRY_TS])
        self._gated = st.gated.tolist()
        self._rejects = st.rejects.tolist()
        stop_cd, dup = st.suppressed.tolist()
        self._suppressed[Suppression.STOP_COOLDOWN] = stop_cd
        self._suppressed[Suppression.DUPLICATE] = dup

    def emit_replayed(self, st: rk.ReplayState) -> TradingSignal:
        """The signal ``run_pair`` found (after :meth:`import_replay`), emitted as ``update`` would
        have: now in flight, for the same ``dispatch``/``complete``."""
        kind = _REPLAY_KINDS[int(st.iv[rk.I_FIRE_KIND])]
        return self._emit(kind, int(st.iv[rk.I_FIRE_TS]), self._calc.z)

    @property
    def needs_backfill(self) -> bool:
        """True after a live gap: the missing candles must be fetched and passed to :meth:`warm_up`."""
        return self._calc.awaiting_backfill

    def _ts_reason(self, ts: Any, last_ts: int, mid: float, is_a: bool) -> RejectReason | None:
        if ts != ts or ts < 0:
            return RejectReason.BAD_TIMESTAMP
        if ts < last_ts:
            return RejectReason.OUT_OF_ORDER
        if mid == (self._mid_a if is_a else self._mid_b):
            return RejectReason.DUPLICATE
        return None  # same ms, new price: a newer book state

    def _reject(self, reason: RejectReason, quote: object) -> None:
        """Count; log at DEBUG on the 1st, 2nd, 4th, 8th... of each reason (bounded log volume)."""
        index = _R[reason]
        count = self._rejects[index] + 1
        self._rejects[index] = count
        if count & (count - 1) == 0:
            logger.debug("{}: quote rejected ({}, #{}): {!r}", self.pair_id, reason.value, count, quote)
        return None

    # -- status -----------------------------------------------------------------------------------

    def snapshot(self) -> GeneratorSnapshot:
        """Everything worth showing or persisting about this pair's signal side."""
        calc = self._calc
        clock = self._clock if self._clock >= 0 else None
        return GeneratorSnapshot(
            pair_id=self.pair_id, state=self._state, z=calc.z, spread=calc.spread,
            mean=calc.mean if calc.is_ready else _NAN, std=calc.std,
            bars_in_window=calc.bars_in_window, lookback_bars=self.params.lookback_bars,
            window_full=calc.is_ready, last_ts_ms=clock,
            quote_age_a_ms=None if clock is None or self._ts_a < 0 else int(clock - self._ts_a),
            quote_age_b_ms=None if clock is None or self._ts_b < 0 else int(clock - self._ts_b),
            entry_ts_ms=None if self._entry_ts is None else int(self._entry_ts),
            stop_cooldown_until_ms=None if self._stop_until == -_INF else int(self._stop_until),
            in_flight_signal_id=None if self._busy is None else self._busy.signal_id,
            halt_reason=self._halt_reason, quotes_accepted=self._accepted,
            rejects={r.value: self._rejects[i] for r, i in _R.items()},
            gated={g.value: self._gated[i] for g, i in _G.items()},
            suppressed={s.value: n for s, n in self._suppressed.items()},
            signals_emitted={t.value: n for t, n in self._emitted.items()},
            signals_executed=self._executed, signals_failed=self._failed, callback_errors=self._cb_errors,
            bars_closed=calc.bars_closed, gaps=calc.gaps, gap_resets=calc.gap_resets,
            warming=calc.awaiting_backfill,
        )


def _price_reason(bid: Any, ask: Any) -> RejectReason:
    """Classify a bid/ask that failed ``0 < bid <= ask < inf`` (NaN fails every comparison)."""
    if not (math.isfinite(bid) and math.isfinite(ask)):
        return RejectReason.NON_FINITE
    if bid <= 0.0 or ask <= 0.0:
        return RejectReason.NON_POSITIVE
    return RejectReason.CROSSED_BOOK


def _join_closes(bars_a: Sequence[Sequence[float]], bars_b: Sequence[Sequence[float]],
                 bar_ms: int) -> list[tuple[int, float, float]]:
    """Inner join of two OHLCV row lists on open time -> sorted ``(ts, close_a, close_b)``."""
    closes_a, closes_b = _closes_by_ts(bars_a, bar_ms, "bars_a"), _closes_by_ts(bars_b, bar_ms, "bars_b")
    return [(ts, closes_a[ts], closes_b[ts]) for ts in sorted(closes_a.keys() & closes_b.keys())]


def _closes_by_ts(bars: Sequence[Sequence[float]], bar_ms: int, name: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for index, row in enumerate(bars):
        if len(row) < 5:
            raise ValueError(f"{name}[{index}]: an OHLCV row [ts, open, high, low, close, volume] expected")
        ts_raw = float(row[0])
        if not math.isfinite(ts_raw) or ts_raw < 0 or ts_raw != int(ts_raw):
            raise ValueError(f"{name}[{index}]: timestamp {row[0]!r} is not a whole number of ms")
        ts = int(ts_raw)
        if ts % bar_ms:
            raise ValueError(f"{name}[{index}]: open time {ts} is not on a {bar_ms} ms bar boundary "
                             "(candles of a different timeframe?)")
        out[ts] = float(row[4])
    return out


def _make_calculator(params: SignalParams) -> SpreadCalculator:
    """The pair's window: the static hedge ratio's, or the rolling-OLS one (``hedge_ratio_mode``)."""
    cls = RollingOLSCalculator if params.hedge_ratio_mode == "rolling_ols" else SpreadCalculator
    return cls(hedge_ratio=params.hedge_ratio, lookback_bars=params.lookback_bars, bar_seconds=params.bar_seconds,
               price_transform=params.price_transform, name=params.pair_id)


def _validate_params(p: SignalParams) -> None:
    """The generator can be built without the config loader (tests, bench): check the rules."""
    checks = [
        (p.exit_z < p.entry_z < p.entry_max <= p.stop_z,
         f"thresholds need exit_z < entry_z < entry_max_z <= stop_z, got "
         f"{p.exit_z}, {p.entry_z}, {p.entry_max}, {p.stop_z}"),
        (p.bar_seconds > 0, f"bar_seconds must be > 0, got {p.bar_seconds}"),
        (p.hedge_ratio_mode in HEDGE_RATIO_MODES, f"hedge_ratio_mode must be one of {HEDGE_RATIO_MODES}, "
                                                  f"got {p.hedge_ratio_mode!r}"),
        (p.max_quote_age_ms > 0, f"max_quote_age_ms must be > 0, got {p.max_quote_age_ms}"),
        (min(p.cooldown_seconds, p.stop_loss_cooldown_seconds, p.time_stop_cooldown, p.min_std) >= 0,
         "cooldowns and min_std must be >= 0"),
        (p.max_holding_bars is None or p.max_holding_bars >= 1, f"max_holding_bars must be >= 1 or None, "
                                                                 f"got {p.max_holding_bars}"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ValueError(f"{p.pair_id}: " + "; ".join(problems))
