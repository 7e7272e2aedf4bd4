"""Numba kernels of the pair scanner: Engle-Granger and ADF with statsmodels' AIC lag search,
half-life, Hurst exponent, mean crossings, return correlation.

Why not call statsmodels: ``coint`` fits ``maxlag + 1`` OLS models by SVD for every test
(34 fits of 5,448 x 34 on a 1h series, ~0.24 s); a scan of 435 pairs needs ~1,300 tests.
These kernels give the same numbers from one lagged Gram matrix per test:

* every column of the ADF regression is a lag of the same differenced series, so the Gram
  matrix is built from ``maxlag + 1`` dot products plus an O(1) update per entry
  (``sum dx[t-i-1] dx[t-j-1]`` over a window is ``sum dx[t-i] dx[t-j]`` with one row in and one
  row out), not ``(maxlag + 1)**2`` dot products;
* one Cholesky factor of the augmented Gram ``[X y]'[X y]`` gives the residual sum of squares
  of every nested lag model at once (the ``y`` row of the factor is ``Q'y``), so the AIC search
  costs one factorisation;
* the statistic is refitted on the longer sample of the chosen lag, as statsmodels does, from
  the same Gram plus the few extra rows, with the level column last: its t is then the last
  entry of ``Q'y`` over the residual standard error.

What statsmodels ``coint(y, x)`` (trend "c", autolag "aic", maxlag None) does, and this matches:
OLS ``y = a + b x``; residuals e; if R^2 >= 1 - 100 sqrt(eps) the statistic is -inf; otherwise
``adfuller(e, regression="n", autolag="aic")`` with ``maxlag = min(n // 2 - 1,
ceil(12 (n / 100) ** 0.25))``: every lag 0..maxlag fitted on the same last ``n - 1 - maxlag``
differences, AIC ``= nobs log(ssr / nobs) + 2 k`` (+ constants), the smallest (ties: fewer
lags), then the chosen lag refitted on ``n - 1 - lag`` differences and the t of the lagged level
taken. P-values are not computed here: ``research.scan`` passes the statistics to statsmodels'
``mackinnonp`` (response-surface tables, reused rather than copied).

Numerics: the normal equations lose nothing that matters here. Cholesky's error is governed by
the condition of the column-scaled Gram (van der Sluis), and the scaled columns (a spread level
and its lagged differences) are far from collinear; the tests hold every statistic to 1e-8 of
statsmodels on the bundled data. With a constant the level is first shifted by its mean (the
statistic is invariant to it) so that centring the Gram cancels nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numba import njit

from signals import kernels
from signals.kernel_cache import flush_if_dependencies_changed
from signals.kernels import half_life, ols_hedge_ratio

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
_EPS = 2.220446049250313e-16
_COLLINEAR_R2 = 1.0 - 100.0 * math.sqrt(_EPS)  # statsmodels coint: 1 - 100 * SQRTEPS

# Columns of the per-pair result row written by scan_pairs (research.scan reads them by name).
RESULT_FIELDS = (
    "stat_ab", "lag_ab", "beta_ab", "alpha_ab",      # Y = b on X = a, in-sample (head)
    "stat_ba", "lag_ba", "beta_ba", "alpha_ba",      # Y = a on X = b, in-sample
    "direction",                                    # 0: X = a, Y = b; 1: X = b, Y = a (the more negative stat)
    "adf_stat", "adf_lag",                          # ADF with constant of the chosen spread, in-sample
    "half_life", "hurst", "crossings", "correlation",
    "oos_stat", "oos_lag", "oos_beta", "oos_alpha",  # chosen direction, refitted on the tail
)
N_FIELDS = len(RESULT_FIELDS)


@njit(**_JIT)
def default_maxlag(nobs: int, ntrend: int) -> int:
    """statsmodels ``adfuller``'s default maxlag (Schwert's rule, capped by the sample)."""
    maxlag = int(math.ceil(12.0 * math.pow(nobs / 100.0, 0.25)))
    return min(nobs // 2 - ntrend - 1, maxlag)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Dot product, reassociation allowed so it vectorises (changes rounding at 1e-16 level)."""
    acc = 0.0
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


