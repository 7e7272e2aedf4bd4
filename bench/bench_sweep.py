"""Sweep speed: 27 configurations on a Dask LocalCluster of 2 workers against the same sweep run
serially in this process, in the same run; prints JSON (wall times, the ratio, and whether the
two gave identical per-run figures).

Grid ``lookback=30,60,90 entry=1.5,2,2.5 stop=3.5,4,5`` (27 configurations), ``--folds 1`` (two
blocks: 54 backtests), the backtest tests' four pairs (tests/backtest_pairs.json: EOS_AXS,
SAND_EOS, ADA_CELO, SXP_CELO), default range 2023-07-05 to 2023-07-08 inclusive (two blocks of two
days, 576 5m bars each; a shorter range measures mostly the cluster's start), on the bundled data.
The Dask time includes starting and closing the cluster (``dask_wall_seconds``);
``dask_first_result_after_seconds`` shows how much of it is the start-up.

    python bench/bench_sweep.py [--from 2023-07-05] [--to 2023-07-08] [--folds 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import load_app_config, load_pairs_config  # noqa: E402
from research.backtest import DEFAULT_DATA_DIR, parse_date  # noqa: E402
from research.sweep import build_tasks, configurations, make_blocks, parse_grid, run_dask, run_serial  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GRID = ["lookback=30,60,90", "entry=1.5,2,2.5", "stop=3.5,4,5"]
PAIRS = ("EOS_AXS", "SAND_EOS", "ADA_CELO", "SXP_CELO")
COMPARED = ("config_index", "block_index", "pnl_usdt", "round_trips", "trades", "sharpe", "max_drawdown_usdt", "bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="date_from", default="2023-07-05")
    parser.add_argument("--to", dest="date_to", default="2023-07-08")
    parser.add_argument("--folds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)


def measure(args: argparse.Namespace) -> dict:
    """The serial sweep and the same sweep on a LocalCluster, as one JSON-able dict."""
    config = load_app_config(ROOT / "config.json")
    pairs = [p for p in load_pairs_config(ROOT / "tests" / "backtest_pairs.json", config.signal, risk=config.risk)
             if p.pair_id in PAIRS]
    configs = configurations(parse_grid(GRID))
    blocks = make_blocks(parse_date(args.date_from), parse_date(args.date_to, end=True), args.folds, 300_000)
    tasks = build_tasks(config, pairs, configs, blocks, str(DEFAULT_DATA_DIR))

    t0 = time.perf_counter()
    serial = run_serial(tasks)
    serial_s = time.perf_counter() - t0

    first_done: list[float] = []
    t0 = time.perf_counter()
    parallel = run_dask(tasks, workers=args.workers,
                        progress=lambda done, total: first_done.append(time.perf_counter()) if done == 1 else None)
    dask_s = time.perf_counter() - t0
    task_s = sum(r["wall_seconds"] for r in serial)
    identical = [{k: r[k] for k in COMPARED} for r in serial] == [{k: r[k] for k in COMPARED} for r in parallel]
    return {
        "grid": GRID, "configurations": len(configs), "folds": args.folds, "blocks": len(blocks),
        "backtests": len(tasks), "pairs": list(PAIRS), "range": [args.date_from, args.date_to],
        "bars_per_backtest": sorted({r["bars"] for r in serial}), "cores": os.cpu_count(),
        "workers": args.workers,
        "serial_wall_seconds": round(serial_s, 2),
        "dask_wall_seconds": round(dask_s, 2),
        "dask_first_result_after_seconds": round(first_done[0] - t0, 2) if first_done else None,
        "serial_over_dask_ratio": round(serial_s / dask_s, 3),
        "serial_replay_seconds_sum": round(task_s, 2),
        "identical_results": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    print(json.dumps(measure(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
