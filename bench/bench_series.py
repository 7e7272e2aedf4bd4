"""Cost of the session report's per-bar recorder on the quote path (``app/series.py``). Prints JSON.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_series.py [--quick]``.

The router calls ``SeriesRecorder.on_quote`` before the generators update, on every quote. The
baseline, measured in the same run on the same quotes, is the generators' own updates: real
Binance USD-M bookTicker quotes (BTCUSDT + ETHUSDT, 2024-07-19) fanned out to 10 pairs with
1-second bars, so a bar closes every second (far more often than the default 5 minutes: the
recorder's sampling branch runs as often as it can). ``overhead_pct`` is (with - without) /
without, best of ``rounds`` interleaved runs each (a shared machine's noise); on a loaded machine
that difference drowns in noise, so ``recorder_only_ns`` times the observer alone over the same
quotes (its per-bar branch included) and ``recorder_share_pct`` puts it against the generators.
``memory`` is the traced allocation of a full ring (``MAX_BARS_PER_PAIR`` samples) per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402

from app.series import MAX_BARS_PER_PAIR, SeriesRecorder  # noqa: E402
from bench.bench_signals import make_pairs, split_capture  # noqa: E402
from execution.journal import Journal  # noqa: E402

PAIRS = 10


def recorder_only(quotes: list, journal: Journal) -> float:
    """The observer's own cost per quote: the generators are not updated, so every bar change
    of a symbol walks its pairs (the sampling check), as live."""
    gens = make_pairs(PAIRS, WARM)
    observe = SeriesRecorder({g.pair_id: g for g in gens}, journal=journal).on_quote
    start = time.perf_counter_ns()
    for q in quotes:
        observe(q)
    return (time.perf_counter_ns() - start) / len(quotes)


def run_once(quotes: list, *, with_recorder: bool, journal: Journal) -> tuple[float, int]:
    gens = make_pairs(PAIRS, WARM)
    recorder = SeriesRecorder({g.pair_id: g for g in gens}, journal=journal)
    observe = recorder.on_quote
    start = time.perf_counter_ns()
    if with_recorder:
        for q in quotes:
            observe(q)
            for g in gens:
                g.update(q)
    else:
        for q in quotes:
            for g in gens:
                g.update(q)
    elapsed = time.perf_counter_ns() - start
    return elapsed / len(quotes), sum(len(s) for s in recorder.samples.values())


def ring_bytes(journal: Journal) -> int:
    gens = make_pairs(1, WARM)
    recorder = SeriesRecorder({g.pair_id: g for g in gens}, journal=journal)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    ring = recorder.samples[gens[0].pair_id]
    for i in range(MAX_BARS_PER_PAIR):
        ring.append((i * 1000, 0.1 + i, 0.2 + i, 0.3 + i, 0.4 + i))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer quotes and rounds")
    args = parser.parse_args()
    logger.remove()
    global WARM
    WARM, live = split_capture()
    quotes = live[:20_000] if args.quick else live[:100_000]
    rounds = 2 if args.quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal.open(Path(tmp) / "bench.sqlite", mode="paper")
        without, with_, alone, samples = [], [], [], 0
        for _ in range(rounds):  # interleaved, so a neighbour's load hits both alike
            without.append(run_once(quotes, with_recorder=False, journal=journal)[0])
            ns, samples = run_once(quotes, with_recorder=True, journal=journal)
            with_.append(ns)
            alone.append(recorder_only(quotes, journal))
        ring = ring_bytes(journal)
        journal.close()
    base, rec = min(without), min(with_)
    print(json.dumps({
        "quotes": len(quotes), "pairs": PAIRS, "rounds": rounds, "bar_seconds": 1,
        "per_quote_ns": {"generators_only": round(base), "with_recorder": round(rec)},
        "overhead_pct": round((rec - base) / base * 100, 2),
        "recorder_only_ns": round(min(alone)), "recorder_share_pct": round(min(alone) / base * 100, 2),
        "bar_samples_recorded": samples,
        "memory": {"ring_bars": MAX_BARS_PER_PAIR, "bytes_per_pair_full": ring,
                   "mb_for_10_pairs": round(ring * 10 / 1e6, 2)},
    }, indent=2))


WARM: list = []

if __name__ == "__main__":
    main()
