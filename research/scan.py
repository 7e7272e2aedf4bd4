"""The pair scan: every pair of a set of symbols, tested, corrected, checked out of sample, ranked.

Steps (each a function below; ``research.cli`` wires them to ``python main.py scan``):

1. split the aligned bars: the first ``in_sample_fraction`` (70 %) is in-sample, the rest the
   held-out tail, never seen by the selection;
2. per pair, in-sample (``research.cointegration.scan_pairs``): Engle-Granger both ways (Y on
   X and X on Y), the direction with the more negative statistic chosen for trading; ADF with
   constant of that spread; half-life; Hurst; return correlation; mean crossings; then the same
   Engle-Granger refitted on the tail alone;
3. p-values from statsmodels' ``mackinnonp`` (Engle-Granger: ``N=2`` with a constant, as
   ``coint``; ADF: ``N=1``). A pair's p-value is the larger of its two directions: it must be
   cointegrated whichever leg is regressed on the other, and the larger of two valid p-values
   is a valid p-value, so no extra correction is needed for testing two ways;
4. the family of all pairs tested is corrected (Benjamini-Hochberg by default, see
   ``research.multiple_testing``) and each pair checked (:data:`CHECKS`);
5. ranked: passing pairs first, then by fewer failed checks, then adjusted p-value;
6. the best ``top`` pairs, each symbol used at most ``max_symbol_uses`` times (one coin's move
   must not drive half the book), become a proposed ``pairs_config.json``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from statsmodels.tsa.adfvalues import mackinnonp

from core.config import SignalConfig, reachable_z
from research.bars import TIMEFRAME_SECONDS, Bars
from research.cointegration import RESULT_FIELDS, scan_pairs
from research.multiple_testing import Correction, adjust

# check code -> what failing it means (the table's "failed" column and the README list them)
CHECKS: dict[str, str] = {
    "liq": "a leg's median daily quote volume is below min_quote_volume_usdt_day",
    "beta": "hedge ratio not positive (the bot trades Y - beta X with beta > 0)",
    "p_adj": "adjusted Engle-Granger p-value above alpha (in-sample, both directions)",
    "hl": "half-life not between 1 bar and max_half_life_fraction of the in-sample bars",
    "cross": "the in-sample spread crossed its mean fewer than min_crossings times",
    "oos_p": "Engle-Granger p-value on the held-out tail above oos_alpha",
    "oos_beta": "hedge ratio refitted on the tail differs by more than max_beta_drift",
}
MIN_BARS = 200
_CHUNK = 16  # pairs per kernel call: the progress bar moves, the call overhead stays negligible


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """What a pair must show to pass. Fractions are of bars; volumes in USDT per day."""

    in_sample_fraction: float = 0.7
    alpha: float = 0.05
    correction: Correction = "bh"
    oos_alpha: float = 0.05
    max_beta_drift: float = 0.30          # |beta_tail / beta_in - 1|
    min_quote_volume_usdt_day: float = 5_000_000.0
    min_crossings: int = 20
    max_half_life_fraction: float = 0.05  # >= 20 half-lives in-sample
    lookback_half_lives: float = 2.0      # suggested lookback = this x half-life (in signal bars)
    max_lookback_bars: int = 1000
    max_symbol_uses: int = 2
    top: int = 10

    def __post_init__(self) -> None:
        if not 0.2 <= self.in_sample_fraction <= 0.9:
            raise ValueError("in_sample_fraction must be in [0.2, 0.9]")
        if not (0 < self.alpha < 1 and 0 < self.oos_alpha < 1):
            raise ValueError("alpha and oos_alpha must be in (0, 1)")


@dataclass(frozen=True, slots=True)
class PairResult:
    """One pair's figures. X = ``leg_x`` (leg_a), Y = ``leg_y`` (leg_b); spread ``Y - beta X``.

    Half-life and crossings are in bars of the scanned timeframe, in-sample; ``p_value`` is the
    larger of the two directions' Engle-Granger p-values, ``p_adj`` it corrected.
    """

    leg_x: str
    leg_y: str
    beta: float
    alpha: float
    eg_stat: float        # chosen direction (Y on X): the more negative statistic
    eg_lag: int
    eg_stat_reverse: float  # X on Y
    p_value: float        # the larger of both directions' p-values: the reverse one's
    p_adj: float
    adf_stat: float
    half_life: float
    hurst: float
    crossings: int
    correlation: float
    oos_stat: float
    oos_p: float
    oos_beta: float
    beta_drift: float
    min_quote_volume: float  # the thinner leg's, USDT/day
    failed: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failed

    # Computed when read: scipy's norm.cdf inside mackinnonp costs ~60 us a call, half the
    # scan's time if every figure of every pair were priced up front.
    @property
    def eg_p(self) -> float:
        """Engle-Granger p-value of the traded direction (Y on X)."""
        return eg_pvalue(self.eg_stat)

    @property
    def eg_p_reverse(self) -> float:
        """Engle-Granger p-value of X on Y (equal to ``p_value``)."""
        return eg_pvalue(self.eg_stat_reverse)

    @property
    def adf_p(self) -> float:
        """ADF (with constant) p-value of the in-sample spread."""
        return adf_pvalue(self.adf_stat)

    @property
    def pair_id(self) -> str:
        return f"{self.leg_x.removesuffix('USDT')}_{self.leg_y.removesuffix('USDT')}"


@dataclass(frozen=True, slots=True)
class ScanReport:
    """The ranked results of one scan and what it was run on."""

    settings: ScanSettings
    timeframe: str
    symbols: tuple[str, ...]
    n_bars: int
    split: int                      # bars in-sample; the tail is n_bars - split
    first_ms: int
    split_ms: int                   # open time of the first held-out bar
    last_ms: int
    results: list[PairResult] = field(default_factory=list)  # ranked

    @property
    def n_tests(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> list[PairResult]:
        return [r for r in self.results if r.passed]


def split_index(n_bars: int, settings: ScanSettings) -> int:
    """Bars in-sample: ``floor(n_bars * in_sample_fraction)``."""
    return int(n_bars * settings.in_sample_fraction)


def eg_pvalue(stat: float) -> float:
    """MacKinnon (1994) p-value of a two-variable Engle-Granger statistic with a constant, as
    statsmodels ``coint`` computes it (NaN stays NaN)."""
    return math.nan if math.isnan(stat) else float(mackinnonp(stat, regression="c", N=2))


def adf_pvalue(stat: float) -> float:
    """MacKinnon p-value of an ADF statistic with a constant, as statsmodels ``adfuller``."""
    return math.nan if math.isnan(stat) else float(mackinnonp(stat, regression="c", N=1))


def run_scan(bars: Bars, settings: ScanSettings = ScanSettings(), *,
             progress: Callable[[int, int], None] | None = None) -> ScanReport:
    """Test every pair of ``bars.symbols``; ``progress(done, total)`` after each chunk of pairs."""
    if bars.n_bars < MIN_BARS:
        raise ValueError(f"{bars.n_bars} common bars: the scan needs at least {MIN_BARS}")
    split = split_index(bars.n_bars, settings)
    pairs = np.array(list(itertools.combinations(range(len(bars.symbols)), 2)), dtype=np.int64)
    ia, ib = np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    rows = np.empty((pairs.shape[0], len(RESULT_FIELDS)))
    for start in range(0, pairs.shape[0], _CHUNK):
        stop = min(start + _CHUNK, pairs.shape[0])
        rows[start:stop] = scan_pairs(bars.log_close, ia[start:stop], ib[start:stop], split)
        if progress is not None:
            progress(stop, pairs.shape[0])
    volume = bars.median_daily_quote_volume()
    results = build_results(rows, ia, ib, bars.symbols, volume, split, settings)
    return ScanReport(settings=settings, timeframe=bars.timeframe, symbols=bars.symbols, n_bars=bars.n_bars,
                      split=split, first_ms=int(bars.timestamps_ms[0]), split_ms=int(bars.timestamps_ms[split]),
                      last_ms=int(bars.timestamps_ms[-1]), results=rank(results))


def build_results(rows: np.ndarray, ia: np.ndarray, ib: np.ndarray, symbols: tuple[str, ...],
                  volume: np.ndarray, split: int, settings: ScanSettings) -> list[PairResult]:
    """Kernel rows -> p-values, the family correction, the checks (unranked)."""
    col = {name: rows[:, k] for k, name in enumerate(RESULT_FIELDS)}
    # MacKinnon's p rises with the statistic, so the larger p of the two directions is the p of
    # the larger (less negative) statistic: one mackinnonp call per pair, not two
    weaker = np.where(col["direction"] == 1.0, col["stat_ab"], col["stat_ba"])
    p_pair = np.array([eg_pvalue(s) for s in weaker])
    p_adj = adjust(p_pair, settings.correction)
    results = []
    for k in range(rows.shape[0]):
        flip = col["direction"][k] == 1.0
        a, b = int(ia[k]), int(ib[k])
        x, y = (b, a) if flip else (a, b)
        beta = col["beta_ba" if flip else "beta_ab"][k]
        oos_beta = col["oos_beta"][k]
        drift = abs(oos_beta / beta - 1.0) if beta != 0 else math.inf
        oos_p = eg_pvalue(col["oos_stat"][k])
        figures = dict(
            leg_x=symbols[x], leg_y=symbols[y], beta=float(beta),
            alpha=float(col["alpha_ba" if flip else "alpha_ab"][k]),
            eg_stat=float(col["stat_ba" if flip else "stat_ab"][k]),
            eg_lag=int(col["lag_ba" if flip else "lag_ab"][k]),
            eg_stat_reverse=float(col["stat_ab" if flip else "stat_ba"][k]),
            p_value=float(p_pair[k]), p_adj=float(p_adj[k]),
            adf_stat=float(col["adf_stat"][k]),
            half_life=float(col["half_life"][k]), hurst=float(col["hurst"][k]),
            crossings=int(col["crossings"][k]), correlation=float(col["correlation"][k]),
            oos_stat=float(col["oos_stat"][k]), oos_p=oos_p, oos_beta=float(oos_beta), beta_drift=float(drift),
            min_quote_volume=float(min(volume[a], volume[b])),
        )
        results.append(PairResult(**figures, failed=failed_checks(figures, split, settings)))
    return results


def failed_checks(f: dict[str, Any], split: int, settings: ScanSettings) -> tuple[str, ...]:
    """The codes of :data:`CHECKS` this pair fails, in that order (NaN fails)."""
    hl = f["half_life"]
    failing = {
        "liq": not f["min_quote_volume"] >= settings.min_quote_volume_usdt_day,
        "beta": not f["beta"] > 0,
        "p_adj": not f["p_adj"] <= settings.alpha,
        "hl": not (1.0 <= hl <= settings.max_half_life_fraction * split),
        "cross": f["crossings"] < settings.min_crossings,
        "oos_p": not f["oos_p"] <= settings.oos_alpha,
        "oos_beta": not f["beta_drift"] <= settings.max_beta_drift,
    }
    return tuple(code for code in CHECKS if failing[code])


def rank(results: list[PairResult]) -> list[PairResult]:
    """Passing first, then fewer failed checks, then adjusted and raw p-value, then name."""
    return sorted(results, key=lambda r: (len(r.failed), _nan_last(r.p_adj), _nan_last(r.p_value), r.pair_id))


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def select(report: ScanReport) -> list[PairResult]:
    """The best ``top`` tradable pairs (positive hedge ratio, finite half-life) in rank order,
    each symbol in at most ``max_symbol_uses`` of them."""
    settings = report.settings
    uses: dict[str, int] = {}
    chosen: list[PairResult] = []
    for r in report.results:
        if not (r.beta > 0 and math.isfinite(r.half_life) and r.half_life > 0):
            continue
        if uses.get(r.leg_x, 0) >= settings.max_symbol_uses or uses.get(r.leg_y, 0) >= settings.max_symbol_uses:
            continue
        uses[r.leg_x] = uses.get(r.leg_x, 0) + 1
        uses[r.leg_y] = uses.get(r.leg_y, 0) + 1
        chosen.append(r)
        if len(chosen) == settings.top:
            break
    return chosen


def suggested_lookback(half_life_signal_bars: float, settings: ScanSettings, signal: SignalConfig) -> int:
    """``lookback_half_lives`` half-lives, at least the smallest window whose reachable |z|
    clears the stop threshold by a margin (so the config check passes), at most
    ``max_lookback_bars``."""
    floor = 3
    while reachable_z(floor) < max(signal.stop_loss_threshold, signal.entry_threshold) + 0.25:
        floor += 1
    return int(min(settings.max_lookback_bars, max(floor, math.ceil(settings.lookback_half_lives
                                                                      * half_life_signal_bars))))


def proposed_pairs(report: ScanReport, signal: SignalConfig) -> dict[str, Any]:
    """The proposed ``pairs_config.json`` content for :func:`select`'s pairs.

    Half-lives are converted to bars of ``signal.bar_seconds`` (what ``half_life_candles``
    means); ``scan`` records the verdict in the scanned timeframe's bars.
    """
    factor = TIMEFRAME_SECONDS[report.timeframe] / signal.bar_seconds
    pairs = []
    for r in select(report):
        hl_signal = r.half_life * factor
        pairs.append({
            "pair_id": r.pair_id,
            "leg_a": f"{r.leg_x.removesuffix('USDT')}/USDT",
            "leg_b": f"{r.leg_y.removesuffix('USDT')}/USDT",
            "hedge_ratio": round(r.beta, 4),
            "z_score_threshold": signal.entry_threshold,
            "stop_loss_z": signal.stop_loss_threshold,
            "half_life_candles": round(hl_signal, 1),
            "lookback_bars": suggested_lookback(hl_signal, report.settings, signal),
            "enabled": True,
            "scan": scan_mark(r, report),
        })
    return {"pairs": pairs}


def scan_mark(r: PairResult, report: ScanReport) -> dict[str, Any]:
    """The ``scan`` field of a proposed pair: its verdict and the figures behind it."""
    return {
        "passed": r.passed,
        "p_adj": _sig(r.p_adj),
        "correction": report.settings.correction,
        "oos_p": _sig(r.oos_p),
        "beta_drift": round(r.beta_drift, 3) if math.isfinite(r.beta_drift) else None,
        "half_life": round(r.half_life, 1),
        "timeframe": report.timeframe,
        "failed": list(r.failed),
    }


def _sig(value: float) -> float | None:
    return None if math.isnan(value) else float(f"{value:.3g}")
