"""Quote generation of the candle replay: ``CandleSource.quote_block`` against ``advance_to``. JSON.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_quotes.py [--quick]``. About 15 s
(``--quick``: one round, the stream over a tenth of the range).

The backtest's target (10 pairs x 525,600 1m bars in <= 30 s on one core) leaves about 2 s for
its quotes: a year of 1m bars at 6 steps for 20 symbols is 63 million. Measured on the bundled
5m candles (20 symbols, 30 steps per bar, the demo's replay: 1 % range spread, jittered stamps),
the whole range, after a warm-up call (numba's cache loaded):

* ``quote_block_reused``: the range in blocks of ``--block`` steps, each into the memory of the
  previous one (``out=``): the kernel's own rate, what a bulk reader walking the replay sees;
* ``quote_block_fresh_blocks``: the same blocks, each in new arrays;
* ``quote_block_one_call``: the whole range in one call, 40 bytes of new memory per quote: the
  first round pays the first touch of 200 MB (page faults; on this VM about 1.8 ns a byte, more
  than the quotes), later rounds may get pages back from the allocator;
* baseline, in the same run: ``advance_to`` streaming the range one step per call, as the
  simulator and ``research/replay_feed.py`` read it (Python tuples, the ``QuoteTick`` API);
* ``quote_block_reused_6_steps``: the reused blocks again at 6 steps per bar, the year's setting
  (a bar's path is made once for fewer quotes), which the year's projection uses.

Every figure counts quotes (cells with a bar), not cells. The machine is shared (2 cores): rates
are best of ``--rounds`` (each round's seconds are listed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
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
STEPS, YEAR_STEPS = 30, 6  # the demo's steps per bar; the year's setting
YEAR_QUOTES = 20 * 525_600 * YEAR_STEPS


def build_source(steps_per_bar: int) -> tuple[CandleSource, float]:
    candles = load_candles(DATA)
    rules = build_rules(load_exchange_info(EXCHANGE_INFO), {s: c.price_hint() for s, c in candles.items()})
    config = replace(demo_replay_config(warmup_bars=0), steps_per_bar=steps_per_bar)
    start = time.perf_counter()
    source = CandleSource(Instruments.from_rules(rules), candles, config)
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


def best(run, rounds: int) -> dict[str, object]:
    results = [run() for _ in range(rounds)]
    quotes, seconds = min(results, key=lambda r: r[1] / r[0])
    return {"quotes": quotes, "seconds": round(seconds, 4), "quotes_per_second": round(quotes / seconds),
            "seconds_each_round": [round(r[1], 4) for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", type=int, default=4096, help="steps per block (default 4096)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, the stream over a tenth of the range")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    source, build_s = build_source(STEPS)
    source.quote_block(0, 1000)  # warm-up: numba's cache, page-ins
    source.advance_to(source.next_event_ms())  # type: ignore[arg-type]
    whole = best(lambda: one_call(source), rounds)  # first: its first round meets fresh memory
    reused = best(lambda: blocks(source, args.block, reuse=True), rounds)
    fresh = best(lambda: blocks(source, args.block, reuse=False), rounds)
    stream = best(lambda: streamed(source, source.total_steps // 10 if args.quick else None), rounds)
    year_source, _ = build_source(YEAR_STEPS)
    year_source.quote_block(0, 1000)
    year = best(lambda: blocks(year_source, args.block, reuse=True), rounds)
    qps, year_qps = reused["quotes_per_second"], year["quotes_per_second"]
    stream_qps = stream["quotes_per_second"]
    print(json.dumps({
        "data": DATA.name, "symbols": len(source.inst.symbols), "bars": max(source.n_bars),
        "steps_per_bar": source.steps, "steps": source.total_steps, "replay": "demo (1 % range spread, jittered stamps)",
        "arrays_build_seconds": round(build_s, 3), "block_steps": args.block, "rounds": rounds,
        "quote_block_reused": reused, "quote_block_fresh_blocks": fresh, "quote_block_one_call": whole,
        "baseline_advance_to_stream": stream,
        "speedup_vs_stream": {"reused": round(qps / stream_qps, 1),  # type: ignore[operator]
                              "fresh_blocks": round(fresh["quotes_per_second"] / stream_qps, 1),  # type: ignore[operator]
                              "one_call": round(whole["quotes_per_second"] / stream_qps, 1)},  # type: ignore[operator]
        "quote_block_reused_6_steps": year,
        "target": {"quotes_per_second": TARGET_QPS, "met": min(qps, year_qps) >= TARGET_QPS,  # type: ignore[operator]
                   "year_1m_6_steps_quotes": YEAR_QUOTES,
                   "projected_year_seconds_at_6_steps_rate": round(YEAR_QUOTES / year_qps, 2),  # type: ignore[operator]
                   "projected_year_seconds_streamed": round(YEAR_QUOTES / stream_qps, 1)},  # type: ignore[operator]
        "note": "one core; the machine is shared, rates are best of the rounds",
    }, indent=2))


if __name__ == "__main__":
    main()
