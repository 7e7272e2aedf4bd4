"""Quote generation of the candle replay: ``CandleSource.quote_block`` against ``advance_to``. JSON.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_quotes.py [--quick]``. About 15 s.

The backtest's target (10 pairs x 525,600 1m bars in <= 30 s on one core) leaves about 2 s for
its quotes: a year of 1m bars at 6 steps for 20 symbols is 63 million. Measured on the bundled
5m candles (20 symbols, 30 steps per bar, the demo's replay: 1 % range spread, jittered stamps),
the whole range, after a warm-up call (numba's cache loaded):

* ``quote_block_reused``: the range in blocks of ``--block`` steps, each into the memory of the
  previous one (``out=``): the kernel's own rate, what a bulk reader walking the replay sees;
* ``quote_block_fresh_blocks``: the same blocks, each in new arrays;
* ``quote_block_one_call``: the whole range in one call, one fresh 40-byte cell per quote: on
  this VM the first touch of fresh memory costs more than the quotes (page faults), so this rate
  says more about the allocator than about the kernel;
* baseline, in the same run: ``advance_to`` streaming the range one step per call, as the
  simulator and ``research/replay_feed.py`` read it (Python tuples, the ``QuoteTick`` API).

Every figure counts quotes (cells with a bar), not cells. The machine is shared (2 cores): rates
are best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from market_replay.config import demo_replay_config  # noqa: E402
from market_replay.datasets import load_candles  # noqa: E402
from market_replay.markets import build_rules, load_exchange_info  # noqa: E402
from market_replay.sources import CandleSource, Instruments  # noqa: E402

DATA = ROOT / "data" / "binance-usdm-perp-5m-2023-07"
EXCHANGE_INFO = ROOT / "data" / "exchange-info" / "binance_usdm_fapi_v1_exchangeInfo_2021-07-21.json"
TARGET_QPS = 30e6
YEAR_QUOTES = 20 * 525_600 * 6


def build_source() -> tuple[CandleSource, float]:
    candles = load_candles(DATA)
    rules = build_rules(load_exchange_info(EXCHANGE_INFO), {s: c.price_hint() for s, c in candles.items()})
    start = time.perf_counter()
    source = CandleSource(Instruments.from_rules(rules), candles, demo_replay_config(warmup_bars=0))
    return source, time.perf_counter() - start


def quotes_in(source: CandleSource, g0: int, g1: int) -> int:
    """Quotes of steps [g0, g1): each symbol's steps with a bar (counted, not read back)."""
    steps = source.steps
    return sum(max(0, min(g1, (off + n) * steps) - max(g0, off * steps))
               for off, n in zip(source.offset, source.n_bars))


def blocks(source: CandleSource, size: int, *, reuse: bool) -> tuple[int, float]:
    out = None
    start = time.perf_counter()
    for g in range(0, source.total_steps, size):
        block = source.quote_block(g, g + size, out=out)
        if reuse and out is None:
            out = block
    return quotes_in(source, 0, source.total_steps), time.perf_counter() - start


def one_call(source: CandleSource) -> tuple[int, float]:
    start = time.perf_counter()
    block = source.quote_block(0, source.total_steps)
    elapsed = time.perf_counter() - start
    return int(np.count_nonzero(block.stamp >= 0)), elapsed


def streamed(source: CandleSource, max_steps: int | None) -> tuple[int, float]:
    quotes = len(source.seek(source.t0))
    last = source.total_steps if max_steps is None else min(source.total_steps, source.g + max_steps)
    start = time.perf_counter()
    while source.g < last:
        quotes += len(source.advance_to(source.next_event_ms()))  # type: ignore[arg-type]
    return quotes, time.perf_counter() - start


def best(run, rounds: int) -> dict[str, float]:
    results = [run() for _ in range(rounds)]
    quotes, seconds = min(results, key=lambda r: r[1] / r[0])
    return {"quotes": quotes, "seconds": round(seconds, 4), "quotes_per_second": round(quotes / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=4096, help="steps per block (default 4096)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, the stream over a tenth of the range")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    source, build_s = build_source()
    source.quote_block(0, 1000)  # warm-up: numba's cache, page-ins
    source.advance_to(source.next_event_ms())  # type: ignore[arg-type]
    reused = best(lambda: blocks(source, args.block, reuse=True), rounds)
    fresh = best(lambda: blocks(source, args.block, reuse=False), rounds)
    whole = best(lambda: one_call(source), rounds)
    stream = best(lambda: streamed(source, source.total_steps // 10 if args.quick else None), rounds)
    qps = reused["quotes_per_second"]
    print(json.dumps({
        "data": DATA.name, "symbols": len(source.inst.symbols), "bars": max(source.n_bars),
        "steps_per_bar": source.steps, "steps": source.total_steps, "replay": "demo (1 % range spread, jittered stamps)",
        "arrays_build_seconds": round(build_s, 3), "block_steps": args.block, "rounds": rounds,
        "quote_block_reused": reused, "quote_block_fresh_blocks": fresh, "quote_block_one_call": whole,
        "baseline_advance_to_stream": stream,
        "speedup_vs_stream": {"reused": round(qps / stream["quotes_per_second"], 1),
                              "fresh_blocks": round(fresh["quotes_per_second"] / stream["quotes_per_second"], 1),
                              "one_call": round(whole["quotes_per_second"] / stream["quotes_per_second"], 1)},
        "target": {"quotes_per_second": TARGET_QPS, "met": qps >= TARGET_QPS,
                   "year_1m_6_steps_quotes": YEAR_QUOTES,
                   "projected_year_seconds": {"reused": round(YEAR_QUOTES / qps, 2),
                                              "fresh_blocks": round(YEAR_QUOTES / fresh["quotes_per_second"], 2),
                                              "stream": round(YEAR_QUOTES / stream["quotes_per_second"], 1)}},
        "note": "one core; the machine is shared, rates are best of the rounds",
    }, indent=2))


if __name__ == "__main__":
    main()
