"""``python main.py scan``: the command line of the pair scanner (``research/scan.py``).

Why the order of steps: every input is checked (config, paths, symbols, enough bars) before the
scan runs, and the scan runs before anything is written, so bad input costs one line on stderr,
exit 2 and no file. The user's ``pairs_config.json`` is written only with ``--write``, after a
timestamped copy of it is kept next to it; otherwise the proposal goes to ``--out`` alone.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.cli_args import open_fraction, positive_int
from core.config import KLINE_SECONDS, PairsFile, load_app_config, validate_pair_rules
from core.errors import UsageError
from core.files import write_json_atomically

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("logs") / "pairs_config.proposed.json"
EXIT_OK = 0
TABLE_WIDTH = 100


def add_scan_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``scan`` subcommand and its options."""
    scan = sub.add_parser("scan",
                          help="test every pair of the local candles for cointegration and propose pairs_config.json")
    scan.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                      help="bot settings: signal bar, thresholds (default: config.json next to main.py)")
    scan.add_argument("--pairs", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                      help="the pairs file --write replaces (default: pairs_config.json next to main.py)")
    scan.add_argument("--data", type=Path, default=PROJECT_DIR / "data", metavar="DIR",
                      help="folder searched for <SYMBOL>-<TF>.csv.gz candle files (default: the bundled data/)")
    scan.add_argument("--timeframe", default=None, metavar="TF",
                      help="candle size, e.g. 5m or 1h (default: config.json's signal.bar_seconds)")
    scan.add_argument("--symbols", nargs="+", default=None, metavar="SYM",
                      help="the symbols to pair, e.g. BTC ETH/USDT SOLUSDT (default: all of the timeframe)")
    scan.add_argument("--write", action="store_true",
                      help="also replace the --pairs file (default pairs_config.json), keeping a timestamped backup")
    scan.add_argument("--out", type=Path, default=None, metavar="FILE",
                      help=f"where the proposal is written (default: {DEFAULT_OUT} next to main.py)")
    scan.add_argument("--top", type=positive_int, default=10, metavar="N", help="pairs to propose (default 10)")
    scan.add_argument("--correction", choices=("bh", "bonferroni"), default="bh",
                      help="multiple-testing control: Benjamini-Hochberg (default) or Bonferroni")
    scan.add_argument("--alpha", type=open_fraction, default=0.05, help="level of the corrected test (default 0.05)")
    scan.add_argument("--in-sample", type=open_fraction, default=0.7, metavar="FRACTION", dest="in_sample",
                      help="share of the bars the selection sees; the rest is the held-out tail (default 0.7)")
    scan.add_argument("--min-volume", type=float, default=5e6, metavar="USDT", dest="min_volume",
                      help="liquidity floor: median daily quote volume of each leg (default 5000000)")
    scan.add_argument("--show", type=positive_int, default=20, metavar="N",
                      help="rows of the ranked table to print (default 20)")
    return scan


