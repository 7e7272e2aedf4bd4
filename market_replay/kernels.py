"""Numba kernels of the candle replay: counter-based draws, intrabar paths, quote blocks.

One implementation serves the simulator's stream (``CandleSource.advance_to``), its klines and
the backtest's bulk read (``CandleSource.quote_block``), so they cannot drift apart.

Draws. Every random number of the replay is ``uniform(key, bar, index)``: SplitMix64's output
function applied to ``key + counter * GOLDEN`` with ``counter = bar * 2**32 + index + 1``, the
top 53 bits as a float in [0, 1). A draw is a pure function of its coordinates, so a stream needs
no state, no skipping when a replay enters a bar mid-way (``seek``), and gives the same numbers
however the steps are batched. The 64-bit ``key`` of a (seed, symbol, stream) is computed once in
Python from blake2b (:func:`stream_key`, never Python's salted ``hash``). The streams and their
indices (``bar`` is the symbol's own bar index, ``k`` the step within the bar):

=========  ===========  ===========================================================
stream     index        use
=========  ===========  ===========================================================
``path``   0            the coin of ``low_first`` (which extreme the path visits first)
``lots``   2k, 2k + 1   bid and ask top sizes of step k: ``base * (0.5 + u)``
``stamps`` k            the stamp of step k within ``[step k, step k + 1)`` (jitter)
=========  ===========  ===========================================================

Paths are integer arithmetic on ticks (``market_replay/paths.py`` holds the documented Python
entry points, thin wrappers over these kernels).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit

__all__ = ["STREAMS", "stream_key"]

_JIT = {"cache": True, "nogil": True}

STREAMS = ("path", "lots", "stamps")  # column order of the key array CandleSource passes in
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def stream_key(seed: int, symbol: str, stream: str) -> int:
    """The 64-bit key of one symbol's draw stream: stable across runs, machines and Python
    versions (blake2b of the text, not ``hash``).

    >>> stream_key(7, "BTCUSDT", "lots") == stream_key(7, "BTCUSDT", "lots")
    True
    >>> stream_key(7, "BTCUSDT", "lots") != stream_key(8, "BTCUSDT", "lots")
    True
    """
    digest = hashlib.blake2b(f"{seed}:{symbol}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


# ---------------------------------------------------------------------------------------------
# Draws
# ---------------------------------------------------------------------------------------------


@njit(**_JIT)
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64's output function (Steele, Lea, Flood 2014): a bijection of 64-bit words."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(**_JIT)
def uniform(key: np.uint64, bar: int, index: int) -> float:
    """Draw ``index`` of bar ``bar`` of the stream ``key``: a float in [0, 1), 53 random bits."""
    counter = (np.uint64(bar) << _S32) + np.uint64(index) + np.uint64(1)
    return float(mix64(np.uint64(key) + counter * _GOLDEN) >> _S11) * _TO_UNIT


@njit(**_JIT)
def uniform_array(key: np.uint64, bars: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``uniform`` over paired coordinates (tests and diagnostics)."""
    out = np.empty(bars.shape[0], dtype=np.float64)
    for n in range(bars.shape[0]):
        out[n] = uniform(key, bars[n], indices[n])
    return out


# ---------------------------------------------------------------------------------------------
# Intrabar path (integer ticks)
# ---------------------------------------------------------------------------------------------


