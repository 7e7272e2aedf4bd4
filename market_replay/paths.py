"""Intrabar price paths: how one recorded candle becomes a sequence of quotes.

Pure integer arithmetic on ticks, so a path is exact and identical on every machine.
"""

from __future__ import annotations

import random


def intrabar_path(o: int, h: int, lo: int, c: int, steps: int, low_first: bool) -> list[int]:
    """``steps`` prices (in ticks) from ``o`` through both extremes to ``c``.

    The three legs (open -> first extreme -> second extreme -> close) get steps in proportion
    to their length, every non-empty leg at least one when there are enough steps, so the
    path touches the open, the low, the high and the close exactly.

    >>> intrabar_path(10, 14, 8, 12, 7, low_first=True)
    [10, 8, 10, 11, 13, 14, 12]
    >>> intrabar_path(5, 5, 5, 5, 3, low_first=False)
    [5, 5, 5]
    >>> intrabar_path(10, 14, 8, 12, 3, low_first=False)
    [10, 14, 12]
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if not lo <= min(o, c) <= max(o, c) <= h:
        raise ValueError(f"inconsistent candle o={o} h={h} l={lo} c={c}")
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
    for leg, count in enumerate(allocate_steps(steps - 1, lengths)):
        a, b = anchors[leg], anchors[leg + 1]
        for m in range(1, count + 1):
            path.append(a + round_div((b - a) * m, count))
    return path


def choose_low_first(o: int, h: int, lo: int, order: str, rng: random.Random) -> bool:
    """Whether the path visits the low before the high.

    ``order`` "nearest": the extreme nearer to the open comes first (ties: the coin);
    "random": the coin. The coin is tossed in every case so the stream stays aligned.
    """
    coin = rng.random() < 0.5
    if order == "random":
        return coin
    down, up = o - lo, h - o
    if down == up:
        return coin
    return down < up


def allocate_steps(segments: int, lengths: list[int]) -> list[int]:
    """Split ``segments`` over the legs by length (largest remainder); see ``intrabar_path``.

    >>> allocate_steps(6, [2, 6, 2])
    [1, 4, 1]
    >>> allocate_steps(3, [1, 10, 1])
    [1, 1, 1]
    """
    total = sum(lengths)
    raw = [segments * length / total for length in lengths]
    nonzero = sum(1 for length in lengths if length > 0)
    floor = [1 if length > 0 and segments >= nonzero else 0 for length in lengths]
    alloc = [max(int(x), m) for x, m in zip(raw, floor)]
    while sum(alloc) > segments:
        k = max((j for j in range(len(alloc)) if alloc[j] > floor[j]),
                key=lambda j: alloc[j] - raw[j])
        alloc[k] -= 1
    while sum(alloc) < segments:
        k = max((j for j in range(len(alloc)) if lengths[j] > 0), key=lambda j: raw[j] - alloc[j])
        alloc[k] += 1
    return alloc


def round_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half away from zero, exactly.

    >>> round_div(5, 2), round_div(-5, 2), round_div(4, 3)
    (3, -3, 1)
    """
    q, r = divmod(abs(numerator), denominator)
    if 2 * r >= denominator:
        q += 1
    return q if numerator >= 0 else -q


def bar_rng(seed: int, symbol: str, bar: int) -> random.Random:
    """The random stream of one symbol's bar: the same across runs, speeds and batching."""
    return random.Random(f"{seed}:{symbol}:{bar}")
