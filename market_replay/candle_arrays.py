"""Recorded candles as the integer arrays the quote kernels read, converted once.

Why: a year of 1-minute bars for 20 symbols is 10 million candles; converting their text bar by
bar (``UnitFormatter.to_units``) costs minutes, the arrays a few seconds. The conversion is exact:
the text is parsed as an integer of the unit's decimals (``kernels.parse_scaled``), never through
a float, and any field that parse cannot take (a price finer than the tick, an exponent) goes
through ``to_units`` itself, so every value is what ``to_units`` returns (half-even onto the grid).
Columns the loader parsed from the file's bytes (``candle_csv.DecimalColumn``) hold the digits
already: they are rescaled (``DecimalColumn.scaled``, the same values and refusals as
``parse_scaled``), a few milliseconds a column instead of joining and re-parsing text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from market_replay import kernels
from market_replay.candle_csv import DecimalColumn
from market_replay.config import ReplayConfig
from market_replay.datasets import CandleSeries, DatasetError
from market_replay.formats import UnitFormatter

__all__ = ["CandleArrays", "text_to_units"]


@dataclass(frozen=True, slots=True)
class CandleArrays:
    """Every symbol's bars, concatenated in symbol order (int64 unless said otherwise).

    Symbol ``i``'s bar ``j`` is row ``start[i] + j``; its first bar is global bar ``offset[i]``.
    ``base_lots``: ``top_qty_volume_fraction`` of the bar's volume in lots (at least 1), the centre
    of the top sizes; ``spread``: the bar's bid-ask spread in ticks (``spread_of_bar``);
    ``keys``: uint64 ``[symbols, len(kernels.STREAMS)]``, the draw streams of each symbol.
    """

    start: np.ndarray
    n_bars: np.ndarray
    offset: np.ndarray
    o: np.ndarray
    h: np.ndarray
    lo: np.ndarray
    c: np.ndarray
    base_lots: np.ndarray
    spread: np.ndarray
    keys: np.ndarray

    @classmethod
    def build(cls, symbols: Sequence[str], series: Sequence[CandleSeries], price_fmt: Sequence[UnitFormatter],
              qty_fmt: Sequence[UnitFormatter], offset: Sequence[int], cfg: ReplayConfig) -> CandleArrays:
        """Raises ``DatasetError`` for a candle whose low/high do not bound its open and close.

        Each symbol's values are written straight into the concatenated arrays: fresh memory is
        paid once (page faults cost more than the conversion itself for a year of bars)."""
        n_bars = np.array([len(s) for s in series], dtype=np.int64)
        start = np.concatenate(([0], np.cumsum(n_bars)[:-1])).astype(np.int64)
        total = int(n_bars.sum())
        o, h, lo, c, base, spread = (np.empty(total, dtype=np.int64) for _ in range(6))
        for s, pf, qf, a, n in zip(series, price_fmt, qty_fmt, start.tolist(), n_bars.tolist()):
            b = a + n
            for column, out in zip((s.open, s.high, s.low, s.close), (o, h, lo, c)):
                text_to_units(column, pf, out=out[a:b])
            _check_consistent(s, o[a:b], h[a:b], lo[a:b], c[a:b])
            volume_lots = text_to_units(s.volume, qf, out=base[a:b])
            base[a:b] = np.maximum(1, (volume_lots * cfg.top_qty_volume_fraction).astype(np.int64))
            spread[a:b] = _spreads(h[a:b], lo[a:b], cfg)
        keys = np.array([[kernels.stream_key(cfg.seed, sym, stream) for stream in kernels.STREAMS]
                         for sym in symbols], dtype=np.uint64).reshape(len(symbols), len(kernels.STREAMS))
        return cls(start=start, n_bars=n_bars, offset=np.asarray(offset, dtype=np.int64), o=o, h=h, lo=lo, c=c,
                   base_lots=base, spread=spread, keys=keys)


def text_to_units(texts: Sequence[str], fmt: UnitFormatter, *, out: np.ndarray | None = None) -> np.ndarray:
    """``[fmt.to_units(t) for t in texts]`` as int64, fast and exactly equal (``ValueError`` for a
    value beyond int64); written into ``out`` (int64, ``len(texts)``) when given, and returned.

    >>> text_to_units(("31031.7", "0.05", "12"), UnitFormatter(__import__("decimal").Decimal("0.1"))).tolist()
    [310317, 0, 120]
    """
    n = len(texts)
    values = np.empty(n, dtype=np.int64) if out is None else out
    if values.shape != (n,) or values.dtype != np.int64:
        raise ValueError(f"out must be int64 of shape ({n},), not {values.dtype} {values.shape}")
    bad = np.empty(n, dtype=np.bool_)
    if n == 0:
        return values
    if isinstance(texts, DecimalColumn):  # the loader's digits: no text to join and parse
        texts.scaled(fmt.decimals, values, bad)
    else:
        raw = np.frombuffer("\n".join(texts).encode("ascii", "replace"), dtype=np.uint8)
        kernels.parse_scaled(raw, fmt.decimals, values, bad)
    grid = int(fmt.unit.scaleb(fmt.decimals))  # the unit in 10**-decimals: 1 for 0.01, 5 for 0.05
    if grid != 1:  # onto the unit's grid, half-even
        q, r = np.divmod(values, grid)
        q += (2 * r > grid) | ((2 * r == grid) & (q % 2 == 1))
        values[:] = q
    for idx in np.flatnonzero(bad):
        exact = fmt.to_units(texts[idx])
        if not -(1 << 63) <= exact < 1 << 63:
            raise ValueError(f"{texts[idx]!r} is {exact} units of {fmt.unit}: beyond the replay's 64-bit integers")
        values[idx] = exact
    return values


def _check_consistent(s: CandleSeries, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> None:
    wrong = np.flatnonzero((lo > np.minimum(o, c)) | (np.maximum(o, c) > h))
    if wrong.size:
        j = int(wrong[0])
        raise DatasetError(f"{s.symbol}: candle at open time {s.open_ms[j]} is inconsistent "
                           f"(o={s.open[j]} h={s.high[j]} l={s.low[j]} c={s.close[j]}; {wrong.size} such bars)")


def _spreads(h: np.ndarray, lo: np.ndarray, cfg: ReplayConfig) -> np.ndarray:
    """``max(spread_ticks, round(range * fraction))``; ``np.rint`` rounds half-even as ``round``."""
    if cfg.spread_range_fraction <= 0:
        return np.full(h.shape[0], cfg.spread_ticks, dtype=np.int64)
    return np.maximum(cfg.spread_ticks, np.rint((h - lo) * cfg.spread_range_fraction).astype(np.int64))
