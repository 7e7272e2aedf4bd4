"""Spread of one pair, sampled into bars, with the live rolling Z of docs/architecture.md, "Signals and sizing".

``SpreadCalculator`` owns four things for one pair: the hedge ratio, the price transform
(``log`` or ``raw``), the bar sampler, and the streaming window of ``signals.kernels``. It knows
nothing about quotes, symbols or signals: ``signals.generator`` validates quotes and keeps the
latest mid of each leg, then calls :meth:`SpreadCalculator.update` with both mids.

Conventions (and why)
---------------------
* Spread ``s = f(Y) - beta * f(X)``, X = leg_a, Y = leg_b, ``f`` = ``math.log`` or identity.
* Bars are buckets of ``bar_seconds`` of *exchange* time: bucket ``k`` covers
  ``[k * bar_ms, (k + 1) * bar_ms)``, the same interval as the exchange's OHLCV candle whose
  open time is ``k * bar_ms`` -- which is what lets warm-up candles and live bars share one
  window (see :meth:`SpreadCalculator.seed_bar`). A bar's value is the last spread seen in it.
* A quote in a later bucket closes the open bar: its last spread is pushed into the window.
  Buckets in between that saw no quote are a *gap*: nothing is invented for them (carrying
  the last spread forward would collapse the std and inflate z). The calculator records the
  gap (``gaps``, ``bars_missing``, ``gap_epoch``) and waits: ``awaiting_backfill`` is True and
  Z is NaN until the owner fetches the missing candles and calls the generator's warm-up,
  which rebuilds the window from them.
* While seeding history (:meth:`SpreadCalculator.seed_bar`) a hole means the exchange has no
  candles for it either: the window restarts from the bars after the hole (``gap_resets``),
  because a window of bars that are not consecutive is not the rolling window of the docs.
* A quote whose bucket is *older* than the open bar (the other leg's clock ran slightly ahead)
  is counted in the open bar: bars never reopen, so history is never rewritten.
* Live Z on every update: over the last ``lookback_bars - 1`` completed bars plus the current
  spread, ``z = (s - mean) / std``, sample std. At a bar close this is, to ~1e-12, pandas
  ``(s - s.rolling(N).mean()) / s.rolling(N).std()`` on the bar-close series (pandas' own
  add/remove update drifts by up to ~1e-7; the tests compare with an exact reference too).

The O(1) query runs in plain Python floats, not through a numba call: the arithmetic is ten
float operations, and a numba dispatch with three array arguments costs more than that (the
benchmark measures both). Pushes (once per bar) go through the numba kernels, which keep the
state in numpy arrays and recompute it exactly every ``lookback_bars - 1`` pushes.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np

from loguru import logger

from signals import kernels as kn
from signals import replay_kernel as rk

_NAN = math.nan


class ReplayUnsupported(ValueError):
    """The backtest's replay kernel cannot take this pair's state (rolling OLS, a backfill wait,
    a signal in flight); the message names the pair and why."""


class PriceTransform(str, Enum):
    """``f`` of the spread: ``log`` (the default: a spread in returns) or ``raw`` prices."""

    LOG = "log"
    RAW = "raw"


class SpreadCalculator:
    """Bar sampler + streaming rolling window of one pair's spread.

    ``update(ts_ms, mid_a, mid_b)`` returns the live Z (NaN while the window is not full, or
    when the window is flat). After a call, ``z``, ``std`` and ``spread`` describe that update
    (``mean`` too, derived on read); they are plain attributes, read-only by convention, because
    the generator reads them on every quote and a property costs as much as the arithmetic.

    >>> calc = SpreadCalculator(hedge_ratio=1.0, lookback_bars=3, bar_seconds=60,
    ...                         price_transform="raw")
    >>> [round(calc.update(t * 60_000, 1.0, 1.0 + v), 6) for t, v in enumerate([1, 2, 4])]
    [nan, nan, 1.091089]
    """

    __slots__ = (
        "name", "hedge_ratio", "lookback_bars", "bar_ms", "transform",
        "z", "std", "spread", "_md",
        "_log", "_bucket", "_cur",
        "_buf", "_fstate", "_istate", "_cap", "_n", "_nm1",
        "_ready", "_ref", "_s1", "_s2", "_const",
        "bars_closed", "gaps", "gap_resets", "bars_missing", "seed_missing", "gap_epoch", "awaiting_backfill",
    )

    def __init__(self, *, hedge_ratio: float, lookback_bars: int, bar_seconds: int,
                 price_transform: str | PriceTransform = PriceTransform.LOG, name: str = "spread") -> None:
        if not (math.isfinite(hedge_ratio) and hedge_ratio > 0.0):
            raise ValueError(f"hedge_ratio must be a finite number > 0, got {hedge_ratio!r}")
        if lookback_bars < 3:
            raise ValueError(f"lookback_bars must be >= 3, got {lookback_bars!r}")
        if bar_seconds <= 0:
            raise ValueError(f"bar_seconds must be > 0, got {bar_seconds!r}")
        self.name = name  # for log lines: the pair id
        self.hedge_ratio = float(hedge_ratio)
        self.lookback_bars = int(lookback_bars)
        self.bar_ms = int(bar_seconds) * 1000
        self.transform = PriceTransform(price_transform)
        self._log = self.transform is PriceTransform.LOG
        self._buf, self._fstate, self._istate = kn.window_new(self.lookback_bars)
        self._cap = self.lookback_bars - 1
        self._n = float(self.lookback_bars)
        self._nm1 = float(self._cap)
        self.bars_closed = 0
        self.gaps = 0  # live gaps seen (each needs a backfill)
        self.gap_resets = 0  # holes in history: the window restarted after them
        self.bars_missing = 0  # bars of the newest live gap
        self.seed_missing = 0  # bars missing in history since the last reset() (warm-up reports it)
        self.gap_epoch = 0  # +1 per live gap: a backfill that started before a newer gap must not clear it
        self.awaiting_backfill = False
        self.reset()

    # -- hot path -------------------------------------------------------------------------

    def update(self, ts_ms: int, mid_a: float, mid_b: float) -> float:
        """Record the spread of these mids at exchange time ``ts_ms``; return the live Z. O(1).

        Mids must be finite and > 0 (the generator validates quotes before calling).
        """
        if self._log:
            s = math.log(mid_b) - self.hedge_ratio * math.log(mid_a)
        else:
            s = mid_b - self.hedge_ratio * mid_a
        bucket = ts_ms // self.bar_ms
        if bucket > self._bucket:
            self._roll(bucket, seeding=False)
        self._cur = s
        self.spread = s
        if not self._ready or self.awaiting_backfill:
            self.z = self.std = self._md = _NAN
            return _NAN
        d = s - self._ref
        s1 = self._s1 + d
        md = s1 / self._n
        ssq = self._s2 + d * d - s1 * md
        self._md = md
        if ssq > 0.0 and s != self._const:
            std = math.sqrt(ssq / self._nm1)
            z = (d - md) / std
        else:  # flat window: no information (pandas: 0/0)
            std = 0.0
            z = _NAN
        self.std = std
        self.z = z
        return z

    # -- bars -------------------------------------------------------------------------------

    def _roll(self, bucket: int, *, seeding: bool) -> None:
        """Close the open bar before opening ``bucket``; a gap of empty buckets is never filled."""
        prev = self._bucket
        if prev >= 0:
            empty = bucket - prev - 1
            if empty > 0 and seeding:  # history has a hole: restart after it
                self._clear_window()
                self.gap_resets += 1
                self.seed_missing += empty
            else:
                self._push_bar()
                self.bars_closed += 1
                if empty > 0:
                    self.gaps += 1
                    self.gap_epoch += 1
                    self.bars_missing = empty
                    if not self.awaiting_backfill:
                        logger.warning("{}: {} bar(s) without a quote before bucket {}: WARMING until the "
                                       "missing candles are fetched", self.name, empty, bucket)
                    self.awaiting_backfill = True
            self._sync()
        self._bucket = bucket

    def _push_bar(self) -> None:
        """Push the open bar's value into the window (once per bar; the subclass pushes two)."""
        kn.window_push(self._buf, self._fstate, self._istate, self._cur)

    def _clear_window(self) -> None:
        kn.window_reset(self._buf, self._fstate, self._istate)

    def _sync(self) -> None:
        """Copy the kernel state into Python floats for the O(1) query."""
        fs = self._fstate.tolist()
        self._ref = fs[kn.F_REF]
        self._s1 = fs[kn.F_S1]
        self._s2 = fs[kn.F_S2]
        self._const = fs[kn.F_CONST]
        self._ready = int(self._istate[kn.I_COUNT]) == self._cap

    def seed_bar(self, open_ts_ms: int, spread: float) -> bool:
        """Feed one historical bar (warm-up): the candle that opened at ``open_ts_ms``.

        Why open time: an OHLCV candle is stamped with its open time and covers
        ``[open, open + bar_ms)``, which is live bucket ``open_ts_ms // bar_ms``; its close is
        the last value of that bucket, exactly what live sampling records. So the candle becomes
        the *open* bar: the next later bar (seeded or live) closes it into the window, and live
        quotes of the same bucket overwrite its close. A candle missing from history restarts
        the window after it (``seed_missing`` counts the bars). Returns False (and ignores the
        bar) if it is older than the open bar.
        """
        bucket = int(open_ts_ms) // self.bar_ms
        if bucket < self._bucket:
            return False
        if bucket > self._bucket:
            self._roll(bucket, seeding=True)
        self._cur = float(spread)
        return True

    def bar_value(self, mid_a: float, mid_b: float) -> float:
        """What one bar of these prices records (:meth:`seed_bar`'s ``spread``): here the spread."""
        return self.spread_of(mid_a, mid_b)

    def spread_of(self, mid_a: float, mid_b: float) -> float:
        """The spread of two prices with this pair's transform and hedge ratio."""
        if self._log:
            return math.log(mid_b) - self.hedge_ratio * math.log(mid_a)
        return mid_b - self.hedge_ratio * mid_a

    def reset(self) -> None:
        """Forget every bar (the counters stay): the window needs a new warm-up.

        A warm-up rebuilds the window from candles, so it also ends a wait for a backfill.
        """
        self._clear_window()
        self.awaiting_backfill = False
        self.seed_missing = 0
        self._bucket = -1
        self._cur = _NAN
        self.spread = _NAN
        self.z = self.std = self._md = _NAN
        self._sync()

    # -- the backtest's kernel (signals/replay_kernel.py) ----------------------------------------

    def export_replay(self, f: list[float], iv: list[int]) -> None:
        """Write this window's scalars into the kernel's vectors (as lists; its arrays it uses in place)."""
        if self.awaiting_backfill:
            raise ReplayUnsupported(f"{self.name}: waiting for a backfill")
        f[rk.F_CUR], f[rk.F_SPREAD], f[rk.F_Z], f[rk.F_STD], f[rk.F_MD] = self._cur, self.spread, self.z, self.std, \
            self._md
        f[rk.F_HEDGE], f[rk.F_N], f[rk.F_NM1] = self.hedge_ratio, self._n, self._nm1
        iv[rk.I_BUCKET], iv[rk.I_BAR_MS], iv[rk.I_BARS_CLOSED] = self._bucket, self.bar_ms, self.bars_closed
        iv[rk.I_LOG] = 1 if self._log else 0

    def import_replay(self, f: list[float], iv: list[int]) -> None:
        """Take the kernel's scalars back (the window arrays are already current)."""
        self._cur, self.spread, self.z, self.std, self._md = (f[rk.F_CUR], f[rk.F_SPREAD], f[rk.F_Z], f[rk.F_STD],
                                                              f[rk.F_MD])
        self._bucket, self.bars_closed = iv[rk.I_BUCKET], iv[rk.I_BARS_CLOSED]
        self._sync()

    @property
    def window_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kernel state the replay kernel pushes bars into (buffer, float and int state)."""
        return self._buf, self._fstate, self._istate

    # -- status -------------------------------------------------------------------------------

    @property
    def mean(self) -> float:
        """Window mean (N-1 completed bars + the current spread) at the last update."""
        return self._ref + self._md

    @property
    def is_ready(self) -> bool:
        """True once N-1 completed bars are held: the next update yields a Z."""
        return self._ready

    @property
    def bars_in_window(self) -> int:
        """Completed bars held, 0..lookback_bars-1 (the current bar makes the N-th)."""
        return int(self._istate[kn.I_COUNT])

    @property
    def open_bucket(self) -> int:
        """Index (``ts_ms // bar_ms``) of the open bar, -1 if none."""
        return self._bucket

    @property
    def open_value(self) -> float:
        """Last spread recorded in the open bar (NaN if none)."""
        return self._cur


class RollingOLSCalculator(SpreadCalculator):
    """``hedge_ratio_mode: rolling_ols``: the hedge ratio re-estimated by OLS over the window.

    Same bars, gaps, warm-up and counters as :class:`SpreadCalculator` (it is one); what a bar
    records is the pair ``(x, y) = (f(X), f(Y))`` instead of a spread, and on every update

    * ``beta = cov(x, y) / var(x)`` over the last ``lookback_bars - 1`` completed bars plus the
      current prices (the same window the static Z uses), ``alpha = mean(y) - beta mean(x)``;
    * ``spread = y - beta x`` with that beta, ``mean = alpha``, ``std`` the sample std of the
      window's spreads under that same beta, ``z = (spread - mean) / std``: the OLS residual's z.

    ``hedge_ratio`` is that beta (the signal carries it, the engine sizes the entry with it).
    O(1) per quote in Python floats over the running sums of ``kernels.pair_window_*``, which
    are recomputed exactly every ``lookback_bars - 1`` pushes. Why rolling OLS and not a Kalman
    filter: it has no extra parameters to tune (its only one is the lookback the pair already
    has), it is exact and checkable against statsmodels ``RollingOLS``, and a replay gives the
    same window as live; a Kalman filter's noise variances are two more unfitted knobs.
    """

    __slots__ = ("_pbuf", "_pfs", "_pis", "_cx", "_cy", "_rx", "_ry", "_sx", "_sy", "_sxx", "_sxy", "_syy",
                 "_mean", "alpha")

    def __init__(self, *, hedge_ratio: float, lookback_bars: int, bar_seconds: int,
                 price_transform: str | PriceTransform = PriceTransform.LOG, name: str = "spread") -> None:
        if lookback_bars < 3:
            raise ValueError(f"lookback_bars must be >= 3, got {lookback_bars!r}")
        self._pbuf, self._pfs, self._pis = kn.pair_window_new(int(lookback_bars))
        self._cx = self._cy = _NAN
        self._mean = self.alpha = _NAN
        super().__init__(hedge_ratio=hedge_ratio, lookback_bars=lookback_bars, bar_seconds=bar_seconds,
                         price_transform=price_transform, name=name)

    def update(self, ts_ms: int, mid_a: float, mid_b: float) -> float:
        """Record these mids at exchange time ``ts_ms``; re-fit beta; return the residual's Z. O(1)."""
        if self._log:
            x = math.log(mid_a)
            y = math.log(mid_b)
        else:
            x = mid_a
            y = mid_b
        bucket = ts_ms // self.bar_ms
        if bucket > self._bucket:
            self._roll(bucket, seeding=False)
        self._cx = x
        self._cy = y
        if not self._ready or self.awaiting_backfill:
            self.spread = y - self.hedge_ratio * x
            self.z = self.std = self._mean = _NAN
            return _NAN
        n = self._n
        dx = x - self._rx
        dy = y - self._ry
        sx = self._sx + dx
        sy = self._sy + dy
        sxx = self._sxx + dx * dx
        mx = sx / n
        my = sy / n
        cxx = sxx - sx * mx
        if not cxx > _FLAT_TOL * sxx:  # X flat over the window: no regression
            self.spread = y - self.hedge_ratio * x
            self.z = self._mean = _NAN
            self.std = 0.0
            return _NAN
        cxy = self._sxy + dx * dy - sx * my
        syy = self._syy + dy * dy
        cyy = syy - sy * my
        if cyy * cxx - cxy * cxy < kn.ILL_FIT * cyy * cxx:  # R^2 near 1: the sums cancel (rare)
            beta, alpha, z, _, std = kn.pair_window_exact(self._pbuf, self._pis, x, y)
        else:
            beta = cxy / cxx
            alpha = self._ry + my - beta * (self._rx + mx)
            ssr = cyy - beta * cxy
            if ssr > _FLAT_TOL * syy:
                std = math.sqrt(ssr / self._nm1)
                z = ((dy - my) - beta * (dx - mx)) / std
            else:  # a perfect fit: the residual is flat
                std = 0.0
                z = _NAN
        self.hedge_ratio = beta
        self.alpha = self._mean = alpha
        self.spread = y - beta * x
        self.std = std
        self.z = z
        return z

    def _push_bar(self) -> None:
        kn.pair_window_push(self._pbuf, self._pfs, self._pis, self._cx, self._cy)

    def export_replay(self, f: list[float], iv: list[int]) -> None:
        raise ReplayUnsupported(f"{self.name}: the replay kernel has no rolling-OLS window")

    def _clear_window(self) -> None:
        kn.pair_window_reset(self._pbuf, self._pfs, self._pis)

    def _sync(self) -> None:
        fs = self._pfs.tolist()
        self._rx, self._ry = fs[kn.P_RX], fs[kn.P_RY]
        self._sx, self._sy = fs[kn.P_SX], fs[kn.P_SY]
        self._sxx, self._sxy, self._syy = fs[kn.P_SXX], fs[kn.P_SXY], fs[kn.P_SYY]
        self._ready = int(self._pis[kn.I_COUNT]) == self._cap

    def seed_bar(self, open_ts_ms: int, spread: tuple[float, float]) -> bool:  # type: ignore[override]
        """Feed one historical bar: ``spread`` is the bar's ``(x, y)`` (:meth:`bar_value`)."""
        bucket = int(open_ts_ms) // self.bar_ms
        if bucket < self._bucket:
            return False
        if bucket > self._bucket:
            self._roll(bucket, seeding=True)
        self._cx, self._cy = float(spread[0]), float(spread[1])
        return True

    def bar_value(self, mid_a: float, mid_b: float) -> tuple[float, float]:  # type: ignore[override]
        """``(f(X), f(Y))``: a bar of this window holds both legs, not a spread."""
        if self._log:
            return math.log(mid_a), math.log(mid_b)
        return float(mid_a), float(mid_b)

    def reset(self) -> None:
        super().reset()
        self._cx = self._cy = _NAN
        self._mean = _NAN

    @property
    def mean(self) -> float:
        """``alpha``: the mean of the window's spreads under the current beta."""
        return self._mean

    @property
    def bars_in_window(self) -> int:
        return int(self._pis[kn.I_COUNT])

    @property
    def open_value(self) -> tuple[float, float]:  # type: ignore[override]
        """``(x, y)`` of the open bar (NaNs if none)."""
        return self._cx, self._cy


_FLAT_TOL = 1e4 * 2.220446049250313e-16  # kernels' flat-window tolerance (1e4 eps of the sum of squares)
