"""``python main.py sweep``'s command line: check every input, then run, then write.

Order of steps, as ``scan``'s: the grid, the config, the pairs, every configuration (against the
config's own rules), the data and the range are all checked before a cluster is started, so bad
input costs one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from core.errors import UsageError

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_OK = 0


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    sweep = sub.add_parser("sweep", help="backtest a parameter grid over walk-forward folds on Dask; "
                                         "score each configuration out of sample")
    sweep.add_argument("--grid", nargs="+", required=True, metavar="NAME=V1,V2",
                       help="swept signal parameters: lookback (lookback_bars), entry (entry_threshold), exit "
                            "(exit_threshold), stop (stop_loss_threshold); each value applies to EVERY pair "
                            "(a pair's own override in pairs_config.json is cleared)")
    sweep.add_argument("--config", type=Path, default=PROJECT_DIR / "config.json", metavar="PATH")
    sweep.add_argument("--pairs", type=Path, default=PROJECT_DIR / "pairs_config.json", metavar="PATH",
                       help="the pairs backtested (the enabled ones)")
    sweep.add_argument("--data", type=Path, default=None, metavar="DIR",
                       help="folder of <SYMBOL>-5m.csv.gz candles (default: data/binance-usdm-perp-5m-2023-07)")
    sweep.add_argument("--from", dest="date_from", default=None, metavar="DATE",
                       help="start (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC; default: after the largest warm-up)")
    sweep.add_argument("--to", dest="date_to", default=None, metavar="DATE",
                       help="end: last day inclusive or moment exclusive (default: the end of the data)")
    sweep.add_argument("--folds", type=int, default=3, metavar="K",
                       help="walk-forward folds: the range is cut into K+1 blocks (default 3)")
    sweep.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                       help="a running Dask scheduler (its workers must run in this project's folder); "
                            "default: a LocalCluster on 127.0.0.1")
    sweep.add_argument("--workers", type=int, default=None, metavar="N",
                       help="LocalCluster worker processes (default: the machine's cores)")
    sweep.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="where report.html, heatmap.png, results.csv and results.json go "
                            "(default: logs/sweep-<UTC time>)")
    sweep.add_argument("--show", type=int, default=20, metavar="N", help="rows of the printed table (default 20)")
    return sweep


def sweep_command(args: argparse.Namespace, console: Console) -> int:
    """Run ``sweep`` from parsed arguments; bad input raises ``UsageError``/``ConfigurationError``."""
    from core.config import load_app_config, load_pairs_config
    from research.backtest import DEFAULT_DATA_DIR, BacktestRequest, _iso, load_market, parse_date
    from research.sweep import (build_tasks, config_label, configurations, default_workers, make_blocks, make_folds,
                                max_lookback, parse_grid, run_dask, score)
    from research.sweep_report import TABLE_WIDTH, results_table, write_outputs

    grid = parse_grid(args.grid)
    if args.folds < 1:
        raise UsageError("sweep: --folds must be at least 1")
    if args.show < 1:
        raise UsageError("sweep: --show must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise UsageError("sweep: --workers must be at least 1")
    config = load_app_config(args.config)
    pairs = [p for p in load_pairs_config(args.pairs, config.signal, risk=config.risk) if p.enabled]
    if not pairs:
        raise UsageError(f"sweep: no enabled pair in {args.pairs}")
    configs = configurations(grid)
    data_dir = args.data or DEFAULT_DATA_DIR
    candles, _rules = load_market(BacktestRequest(data_dir=data_dir), pairs)
    series = next(iter(candles.values()))
    bar_ms = series.interval_ms
    data_end = series.open_ms[-1] + bar_ms
    warmup = max_lookback(config, pairs, configs) + 5  # the SignalRouter's warm-up fetch, as the backtest's
    earliest = series.open_ms[0] + warmup * bar_ms
    from_ms = earliest if args.date_from is None else max(earliest, parse_date(args.date_from))
    to_ms = data_end if args.date_to is None else min(data_end, parse_date(args.date_to, end=True))
    if from_ms >= to_ms:
        raise UsageError(f"sweep: no bar in the range {_iso(from_ms)} to {_iso(to_ms)} (the data run "
                         f"{_iso(series.open_ms[0])} to {_iso(data_end)}; the first {warmup} bars are the warm-up)")
    blocks = make_blocks(from_ms, to_ms, args.folds, bar_ms)
    folds = make_folds(blocks)
    tasks = build_tasks(config, pairs, configs, blocks, str(data_dir))
    executor = args.scheduler or f"LocalCluster({args.workers or default_workers()} workers, 127.0.0.1)"
    console.print(f"sweep: {len(configs)} configurations x {len(blocks)} blocks = {len(tasks)} backtests of "
                  f"{len(pairs)} pairs, {_iso(from_ms)} to {_iso(to_ms)}, {args.folds} folds, on {executor}",
                  highlight=False)
    progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=Console(stderr=True), disable=not sys.stderr.isatty(),
                        transient=True)
    wall0 = time.perf_counter()
    with progress:
        bar = progress.add_task("backtests", total=len(tasks))
        runs = run_dask(tasks, scheduler=args.scheduler, workers=args.workers,
                        progress=lambda done, total: progress.update(bar, completed=done))
    wall = time.perf_counter() - wall0
    scored = score(configs, folds, runs)
    table = results_table(scored, show=args.show)
    table_console = Console(width=TABLE_WIDTH, record=True, file=sys.stdout)
    table_console.print(table)
    for w in scored["walk_forward"]:
        table_console.print(f"fold {w['fold']}: best in-sample {w['chosen']} ({w['is_pnl_usdt']:,.2f} USDT), "
                            f"out of sample {w['oos_pnl_usdt']:,.2f} USDT", highlight=False)
    table_console.print(f"walk-forward out-of-sample PnL: {scored['walk_forward_oos_pnl_usdt']:,.2f} USDT; "
                        f"every pair ran the grid's values (per-pair overrides of the swept fields cleared)",
                        highlight=False)
    table_text = table_console.export_text()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out or Path("logs") / f"sweep-{stamp}"
    meta = {"from": _iso(from_ms), "to": _iso(to_ms), "pairs": [p.pair_id for p in pairs], "executor": executor,
            "wall_seconds": wall, "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "folds": [{"fold": f.index, "in_sample": f"{_iso(f.in_sample.from_ms)} to {_iso(f.in_sample.to_ms)}",
                       "out_of_sample": f"{_iso(f.out_of_sample.from_ms)} to {_iso(f.out_of_sample.to_ms)}"}
                      for f in folds],
            "labels": [config_label(c) for c in configs]}
    paths = write_outputs(out_dir, meta=meta, grid=grid, scored=scored, runs=runs, table_text=table_text)
    console.print(f"sweep: {len(tasks)} backtests in {wall:.1f} s; {paths['html']}, results.csv and results.json "
                  f"in {out_dir}", highlight=False)
    return EXIT_OK
