"""Multiple-testing corrections of a family of p-values (statsmodels).

A scan of 435 pairs at a 5 % level passes ~22 pairs by chance alone; these adjust each p-value
so that comparing it with the level controls the whole family instead:

* Benjamini-Hochberg (``bh``, the scanner's default): the false discovery rate, the expected
  share of false pairs among those that pass, is at most the level (valid for independent or
  positively dependent tests, which pairs sharing legs plausibly are).
* Bonferroni (``bonferroni``): the chance of even one false pair is at most the level; with
  hundreds of correlated tests it keeps almost nothing.

Both are statsmodels' ``multipletests`` (``fdr_bh``, ``bonferroni``): a maintained implementation
rather than one of our own.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Correction = Literal["bh", "bonferroni"]
CORRECTIONS: tuple[Correction, ...] = ("bh", "bonferroni")


_STATSMODELS_METHOD = {"bh": "fdr_bh", "bonferroni": "bonferroni"}


def adjust(p_values: np.ndarray, method: Correction) -> np.ndarray:
    """Adjusted p-values of the family by ``method`` (one of :data:`CORRECTIONS`), in input order.

    >>> adjust(np.array([0.01, 0.04, 0.03, 0.5]), "bh").round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.5]
    >>> adjust(np.array([0.01, 0.3]), "bonferroni").tolist()
    [0.02, 0.6]
    """
    if method not in _STATSMODELS_METHOD:
        raise ValueError(f"unknown correction {method!r}: expected one of {CORRECTIONS}")
    p = np.asarray(p_values, dtype=np.float64)
    if p.shape[0] == 0:
        return p.copy()
    from statsmodels.stats.multitest import multipletests

    return np.asarray(multipletests(p, method=_STATSMODELS_METHOD[method])[1], dtype=np.float64)
