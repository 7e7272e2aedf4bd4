"""Numba kernels of the signal path: rolling Z (batch and streaming), OLS, half-life, ADF / EG.

Pure numeric functions only: they take and return numpy arrays or scalars and keep no state of
their own, so the stateful classes (``signals.spread``, ``signals.generator``) stay apart and
every number here can be checked against a reference (pandas rolling, statsmodels OLS/adfuller/
coint) in the tests. Nothing here imports pandas or statsmodels.

Numerical stability, the one thing that matters here
-----------------------------------------------------
A rolling variance from running sums ``sum(x)``, ``sum(x**2)`` loses every digit on raw BTC
prices (1e5) with a spread std of 1e-2, and an add/remove Welford update (what pandas does)
drifts: pandas' own ``rolling(N).std()`` is off by up to ~7e-8 relative on the bundled log-BTC
5m series and by 1.5e-7 after 1e6 updates (checked against 50-digit arithmetic in the tests).
Both Z kernels therefore keep *shifted* sums ``S1 = sum(x - ref)``, ``S2 = sum((x - ref)**2)``
around a reference ``ref`` near the window mean, re-taken exactly from the raw values every few
windows, so rounding error never accumulates past one re-take: no drift however long the
stream runs, ~1e-12 relative on the bundled series. The streaming window (ring buffer of
N-1 bars) re-centres ``ref`` on the exact mean and recomputes its sums (two-pass) every N-1
pushes -- O(N) once per N-1 pushes, O(1) amortised -- and earlier when its rounding bound
``eps * (S2 + sum of d**2 moved since the last recompute)`` exceeds ``1e4 * eps`` of the window's
sum of squared deviations: after a spike or a level jump, whose residue would otherwise swamp a
small variance once it has left. The batch kernel works in blocks of 4N outputs, each started
from exact sums, and redoes exactly any output whose variance is within 1e10 of its error bound.

Conventions that match pandas ``(s - s.rolling(N).mean()) / s.rolling(N).std()``: sample std
(ddof = 1), NaN until the window is full, NaN for any window holding a non-finite value, and a
window of N identical values has std exactly 0. Where pandas would divide by that zero (giving
NaN or +-inf) these kernels return NaN: a flat window carries no signal either way.

Streaming window state (three arrays, created by :func:`window_new`)
--------------------------------------------------------------------
``buf``     float64[N-1]  ring of the last N-1 completed bar values
``fstate``  float64[6]    ref, S1, S2, last pushed value, constant-run value (NaN if none),
                          squared deviations added/removed since the last recompute
``istate``  int64[5]      capacity N-1, count, head, pushes since recompute, identical-run length
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# fstate / istate slots (plain ints: numba folds module-level int constants)
F_REF, F_S1, F_S2, F_LAST, F_CONST, F_MASS = 0, 1, 2, 3, 4, 5
I_CAP, I_COUNT, I_HEAD, I_SINCE, I_RUN = 0, 1, 2, 3, 4

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


# ---------------------------------------------------------------------------------------------
# Batch rolling Z
# ---------------------------------------------------------------------------------------------


_EXP_MASK = np.uint64(0x7FF0000000000000)
_EPS = 2.220446049250313e-16
# streaming: recompute early once the rounding bound eps * (S2 + moved mass) could exceed
# 1e4 * eps (~2e-12) of the window's sum of squares
_RECOMPUTE_RATIO = 1e4
# batch: an output is redone exactly when its sum of squares is below 1e10 x its error bound
_SPIKE_K = 2.0 * _EPS * 1e10


@njit(**_JIT)
def all_finite(x: np.ndarray) -> bool:
    """True when no value is NaN or +-inf (integer test on the exponent bits: vectorises)."""
    bits = x.view(np.uint64)
    bad = 0
    for k in range(bits.shape[0]):
        bad |= (bits[k] & _EXP_MASK) == _EXP_MASK
    return bad == 0


@njit(**_JIT)
def _shifted_sums(x: np.ndarray, lo: int, hi: int, ref: float) -> tuple[float, float, float]:
    """``(sum(x - ref), sum((x - ref)**2), max((x - ref)**2))`` over ``x[lo:hi]``.

    Four independent accumulators: the loop is bound by add latency otherwise.
    """
    s10 = s11 = s12 = s13 = 0.0
    s20 = s21 = s22 = s23 = 0.0
    q0 = q1 = q2 = q3 = 0.0
    k = lo
    while k + 4 <= hi:
        d0 = x[k] - ref
        d1 = x[k + 1] - ref
        d2 = x[k + 2] - ref
        d3 = x[k + 3] - ref
        s10 += d0
        s11 += d1
        s12 += d2
        s13 += d3
        e0 = d0 * d0
        e1 = d1 * d1
        e2 = d2 * d2
        e3 = d3 * d3
        s20 += e0
        s21 += e1
        s22 += e2
        s23 += e3
        q0 = max(q0, e0)
        q1 = max(q1, e1)
        q2 = max(q2, e2)
        q3 = max(q3, e3)
        k += 4
    while k < hi:
        d0 = x[k] - ref
        s10 += d0
        e0 = d0 * d0
        s20 += e0
        q0 = max(q0, e0)
        k += 1
    return (s10 + s11) + (s12 + s13), (s20 + s21) + (s22 + s23), max(max(q0, q1), max(q2, q3))


@njit(**_JIT)
def _exact_z(x: np.ndarray, i: int, window: int) -> float:
    """Two-pass Z of the window ending at ``i``; NaN for a flat window (pandas: 0/0)."""
    lo = i - window + 1
    if (x[lo:i + 1] == x[i]).all():
        return math.nan
    ref = x[lo:i + 1].sum() / window
    s1, s2, _ = _shifted_sums(x, lo, i + 1, ref)
    md = s1 / window
    var = (s2 - s1 * md) / (window - 1)
    return (x[i] - ref - md) / math.sqrt(var) if var > 0.0 else math.nan


@njit(**_JIT)
def _zscore_block(x: np.ndarray, pos: int, stop: int, window: int, ref: float, out: np.ndarray,
                  mdb: np.ndarray, ssqb: np.ndarray) -> float:
    """Z for outputs ``pos..stop-1``; returns the window mean at ``stop-1`` (next block's ref).

    The block starts from sums taken exactly from the raw values around ``ref`` (the previous
    block's last mean, so within one block's drift of this window's mean: no error carries
    over from block to block). Phase 1 (sequential) slides them and stores mean offset and sum
    of squared deviations; phase 2 (branch-free, so it vectorises) turns those into Z.
    The rounding error of a slid S2 after j updates is at most ~``2 (j + window) eps max d**2``;
    an output whose sum of squared deviations is not 1e10 times that -- a flat window, or one
    right after a spike left it -- is redone exactly by :func:`_exact_z`, so Z keeps ~10 digits
    in the worst case. On the bundled real data this never triggers.
    """
    inv_n = 1.0 / window
    inv_nm1 = 1.0 / (window - 1)
    s1, s2, qmax = _shifted_sums(x, pos - window + 1, pos + 1, ref)
    md = s1 * inv_n
    ssq = s2 - s1 * md
    mdb[0] = md
    ssqb[0] = ssq
    min_ssq = ssq
    m = stop - pos
    for j in range(1, m):
        i = pos + j
        d_in = x[i] - ref
        d_out = x[i - window] - ref
        q_in = d_in * d_in
        s1 += d_in - d_out
        s2 += q_in - d_out * d_out
        qmax = max(qmax, q_in)
        md = s1 * inv_n
        ssq = s2 - s1 * md
        min_ssq = min(min_ssq, ssq)
        mdb[j] = md
        ssqb[j] = ssq
    for j in range(m):
        out[pos + j] = (x[pos + j] - ref - mdb[j]) / math.sqrt(ssqb[j] * inv_nm1)
    # block-level screen (S2 <= window * qmax bounds both tests); exact per-output test inside
    if min_ssq <= max(8.0 * window * window * _EPS, _SPIKE_K * (m + window)) * qmax:
        _redo_flagged(x, pos, stop, window, ref, out, mdb, ssqb)
    return ref + s1 * inv_n


@njit(**_JIT)
def _redo_flagged(x: np.ndarray, pos: int, stop: int, window: int, ref: float, out: np.ndarray,
                  mdb: np.ndarray, ssqb: np.ndarray) -> None:
    """Recompute exactly the outputs of a block that :func:`_zscore_block` flagged (rare)."""
    flat_tol = 8.0 * window * _EPS  # rounding level of S2 itself: a flat window
    qmax = 0.0
    for k in range(pos - window + 1, pos + 1):
        qmax = max(qmax, (x[k] - ref) * (x[k] - ref))
    for j in range(stop - pos):
        i = pos + j
        qmax = max(qmax, (x[i] - ref) * (x[i] - ref))
        s2 = ssqb[j] + mdb[j] * mdb[j] * window
        if ssqb[j] <= flat_tol * s2 or ssqb[j] <= _SPIKE_K * (j + window) * qmax:
            out[i] = _exact_z(x, i, window)


@njit(**_JIT)
def _zscore_range(x: np.ndarray, lo: int, hi: int, window: int, out: np.ndarray) -> None:
    """Outputs ``lo..hi-1`` of the rolling Z; ``x[lo - window + 1:hi]`` must be finite.

    Blocks of ``4 * window`` outputs. The first block's ref is an exact two-pass mean; each
    later block re-takes its sums from the raw values around the previous block's final mean.
    Block length trades speed for digits: 2N gives ~3e-12, 4N ~1e-11, 8N ~4e-11 worst-case
    relative error on the bundled series (N = 3..500); 4N is ~15% faster than 2N.
    """
    if lo >= hi:
        return
    block = 4 * window
    mdb = np.empty(block)
    ssqb = np.empty(block)
    first = lo - window + 1
    acc = 0.0
    for k in range(first, lo + 1):
        acc += x[k]
    ref = acc / window
    ref += _shifted_sums(x, first, lo + 1, ref)[0] / window
    pos = lo
    while pos < hi:
        block_end = min(pos + block, hi)
        ref = _zscore_block(x, pos, block_end, window, ref, out, mdb, ssqb)
        pos = block_end


@njit(**_JIT)
def _zscore_run(x: np.ndarray, start: int, stop: int, window: int, out: np.ndarray) -> None:
    """Rolling Z over the all-finite run ``x[start:stop]`` (NaN for its first window-1 values)."""
    first = min(start + window - 1, stop)
    out[start:first] = math.nan
    _zscore_range(x, first, stop, window, out)


@njit(**_JIT)
def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """Rolling Z of a bar series: pandas ``(s - s.rolling(N).mean()) / s.rolling(N).std()``.

    NaN until the window is full and for every window that holds a NaN or +-inf (pandas gives
    NaN there too, or +-inf for an infinite value: a non-finite bar is treated as missing).
    Single thread, ~250-330M bars/s for N = 60 on the dev box (``bench/bench_signals.py``).

    >>> rolling_zscore(np.array([1.0, 2.0, 4.0, 8.0]), 3)[2:].round(6).tolist()
    [1.091089, 1.091089]
    """
    if window < 2:
        raise ValueError("window must be >= 2 (a sample std needs two values)")
    n = x.shape[0]
    out = np.empty(n)
    if all_finite(x):
        _zscore_run(x, 0, n, window, out)
        return out
    out[:] = math.nan
    i = 0
    while i < n:
        if not math.isfinite(x[i]):
            i += 1
            continue
        j = i + 1
        while j < n and math.isfinite(x[j]):
            j += 1
        _zscore_run(x, i, j, window, out)
        i = j
    return out


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def rolling_zscore_parallel(x: np.ndarray, window: int, chunks: int) -> np.ndarray:
    """:func:`rolling_zscore` split into ``chunks`` independent ranges run on numba's threads.

    Each chunk starts from its own exact window, so the result equals the serial one to
    rounding. For all-finite input (anything else falls back to the serial kernel); worth it
    from ~1e5 bars. Same values, so the tests cover it with the serial reference.
    """
    if window < 2:
        raise ValueError("window must be >= 2 (a sample std needs two values)")
    n = x.shape[0]
    if not all_finite(x) or chunks <= 1 or n < 2 * chunks * window:
        return rolling_zscore(x, window)
    out = np.empty(n)
    first = window - 1
    out[:first] = math.nan
    span = (n - first + chunks - 1) // chunks
    for c in prange(chunks):
        lo = first + c * span
        _zscore_range(x, lo, min(lo + span, n), window, out)
    return out


# ---------------------------------------------------------------------------------------------
# Streaming window: push completed bars, query Z of a candidate current value in O(1)
# ---------------------------------------------------------------------------------------------


def window_new(window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh state for a streaming window of ``window`` bars (N-1 completed + the current one)."""
    if window < 3:
        raise ValueError("window must be >= 3 bars")
    buf = np.zeros(window - 1)
    fstate = np.zeros(6)
    fstate[F_CONST] = np.nan
    istate = np.zeros(5, dtype=np.int64)
    istate[I_CAP] = window - 1
    return buf, fstate, istate


@njit(**_JIT)
def window_reset(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray) -> None:
    """Empty the window (after a gap longer than the window, or before a new warm-up)."""
    buf[:] = 0.0
    fstate[:] = 0.0
    fstate[F_CONST] = math.nan
    cap = istate[I_CAP]
    istate[:] = 0
    istate[I_CAP] = cap


@njit(**_JIT)
def window_recompute(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray) -> None:
    """Recentre ``ref`` on the exact window mean and recompute the shifted sums (two-pass)."""
    count = istate[I_COUNT]
    istate[I_SINCE] = 0
    fstate[F_MASS] = 0.0
    if count == 0:
        fstate[F_S1] = 0.0
        fstate[F_S2] = 0.0
        return
    ref = buf[:count].sum() / count
    s1, s2, _ = _shifted_sums(buf, 0, count, ref)
    fstate[F_REF] = ref
    fstate[F_S1] = s1
    fstate[F_S2] = s2


@njit(**_JIT)
def window_push(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray, value: float) -> None:
    """Append one completed bar value; the oldest leaves once N-1 are held. O(1) amortised.

    The caller guarantees ``value`` is finite (the spread of two validated positive mids).
    """
    cap = istate[I_CAP]
    count = istate[I_COUNT]
    head = istate[I_HEAD]
    if count == 0:
        fstate[F_REF] = value
        fstate[F_S1] = 0.0
        fstate[F_S2] = 0.0
    ref = fstate[F_REF]
    d_in = value - ref
    q_in = d_in * d_in
    if count == cap:
        d_out = buf[head] - ref
        q_out = d_out * d_out
        fstate[F_S1] += d_in - d_out
        fstate[F_S2] += q_in - q_out
        fstate[F_MASS] += q_in + q_out
    else:
        fstate[F_S1] += d_in
        fstate[F_S2] += q_in
        fstate[F_MASS] += q_in
        count += 1
        istate[I_COUNT] = count
    buf[head] = value
    head += 1
    if head == cap:
        head = 0
    istate[I_HEAD] = head
    if count > 1 and value == fstate[F_LAST]:
        istate[I_RUN] += 1
    else:
        istate[I_RUN] = 1
    fstate[F_LAST] = value
    # a current value equal to this one would make the whole window flat
    fstate[F_CONST] = value if istate[I_RUN] >= cap else math.nan
    istate[I_SINCE] += 1
    s1 = fstate[F_S1]
    s2 = fstate[F_S2]
    ssq = s2 - s1 * s1 / count
    if istate[I_SINCE] >= cap or s2 + fstate[F_MASS] > _RECOMPUTE_RATIO * ssq:
        # buf[:count] is the window in some rotation: the sums do not care about order
        window_recompute(buf, fstate, istate)


@njit(**_JIT)
def window_push_n(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray, value: float, times: int) -> None:
    """Push the same value ``times`` times (bars with no quote carry the last spread forward)."""
    for _ in range(times):
        window_push(buf, fstate, istate, value)


@njit(**_JIT)
def window_query(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray, value: float) -> tuple[float, float, float]:
    """``(z, mean, std)`` of the last N-1 completed bars plus the candidate ``value``. O(1).

    NaNs until N-1 bars are held. Does not change the state.
    """
    cap = istate[I_CAP]
    if istate[I_COUNT] < cap:
        return math.nan, math.nan, math.nan
    n = cap + 1.0
    ref = fstate[F_REF]
    d = value - ref
    s1 = fstate[F_S1] + d
    s2 = fstate[F_S2] + d * d
    md = s1 / n
    var = (s2 - s1 * md) / cap
    if value == fstate[F_CONST] or not var > 0.0:
        return math.nan, value if value == fstate[F_CONST] else ref + md, 0.0
    std = math.sqrt(var)
    return (d - md) / std, ref + md, std


@njit(**_JIT)
def stream_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """Z of every value of ``x`` as the live window sees it at its bar close: query, then push.

    The streaming path end to end, in one compiled loop: used by tests over millions of updates
    and as a reference for the Python-level spread calculator. Requires finite ``x``.
    """
    buf = np.zeros(window - 1)
    fstate = np.zeros(6)
    fstate[F_CONST] = math.nan
    istate = np.zeros(5, dtype=np.int64)
    istate[I_CAP] = window - 1
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        out[i] = window_query(buf, fstate, istate, x[i])[0]
        window_push(buf, fstate, istate, x[i])
    return out


# ---------------------------------------------------------------------------------------------
# OLS, half-life, ADF / Engle-Granger
# ---------------------------------------------------------------------------------------------


@njit(**_JIT)
def ols_hedge_ratio(x: np.ndarray, y: np.ndarray, intercept: bool) -> tuple[float, float]:
    """``(beta, alpha)`` of the OLS fit ``y = alpha + beta * x`` (``alpha`` 0 without intercept).

    X = leg_a, Y = leg_b, so the spread is ``y - beta * x``. With an intercept the sums are
    taken around the exact means (two-pass), which keeps full precision on raw prices.
    """
    n = x.shape[0]
    if n != y.shape[0] or n < 2:
        raise ValueError("x and y need the same length >= 2")
    if not intercept:
        return (x * y).sum() / (x * x).sum(), 0.0
    mx = x.mean()
    my = y.mean()
    mx += (x - mx).sum() / n  # second pass: the mean to the last bit
    my += (y - my).sum() / n
    dx = x - mx
    beta = (dx * (y - my)).sum() / (dx * dx).sum()
    return beta, my - beta * mx


@njit(**_JIT)
def ar1_coefficients(spread: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of the OLS fit ``ds_t = a + b * s_{t-1}`` (AR(1) in error-correction form).

    Equivalent to ``s_t = a + phi * s_{t-1}`` with ``phi = 1 + b``: statsmodels' ``AutoReg(s,
    lags=1, trend="c")`` estimates the same ``a`` and ``phi``.
    """
    n = spread.shape[0]
    if n < 3:
        raise ValueError("need at least 3 values")
    lagged = spread[:-1]
    diff = spread[1:] - spread[:-1]
    b, a = ols_hedge_ratio(lagged, diff, True)
    return a, b


@njit(**_JIT)
def half_life(spread: np.ndarray) -> float:
    """Half-life of mean reversion in bars: ``-ln 2 / ln(1 + b)`` of :func:`ar1_coefficients`.

    Why this form and not ``-ln 2 / b``: for the discrete AR(1) ``s_t = a + phi s_{t-1}`` a
    deviation decays as ``phi**k``, so it halves after exactly ``ln 0.5 / ln phi`` bars; ``-ln2/b``
    is its first-order approximation (off by ~b/2 relative, 5% at b = -0.1). This is also what
    ``python main.py scan`` (research/scan.py) uses for ``half_life_candles``.
    ``+inf`` when ``phi >= 1`` (no mean reversion). For ``-1 < phi < 0`` (overshooting every bar)
    the half-life of the deviation's magnitude ``-ln 2 / ln|phi|``; ``phi <= -1`` is explosive:
    ``+inf``. ``phi == 0`` gives 0.
    """
    b = ar1_coefficients(spread)[1]
    phi = 1.0 + b
    if phi >= 1.0 or phi <= -1.0:
        return math.inf
    if phi == 0.0:
        return 0.0
    return -math.log(2.0) / math.log(abs(phi))


@njit(**_JIT)
def _householder_ols_t(design: np.ndarray, target: np.ndarray, df_extra: int) -> float:
    """t-statistic of the first coefficient of OLS ``target ~ design`` (Householder QR).

    ``df_extra`` counts regressors removed before the call (a constant partialled out by
    centring, Frisch-Waugh): residual degrees of freedom are ``nobs - p - df_extra``.
    """
    nobs, p = design.shape
    a = np.empty((nobs, p + 1))  # the target rides along as column p: it receives Q'y
    a[:, :p] = design
    a[:, p] = target
    for j in range(p):
        norm = math.sqrt((a[j:, j] * a[j:, j]).sum())
        if norm == 0.0:
            return math.nan
        alpha = -norm if a[j, j] >= 0.0 else norm
        v0 = a[j, j] - alpha  # v = [v0, a[j+1:, j]]; H = I - 2 v v' / (v'v)
        vtv = v0 * v0 + (a[j + 1:, j] * a[j + 1:, j]).sum()
        if vtv > 0.0:
            for k in range(j + 1, p + 1):
                dot = v0 * a[j, k]
                for i in range(j + 1, nobs):
                    dot += a[i, j] * a[i, k]
                f = 2.0 * dot / vtv
                a[j, k] -= f * v0
                for i in range(j + 1, nobs):
                    a[i, k] -= f * a[i, j]
        a[j, j] = alpha
    qty = a[:, p]
    # coefficients: R beta = (Q'y)[:p]
    beta = np.zeros(p)
    for j in range(p - 1, -1, -1):
        acc = qty[j]
        for k in range(j + 1, p):
            acc -= a[j, k] * beta[k]
        beta[j] = acc / a[j, j]
    resid = target.copy()  # explicit loop, not design @ beta: that would need scipy's BLAS
    for k in range(p):
        resid -= design[:, k] * beta[k]
    ssr = (resid * resid).sum()
    df = nobs - p - df_extra
    if df <= 0:
        return math.nan
    # (X'X)^-1[0,0] = ||first row of R^-1||^2; w solves R' w = e_0 (forward substitution)
    w = np.zeros(p)
    for j in range(p):
        acc = 1.0 if j == 0 else 0.0
        for k in range(j):
            acc -= a[k, j] * w[k]
        w[j] = acc / a[j, j]
    return beta[0] / math.sqrt(ssr / df * (w * w).sum())


@njit(**_JIT)
def adf_stat(x: np.ndarray, lags: int, constant: bool) -> float:
    """Augmented Dickey-Fuller t-statistic with a fixed number of lagged differences.

    Equals statsmodels ``adfuller(x, maxlag=lags, autolag=None, regression="c" if constant else
    "n")[0]``: ``dx_t = gamma x_{t-1} + sum_{i=1..lags} d_i dx_{t-i} (+ c)`` over the
    ``len(x) - 1 - lags`` observations statsmodels uses, statistic = t of gamma. With a constant
    the columns are centred instead (Frisch-Waugh: same gamma, same residuals, one more degree
    of freedom used), which keeps the QR well conditioned on raw price levels.
    Raises ValueError like statsmodels for a constant series or ``lags`` too large.
    """
    n = x.shape[0]
    ntrend = 1 if constant else 0
    if lags < 0 or lags > n // 2 - ntrend - 1:
        raise ValueError("lags must be in [0, nobs/2 - 1 - ntrend]")
    if x.max() == x.min():
        raise ValueError("Invalid input, x is constant")
    dx = x[1:] - x[:-1]
    nobs = n - 1 - lags
    p = lags + 1
    design = np.empty((nobs, p))
    target = np.empty(nobs)
    for r in range(nobs):
        t = lags + r  # index into dx of the current difference
        target[r] = dx[t]
        design[r, 0] = x[t]  # x_{t-1} in levels (dx[t] = x[t+1] - x[t])
        for i in range(1, p):
            design[r, i] = dx[t - i]
    if constant:
        for k in range(p):
            design[:, k] -= design[:, k].sum() / nobs
        target -= target.sum() / nobs
    return _householder_ols_t(design, target, ntrend)


@njit(**_JIT)
def engle_granger(x: np.ndarray, y: np.ndarray, lags: int) -> tuple[float, float, float]:
    """``(stat, beta, alpha)``: Engle-Granger cointegration t-statistic of ``y`` on ``x``.

    Step 1 ``y = alpha + beta x`` by OLS; step 2 ADF without constant on its residuals with
    ``lags`` lagged differences. The statistic equals statsmodels ``coint(y, x, trend="c",
    maxlag=lags, autolag=None)[0]``, including ``-inf`` when the two series are collinear
    (R^2 >= 1 - 100 sqrt(eps)). P-values need MacKinnon's response-surface tables and are
    left to research tooling (statsmodels) on purpose.
    """
    beta, alpha = ols_hedge_ratio(x, y, True)
    resid = y - alpha - beta * x
    dy = y - y.mean()
    ssr = (resid * resid).sum()
    sst = (dy * dy).sum()
    if sst == 0.0 or 1.0 - ssr / sst >= 1.0 - 100.0 * math.sqrt(_EPS):
        return -math.inf, beta, alpha
    return adf_stat(resid, lags, False), beta, alpha


# ---------------------------------------------------------------------------------------------
# Streaming pair window: rolling OLS hedge ratio and the residual's Z (hedge_ratio_mode rolling_ols)
# ---------------------------------------------------------------------------------------------
#
# State (created by :func:`pair_window_new`), the bivariate twin of the streaming window above:
# ``buf``     float64[2, N-1]  rings of the last N-1 completed bars' x = f(X) and y = f(Y)
# ``fstate``  float64[9]       refs rx, ry; shifted sums Sx, Sy, Sxx, Sxy, Syy (around the refs);
#                              squared deviations of x and of y moved since the last recompute
# ``istate``  int64[4]         capacity N-1, count, head, pushes since recompute
# Same scheme as the Z window: the refs are re-centred on the exact means and the sums recomputed
# two-pass every N-1 pushes (or earlier when a leg's rounding bound grows past 1e4 eps of its
# sum of squared deviations), so nothing drifts however long the stream runs.

P_RX, P_RY, P_SX, P_SY, P_SXX, P_SXY, P_SYY, P_MX, P_MY = 0, 1, 2, 3, 4, 5, 6, 7, 8
#: below this 1 - R^2 the O(1) query refits the window two-pass (:func:`pair_window_exact`)
ILL_FIT = 1e-3
#: a residual sum of squares below this fraction of Y's (std below 1e-10 of Y's) is a perfect fit
PERFECT_FIT = 1e-20


def pair_window_new(window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fresh state for a streaming pair window of ``window`` bars (N-1 completed + the current one)."""
    if window < 3:
        raise ValueError("window must be >= 3 bars")
    istate = np.zeros(4, dtype=np.int64)
    istate[I_CAP] = window - 1
    return np.zeros((2, window - 1)), np.zeros(9), istate


@njit(**_JIT)
def pair_window_reset(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray) -> None:
    """Empty the pair window."""
    buf[:, :] = 0.0
    fstate[:] = 0.0
    cap = istate[I_CAP]
    istate[:] = 0
    istate[I_CAP] = cap


@njit(**_JIT)
def pair_window_recompute(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray) -> None:
    """Re-centre both refs on the exact means and recompute the five shifted sums (two-pass)."""
    count = istate[I_COUNT]
    istate[I_SINCE] = 0
    fstate[P_MX] = 0.0
    fstate[P_MY] = 0.0
    if count == 0:
        fstate[P_SX:P_SYY + 1] = 0.0
        return
    rx = buf[0, :count].sum() / count
    ry = buf[1, :count].sum() / count
    sx = sy = sxx = sxy = syy = 0.0
    for k in range(count):
        dx = buf[0, k] - rx
        dy = buf[1, k] - ry
        sx += dx
        sy += dy
        sxx += dx * dx
        sxy += dx * dy
        syy += dy * dy
    fstate[P_RX] = rx
    fstate[P_RY] = ry
    fstate[P_SX] = sx
    fstate[P_SY] = sy
    fstate[P_SXX] = sxx
    fstate[P_SXY] = sxy
    fstate[P_SYY] = syy


@njit(**_JIT)
def pair_window_push(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray, x: float, y: float) -> None:
    """Append one completed bar ``(x, y)``; the oldest leaves once N-1 are held. O(1) amortised."""
    cap = istate[I_CAP]
    count = istate[I_COUNT]
    head = istate[I_HEAD]
    if count == 0:
        fstate[:] = 0.0
        fstate[P_RX] = x
        fstate[P_RY] = y
    rx = fstate[P_RX]
    ry = fstate[P_RY]
    dx = x - rx
    dy = y - ry
    if count == cap:
        ox = buf[0, head] - rx
        oy = buf[1, head] - ry
        fstate[P_SX] += dx - ox
        fstate[P_SY] += dy - oy
        fstate[P_SXX] += dx * dx - ox * ox
        fstate[P_SXY] += dx * dy - ox * oy
        fstate[P_SYY] += dy * dy - oy * oy
        fstate[P_MX] += dx * dx + ox * ox
        fstate[P_MY] += dy * dy + oy * oy
    else:
        fstate[P_SX] += dx
        fstate[P_SY] += dy
        fstate[P_SXX] += dx * dx
        fstate[P_SXY] += dx * dy
        fstate[P_SYY] += dy * dy
        fstate[P_MX] += dx * dx
        fstate[P_MY] += dy * dy
        count += 1
        istate[I_COUNT] = count
    buf[0, head] = x
    buf[1, head] = y
    head += 1
    if head == cap:
        head = 0
    istate[I_HEAD] = head
    istate[I_SINCE] += 1
    cxx = fstate[P_SXX] - fstate[P_SX] * fstate[P_SX] / count
    cyy = fstate[P_SYY] - fstate[P_SY] * fstate[P_SY] / count
    if istate[I_SINCE] >= cap or fstate[P_SXX] + fstate[P_MX] > _RECOMPUTE_RATIO * cxx \
            or fstate[P_SYY] + fstate[P_MY] > _RECOMPUTE_RATIO * cyy:
        pair_window_recompute(buf, fstate, istate)


@njit(**_JIT)
def pair_window_query(buf: np.ndarray, fstate: np.ndarray, istate: np.ndarray, x: float,
                      y: float) -> tuple[float, float, float, float, float]:
    """``(beta, alpha, z, mean, std)`` over the last N-1 completed bars plus the candidate ``(x, y)``.

    ``beta = cov(x, y) / var(x)``, ``alpha = mean(y) - beta mean(x)``; the spread ``s = y - beta x``
    with that beta has window mean ``alpha`` and sample (ddof 1) variance
    ``var(y) - 2 beta cov + beta**2 var(x)``: z is the OLS residual's z. NaNs until N-1 bars are
    held; z NaN and std 0 when x or the residual is flat. Does not change the state. O(1).
    (:class:`signals.spread.RollingOLSCalculator` runs the same arithmetic in Python floats.)
    """
    cap = istate[I_CAP]
    if istate[I_COUNT] < cap:
        return math.nan, math.nan, math.nan, math.nan, math.nan
    n = cap + 1.0
    dx = x - fstate[P_RX]
    dy = y - fstate[P_RY]
    sx = fstate[P_SX] + dx
    sy = fstate[P_SY] + dy
    sxx = fstate[P_SXX] + dx * dx
    mx = sx / n
    my = sy / n
    cxx = sxx - sx * mx
    if not cxx > _RECOMPUTE_RATIO * _EPS * sxx:
        return math.nan, math.nan, math.nan, math.nan, 0.0
    cxy = fstate[P_SXY] + dx * dy - sx * my
    syy = fstate[P_SYY] + dy * dy
    cyy = syy - sy * my
    if cyy * cxx - cxy * cxy < ILL_FIT * cyy * cxx:  # R^2 near 1: the sums cancel, refit two-pass
        return pair_window_exact(buf, istate, x, y)
    beta = cxy / cxx
    alpha = fstate[P_RY] + my - beta * (fstate[P_RX] + mx)
    ssr = cyy - beta * cxy
    if not ssr > _RECOMPUTE_RATIO * _EPS * syy:
        return beta, alpha, math.nan, alpha, 0.0
    std = math.sqrt(ssr / cap)
    return beta, alpha, ((dy - my) - beta * (dx - mx)) / std, alpha, std


@njit(**_JIT)
def pair_window_exact(buf: np.ndarray, istate: np.ndarray, x: float,
                      y: float) -> tuple[float, float, float, float, float]:
    """:func:`pair_window_query` from the raw window, two-pass around the exact means. O(N).

    For the rare fit with ``1 - R^2 < ILL_FIT``: there ``ssr = Syy - beta Sxy`` from running sums
    loses up to ``log10(1 / (1 - R^2))`` digits, while the residuals themselves keep them all.
    """
    cap = istate[I_CAP]
    n = cap + 1.0
    mx = x
    my = y
    for k in range(cap):
        mx += buf[0, k]
        my += buf[1, k]
    mx /= n
    my /= n
    cxx = (x - mx) * (x - mx)
    cxy = (x - mx) * (y - my)
    for k in range(cap):
        dx = buf[0, k] - mx
        cxx += dx * dx
        cxy += dx * (buf[1, k] - my)
    if not cxx > 0.0:
        return math.nan, math.nan, math.nan, math.nan, 0.0
    beta = cxy / cxx
    alpha = my - beta * mx
    # centred residuals: y - beta x - alpha would lose the digits a tight fit has; their own mean
    # (0 up to the rounding of mx, my) is taken out too, a shift that is not small next to them
    e = (y - my) - beta * (x - mx)
    ebar = e
    for k in range(cap):
        ebar += (buf[1, k] - my) - beta * (buf[0, k] - mx)
    ebar /= n
    e -= ebar
    ssr = e * e
    for k in range(cap):
        r = (buf[1, k] - my) - beta * (buf[0, k] - mx) - ebar
        ssr += r * r
    ssy = (y - my) * (y - my)
    for k in range(cap):
        ssy += (buf[1, k] - my) * (buf[1, k] - my)
    if not ssr > PERFECT_FIT * ssy:  # a perfect fit: the residual is rounding noise
        return beta, alpha, math.nan, alpha, 0.0
    std = math.sqrt(ssr / cap)
    return beta, alpha, e / std, alpha, std


@njit(**_JIT)
def stream_rolling_ols(x: np.ndarray, y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(beta, z)`` of every bar as the live pair window sees it at its bar close: query, then push.

    The streaming rolling-OLS path in one compiled loop: the tests' bridge to the statsmodels
    reference, and the batch form of the live calculator. Requires finite ``x`` and ``y``.
    """
    buf = np.zeros((2, window - 1))
    fstate = np.zeros(9)
    istate = np.zeros(4, dtype=np.int64)
    istate[I_CAP] = window - 1
    n = x.shape[0]
    betas = np.empty(n)
    zs = np.empty(n)
    for i in range(n):
        q = pair_window_query(buf, fstate, istate, x[i], y[i])
        betas[i] = q[0]
        zs[i] = q[2]
        pair_window_push(buf, fstate, istate, x[i], y[i])
    return betas, zs
