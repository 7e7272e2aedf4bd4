"""The two quote sources behind ``MarketReplay``: recorded candles and recorded bookTickers.

Both emit ``QuoteTick`` tuples in time order and both answer kline / 24h-ticker questions
about the replay time. ``simulator/replay.py`` explains the model; this module is the
bookkeeping that makes it exact and fast.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from matching.rules import SymbolRules
from market_replay.config import ReplayConfig
from market_replay.datasets import CandleSeries, TickSeries
from market_replay import kernels
from market_replay.candle_arrays import CandleArrays
from market_replay.formats import UnitFormatter

# (symbol index, event time ms, bid ticks, ask ticks, bid lots, ask lots, update id)
QuoteTick = tuple[int, int, int, int, int, int, int]
DAY_MS = 86_400_000
_UID_BASE = 3_000_000_000
_WINDOW_STEPS = 256  # steps advance_to makes ahead at once (one kernel call, then list slices)


@dataclass(frozen=True, slots=True)
class Instruments:
    """The served symbols in index order, with their rules and text formatters."""

    symbols: tuple[str, ...]
    rules: tuple[SymbolRules, ...]
    price_fmt: tuple[UnitFormatter, ...]
    qty_fmt: tuple[UnitFormatter, ...]

    @classmethod
    def from_rules(cls, rules: Mapping[str, SymbolRules]) -> Instruments:
        ordered = tuple(rules.values())
        return cls(
            symbols=tuple(rules),
            rules=ordered,
            price_fmt=tuple(UnitFormatter(r.tick_size, cache=True) for r in ordered),
            qty_fmt=tuple(UnitFormatter(r.step_size) for r in ordered),
        )


@dataclass(frozen=True, slots=True)
class QuoteBlock:
    """Steps ``[g0, g0 + n)`` of a candle replay as arrays (the backtest reads quotes in bulk).

    Row ``i`` is symbol ``i`` of ``Instruments``; column ``t`` is step ``g0 + t``. ``stamp`` is -1
    where the symbol has no bar at that step (it emits nothing there). Within one step the stream
    of ``CandleSource.advance_to`` is ordered by ``(stamp, i)``; its update id is ``_UID_BASE + g``.
    """

    g0: int
    stamp: np.ndarray  # int64 [symbols, steps], exchange ms
    bid: np.ndarray  # int64 ticks
    ask: np.ndarray  # int64 ticks
    bid_lots: np.ndarray  # int64 lots
    ask_lots: np.ndarray  # int64 lots

    @property
    def steps(self) -> int:
        return int(self.stamp.shape[1])

    def events(self) -> list[QuoteTick]:
        """The ``QuoteTick`` stream these arrays stand for, as ``advance_to`` emits it (Python
        tuples, about half a microsecond each: for a window of steps, not for a year of them)."""
        rows = kernels.block_events(self.g0, _UID_BASE, self.stamp, self.bid, self.ask, self.bid_lots,
                                    self.ask_lots)
        return list(zip(*rows.T.tolist()))  # 7 lists, then tuples: far fewer objects than rows.tolist()


@dataclass(slots=True)
class _Bar:
    """One kline as served: times, prices in ticks (for comparisons) and as text."""

    open_ms: int
    o: int
    h: int
    lo: int
    c: int
    o_text: str
    h_text: str
    l_text: str
    c_text: str
    volume: Decimal


class _BarView:
    """Read access to one symbol's bars at a replay time, shared by both sources.

    ``contiguous`` bars (candles) are located by index arithmetic; sparse ones (bars built
    from tick captures, with gaps between capture days) by scanning, they are few.
    """

    def __init__(self, bar_ms: int, first_open_ms: int, closed: int, rows: Sequence[_Bar],
                 *, contiguous: bool = True):
        self.bar_ms = bar_ms
        self.first_open_ms = first_open_ms
        self.count = len(rows)
        self.closed = closed
        self.rows = rows
        self.contiguous = contiguous


class CandleSource:
    """Quotes along intrabar paths of recorded candles (see ``simulator/replay.py``).

    The candles become integer arrays once (``CandleArrays``); every quote, streamed
    (``advance_to``) or in bulk (``quote_block``), and every kline's path comes from the kernels of
    ``market_replay/kernels.py``, whose draws are pure functions of (seed, symbol, bar, step): the
    stream is the same whatever the batching, and a seek starts mid-bar without replaying it.
    """

    def __init__(self, inst: Instruments, candles: Mapping[str, CandleSeries], cfg: ReplayConfig):
        self.inst = inst
        self.cfg = cfg
        series = [candles[s] for s in inst.symbols]
        self.base_interval_ms = series[0].interval_ms
        self.t0 = min(s.open_ms[0] for s in series)
        self.offset = [(s.open_ms[0] - self.t0) // self.base_interval_ms for s in series]
        self.n_bars = [len(s) for s in series]
        self.series = series
        self.bars = CandleArrays.build(inst.symbols, series, inst.price_fmt, inst.qty_fmt, self.offset, cfg)
        total_bars = max(off + n for off, n in zip(self.offset, self.n_bars))
        self.steps = cfg.steps_per_bar
        self.total_steps = total_bars * self.steps
        start_bar = min(cfg.warmup_bars, total_bars - 1)
        self.g = start_bar * self.steps
        self.start_ms = self.time_of(self.g)
        # advance_to's window: the events of steps [_window_g0, ...), step s from _window_bounds[s - g0]
        self._window: list[QuoteTick] = []
        self._window_g0 = 0
        self._window_bounds: list[int] = [0]
        # Klines are served at the MID of the quotes along the path (path - spread // 2 +
        # spread / 2 ticks), so history and the bot's live bars share one price definition. An
        # odd spread puts the mid half a tick off the grid: those klines carry one more decimal.
        self._kline_fmt = [UnitFormatter(r.tick_size / 2, cache=True) for r in inst.rules]

    @property
    def finished(self) -> bool:
        return self.g >= self.total_steps

    def time_of(self, g: int) -> int:
        bar, k = divmod(g, self.steps)
        return self.t0 + bar * self.base_interval_ms + (k * self.base_interval_ms) // self.steps

    def ready_ms(self, g: int) -> int:
        """When step ``g`` may be sent: its time, or with jittered stamps (which fall anywhere in
        ``[step g, step g + 1)``) the last millisecond before the next step, so a quote never
        carries a time later than the replay clock."""
        if not self.cfg.stamp_jitter:
            return self.time_of(g)
        return self.time_of(g + 1) - 1

    def next_event_ms(self) -> int | None:
        return None if self.finished else self.ready_ms(self.g)

    def spread_of_bar(self, i: int, j: int) -> int:
        """Bid-ask spread in ticks of symbol ``i`` during bar ``j``: ``spread_ticks``, or with
        ``spread_range_fraction`` > 0 the larger of that and round(range * fraction)."""
        return int(self.bars.spread[self.bars.start[i] + j])

    def advance_to(self, target_ms: float) -> list[QuoteTick]:
        """The steps whose time has come by ``target_ms`` (at most ``max_steps_per_advance``),
        in stream order: ``quote_block``'s quotes for them, read from a window of steps made
        ahead (the draws depend only on the step, so the window stays valid across a seek)."""
        g0, g1 = self.g, self._ready_end(target_ms)
        if g1 <= g0:
            return []
        w0, bounds = self._window_g0, self._window_bounds
        if not (w0 <= g0 and g1 - w0 < len(bounds)):
            self._fill_window(g0, max(_WINDOW_STEPS, g1 - g0))
            w0, bounds = self._window_g0, self._window_bounds
        self.g = g1
        return self._window[bounds[g0 - w0]:bounds[g1 - w0]]

    def _fill_window(self, g0: int, steps: int) -> None:
        block = self.quote_block(g0, g0 + steps)
        self._window = block.events()
        self._window_g0 = g0
        self._window_bounds = [0, *np.cumsum((block.stamp >= 0).sum(axis=0)).tolist()]

    def _ready_end(self, target_ms: float) -> int:
        """The first step after ``g`` not yet due at ``target_ms`` (bounded by the budget and the data)."""
        return self.first_step_after(target_ms, self.g, min(self.total_steps, self.g + self.cfg.max_steps_per_advance))

    def first_step_after(self, target_ms: float, lo: int, hi: int) -> int:
        """The first step of ``[lo, hi)`` not due at ``target_ms`` (``hi`` if all are); step times
        never decrease, so a bisection finds it, after a look at the next step or two (the usual case)."""
        if lo >= hi or self.ready_ms(lo) > target_ms:
            return lo
        lo += 1
        if lo == hi or self.ready_ms(lo) > target_ms:
            return lo
        lo += 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ready_ms(mid) <= target_ms:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def quote_block(self, g0: int, g1: int, *, out: QuoteBlock | None = None) -> QuoteBlock:
        """Steps ``[g0, g1)`` as arrays, exactly the quotes ``advance_to`` sends for them; the
        streaming position (``g``) does not move.

        ``out``: an earlier block with at least as many steps whose memory is reused (and
        overwritten), so a reader walking the replay in blocks allocates nothing per block;
        fresh memory costs more than the quotes themselves (each page is faulted in on first use).
        """
        g0 = max(0, g0)
        g1 = min(g1, self.total_steps)
        n_sym, n = len(self.inst.symbols), max(0, g1 - g0)
        if out is None:
            arrays = [np.empty((n_sym, n), dtype=np.int64) for _ in range(5)]
        elif out.stamp.size < n_sym * n:
            raise ValueError(f"out holds {out.stamp.size} cells, steps [{g0}, {g1}) of {n_sym} symbols need {n_sym * n}")
        else:
            arrays = [a.reshape(-1)[: n_sym * n].reshape(n_sym, n)
                      for a in (out.stamp, out.bid, out.ask, out.bid_lots, out.ask_lots)]
        stamp, bid, ask, bid_lots, ask_lots = arrays
        b, cfg = self.bars, self.cfg
        kernels.fill_quote_block(g0, self.steps, self.t0, self.base_interval_ms, cfg.stamp_jitter,
                                 cfg.path_order == "random", b.start, b.n_bars, b.offset, b.o, b.h, b.lo, b.c,
                                 b.base_lots, b.spread, b.keys, stamp, bid, ask, bid_lots, ask_lots)
        return QuoteBlock(g0, stamp, bid, ask, bid_lots, ask_lots)

    def seek(self, replay_ms: int) -> list[QuoteTick]:
        """Position after the last step at or before ``replay_ms``; returns that step."""
        rel = max(0, replay_ms - self.t0)
        bar = rel // self.base_interval_ms
        g = bar * self.steps
        while g + 1 < self.total_steps and self.time_of(g + 1) <= replay_ms:
            g += 1
        self.g = min(g, self.total_steps - 1)
        return self.advance_to(self.ready_ms(self.g)) if self.time_of(self.g) <= replay_ms else []

    def ohlc(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Bar ``j`` of symbol ``i`` in ticks."""
        b = self.bars
        r = b.start[i] + j
        return int(b.o[r]), int(b.h[r]), int(b.lo[r]), int(b.c[r])

    def _path_for(self, i: int, j: int) -> list[int]:
        """The path of bar ``j`` of symbol ``i`` in ticks, the one its quotes follow."""
        b = self.bars
        r = b.start[i] + j
        out = np.empty(self.steps, dtype=np.int64)
        kernels.bar_path(b.o[r], b.h[r], b.lo[r], b.c[r], self.cfg.path_order == "random", b.keys[i, 0], j, out,
                         np.empty((3, 3), dtype=np.int64), np.empty(3, dtype=np.float64))
        return out.tolist()

    def bar_view(self, i: int, now_ms: int) -> _BarView:
        """Closed bars of symbol ``i`` plus the one in progress at ``now_ms``."""
        first_open = self.t0 + self.offset[i] * self.base_interval_ms
        rel = now_ms - first_open
        if rel < 0:
            return _BarView(self.base_interval_ms, first_open, 0, [])
        current = min(rel // self.base_interval_ms, self.n_bars[i])  # bars fully closed
        rows = _LazyCandleRows(self, i, current, now_ms)
        return _BarView(self.base_interval_ms, first_open, current, rows)

    def _mid_text(self, i: int, j: int, ticks: int) -> str:
        """The mid of bar ``j``'s quote whose path price is ``ticks``, as kline text."""
        spread = self.spread_of_bar(i, j)
        half = spread // 2
        return self._kline_fmt[i](2 * (max(ticks, 1 + half) - half) + spread)

    def closed_row(self, i: int, j: int) -> _Bar:
        s, text = self.series[i], self._mid_text
        o, h, lo, c = self.ohlc(i, j)
        return _Bar(s.open_ms[j], o, h, lo, c, text(i, j, o), text(i, j, h), text(i, j, lo), text(i, j, c),
                    Decimal(s.volume[j]))

    def progress_row(self, i: int, j: int, now_ms: int) -> _Bar:
        """Bar ``j`` as far as the replay has quoted it at ``now_ms``."""
        s = self.series[i]
        open_ms = s.open_ms[j]
        k = ((now_ms - open_ms) * self.steps) // self.base_interval_ms
        k = max(0, min(self.steps - 1, k))
        while k > 0 and open_ms + (k * self.base_interval_ms) // self.steps > now_ms:
            k -= 1
        path = self._path_for(i, j)[: k + 1]
        text = self._mid_text
        hi, lo, last = max(path), min(path), path[-1]
        full = Decimal(s.volume[j])
        volume = (full * (k + 1) / self.steps).quantize(full) if full else full
        o = self.ohlc(i, j)[0]
        return _Bar(open_ms, o, hi, lo, last, text(i, j, o), text(i, j, hi), text(i, j, lo), text(i, j, last),
                    volume)


class _LazyCandleRows(Sequence[_Bar]):
    """Rows of one candle series as seen at a replay time, built only when read."""

    def __init__(self, src: CandleSource, i: int, closed: int, now_ms: int):
        self.src, self.i, self.closed, self.now_ms = src, i, closed, now_ms
        self._len = closed + (1 if closed < src.n_bars[i] else 0)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, j):  # type: ignore[override]
        if isinstance(j, slice):
            return [self[x] for x in range(*j.indices(self._len))]
        if j < 0:
            j += self._len
        if not 0 <= j < self._len:
            raise IndexError(j)
        if j < self.closed:
            return self.src.closed_row(self.i, j)
        return self.src.progress_row(self.i, j, self.now_ms)