@njit(**_JIT)
def _cholesky_inplace(a: np.ndarray) -> bool:
    """Lower Cholesky factor of the symmetric matrix ``a``, in place (lower triangle).

    False when a pivot is not positive (a rank-deficient design: statsmodels' pinv would
    drop a column; the scan reports NaN instead)."""
    p = a.shape[0]
    for j in range(p):
        d = a[j, j]
        for k in range(j):
            d -= a[j, k] * a[j, k]
        if not d > 0.0:
            return False
        d = math.sqrt(d)
        a[j, j] = d
        for i in range(j + 1, p):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / d
    return True


@njit(**_JIT)
def adf_autolag(z: np.ndarray, maxlag: int, constant: bool) -> tuple[float, int]:
    """``(statistic, used lag)`` of statsmodels ``adfuller(z, maxlag=maxlag, autolag="aic",
    regression="c" if constant else "n")``. NaN statistic for a degenerate design."""
    n = z.shape[0]
    ntrend = 1 if constant else 0
    m = maxlag
    if m < 0 or m > n // 2 - ntrend - 1:
        raise ValueError("maxlag must be in [0, nobs/2 - 1 - ntrend]")
    if z.max() == z.min():
        raise ValueError("Invalid input, x is constant")
    if constant:
        z = z - z.mean()  # invariant under a constant; keeps the centred Gram free of cancellation
    dx = z[1:] - z[:-1]
    s0, e0 = m, n - 2  # window of the AIC search, as indices into dx (inclusive)
    nw = e0 - s0 + 1
    # dd[i, j] = sum_{t in W} dx[t-i] dx[t-j]; lz[j] = sum z[t] dx[t-j]; sd[j] = sum dx[t-j]
    dd = np.empty((m + 1, m + 1))
    lz = np.empty(m + 1)
    sd = np.empty(m + 1)
    head = dx[s0:e0 + 1]
    for j in range(m + 1):
        dd[0, j] = _dot(head, dx[s0 - j:e0 + 1 - j])
    for i in range(m):
        for j in range(i, m):
            dd[i + 1, j + 1] = dd[i, j] - dx[e0 - i] * dx[e0 - j] + dx[s0 - 1 - i] * dx[s0 - 1 - j]
    for i in range(m + 1):
        for j in range(i):
            dd[i, j] = dd[j, i]
    zw = z[s0:e0 + 1]
    lz[0] = _dot(zw, head)
    for j in range(m):
        lz[j + 1] = lz[j] - z[e0] * dx[e0 - j] + z[s0 - 1] * dx[s0 - 1 - j] + dd[1, j + 1]
    zz = _dot(zw, zw)
    sz = zw.sum()
    sd[0] = head.sum()
    for j in range(m):
        sd[j + 1] = sd[j] - dx[e0 - j] + dx[s0 - 1 - j]

    # AIC search: columns [level, d1..dm, y]
    p = m + 2
    a = np.empty((p, p))
    a[0, 0] = zz
    for j in range(1, m + 1):
        a[0, j] = lz[j]
        for i in range(1, m + 1):
            a[i, j] = dd[i, j]
        a[j, m + 1] = dd[j, 0]
    a[0, m + 1] = lz[0]
    a[m + 1, m + 1] = dd[0, 0]
    if constant:
        sums = np.empty(p)
        sums[0] = sz
        sums[1:m + 1] = sd[1:m + 1]
        sums[m + 1] = sd[0]
        for i in range(p):
            for j in range(i, p):
                a[i, j] -= sums[i] * sums[j] / nw
    for i in range(p):
        for j in range(i):
            a[i, j] = a[j, i]
    yy = a[m + 1, m + 1]
    lfac = a.copy()
    if not _cholesky_inplace(lfac[:m + 1, :m + 1]):
        return math.nan, -1
    # the y row of the augmented factor (Q'y), by forward substitution
    yrow = np.empty(m + 1)
    for j in range(m + 1):
        s = lfac[m + 1, j]
        for k in range(j):
            s -= yrow[k] * lfac[j, k]
        yrow[j] = s / lfac[j, j]
    best_aic = math.inf
    best = 0
    ssr = yy
    for q in range(1, m + 2):  # q columns: the level and q - 1 lags
        ssr -= yrow[q - 1] * yrow[q - 1]
        aic = nw * math.log(ssr / nw) + 2.0 * (q + ntrend)
        if aic < best_aic:
            best_aic = aic
            best = q - 1
    b = best

    # Refit with b lags on the n - 1 - b differences; columns [d1..db, level, y]
    p2 = b + 2
    g = np.empty((p2, p2))
    for i in range(b):
        for j in range(b):
            g[i, j] = dd[i + 1, j + 1]
        g[i, b] = lz[i + 1]
        g[i, b + 1] = dd[i + 1, 0]
    g[b, b] = zz
    g[b, b + 1] = lz[0]
    g[b + 1, b + 1] = dd[0, 0]
    sums2 = np.empty(p2)
    sums2[:b] = sd[1:b + 1]
    sums2[b] = sz
    sums2[b + 1] = sd[0]
    row = np.empty(p2)
    for t in range(b, s0):  # the rows the AIC window left out
        for i in range(b):
            row[i] = dx[t - 1 - i]
        row[b] = z[t]
        row[b + 1] = dx[t]
        for i in range(p2):
            sums2[i] += row[i]
            for j in range(i, p2):
                g[i, j] += row[i] * row[j]
    nobs = e0 - b + 1
    if constant:
        for i in range(p2):
            for j in range(i, p2):
                g[i, j] -= sums2[i] * sums2[j] / nobs
    for i in range(p2):
        for j in range(i):
            g[i, j] = g[j, i]
    yy2 = g[b + 1, b + 1]
    if not _cholesky_inplace(g[:b + 1, :b + 1]):
        return math.nan, b
    y2 = np.empty(b + 1)
    for j in range(b + 1):
        s = g[b + 1, j]
        for k in range(j):
            s -= y2[k] * g[j, k]
        y2[j] = s / g[j, j]
    ssr2 = yy2
    for j in range(b + 1):
        ssr2 -= y2[j] * y2[j]
    df = nobs - (b + 1) - ntrend
    if df <= 0 or not ssr2 > 0.0:
        return math.nan, b
    return y2[b] / math.sqrt(ssr2 / df), b