def scan_command(args: argparse.Namespace, console: Console) -> int:
    """Run ``scan`` from parsed arguments; raises ``UsageError``/``ConfigurationError`` on bad input."""
    from research.bars import load_bars  # pandas, numba: only when scanning
    from research.scan import MIN_BARS, ScanSettings, proposed_pairs, run_scan

    config_path = Path(getattr(args, "config", PROJECT_DIR / "config.json"))
    pairs_path = Path(getattr(args, "pairs", PROJECT_DIR / "pairs_config.json"))
    out_path = args.out if args.out is not None else PROJECT_DIR / DEFAULT_OUT
    config = load_app_config(config_path)
    if _same_file(out_path, pairs_path) and not args.write:
        raise UsageError(f"--out {out_path} is the pairs file in use: refusing to overwrite it without --write")
    timeframe = args.timeframe or KLINE_SECONDS[config.signal.bar_seconds]
    try:
        settings = ScanSettings(in_sample_fraction=args.in_sample, alpha=args.alpha, correction=args.correction,
                                min_quote_volume_usdt_day=args.min_volume, top=args.top)
    except ValueError as exc:
        raise UsageError(f"scan: {exc}") from exc
    bars = load_bars(args.data, timeframe, args.symbols)
    if bars.n_bars < MIN_BARS:
        raise UsageError(f"--data {args.data}: only {bars.n_bars} {timeframe} bars common to "
                         f"{', '.join(bars.symbols)}; the scan needs at least {MIN_BARS}")

    started = time.perf_counter()
    n_pairs = len(bars.symbols) * (len(bars.symbols) - 1) // 2
    with Progress(TextColumn("scanning {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{len(bars.symbols)} symbols", total=n_pairs)
        report = run_scan(bars, settings, progress=lambda done, total: bar.update(task, completed=done))
    seconds = time.perf_counter() - started

    proposal = proposed_pairs(report, config.signal)
    if not proposal["pairs"]:
        raise UsageError("scan: no pair with a positive hedge ratio and a finite half-life to propose")
    parsed = PairsFile.model_validate(proposal)  # what we write must load: the strict model, then the rules
    validate_pair_rules(list(parsed.pairs), config.signal, str(out_path), risk=config.risk)

    console.print(ranked_table(report, args.show, shipped={p["pair_id"] for p in proposal["pairs"]},
                               signal=config.signal))
    console.print(summary_line(report, seconds), highlight=False)
    write_json_atomically(out_path, proposal, indent=2)
    passed = sum(p["scan"]["passed"] for p in proposal["pairs"])
    console.print(f"proposal: {out_path} ({len(proposal['pairs'])} pairs, {passed} pass every check)",
                  highlight=False)
    if args.write:
        backup = backup_file(pairs_path)
        write_json_atomically(pairs_path, proposal, indent=2)
        console.print(f"wrote {pairs_path}" + (f"; the previous file is kept as {backup}" if backup else ""),
                      highlight=False)
    return EXIT_OK


def backup_file(path: Path) -> Path | None:
    """Copy ``path`` to ``<name>.bak-<UTC time>`` beside it (never over an existing backup)."""
    if not path.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    shutil.copy2(path, backup)
    return backup


RANKED_COLUMNS = ("#", "pair X_Y", "beta", "EG p", "p adj", "OOS p", "dbeta", "HL", "look", "H",
                  "corr", "cross", "liq", "verdict")


def ranked_table(report: Any, show: int, *, shipped: set[str], signal: Any) -> Table:
    """The first ``show`` ranked pairs, in 100 columns. ``*`` marks a proposed pair."""
    from research.bars import TIMEFRAME_SECONDS
    from research.scan import suggested_lookback

    factor = TIMEFRAME_SECONDS[report.timeframe] / signal.bar_seconds
    table = Table(title=f"{report.n_tests} pairs, {report.timeframe}: ranked (first {min(show, report.n_tests)})",
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for column in RANKED_COLUMNS:
        table.add_column(column, justify="left" if column in ("pair X_Y", "verdict") else "right",
                         overflow="fold", max_width=10 if column == "verdict" else None)
    for i, r in enumerate(report.results[:show], start=1):
        table.add_row(
            str(i), ("*" if r.pair_id in shipped else "") + r.pair_id, f"{r.beta:.3f}", _p(r.p_value), _p(r.p_adj),
            _p(r.oos_p), "-" if not math.isfinite(r.beta_drift) else f"{r.beta_drift:.0%}",
            "inf" if not math.isfinite(r.half_life) else f"{r.half_life:.0f}",
            "-" if not (math.isfinite(r.half_life) and r.half_life > 0)
            else str(suggested_lookback(r.half_life * factor, report.settings, signal)), f"{r.hurst:.2f}", f"{r.correlation:.2f}", str(r.crossings),
            f"{r.min_quote_volume / 1e6:.0f}", "pass" if r.passed else " ".join(r.failed))
    return table


def summary_line(report: Any, seconds: float) -> str:
    s = report.settings
    tail = report.n_bars - report.split
    return (f"{report.n_tests} pairs of {len(report.symbols)} symbols, {report.n_bars} {report.timeframe} bars "
            f"({_day(report.first_ms)} to {_day(report.last_ms)}); in-sample {report.split}, held-out tail {tail} "
            f"from {_day(report.split_ms)}; {s.correction} at {s.alpha:g}: {sum(r.p_adj <= s.alpha for r in report.results)} "
            f"pass p adj, {len(report.passed)} pass every check; scanned in {seconds:.2f} s. "
            "EG p: the larger of both directions' p-values; HL (half-life), cross (mean crossings): in-sample, in "
            "bars of the timeframe; H: Hurst exponent; look: suggested lookback in signal bars; dbeta: hedge ratio change on the tail; "
            "liq: the thinner leg's median quote volume, million USDT/day; verdict: pass or the checks failed "
            "(README, \"Choosing pairs\"); * proposed")


def _p(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
