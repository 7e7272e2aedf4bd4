"""Backtest speed: 10 pairs x 525,600 1m bars (a year) on one core, printed as JSON.

The year is the bundled month of 5m candles (data/binance-usdm-perp-5m-2023-07, 8,639 bars of 20
symbols) read as 1m candles and repeated in alternating direction -- forward, then backward (each
candle's open and close swapped), then forward -- so the prices stay continuous at every seam; 61
passes make the 525,600 bars replayed plus the warm-up. The files are written once into
``--cache`` (not the repository). The backtest runs as ``python main.py backtest`` does, on the
shipped pairs and config with ``signal.bar_seconds`` 60: the demo's quote rate (a quote per symbol
every 10 s, 6 per 1m candle), the replay kernel, the real engine and paper exchange on every signal.

Baseline in the same run: the reference loop (``--per-quote``, every quote through the router as in
a session) and the kernel loop over the same first ``--slice-days`` of the year; their summaries
must be identical (``identical``), and ``speedup`` is the ratio of their replay times.

    python bench/bench_backtest.py [--days 365] [--slice-days 2] [--cache /tmp/pairs-bot-bench-year]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger  # noqa: E402
from rich.console import Console  # noqa: E402

from core.config import load_app_config, load_pairs_config, signal_params  # noqa: E402
from market_replay.datasets import CANDLE_SUFFIX, candle_symbols, load_candles  # noqa: E402
from research.backtest import DEFAULT_DATA_DIR, Backtest, BacktestRequest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET_BARS, TARGET_SECONDS = 525_600, 30.0
MINUTE_MS = 60_000
YEAR_START_MS = 1_672_531_200_000  # 2023-01-01T00:00Z
RUN_ONLY = {"wall_seconds", "bars_per_second", "replay_loop", "replay_seconds"}


def write_year(cache: Path, bars: int) -> Path:
    """``bars`` 1m candles per bundled symbol in ``cache``/1m-``bars`` (kept between runs; one
    folder per length, so a shorter run never leaves its files where a longer one looks)."""
    cache = cache / f"1m-{bars}"
    cache.mkdir(parents=True, exist_ok=True)
    stamp = cache / "complete"
    if stamp.is_file():
        return cache
    month = load_candles(DEFAULT_DATA_DIR, candle_symbols(DEFAULT_DATA_DIR))
    for symbol, s in month.items():
        forward = list(zip(s.open, s.high, s.low, s.close, s.volume))
        backward = [(c, h, lo, o, v) for o, h, lo, c, v in reversed(forward)]
        with gzip.open(cache / f"{symbol}{CANDLE_SUFFIX}", "wt", newline="", compresslevel=1) as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp_ms", "open", "high", "low", "close", "volume"])
            k, lap = 0, 0
            while k < bars:
                for row in forward if lap % 2 == 0 else backward:
                    if k == bars:
                        break
                    writer.writerow([YEAR_START_MS + k * MINUTE_MS, *row])
                    k += 1
                lap += 1
    stamp.write_text("ok\n")
    return cache


def run(config, pairs, request: BacktestRequest) -> tuple[dict, float]:
    t0 = time.perf_counter()
    result = asyncio.run(Backtest(config=config, pairs=pairs, request=request,
                                  console=Console(file=open("/dev/null", "w"))).run())
    return result.summary, time.perf_counter() - t0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=float, default=365.0, help="days of 1m bars replayed (default a year)")
    parser.add_argument("--slice-days", type=float, default=2.0, help="days of the baseline comparison")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pairs-bot-bench-year"))


def measure(args: argparse.Namespace) -> dict:
    """The year's run and the same-run baseline on its first ``--slice-days``, as one JSON-able dict."""
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    config = load_app_config(ROOT / "config.json")
    config = config.model_copy(update={"signal": config.signal.model_copy(update={"bar_seconds": 60})})
    pairs = [p for p in load_pairs_config(ROOT / "pairs_config.json", config.signal, risk=config.risk) if p.enabled]
    warmup = max(signal_params(config.signal, p).lookback_bars for p in pairs) + 5
    bars = int(args.days * 1440)
    t0 = time.perf_counter()
    data = write_year(args.cache, bars + warmup)
    prepare_s = time.perf_counter() - t0
    first_ms = YEAR_START_MS + warmup * MINUTE_MS
    out = Path("/tmp") / f"bench-backtest-{int(time.time())}"

    def request(days: float, name: str, **kw) -> BacktestRequest:
        return BacktestRequest(data_dir=data, from_ms=first_ms, to_ms=first_ms + int(days * 86_400_000),
                               out_dir=out / name, progress=False, report_timeout_seconds=0, **kw)

    ref, ref_total = run(config, pairs, request(args.slice_days, "slice-per-quote", per_quote=True))
    fast, fast_total = run(config, pairs, request(args.slice_days, "slice-kernel"))
    identical = {k: v for k, v in ref.items() if k not in RUN_ONLY} == {k: v for k, v in fast.items()
                                                                         if k not in RUN_ONLY}
    year, year_total = run(config, pairs, request(args.days, "year"))
    rate = year["bars"] / year["wall_seconds"]
    return {
        "data": f"the bundled 5m month as 1m candles, repeated forward/backward to {bars + warmup:,} bars "
                f"({warmup} of them warm-up)", "pairs": len(pairs), "bar_seconds": 60,
        "steps_per_bar": year["settings"]["steps_per_bar"],
        "year": {"bars": year["bars"], "quotes": year["quotes"], "signals": year["signals"],
                 "trades_executed": year["trades_executed"], "signals_refused": year["signals_refused"],
                 "round_trips": year["round_trips"], "replay_seconds": round(year["wall_seconds"], 2),
                 "replay_split_seconds": year["replay_seconds"], "bars_per_second": round(rate, 1),
                 "seconds_incl_load_and_write": round(year_total, 2)},
        "target": {"bars": TARGET_BARS, "seconds": TARGET_SECONDS, "met": year["bars"] >= TARGET_BARS and
                   year["wall_seconds"] <= TARGET_SECONDS,
                   "signal_pass_met": year["bars"] >= TARGET_BARS and
                   (year["replay_seconds"] or {}).get("signal_pass", 1e9) <= TARGET_SECONDS},
        "baseline_slice": {"days": args.slice_days, "bars": ref["bars"], "signals": ref["signals"],
                           "per_quote_replay_seconds": round(ref["wall_seconds"], 2),
                           "kernel_replay_seconds": round(fast["wall_seconds"], 2),
                           "speedup": round(ref["wall_seconds"] / fast["wall_seconds"], 2),
                           "identical": identical},
        "data_prepare_seconds": round(prepare_s, 1),
        "note": "one process, one core for the replay; the machine is shared (2 cores), so times are indicative",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    print(json.dumps(measure(parser.parse_args()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
