"""Multiple-testing corrections of a family of p-values (pure numpy).

A scan of 435 pairs at a 5 % level passes ~22 pairs by chance alone; these adjust each p-value
so that comparing it with the level controls the whole family instead:

* Benjamini-Hochberg (``bh``, the scanner's default): the false discovery rate, the expected
  share of false pairs among those that pass, is at most the level (valid for independent or
  positively dependent tests, which pairs sharing legs plausibly are).
* Bonferroni (``bonferroni``): the chance of even one false pair is at most the level; with
  hundreds of correlated tests it keeps almost nothing.

Both return adjusted p-values equal to statsmodels ``multipletests(p, method="fdr_bh" /
"bonferroni")[1]`` (the tests compare them).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Correction = Literal["bh", "bonferroni"]
CORRECTIONS: tuple[Correction, ...] = ("bh", "bonferroni")


def bonferroni(p_values: np.ndarray) -> np.ndarray:
    """``min(1, m p)`` for a family of ``m`` tests."""
    p = np.asarray(p_values, dtype=np.float64)
    return np.minimum(1.0, p * p.shape[0])


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH step-up adjusted p-values: ``min over j >= i of m p_(j) / j`` in rank order, capped at 1.

    >>> benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5])).round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.5]
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[0]
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted_sorted
    return out


def adjust(p_values: np.ndarray, method: Correction) -> np.ndarray:
    """Adjusted p-values of the family by ``method`` (one of :data:`CORRECTIONS`)."""
    if method == "bh":
        return benjamini_hochberg(p_values)
    if method == "bonferroni":
        return bonferroni(p_values)
    raise ValueError(f"unknown correction {method!r}: expected one of {CORRECTIONS}")
