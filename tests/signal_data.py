"""Real market data and reference oracles shared by the signal tests (and the signal benchmark).

Everything here reads the bundled files under ``data/`` (real Binance USD-M data, see
``data/README.md``); nothing is synthetic. The oracles are deliberately plain pandas:

* :func:`pandas_z` is the literal reference of docs/architecture.md, "Signals and sizing" ``(s - s.rolling(N).mean()) /
  s.rolling(N).std()``. pandas updates its rolling variance by adding and removing values
  (Welford), which drifts: on the bundled 5m series it is off the exact value by up to ~7e-8
  relative (log BTC, N = 20) and by ~1.5e-7 after 1e6 updates of raw BTC.
* :func:`pandas_fresh_z` is the same pandas rolling mean/std over the same windows, computed
  from scratch for every window (a window indexer whose bounds are not monotonic makes pandas
  skip its add/remove path). It is within ~1e-11 of 50-digit arithmetic on every bundled
  series, so it is the oracle the 1e-9 comparisons use.
* :func:`decimal_z` is 50-digit arithmetic for spot checks.
"""

from __future__ import annotations

import decimal
import gzip
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from core.types import Quote

ROOT = Path(__file__).resolve().parent.parent
PERP_DIR = ROOT / "data" / "binance-usdm-perp-5m-2023-07"
TICK_DIR = ROOT / "data" / "binance-usdm-ticks-2024"
BAR_MS = 300_000


def perp_symbols() -> list[str]:
    """The 20 bundled 5m perpetual symbols, e.g. ``'BTCUSDT'``."""
    return sorted(p.name.split("-")[0] for p in PERP_DIR.glob("*-5m.csv.gz"))


@lru_cache(maxsize=None)
def load_ohlcv(symbol: str) -> np.ndarray:
    """``(n, 6)`` float array of ``[open_ts_ms, open, high, low, close, volume]`` rows."""
    frame = pd.read_csv(PERP_DIR / f"{symbol}-5m.csv.gz")
    out = frame[["timestamp_ms", "open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
    out.setflags(write=False)
    return out


def load_closes(symbol: str) -> np.ndarray:
    """Close prices of the bundled 5m series (8,639 bars, no gaps)."""
    return load_ohlcv(symbol)[:, 4]


@lru_cache(maxsize=None)
def load_book_ticker(symbol: str, day: str) -> pd.DataFrame:
    """One bookTicker capture, in arrival order: local_ts_ns, event_time_ms, bid, ask, ..."""
    path = TICK_DIR / f"hftbacktest_binance_usdm_{symbol}_{day}_bookTicker.csv.gz"
    with gzip.open(path, "rt") as fh:
        return pd.read_csv(fh)


def merged_quotes(symbols: tuple[str, ...], day: str) -> list[Quote]:
    """The captures of ``symbols`` for ``day`` merged in arrival (local receive) order."""
    frames = [load_book_ticker(s, day) for s in symbols]
    frame = pd.concat(frames, ignore_index=True).sort_values(["local_ts_ns"], kind="stable")
    return [
        Quote(symbol=str(sym), bid=float(bid), ask=float(ask), ts_ms=int(ts), bid_qty=float(bq), ask_qty=float(aq))
        for sym, bid, ask, ts, bq, aq in zip(frame["symbol"], frame["bid_price"], frame["ask_price"],
                                            frame["event_time_ms"], frame["bid_qty"], frame["ask_qty"])
    ]


def pandas_z(x: np.ndarray, window: int) -> np.ndarray:
    """The literal reference: ``(s - s.rolling(N).mean()) / s.rolling(N).std()``."""
    s = pd.Series(x)
    return ((s - s.rolling(window).mean()) / s.rolling(window).std()).to_numpy()


class _FreshWindows(BaseIndexer):
    """The fixed windows of ``rolling(N)``, with bounds pandas must evaluate one by one.

    Row 0 gets an empty window ``[n, n)`` (its output is NaN anyway, min_periods = N), which
    makes the bounds non-monotonic; pandas then recomputes every window from scratch instead
    of sliding (see pandas ``_libs/window/aggregations.pyx``: ``is_monotonic_increasing_bounds``).
    """

    def get_window_bounds(self, num_values: int = 0, min_periods: int | None = None,
                          center: bool | None = None, closed: str | None = None,
                          step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        end = np.arange(1, num_values + 1, dtype=np.int64)
        start = np.maximum(end - self.window_size, 0)
        if num_values > 1:
            start[0] = end[0] = num_values
        return start, end


def pandas_fresh_z(x: np.ndarray, window: int) -> np.ndarray:
    """pandas rolling mean/std over the same windows, each computed from scratch (no drift)."""
    s = pd.Series(x)
    roll = s.rolling(_FreshWindows(window_size=window), min_periods=window)
    return ((s - roll.mean()) / roll.std()).to_numpy()


def decimal_z(x: np.ndarray, window: int, i: int) -> float:
    """Z of the window ending at ``i`` in exact rationals, square root in 50 digits."""
    values = [Fraction(float(v)) for v in x[i - window + 1:i + 1]]
    mean = sum(values) / window
    var = sum((v - mean) ** 2 for v in values) / (window - 1)
    if var == 0:
        return float("nan")
    ctx = decimal.Context(prec=50)
    dev = values[-1] - mean
    num = ctx.divide(decimal.Decimal(dev.numerator), decimal.Decimal(dev.denominator))
    den = ctx.divide(decimal.Decimal(var.numerator), decimal.Decimal(var.denominator)).sqrt(ctx)
    return float(ctx.divide(num, den))


def rel_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|a - b| / max(1, |b|)``: relative where |z| >= 1, absolute near zero (where relative
    error of a difference is ill-posed). NaN in both counts as equal; NaN in one is inf."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    err = np.abs(a - b) / np.maximum(1.0, np.abs(b))
    err = np.where(both_nan, 0.0, err)
    return np.where(np.isnan(err), np.inf, err)