class TickSource:
    """Recorded bookTicker messages replayed at their event times, symbols merged in order."""

    BAR_MS = 60_000

    def __init__(self, inst: Instruments, ticks: Mapping[str, TickSeries], cfg: ReplayConfig):
        self.inst = inst
        self.cfg = cfg
        self.series = [ticks[s] for s in inst.symbols]
        merged = heapq.merge(*[_indexed(i, s.event_ms) for i, s in enumerate(self.series)])
        self.events: list[tuple[int, int, int]] = list(merged)
        if not self.events:
            raise ValueError("tick source has no events")
        self.pos = 0
        self.start_ms = self.events[0][0]
        self.base_interval_ms = self.BAR_MS
        n = len(self.series)
        self._bars: list[list[_Bar]] = [[] for _ in range(n)]

    @property
    def finished(self) -> bool:
        return self.pos >= len(self.events)

    def next_event_ms(self) -> int | None:
        return None if self.finished else self.events[self.pos][0]

    def advance_to(self, target_ms: float) -> list[QuoteTick]:
        out: list[QuoteTick] = []
        events, inst = self.events, self.inst
        budget = self.cfg.max_steps_per_advance * max(1, len(self.series))
        while self.pos < len(events) and budget > 0:
            ts, i, r = events[self.pos]
            if ts > target_ms:
                break
            s = self.series[i]
            pf, qf = inst.price_fmt[i], inst.qty_fmt[i]
            bid, ask = pf.to_units(s.bid[r]), pf.to_units(s.ask[r])
            out.append((i, ts, bid, ask, qf.to_units(s.bid_qty[r]), qf.to_units(s.ask_qty[r]),
                        s.update_id[r]))
            self._record_bar(i, ts, bid)
            self.pos += 1
            budget -= 1
        return out

    def seek(self, replay_ms: int) -> list[QuoteTick]:
        """Replay silently from the start up to ``replay_ms`` (rebuilds the 1m bars too)."""
        self.pos = 0
        self._bars = [[] for _ in self.series]
        latest: dict[int, QuoteTick] = {}
        while not self.finished and self.events[self.pos][0] <= replay_ms:
            for tick in self.advance_to(replay_ms):
                latest[tick[0]] = tick
        return sorted(latest.values(), key=lambda t: t[1])

    def _record_bar(self, i: int, ts: int, price: int) -> None:
        bars = self._bars[i]
        open_ms = ts - ts % self.BAR_MS
        if bars and bars[-1].open_ms == open_ms:
            bar = bars[-1]
            if price > bar.h:
                bar.h = price
            if price < bar.lo:
                bar.lo = price
            bar.c = price
            return
        text = self.inst.price_fmt[i](price)
        bars.append(_Bar(open_ms, price, price, price, price, text, text, text, text, Decimal(0)))

    def bar_view(self, i: int, now_ms: int) -> _BarView:
        bars = self._bars[i]
        if not bars:
            return _BarView(self.BAR_MS, now_ms, 0, [], contiguous=False)
        fmt = self.inst.price_fmt[i]
        for bar in bars[-2:]:  # texts of the bars still changing
            bar.h_text, bar.l_text, bar.c_text = fmt(bar.h), fmt(bar.lo), fmt(bar.c)
        closed = len(bars) - (1 if bars[-1].open_ms + self.BAR_MS > now_ms else 0)
        return _BarView(self.BAR_MS, bars[0].open_ms, closed, bars, contiguous=False)


