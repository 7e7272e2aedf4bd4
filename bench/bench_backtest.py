"""Backtest speed: 10 pairs over the bundled 5m candles, bars per second, printed as JSON.

The issue's target is 10 pairs x 525,600 1m bars (a year) in <= 30 s on one core. The bundled data
hold 8,639 5m bars (30 days), so this measures the backtest over ``--bars`` of them (default: all
after the warm-up) and reports the rate; the projected time for 525,600 bars is that many bars
at the measured rate (the cost per bar does not depend on the bar's length: each bar is
``steps_per_bar`` quotes per symbol either way). Nothing is tiled: a rate over real data.

Baseline, in the same run: the same quotes (``ReplayFeed``) fed straight into the same
generators with no router, engine or paper exchange, so the JSON also says how much of the
time the execution side takes (``engine_overhead_ratio``).

    python bench/bench_backtest.py [--bars N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loguru import logger  # noqa: E402
from rich.console import Console  # noqa: E402

from core.config import compact_symbol, load_app_config, load_pairs_config, signal_params  # noqa: E402
from research.backtest import Backtest, BacktestRequest, load_market, replay_window  # noqa: E402
from research.replay_feed import ReplayFeed, unified_symbol  # noqa: E402
from market_replay.config import demo_replay_config  # noqa: E402
from signals.generator import SignalGenerator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET_BARS, TARGET_SECONDS = 525_600, 30.0


def baseline(config, pairs, request: BacktestRequest) -> tuple[int, float]:
    """Quotes -> generators only (every signal 'executed'): the signal side's share of the cost."""
    candles, rules = load_market(request, pairs)
    history = max(signal_params(config.signal, p).lookback_bars for p in pairs) + 5
    start, end_ms = replay_window(request, candles, history)
    feed = ReplayFeed(rules=rules, candles=candles, config=demo_replay_config(warmup_bars=start))
    gens: dict[str, list[SignalGenerator]] = {}
    for p in pairs:
        gen = SignalGenerator(signal_params(config.signal, p), symbol_a=unified_symbol(compact_symbol(p.leg_a)),
                              symbol_b=unified_symbol(compact_symbol(p.leg_b)))
        hist = asyncio.run(feed.history([gen.symbol_a, gen.symbol_b], bar_seconds=300, bars=history))
        gen.warm_up(hist[gen.symbol_a], hist[gen.symbol_b])
        for s in (gen.symbol_a, gen.symbol_b):
            gens.setdefault(s, []).append(gen)
    t0 = time.perf_counter()
    first = feed.next_ms() or end_ms
    while (nxt := feed.next_ms()) is not None and nxt < end_ms:
        for quote in feed.step():
            for gen in gens.get(quote.symbol, ()):
                signal = gen.update(quote)
                if signal is not None:
                    gen.complete(signal, True)
    return max(1, -(-(end_ms - first) // feed.bar_ms)), time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=0, help="bars to replay (0: all the bundled data)")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    config = load_app_config(ROOT / "config.json")
    pairs = [p for p in load_pairs_config(ROOT / "pairs_config.json", config.signal, risk=config.risk) if p.enabled]
    request = BacktestRequest(progress=False, out_dir=Path("/tmp") / f"bench-backtest-{int(time.time())}")
    if args.bars:
        candles, _ = load_market(request, pairs)
        series = next(iter(candles.values()))
        history = max(signal_params(config.signal, p).lookback_bars for p in pairs) + 5
        last = min(len(series) - 1, history + args.bars)
        request = BacktestRequest(progress=False, out_dir=request.out_dir, to_ms=series.open_ms[last])
    base_bars, base_s = baseline(config, pairs, request)
    bt = Backtest(config=config, pairs=pairs, request=request, console=Console(file=open("/dev/null", "w")))
    t0 = time.perf_counter()
    result = asyncio.run(bt.run())
    total_s = time.perf_counter() - t0
    s = result.summary
    rate = s["bars"] / s["wall_seconds"]
    print(json.dumps({
        "pairs": len(pairs), "symbols": len({leg for p in pairs for leg in (p.leg_a, p.leg_b)}),
        "bars": s["bars"], "bar_seconds": 300, "quotes": s["quotes"],
        "steps_per_bar": s["settings"]["steps_per_bar"], "signals": s["signals"], "fills": s["fills"],
        "replay_seconds": round(s["wall_seconds"], 3), "total_seconds_incl_load_and_write": round(total_s, 3),
        "bars_per_second": round(rate, 1), "quotes_per_second": round(s["quotes"] / s["wall_seconds"], 1),
        "baseline_signals_only_bars_per_second": round(base_bars / base_s, 1),
        "engine_overhead_ratio": round((s["wall_seconds"] / s["bars"]) / (base_s / base_bars), 2),
        "target": {"bars": TARGET_BARS, "seconds": TARGET_SECONDS, "needed_bars_per_second": TARGET_BARS / TARGET_SECONDS,
                   "projected_seconds_at_measured_rate": round(TARGET_BARS / rate, 1),
                   "met": TARGET_BARS / rate <= TARGET_SECONDS},
        "note": "real bundled 5m data, not tiled; the machine is shared (2 cores), so rates are indicative",
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
