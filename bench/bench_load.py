"""Candle loading speed: a year of 1m candles for 20 symbols read and turned into ``CandleArrays``,
the byte parse against the ``csv`` reader it replaced, in the same run; printed as JSON.

The year is made from the bundled month (``data/binance-usdm-perp-5m-2023-07``): each symbol's
8,639 recorded rows repeated, as they are, on a 1-minute clock up to ``--rows`` (525,600 = 365
days), written as ``<SYMBOL>-1m.csv.gz`` (gzip level 6, as ``research/store.py`` writes) into
``--dir`` (kept there between runs; never in the repository). Generating it takes about a minute.

New: ``load_candles`` (the byte parse) + ``CandleArrays.build`` over every symbol. Old: the
``csv`` reader (``read_candle_text``, the loader before the byte parse) + ``CandleArrays.build``
on its tuples of text (the text path: join, ``kernels.parse_scaled``), measured on the first
``--old-symbols`` symbols' full year (the whole set takes minutes and gigabytes of strings) and
projected to all of them by the row count, which the old cost is linear in. The numba kernels are
compiled (or loaded from their cache) before either is timed. ``equal`` says the old and the new
arrays of the measured symbols are the same, bit for bit.

    python bench/bench_load.py [--dir /tmp/bench-load-year] [--rows 525600] [--old-symbols 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from market_replay.candle_arrays import CandleArrays  # noqa: E402
from market_replay.candle_csv import parse_candle_bytes  # noqa: E402
from market_replay.config import demo_replay_config  # noqa: E402
from market_replay.datasets import CandleSeries, load_candles, read_candle_text  # noqa: E402
from market_replay.markets import build_rules, load_exchange_info  # noqa: E402
from market_replay.sources import Instruments  # noqa: E402
from research import store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MONTH = ROOT / "data" / "binance-usdm-perp-5m-2023-07"
EXCHANGE_INFO = ROOT / "data" / "exchange-info" / "binance_usdm_fapi_v1_exchangeInfo_2021-07-21.json"
SUFFIX = "-1m.csv.gz"
MINUTE_MS = 60_000
ARRAYS = ("o", "h", "lo", "c", "base_lots", "spread")


def make_year(directory: Path, rows: int) -> list[str]:
    """Write (unless already there with ``rows`` rows) each bundled symbol's month as ``rows`` 1m candles."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / f"rows-{rows}"
    symbols = store.list_symbols(MONTH, "5m")
    if marker.exists() and all((directory / f"{s}{SUFFIX}").is_file() for s in symbols):
        return symbols
    for symbol in symbols:
        month = store.read_rows(store.ohlcv_path(MONTH, symbol, "5m"))
        t0, n = int(month[0][0]), len(month)
        lines = [store.HEADER, *(f"{t0 + k * MINUTE_MS},{','.join(month[k % n][1:])}" for k in range(rows))]
        payload = gzip.compress(("\n".join(lines) + "\n").encode("ascii"), compresslevel=6, mtime=0)
        (directory / f"{symbol}{SUFFIX}").write_bytes(payload)
    marker.touch()
    return symbols


def _clock() -> tuple[float, float]:
    t = os.times()
    return time.perf_counter(), t.user + t.system


def _since(start: tuple[float, float]) -> dict[str, float]:
    wall, cpu = _clock()
    return {"wall_s": round(wall - start[0], 3), "cpu_s": round(cpu - start[1], 3)}


def _build(symbols: list[str], series: list[CandleSeries], inst: Instruments) -> CandleArrays:
    return CandleArrays.build(symbols, series, inst.price_fmt, inst.qty_fmt, [0] * len(symbols), demo_replay_config())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-load-year"), help="folder of the generated year")
    parser.add_argument("--rows", type=int, default=525_600, help="1m candles per symbol (default a year)")
    parser.add_argument("--old-symbols", type=int, default=2, help="symbols the old path is measured on")
    args = parser.parse_args()

    start = _clock()
    symbols = make_year(args.dir, args.rows)
    generate = _since(start)

    start = _clock()  # compile or load the kernels outside the timings
    tiny = parse_candle_bytes(f"{store.HEADER}\n0,1.5,2,1,1.5,3\n60000,1.5,2,1,1.5,3\n".encode())
    assert tiny is not None
    warm = CandleSeries("BTCUSDT", MINUTE_MS, range(0, 2 * MINUTE_MS, MINUTE_MS), tiny.open, tiny.high, tiny.low,
                        tiny.close, tiny.volume, price_decimals=1)
    warm_inst = Instruments.from_rules(build_rules(load_exchange_info(EXCHANGE_INFO), {"BTCUSDT": warm.price_hint()}))
    _build(["BTCUSDT"], [warm], warm_inst)
    _build(["BTCUSDT"], [CandleSeries("BTCUSDT", MINUTE_MS, (0, MINUTE_MS), *(tuple(c) for c in (
        tiny.open, tiny.high, tiny.low, tiny.close, tiny.volume)), price_decimals=1)], warm_inst)
    numba_warmup = _since(start)

    start = _clock()
    candles = load_candles(args.dir, symbols, suffix=SUFFIX)
    new_load = _since(start)
    rules = build_rules(load_exchange_info(EXCHANGE_INFO), {s: candles[s].price_hint() for s in symbols})
    inst = Instruments.from_rules(rules)
    start = _clock()
    arrays = _build(symbols, [candles[s] for s in symbols], inst)
    new_build = _since(start)
    new_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    measured = symbols[: max(1, min(args.old_symbols, len(symbols)))]
    start = _clock()
    old = [read_candle_text(args.dir / f"{s}{SUFFIX}", s) for s in measured]
    old_load = _since(start)
    old_inst = Instruments.from_rules({s: rules[s] for s in measured})
    start = _clock()
    old_arrays = _build(measured, old, old_inst)
    old_build = _since(start)
    rows_measured = int(old_arrays.n_bars.sum())
    equal = all(np.array_equal(getattr(arrays, name)[:rows_measured], getattr(old_arrays, name)) for name in ARRAYS)
    equal = equal and all(tuple(candles[s].close) == o.close and tuple(candles[s].volume) == o.volume
                          for s, o in zip(measured, old))

    scale = int(arrays.n_bars.sum()) / rows_measured
    new_total = {k: round(new_load[k] + new_build[k], 3) for k in new_load}
    old_total = {k: round(old_load[k] + old_build[k], 3) for k in old_load}
    old_projected = {k: round(v * scale, 3) for k, v in old_total.items()}
    print(json.dumps({
        "data": {"dir": str(args.dir), "symbols": len(symbols), "rows_per_symbol": args.rows,
                 "rows": int(arrays.n_bars.sum()), "generate_wall_s": generate["wall_s"]},
        "numba_warmup": numba_warmup,
        "new": {"load": new_load, "build": new_build, "total": new_total, "peak_rss_mb": round(new_rss_mb)},
        "old": {"symbols_measured": len(measured), "rows_measured": rows_measured, "load": old_load,
                "build": old_build, "total": old_total, "projected_total": old_projected,
                "note": f"old measured on {len(measured)} of {len(symbols)} symbols, projected x{scale:.1f} by rows"},
        "speedup": {k: round(old_projected[k] / new_total[k], 1) for k in new_total},
        "equal": bool(equal),
    }, indent=1))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
