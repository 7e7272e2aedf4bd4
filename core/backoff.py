"""Exponential backoff with jitter: the one rule every retry loop of the bot waits by.

Why jitter: many clients (pairs, bots restarted together) that failed at the same moment must
not retry in step. The wait after the n-th failure is drawn in [c / 2, c] with
c = min(max, first * 2 ** (n - 1)).
"""

from __future__ import annotations

import random


def jittered_backoff_seconds(failures: int, rng: random.Random, *, first_ms: float, max_ms: float) -> float:
    """The wait in seconds after the ``failures``-th consecutive failure (1 for the first).

    >>> jittered_backoff_seconds(1, random.Random(1), first_ms=1000, max_ms=10_000) <= 1.0
    True
    >>> 5.0 <= jittered_backoff_seconds(9, random.Random(1), first_ms=1000, max_ms=10_000) <= 10.0
    True
    """
    cap_ms = min(max_ms, first_ms * 2 ** min(failures - 1, 16))
    return rng.uniform(cap_ms / 2, cap_ms) / 1000
