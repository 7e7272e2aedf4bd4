"""Scanner accuracy on EVERY pair of the bundled 1h set (435 pairs x 5,482 bars), as issue 13 asks:
each pair's Engle-Granger statistic and p-value (both directions, and on the held-out tail) equal
statsmodels ``coint`` within 1e-8 and 1e-6, the spread's ADF equals ``adfuller``, the half-life
equals statsmodels ``AutoReg``, Hurst, correlation and crossings their numpy references.

Its own file so that, with ``--dist loadfile``, its few minutes of statsmodels reference calls
(about four per pair) run on one worker while the other takes the rest of the suite.
"""

from __future__ import annotations

import itertools

import pytest

from research.bars import load_bars
from research.scan import ScanReport, ScanSettings, run_scan
from tests.test_scan import H1, _by_legs, _check_against_statsmodels

SYMBOLS_1H = 30


@pytest.fixture(scope="module")
def scanned_1h():
    bars = load_bars(H1, "1h")
    report: ScanReport = run_scan(bars, ScanSettings())
    return bars, report, _by_legs(report)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(SYMBOLS_1H * (SYMBOLS_1H - 1) // 2))
def test_scanner_matches_statsmodels_on_every_1h_pair(scanned_1h, index: int) -> None:
    bars, report, by_legs = scanned_1h
    assert (len(bars.symbols), bars.n_bars, report.n_tests) == (SYMBOLS_1H, 5482, 435)
    a, b = list(itertools.combinations(sorted(bars.symbols), 2))[index]
    _check_against_statsmodels(report, bars, by_legs[frozenset((a, b))])