@njit(**_JIT)
def round_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` (denominator > 0) rounded half away from zero, exactly."""
    a = -numerator if numerator < 0 else numerator
    q = a // denominator
    r = a - q * denominator
    if 2 * r >= denominator:
        q += 1
    return q if numerator >= 0 else -q


@njit(**_JIT)
def allocate_steps(segments: int, work: np.ndarray, raw: np.ndarray) -> None:
    """Largest remainder split of ``segments`` over legs of lengths ``work[0]`` (sum > 0) into
    ``work[1]``; ``work[2]`` (int64, the three rows as long as the legs) and ``raw`` (float64)
    are scratch, so a kernel allocates nothing per bar.

    Every non-empty leg gets at least one segment when there are enough; ties go to the first
    leg (Python's ``max``), the rules ``paths.allocate_steps`` documents.
    """
    n = work.shape[1]
    total = 0
    nonzero = 0
    for j in range(n):
        total += work[0, j]
        if work[0, j] > 0:
            nonzero += 1
    assigned = 0
    for j in range(n):
        length = work[0, j]
        raw[j] = (segments * length) / total
        work[2, j] = 1 if length > 0 and segments >= nonzero else 0
        work[1, j] = max(int(raw[j]), work[2, j])
        assigned += work[1, j]
    while assigned > segments:
        best, key = -1, 0.0
        for j in range(n):
            if work[1, j] > work[2, j] and (best < 0 or work[1, j] - raw[j] > key):
                best, key = j, work[1, j] - raw[j]
        work[1, best] -= 1
        assigned -= 1
    while assigned < segments:
        best, key = -1, 0.0
        for j in range(n):
            if work[0, j] > 0 and (best < 0 or raw[j] - work[1, j] > key):
                best, key = j, raw[j] - work[1, j]
        work[1, best] += 1
        assigned += 1


@njit(**_JIT)
def low_first(o: int, h: int, lo: int, random_order: bool, u: float) -> bool:
    """Whether the path visits the low before the high: the extreme nearer to the open first,
    ties (and ``random_order``) by the coin ``u < 0.5``."""
    coin = u < 0.5
    if random_order:
        return coin
    down, up = o - lo, h - o
    if down == up:
        return coin
    return down < up


@njit(**_JIT)
def fill_path(o: int, h: int, lo: int, c: int, low_first_: bool, out: np.ndarray, work: np.ndarray,
              raw: np.ndarray) -> None:
    """``out.shape[0]`` (>= 1) prices from ``o`` through both extremes to ``c`` (candle valid:
    ``lo <= min(o, c) <= max(o, c) <= h``); see ``paths.intrabar_path``. ``work`` (int64
    ``[3, 3]``) and ``raw`` (float64 ``[3]``) are ``allocate_steps``' scratch."""
    steps = out.shape[0]
    out[0] = o
    if steps == 1:
        return
    x1, x2 = (lo, h) if low_first_ else (h, lo)
    if steps == 2:
        out[1] = c
        return
    if steps == 3:
        out[1] = x1
        out[2] = c
        return
    work[0, 0], work[0, 1], work[0, 2] = abs(x1 - o), abs(x2 - x1), abs(c - x2)
    if work[0, 0] + work[0, 1] + work[0, 2] == 0:
        for k in range(1, steps):
            out[k] = o
        return
    allocate_steps(steps - 1, work, raw)
    k = 1
    a = o
    for leg in range(3):
        b = x1 if leg == 0 else (x2 if leg == 1 else c)
        count = work[1, leg]
        if count > 0:
            # a + round_div((b - a) * m, count) for m = 1..count, with |b - a| * m carried as a
            # quotient and remainder of count: the same integers, no division per step
            sign = 1 if b >= a else -1
            dq = work[0, leg] // count
            dr = work[0, leg] - dq * count
            q = 0
            r = 0
            for _ in range(count):
                q += dq
                r += dr
                if r >= count:
                    r -= count
                    q += 1
                out[k] = a + sign * (q + 1 if 2 * r >= count else q)
                k += 1
        a = b


@njit(**_JIT)
def bar_path(o: int, h: int, lo: int, c: int, random_order: bool, key_path: np.uint64, bar: int,
             out: np.ndarray, work: np.ndarray, raw: np.ndarray) -> None:
    """The path of bar ``bar`` (the symbol's own index) into ``out``: its coin is draw 0 of the
    ``path`` stream; what the quotes and the klines of that bar both follow."""
    first = low_first(o, h, lo, random_order, uniform(key_path, bar, 0))
    fill_path(o, h, lo, c, first, out, work, raw)


# ---------------------------------------------------------------------------------------------
# Quote blocks
# ---------------------------------------------------------------------------------------------


@njit(**_JIT)
def fill_quote_block(g0: int, steps: int, t0: int, interval_ms: int, jitter: bool, random_order: bool,
                     start: np.ndarray, n_bars: np.ndarray, offset: np.ndarray,
                     o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                     base_lots: np.ndarray, spread: np.ndarray, keys: np.ndarray,
                     stamp: np.ndarray, bid: np.ndarray, ask: np.ndarray,
                     bid_lots: np.ndarray, ask_lots: np.ndarray) -> None:
    """Steps ``[g0, g0 + stamp.shape[1])`` of every symbol into the ``[symbols, steps]`` outputs.

    Symbol ``i``'s bars are rows ``start[i] .. start[i] + n_bars[i]`` of the concatenated bar
    arrays (ticks, lots); its first bar is global bar ``offset[i]``; ``keys[i]`` its stream keys
    in ``STREAMS`` order. Where a symbol has no bar, ``stamp`` is -1 and the rest 0. Step ``k``
    of bar ``j``: bid = max(1, path[k] - spread // 2), ask = bid + spread, sizes
    max(1, int(base * (0.5 + u))), stamp ``open + k * interval // steps`` plus ``int(u * width)``
    (width: to the next step's time) when jittered and the width exceeds 1 ms.

    Two passes per symbol: bar by bar the prices (a path per bar), then one flat loop over the
    block's steps for the draws, which the compiler can vectorise (the draws are pure functions
    of (bar, step), nothing carries from one step to the next).
    """
    n_sym, n = stamp.shape
    path = np.empty(steps, dtype=np.int64)
    work = np.empty((3, 3), dtype=np.int64)
    raw = np.empty(3, dtype=np.float64)
    step_ms = np.empty(steps + 1, dtype=np.int64)  # offset of step k in its bar; [steps] = interval
    for k in range(steps + 1):
        step_ms[k] = (k * interval_ms) // steps
    # per step of the block, shared by every symbol: its global bar, step in the bar, time, width
    bar_of = np.empty(n, dtype=np.int64)
    k_of = np.empty(n, dtype=np.int64)
    ms_of = np.empty(n, dtype=np.int64)
    width_of = np.empty(n, dtype=np.int64)
    bar = g0 // steps
    k = g0 - bar * steps
    for t in range(n):
        bar_of[t] = bar
        k_of[t] = k
        ms_of[t] = t0 + bar * interval_ms + step_ms[k]
        width = step_ms[k + 1] - step_ms[k]
        width_of[t] = width if jitter and width > 1 else 0
        k += 1
        if k == steps:
            k = 0
            bar += 1
    base_of = np.empty(n, dtype=np.float64)
    for i in range(n_sym):
        key_path, key_lots, key_stamps = keys[i, 0], keys[i, 1], keys[i, 2]
        st, bd, ak, bl, al = stamp[i], bid[i], ask[i], bid_lots[i], ask_lots[i]
        # the block's steps where symbol i has a bar: [ta, tb)
        ta = min(n, max(0, offset[i] * steps - g0))
        tb = max(ta, min(n, (offset[i] + n_bars[i]) * steps - g0))
        for t in range(0, ta):
            st[t] = -1
            bd[t] = ak[t] = bl[t] = al[t] = 0
        for t in range(tb, n):
            st[t] = -1
            bd[t] = ak[t] = bl[t] = al[t] = 0
        t = ta
        while t < tb:  # prices, bar by bar
            j = bar_of[t] - offset[i]
            todo = min(steps - k_of[t], tb - t)
            r = start[i] + j
            bar_path(o[r], h[r], lo[r], c[r], random_order, key_path, j, path, work, raw)
            sp = spread[r]
            half = sp // 2
            base = float(base_lots[r])
            k0 = k_of[t]
            for x in range(todo):
                b = path[k0 + x] - half
                if b < 1:
                    b = 1
                bd[t + x] = b
                ak[t + x] = b + sp
                base_of[t + x] = base
            t += todo
        off = offset[i]
        for t in range(ta, tb):  # the draws
            j = bar_of[t] - off
            kk = k_of[t]
            q = int(base_of[t] * (0.5 + uniform(key_lots, j, 2 * kk)))
            bl[t] = q if q > 1 else 1
            q = int(base_of[t] * (0.5 + uniform(key_lots, j, 2 * kk + 1)))
            al[t] = q if q > 1 else 1
            st[t] = ms_of[t] + int(uniform(key_stamps, j, kk) * width_of[t])


@njit(**_JIT)
def block_events(g0: int, uid_base: int, stamp: np.ndarray, bid: np.ndarray, ask: np.ndarray,
                 bid_lots: np.ndarray, ask_lots: np.ndarray) -> np.ndarray:
    """The block as ``QuoteTick`` rows ``[symbol, stamp, bid, ask, bid lots, ask lots, update id]``
    in stream order: step by step, within a step by stamp, ties by symbol index."""
    n_sym, n = stamp.shape
    count = 0
    for i in range(n_sym):
        for t in range(n):
            if stamp[i, t] >= 0:
                count += 1
    out = np.empty((count, 7), dtype=np.int64)
    order = np.empty(n_sym, dtype=np.int64)
    row = 0
    for t in range(n):
        m = 0
        for i in range(n_sym):  # insertion sort by stamp; equal stamps keep the index order
            ts = stamp[i, t]
            if ts < 0:
                continue
            p = m
            while p > 0 and stamp[order[p - 1], t] > ts:
                order[p] = order[p - 1]
                p -= 1
            order[p] = i
            m += 1
        for p in range(m):
            i = order[p]
            out[row, 0] = i
            out[row, 1] = stamp[i, t]
            out[row, 2] = bid[i, t]
            out[row, 3] = ask[i, t]
            out[row, 4] = bid_lots[i, t]
            out[row, 5] = ask_lots[i, t]
            out[row, 6] = uid_base + g0 + t
            row += 1
    return out


# ---------------------------------------------------------------------------------------------
# Recorded decimal text -> integer units
# ---------------------------------------------------------------------------------------------


@njit(**_JIT)
def parse_scaled(text: np.ndarray, decimals: int, values: np.ndarray, bad: np.ndarray) -> None:
    """Parse ``values.shape[0]`` newline-separated decimals (ASCII bytes ``text``) as integers of
    ``10**-decimals``, exactly. ``bad[n]`` marks a field this cannot take exactly (more significant
    decimals, an exponent, too many digits, anything else): the caller converts those with
    ``Decimal``."""
    pos = 0
    size = text.shape[0]
    for n in range(values.shape[0]):
        negative = False
        if pos < size and text[pos] == 45:  # '-'
            negative = True
            pos += 1
        acc = 0
        digits = 0  # significant digits so far (int64 holds 18)
        frac = 0
        seen_dot = False
        any_digit = False
        ok = True
        while pos < size and text[pos] != 10:  # '\n'
            ch = text[pos]
            pos += 1
            if ch == 46 and not seen_dot:  # '.'
                seen_dot = True
            elif 48 <= ch <= 57:
                any_digit = True
                if seen_dot and frac >= decimals:
                    if ch != 48:  # a significant digit finer than the unit
                        ok = False
                    continue
                if seen_dot:
                    frac += 1
                acc = acc * 10 + (ch - 48)
                if acc > 0:
                    digits += 1
            else:
                ok = False
        pos += 1  # past the newline
        if acc > 0:
            digits += decimals - frac
        for _ in range(decimals - frac):
            acc *= 10
        if not ok or not any_digit or digits > 17:
            bad[n] = True
            values[n] = 0
        else:
            bad[n] = False
            values[n] = -acc if negative else acc
