"""Intrabar price paths: how one recorded candle becomes a sequence of quotes.

Pure integer arithmetic on ticks, so a path is exact and identical on every machine. These are the
documented Python entry points; the arithmetic itself is the numba kernels of
``market_replay/kernels.py``, the same code the candle source runs in bulk.
"""

from __future__ import annotations

import numpy as np

from market_replay import kernels


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
    out = np.empty(steps, dtype=np.int64)
    kernels.fill_path(o, h, lo, c, low_first, out, np.empty((3, 3), dtype=np.int64), np.empty(3, dtype=np.float64))
    return out.tolist()


def choose_low_first(o: int, h: int, lo: int, order: str, coin: float) -> bool:
    """Whether the path visits the low before the high, given the bar's draw ``coin`` in [0, 1).

    ``order`` "nearest": the extreme nearer to the open comes first (ties: ``coin < 0.5``);
    "random": the coin alone.

    >>> choose_low_first(10, 14, 8, "nearest", 0.9), choose_low_first(10, 14, 8, "random", 0.9)
    (True, False)
    >>> choose_low_first(10, 12, 8, "nearest", 0.9), choose_low_first(10, 12, 8, "random", 0.1)
    (False, True)
    """
    return bool(kernels.low_first(o, h, lo, order == "random", coin))


def allocate_steps(segments: int, lengths: list[int]) -> list[int]:
    """Split ``segments`` over the legs by length (largest remainder); see ``intrabar_path``.

    Each leg gets ``segments * length / total`` rounded down, at least one for a non-empty leg
    when ``segments`` covers them all; the rest goes to the largest remainders, the first leg
    winning a tie (and surplus is taken back from the most over-served leg).

    >>> allocate_steps(6, [2, 6, 2])
    [1, 4, 1]
    >>> allocate_steps(3, [1, 10, 1])
    [1, 1, 1]
    """
    if not lengths or min(lengths) < 0 or sum(lengths) <= 0:
        raise ValueError(f"lengths must be >= 0 with a positive sum, got {lengths}")
    work = np.zeros((3, len(lengths)), dtype=np.int64)
    work[0] = lengths
    kernels.allocate_steps(segments, work, np.empty(len(lengths), dtype=np.float64))
    return work[1].tolist()


def round_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half away from zero, exactly.

    >>> round_div(5, 2), round_div(-5, 2), round_div(4, 3)
    (3, -3, 1)
    """
    if denominator <= 0:
        raise ValueError("denominator must be > 0")
    return int(kernels.round_div(numerator, denominator))
