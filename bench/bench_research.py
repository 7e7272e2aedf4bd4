"""Benchmarks of the research commands, by section. Prints JSON.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_research.py [--only scan] [--quick]``.
Each section measures its baseline in the same run, so the ratios mean something on any machine.
Sections ``scan`` and ``backtest`` run pinned to one CPU (``os.sched_setaffinity``) with numba
without threads, so "one core" is literal; ``sweep`` runs on every CPU, because its point is the
2-worker cluster against the serial run.

``scan``: the whole ``research.scan.run_scan`` (kernels, MacKinnon p-values, the family
correction, checks, ranking) over the 30 bundled 1h symbols: 435 pairs x 5,482 bars, 70 %
in-sample. Warm-up first (numba compiles or loads its cache), then the median of ``--repeats``
runs; loading the CSVs is timed apart. Baseline: statsmodels ``coint`` (its defaults, autolag
AIC, as the scan) for the same Engle-Granger tests the scan runs -- both directions in-sample
and the traded direction on the tail, 3 per pair -- timed over every pair (``--quick``: every
10th pair, scaled up to all, and said so). The baseline's statistics and p-values are compared
with the scan's, so this is also the accuracy check over all pairs that the unit test samples.
Targets (issue 13): <= 1 s, >= 20 x the baseline.

``backtest``: ``bench/bench_backtest.py`` (its docstring says how the year of 1m bars is built from
the bundled month): 10 pairs x 525,600 bars, with the per-quote reference loop against the kernel
loop on the first ``--slice-days`` as the same-run baseline. Target: <= 30 s, bars/s printed.

``sweep``: ``bench/bench_sweep.py``: 27 configurations x 2 blocks on a LocalCluster of
``--workers`` 2 against the same sweep run serially in this process; identical results required.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.bench_backtest as bench_backtest  # noqa: E402
import bench.bench_sweep as bench_sweep  # noqa: E402
from research.bars import load_bars  # noqa: E402
from research.scan import ScanSettings, run_scan  # noqa: E402

H1 = ROOT / "data" / "binance-spot-1h-2020-12_2021-07"


def bench_scan(args: argparse.Namespace) -> dict[str, Any]:
    from statsmodels.tsa.stattools import coint

    t0 = time.perf_counter()
    bars = load_bars(H1, "1h")
    load_s = time.perf_counter() - t0
    settings = ScanSettings()
    t0 = time.perf_counter()
    report = run_scan(bars, settings)
    warmup_s = time.perf_counter() - t0
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        report = run_scan(bars, settings)
        runs.append(time.perf_counter() - t0)
    ours = statistics.median(runs)

    idx = {s: i for i, s in enumerate(bars.symbols)}
    h = report.split
    step = 10 if args.quick else 1
    chosen = sorted(report.results, key=lambda r: r.pair_id)[::step]
    max_stat, max_p, calls = 0.0, 0.0, 0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in chosen:
            x, y = bars.log_close[idx[r.leg_x]], bars.log_close[idx[r.leg_y]]
            for (yy, xx), stat, p in (((y[:h], x[:h]), r.eg_stat, r.eg_p),
                                      ((x[:h], y[:h]), r.eg_stat_reverse, r.eg_p_reverse),
                                      ((y[h:], x[h:]), r.oos_stat, r.oos_p)):
                ref = coint(yy, xx)
                calls += 1
                max_stat = max(max_stat, abs(stat - ref[0]))
                max_p = max(max_p, abs(p - ref[1]))
    measured = time.perf_counter() - t0
    baseline = measured * len(report.results) / len(chosen)
    speedup = baseline / ours
    return {
        "pairs": report.n_tests, "symbols": len(bars.symbols), "bars": bars.n_bars, "in_sample_bars": h,
        "load_csv_s": round(load_s, 3), "warmup_s": round(warmup_s, 3),
        "scan_runs_s": [round(t, 4) for t in runs], "scan_median_s": round(ours, 4),
        "baseline": "statsmodels coint (autolag aic), 3 tests per pair: both directions in-sample + the tail",
        "baseline_pairs_timed": len(chosen), "baseline_calls": calls, "baseline_measured_s": round(measured, 2),
        "baseline_all_pairs_s": round(baseline, 2), "baseline_scaled_from_sample": step != 1,
        "speedup": round(speedup, 1),
        "max_abs_stat_diff": max_stat, "max_abs_pvalue_diff": max_p,
        "targets": {"scan_max_s": 1.0, "min_speedup": 20.0, "stat_tol": 1e-8, "pvalue_tol": 1e-6},
        "meets_targets": ours <= 1.0 and speedup >= 20.0 and max_stat <= 1e-8 and max_p <= 1e-6,
        "passed_checks": len(report.passed),
    }


SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "scan": bench_scan, "backtest": bench_backtest.measure, "sweep": bench_sweep.measure}
ONE_CORE = {"scan", "backtest"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {list(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="time baselines on a sample and scale up")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs after warm-up (median reported)")
    bench_backtest.add_arguments(parser)
    bench_sweep.add_arguments(parser)
    args = parser.parse_args()
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {unknown}; known: {list(SECTIONS)}")
    pinning = hasattr(os, "sched_setaffinity")
    every_cpu = os.sched_getaffinity(0) if pinning else set()
    result: dict[str, Any] = {}
    for name in wanted:
        if pinning:
            os.sched_setaffinity(0, {min(every_cpu)} if name in ONE_CORE else every_cpu)
        section = SECTIONS[name](args)
        section["cpus"] = sorted(os.sched_getaffinity(0)) if pinning else None
        result[name] = section
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