@njit(**_JIT)
def eg_autolag(x: np.ndarray, y: np.ndarray) -> tuple[float, int, float, float]:
    """``(statistic, used lag, beta, alpha)`` of statsmodels ``coint(y, x)`` (its defaults:
    trend "c", autolag "aic"); ``beta``, ``alpha`` of ``y = alpha + beta x``. -inf when the two
    series are (almost) collinear, as statsmodels."""
    beta, alpha = ols_hedge_ratio(x, y, True)
    resid = y - alpha - beta * x
    dy = y - y.mean()
    ssr = _dot(resid, resid)
    sst = _dot(dy, dy)
    if sst == 0.0 or 1.0 - ssr / sst >= _COLLINEAR_R2:
        return -math.inf, -1, beta, alpha
    stat, lag = adf_autolag(resid, default_maxlag(resid.shape[0], 0), False)
    return stat, lag, beta, alpha


@njit(**_JIT)
def hurst_lags(n: int) -> np.ndarray:
    """The lags the Hurst estimate uses: ~20 log-spaced integers from 2 to min(100, n // 4)."""
    top = min(100, n // 4)
    out = np.empty(20, dtype=np.int64)
    count = 0
    for k in range(20):
        lag = int(round(2.0 * math.pow(top / 2.0, k / 19.0)))
        if count == 0 or lag > out[count - 1]:
            out[count] = lag
            count += 1
    return out[:count]


@njit(**_JIT)
def hurst_exponent(s: np.ndarray) -> float:
    """Hurst exponent from the scaling of lagged differences: ``std(s[t+k] - s[t]) ~ k**H``.

    The slope of the OLS fit of log std (ddof 0) on log k over :func:`hurst_lags`. Why this
    estimator: it reads the spread the way the bot trades it (how far it wanders in k bars);
    0.5 is a random walk, below 0.5 mean-reverting. It is shown, not used as a check: on a
    cointegrated spread it adds nothing the Engle-Granger test does not already say.
    """
    lags = hurst_lags(s.shape[0])
    k = lags.shape[0]
    lx = np.empty(k)
    ly = np.empty(k)
    for i in range(k):
        lag = lags[i]
        d = s[lag:] - s[:-lag]
        mu = d.mean()
        c = d - mu
        ly[i] = 0.5 * math.log(_dot(c, c) / d.shape[0])
        lx[i] = math.log(lag)
    slope, _ = ols_hedge_ratio(lx, ly, True)
    return slope


@njit(**_JIT)
def mean_crossings(s: np.ndarray) -> int:
    """How many times ``s`` crosses its mean (sign changes of ``s - mean``, exact zeros skipped):
    a spread that rarely crosses gives few round trips, however good its test statistic."""
    mu = s.mean()
    count = 0
    last = 0
    for v in s:
        d = v - mu
        sign = 1 if d > 0.0 else (-1 if d < 0.0 else 0)
        if sign != 0:
            if last != 0 and sign != last:
                count += 1
            last = sign
    return count


@njit(**_JIT)
def return_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the bar-to-bar changes of two log-price series (levels of two
    trending prices correlate whatever their relation; their returns do not)."""
    rx = x[1:] - x[:-1]
    ry = y[1:] - y[:-1]
    rx = rx - rx.mean()
    ry = ry - ry.mean()
    den = math.sqrt(_dot(rx, rx) * _dot(ry, ry))
    return _dot(rx, ry) / den if den > 0.0 else math.nan


@njit(**_JIT)
def scan_pair(x: np.ndarray, y: np.ndarray, split: int, out: np.ndarray) -> None:
    """Every statistic of one pair into ``out`` (fields :data:`RESULT_FIELDS`).

    ``x``, ``y``: log prices of legs a and b; ``[:split]`` is the in-sample head, ``[split:]``
    the held-out tail. The chosen direction's spread is ``Y - beta X - alpha`` of the head fit.
    """
    xh, yh = x[:split], y[:split]
    s_ab, l_ab, b_ab, a_ab = eg_autolag(xh, yh)
    s_ba, l_ba, b_ba, a_ba = eg_autolag(yh, xh)
    out[0], out[1], out[2], out[3] = s_ab, l_ab, b_ab, a_ab
    out[4], out[5], out[6], out[7] = s_ba, l_ba, b_ba, a_ba
    flip = s_ba < s_ab
    out[8] = 1.0 if flip else 0.0
    if flip:
        xh, yh = yh, xh
        xt, yt = y[split:], x[split:]
        beta, alpha = b_ba, a_ba
    else:
        xt, yt = x[split:], y[split:]
        beta, alpha = b_ab, a_ab
    spread = yh - alpha - beta * xh
    adf, adf_lag = adf_autolag(spread, default_maxlag(split, 1), True)
    out[9], out[10] = adf, adf_lag
    out[11] = half_life(spread)
    out[12] = hurst_exponent(spread)
    out[13] = mean_crossings(spread)
    out[14] = return_correlation(xh, yh)
    s_t, l_t, b_t, a_t = eg_autolag(xt, yt)
    out[15], out[16], out[17], out[18] = s_t, l_t, b_t, a_t


@njit(**_JIT)
def scan_pairs(logp: np.ndarray, ia: np.ndarray, ib: np.ndarray, split: int) -> np.ndarray:
    """:func:`scan_pair` for the pairs ``(ia[k], ib[k])`` of the rows of ``logp`` (symbols x
    bars, C order): one row of :data:`RESULT_FIELDS` per pair."""
    out = np.empty((ia.shape[0], N_FIELDS))
    for k in range(ia.shape[0]):
        scan_pair(logp[ia[k]], logp[ib[k]], split, out[k])
    return out


# The kernels above call signals.kernels (OLS, half-life): a new kernels.py needs a new compile.
flush_if_dependencies_changed(globals(), (Path(kernels.__file__),), name=__name__)
