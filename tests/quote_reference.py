"""Plain-Python references of the candle replay (``market_replay/kernels.py``), for the tests.

The path arithmetic is what ``market_replay/paths.py`` computed before the kernels; ``ref_quotes``
is ``CandleSource.advance_to`` as it was (a quote's bid, ask, sizes and stamp), draw by draw with
the new counter-based draws in Python integers: an independent statement of the semantics.
"""

from __future__ import annotations

from market_replay.kernels import stream_key
from market_replay.sources import _UID_BASE, CandleSource, QuoteTick

MASK = (1 << 64) - 1


# -- the Python reference: the path arithmetic as paths.py computed it before the kernels ------

def ref_round_div(numerator: int, denominator: int) -> int:
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return q if numerator >= 0 else -q


def ref_allocate(segments: int, lengths: list[int]) -> list[int]:
    total = sum(lengths)
    raw = [segments * length / total for length in lengths]
    nonzero = sum(1 for length in lengths if length > 0)
    floor = [1 if length > 0 and segments >= nonzero else 0 for length in lengths]
    alloc = [max(int(x), m) for x, m in zip(raw, floor)]
    while sum(alloc) > segments:
        k = max((j for j in range(len(alloc)) if alloc[j] > floor[j]), key=lambda j: alloc[j] - raw[j])
        alloc[k] -= 1
    while sum(alloc) < segments:
        k = max((j for j in range(len(alloc)) if lengths[j] > 0), key=lambda j: raw[j] - alloc[j])
        alloc[k] += 1
    return alloc


def ref_path(o: int, h: int, lo: int, c: int, steps: int, low_first: bool) -> list[int]:
    if steps == 1:
        return [o]
    x1, x2 = (lo, h) if low_first else (h, lo)
    if steps == 2:
        return [o, c]
    if steps == 3:
        return [o, x1, c]
    anchors = (o, x1, x2, c)
    lengths = [abs(x1 - o), abs(x2 - x1), abs(c - x2)]
    if sum(lengths) == 0:
        return [o] * steps
    path = [o]
    for leg, count in enumerate(ref_allocate(steps - 1, lengths)):
        a, b = anchors[leg], anchors[leg + 1]
        path.extend(a + ref_round_div((b - a) * m, count) for m in range(1, count + 1))
    return path


def ref_uniform(key: int, bar: int, index: int) -> float:
    """SplitMix64 in Python integers: output ``counter`` of the generator seeded with ``key``."""
    z = (key + ((bar << 32) + index + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return ((z ^ (z >> 31)) >> 11) * 2.0**-53


def ref_low_first(o: int, h: int, lo: int, order: str, coin: float) -> bool:
    heads = coin < 0.5
    if order == "random" or o - lo == h - o:
        return heads
    return o - lo < h - o


def ref_quotes(source: CandleSource, g0: int, g1: int) -> list[QuoteTick]:
    """Steps ``[g0, g1)`` of ``source`` as its stream must emit them, from the recorded text."""
    cfg, inst, steps = source.cfg, source.inst, source.steps
    out: list[QuoteTick] = []
    for g in range(g0, g1):
        bar, k = divmod(g, steps)
        ts = source.time_of(g)
        width = source.time_of(g + 1) - ts if cfg.stamp_jitter else 0
        step = []
        for i, sym in enumerate(inst.symbols):
            j = bar - source.offset[i]
            if not 0 <= j < source.n_bars[i]:
                continue
            s, pf, qf = source.series[i], inst.price_fmt[i], inst.qty_fmt[i]
            o, h, lo, c = (pf.to_units(col[j]) for col in (s.open, s.high, s.low, s.close))
            first = ref_low_first(o, h, lo, cfg.path_order, ref_uniform(stream_key(cfg.seed, sym, "path"), j, 0))
            path = ref_path(o, h, lo, c, steps, first)
            fraction = cfg.spread_range_fraction
            spread = cfg.spread_ticks if fraction <= 0 else max(cfg.spread_ticks, round((h - lo) * fraction))
            base = max(1, int(qf.to_units(s.volume[j]) * cfg.top_qty_volume_fraction))
            lots = stream_key(cfg.seed, sym, "lots")
            bid = max(1, path[k] - spread // 2)
            bid_lots = max(1, int(base * (0.5 + ref_uniform(lots, j, 2 * k))))
            ask_lots = max(1, int(base * (0.5 + ref_uniform(lots, j, 2 * k + 1))))
            draw = ref_uniform(stream_key(cfg.seed, sym, "stamps"), j, k)
            stamp = ts + int(draw * width) if width > 1 else ts
            step.append((i, stamp, bid, bid + spread, bid_lots, ask_lots, _UID_BASE + g))
        out.extend(sorted(step, key=lambda e: e[1]))
    return out
