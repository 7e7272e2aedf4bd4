"""One pair's ``SignalGenerator.update`` over a block of replayed quotes, in numba: the backtest's signal pass.

Why: the backtest (research/backtest.py) replays a year of bars as tens of millions of quotes;
through the live per-quote Python path (router, observers, generator) that is about 50 us a quote.
Between two signals of a pair nothing but the pair's own quotes moves its generator, so this
kernel runs the generator's per-quote work -- validation, the spread and its live Z
(``signals.spread``), gates, rules, suppression, every counter, and the session report's bar
samples (``app/series.py``) -- on the generator's own window arrays and state, and stops right
after the first quote that fires. The generator then emits that signal through its usual code
(``SignalGenerator.emit_replayed``) and the engine executes it exactly as live.

The arithmetic is the Python path's, operation for operation, in IEEE doubles without fast-math
(``math.log`` is the C library's in both), so the floats are bit-identical; the tests compare the
whole signal sequence, the counters and the samples with the per-quote path
(tests/test_replay_kernel.py, tests/test_backtest.py). Anything the kernel does not model is
refused, never guessed: a state it does not know by ``SignalGenerator.export_replay``
(``ReplayUnsupported``), a gap of empty bars by ``run_pair`` returning ``UNSUPPORTED``.

State travels in two vectors (layouts below): floats ``f`` and ints ``iv``; counters in
``gated``, ``rejects`` and ``suppressed``, indexed as the generator's enums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from signals import kernels as kn
from signals.kernel_cache import flush_if_dependencies_changed

# float state
F_MID_A, F_MID_B, F_CUR, F_SPREAD, F_Z, F_STD, F_MD, F_STOP_UNTIL, F_ENTRY_TS = range(9)
F_LAST_EMIT = 9  # 6 slots, in KIND order
F_HEDGE, F_ENTRY, F_ENTRY_MAX, F_EXIT, F_STOP, F_MIN_STD, F_DUP_MS, F_MAX_HOLD, F_N, F_NM1 = range(15, 25)
F_SIZE = 25
# int state
(I_TS_A, I_TS_B, I_CLOCK, I_BUCKET, I_BAR_MS, I_STATE, I_NO_ENTRY, I_LIVE, I_ACCEPTED, I_BARS_CLOSED, I_MAX_AGE,
 I_LOG, I_FIRE_KIND, I_FIRE_TS, I_LAST_SAMPLE, I_SAMPLES) = range(16)
I_SIZE = 16
# states the kernel decides in (export_replay refuses any other)
S_FLAT, S_LONG, S_SHORT, S_PAUSED = 0, 1, 2, 3  # PAUSED: HALTED or RESOLVING (gated, no decision)
# signal kinds, in this order: ENTER_LONG_SPREAD, ENTER_SHORT_SPREAD, EXIT, STOP_LOSS, TIME_STOP, FLATTEN
K_EL, K_ES, K_EXIT, K_STOP, K_TSTOP = 0, 1, 2, 3, 4
# indices of the generator's RejectReason / Gate / Suppression enums (checked at import by the generator)
R_NON_FINITE, R_NON_POSITIVE, R_CROSSED, R_BAD_TS, R_OUT_OF_ORDER, R_DUPLICATE = 2, 3, 4, 5, 6, 7
G_NO_QUOTE, G_IN_FLIGHT, G_HALTED, G_NOT_FULL, G_LOW_STD, G_WARMING, G_STALE, G_BAD_BETA = range(8)
SUP_STOP_COOLDOWN, SUP_DUPLICATE = 0, 1
# outcomes
END, FIRED, UNSUPPORTED = 0, 1, 2
SAMPLE_COLUMNS = 5  # bar close ms, spread, z, mean, std (app/series.py)

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def _price_reject(bid: float, ask: float) -> int:
    if not (math.isfinite(bid) and math.isfinite(ask)):
        return R_NON_FINITE
    if bid <= 0.0 or ask <= 0.0:
        return R_NON_POSITIVE
    return R_CROSSED


@njit(**_JIT)
def _sample(f: np.ndarray, iv: np.ndarray, fstate: np.ndarray, ts: int, samples: np.ndarray) -> None:
    """``SeriesRecorder.on_quote``: a quote in a later bar than the window's open one samples
    the closing values of that bar (before the generator sees the quote)."""
    bucket = iv[I_BUCKET]
    bar_ms = iv[I_BAR_MS]
    if bucket < 0 or bucket == iv[I_LAST_SAMPLE] or ts // bar_ms <= bucket:
        return
    iv[I_LAST_SAMPLE] = bucket
    mean = fstate[kn.F_REF] + f[F_MD]
    spread, z, std = f[F_SPREAD], f[F_Z], f[F_STD]
    if math.isfinite(spread) and math.isfinite(z) and math.isfinite(mean) and math.isfinite(std):
        k = iv[I_SAMPLES]
        samples[k, 0] = (bucket + 1) * bar_ms
        samples[k, 1] = spread
        samples[k, 2] = z
        samples[k, 3] = mean
        samples[k, 4] = std
        iv[I_SAMPLES] = k + 1


@njit(**_JIT)
def _calc_update(f: np.ndarray, iv: np.ndarray, buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray,
                 ts: int) -> None:
    """``SpreadCalculator.update`` for the mids in ``f`` (the caller has excluded a gap)."""
    if iv[I_LOG] == 1:
        s = math.log(f[F_MID_B]) - f[F_HEDGE] * math.log(f[F_MID_A])
    else:
        s = f[F_MID_B] - f[F_HEDGE] * f[F_MID_A]
    bucket = ts // iv[I_BAR_MS]
    prev = iv[I_BUCKET]
    if bucket > prev:
        if prev >= 0:
            kn.window_push(buf, fstate, istate, f[F_CUR])
            iv[I_BARS_CLOSED] += 1
        iv[I_BUCKET] = bucket
    f[F_CUR] = s
    f[F_SPREAD] = s
    if istate[kn.I_COUNT] != istate[kn.I_CAP]:
        f[F_Z] = math.nan
        f[F_STD] = math.nan
        f[F_MD] = math.nan
        return
    d = s - fstate[kn.F_REF]
    s1 = fstate[kn.F_S1] + d
    md = s1 / f[F_N]
    ssq = fstate[kn.F_S2] + d * d - s1 * md
    f[F_MD] = md
    if ssq > 0.0 and s != fstate[kn.F_CONST]:
        std = math.sqrt(ssq / f[F_NM1])
        f[F_STD] = std
        f[F_Z] = (d - md) / std
    else:
        f[F_STD] = 0.0
        f[F_Z] = math.nan


@njit(**_JIT)
def _decide(f: np.ndarray, iv: np.ndarray, istate: np.ndarray, gated: np.ndarray, suppressed: np.ndarray,
            ts: int, other_ts: int) -> int:
    """The generator's gates, rules and suppression after the spread update: the kind to emit, or -1."""
    state = iv[I_STATE]
    if state == S_PAUSED:
        gated[G_HALTED] += 1
        return -1
    std = f[F_STD]
    if not std > f[F_MIN_STD]:
        gated[G_LOW_STD if istate[kn.I_COUNT] == istate[kn.I_CAP] else G_NOT_FULL] += 1
        return -1
    if ts - other_ts > iv[I_MAX_AGE]:
        gated[G_STALE] += 1
        return -1
    z = f[F_Z]
    tsf = float(ts)
    if state == S_FLAT:
        if iv[I_NO_ENTRY] == 1:
            return -1
        if -f[F_ENTRY_MAX] < z <= -f[F_ENTRY]:
            kind = K_EL
        elif f[F_ENTRY] <= z < f[F_ENTRY_MAX]:
            kind = K_ES
        else:
            return -1
        if not f[F_HEDGE] > 0.0:
            gated[G_BAD_BETA] += 1
            return -1
        if tsf < f[F_STOP_UNTIL]:
            suppressed[SUP_STOP_COOLDOWN] += 1
            return -1
    elif state == S_LONG:
        if z <= -f[F_STOP]:
            kind = K_STOP
        elif z >= -f[F_EXIT]:
            kind = K_EXIT
        elif _held_too_long(f, tsf):
            kind = K_TSTOP
        else:
            return -1
    else:
        if z >= f[F_STOP]:
            kind = K_STOP
        elif z <= f[F_EXIT]:
            kind = K_EXIT
        elif _held_too_long(f, tsf):
            kind = K_TSTOP
        else:
            return -1
    if tsf - f[F_LAST_EMIT + kind] < f[F_DUP_MS]:
        suppressed[SUP_DUPLICATE] += 1
        return -1
    return kind