def _indexed(i: int, times: Sequence[int]) -> list[tuple[int, int, int]]:
    return [(ts, i, r) for r, ts in enumerate(times)]


def select_klines(
    view: _BarView, interval_ms: int, start_ms: int | None, end_ms: int | None, limit: int
) -> list[list[object]]:
    """Binance ``/fapi/v1/klines`` rows from ``view``, aggregated to ``interval_ms``.

    Raises ``ValueError`` when ``interval_ms`` is not a whole multiple of the data's bar.
    """
    base = view.bar_ms
    if interval_ms % base != 0:
        raise ValueError(f"interval {interval_ms} ms is not a multiple of the data's {base} ms")
    if view.count == 0:
        return []
    if not view.contiguous:
        return _select_sparse(view, interval_ms, start_ms, end_ms, limit)
    rows = view.rows
    factor = interval_ms // base
    first_group = view.first_open_ms - view.first_open_ms % interval_ms
    last_open = view.first_open_ms + (view.count - 1) * base
    last_group = last_open - last_open % interval_ms
    lo, hi = first_group, last_group
    if end_ms is not None:
        hi = min(hi, end_ms - end_ms % interval_ms)
    if start_ms is not None:
        lo = max(lo, start_ms + (-start_ms) % interval_ms)
    if hi < lo:
        return []
    n_groups = (hi - lo) // interval_ms + 1
    if start_ms is not None:
        hi = lo + (min(limit, n_groups) - 1) * interval_ms
    else:
        lo = hi - (min(limit, n_groups) - 1) * interval_ms
    out: list[list[object]] = []
    group = lo
    while group <= hi:
        j0 = max(0, (group - view.first_open_ms) // base)
        j1 = min(view.count, (group + interval_ms - view.first_open_ms + base - 1) // base)
        if j1 > j0:
            bars = rows[j0:j1] if factor > 1 else [rows[j0]]
            out.append(_kline_row(group, interval_ms, bars))
        group += interval_ms
    return out


def _select_sparse(view: _BarView, interval_ms: int, start_ms: int | None, end_ms: int | None,
                   limit: int) -> list[list[object]]:
    groups: dict[int, list[_Bar]] = {}
    for bar in view.rows:
        key = bar.open_ms - bar.open_ms % interval_ms
        if (start_ms is None or key >= start_ms) and (end_ms is None or key <= end_ms):
            groups.setdefault(key, []).append(bar)
    keys = sorted(groups)
    keys = keys[:limit] if start_ms is not None else keys[-limit:]
    return [_kline_row(k, interval_ms, groups[k]) for k in keys]


def ticker_window(view: _BarView, now_ms: int) -> list[_Bar]:
    """The bars of the rolling 24h window ending at ``now_ms`` (incl. the one in progress)."""
    if view.count == 0:
        return []
    start = now_ms - DAY_MS
    if not view.contiguous:
        return [bar for bar in view.rows if bar.open_ms >= start]
    j0 = max(0, -(-(start - view.first_open_ms) // view.bar_ms))
    return list(view.rows[j0:view.count])


def _kline_row(open_ms: int, interval_ms: int, bars: Sequence[_Bar]) -> list[object]:
    first, last = bars[0], bars[-1]
    high = max(bars, key=lambda b: b.h)
    low = min(bars, key=lambda b: b.lo)
    volume = sum((b.volume for b in bars), Decimal(0))
    quote_volume = sum((b.volume * Decimal(b.c_text) for b in bars), Decimal(0))
    return [
        open_ms,
        first.o_text,
        high.h_text,
        low.l_text,
        last.c_text,
        f"{volume:f}",
        open_ms + interval_ms - 1,
        f"{quote_volume.quantize(Decimal('0.0001')):f}",
        0,
        "0",
        "0",
        "0",
    ]