@njit(**_JIT)
def _held_too_long(f: np.ndarray, tsf: float) -> bool:
    if math.isnan(f[F_ENTRY_TS]):  # restored without an entry time: the clock starts now
        f[F_ENTRY_TS] = tsf
    return tsf - f[F_ENTRY_TS] > f[F_MAX_HOLD]


@njit(**_JIT)
def _on_quote(leg: int, ts: int, bid: float, ask: float, f: np.ndarray, iv: np.ndarray, buf: np.ndarray,
              fstate: np.ndarray, istate: np.ndarray, gated: np.ndarray, rejects: np.ndarray,
              suppressed: np.ndarray, samples: np.ndarray) -> int:
    """One quote of leg ``leg`` (0 = a, 1 = b): -1 nothing fired, else the kind fired."""
    _sample(f, iv, fstate, ts, samples)
    if not 0.0 < bid <= ask < math.inf:
        rejects[_price_reject(bid, ask)] += 1
        return -1
    mid = (bid + ask) * 0.5
    last_ts = iv[I_TS_A + leg]
    if not ts > last_ts:
        if ts < 0:
            rejects[R_BAD_TS] += 1
            return -1
        if ts < last_ts:
            rejects[R_OUT_OF_ORDER] += 1
            return -1
        if mid == f[F_MID_A + leg]:
            rejects[R_DUPLICATE] += 1
            return -1
    f[F_MID_A + leg] = mid
    iv[I_TS_A + leg] = ts
    other_ts = iv[I_TS_B - leg]
    iv[I_ACCEPTED] += 1
    if ts > iv[I_CLOCK]:
        iv[I_CLOCK] = ts
    if other_ts < 0:
        gated[G_NO_QUOTE] += 1
        return -1
    _calc_update(f, iv, buf, fstate, istate, ts)
    iv[I_LIVE] = 1
    kind = _decide(f, iv, istate, gated, suppressed, ts, other_ts)
    if kind >= 0:
        iv[I_FIRE_KIND] = kind
        iv[I_FIRE_TS] = ts
    return kind


@njit(**_JIT)
def run_pair(stamp_a: np.ndarray, bid_a: np.ndarray, ask_a: np.ndarray, sym_a: int,
             stamp_b: np.ndarray, bid_b: np.ndarray, ask_b: np.ndarray, sym_b: int,
             start: int, sub: int, f: np.ndarray, iv: np.ndarray, buf: np.ndarray, fstate: np.ndarray,
             istate: np.ndarray, gated: np.ndarray, rejects: np.ndarray, suppressed: np.ndarray,
             samples: np.ndarray) -> tuple[int, int, int]:
    """Feed the pair's quotes of steps ``[start, len)`` from quote ``sub`` of step ``start`` on.

    Within a step the two legs' quotes come in the replay's order, ``(stamp, symbol index)``; a
    stamp < 0 is no quote. Returns ``(outcome, step, sub)``: ``FIRED`` right after the quote at
    (step, sub - 1), whose kind and time are in ``iv``; ``UNSUPPORTED`` before the quote at
    (step, sub), nothing of it applied; ``END`` after the last step. ``samples`` needs a row per
    bar the steps can close (``iv[I_SAMPLES]`` counts the rows written).
    """
    n = stamp_a.shape[0]
    t = start
    while t < n:
        sa = stamp_a[t]
        sb = stamp_b[t]
        a_first = sb < 0 or (sa >= 0 and (sa < sb or (sa == sb and sym_a < sym_b)))
        for q in range(sub, 2):
            leg = (0 if a_first else 1) if q == 0 else (1 if a_first else 0)
            if leg == 0:
                ts, bid, ask = sa, bid_a[t], ask_a[t]
            else:
                ts, bid, ask = sb, bid_b[t], ask_b[t]
            if ts < 0:
                continue
            if iv[I_BUCKET] >= 0 and ts // iv[I_BAR_MS] > iv[I_BUCKET] + 1:  # empty bars before it
                return UNSUPPORTED, t, q
            kind = _on_quote(leg, ts, bid, ask, f, iv, buf, fstate, istate, gated, rejects, suppressed, samples)
            if kind >= 0:
                return FIRED, t, q + 1
        sub = 0
        t += 1
    return END, n, 0


@dataclass(slots=True)
class ReplayState:
    """One generator's state as the kernel reads and writes it (``SignalGenerator.export_replay``).

    ``buf``, ``fstate`` and ``istate`` are the calculator's own window arrays, shared, not copied.
    """

    f: np.ndarray
    iv: np.ndarray
    gated: np.ndarray
    rejects: np.ndarray
    suppressed: np.ndarray
    buf: np.ndarray
    fstate: np.ndarray
    istate: np.ndarray


# run_pair calls kernels.window_push and reads its constants: a new kernels.py needs a new compile.
flush_if_dependencies_changed(globals(), (Path(kn.__file__),), name=__name__)
