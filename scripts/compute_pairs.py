"""Choose the shipped pairs and compute their hedge ratios and half-lives from bundled real data.

Why a script: the numbers in ``pairs_config.json`` must be reproducible by anyone, from the real
Binance USD-M 5-minute candles in ``data/``, with a reference implementation (statsmodels).

Method, for every pair of symbols (X = leg_a, Y = leg_b):
  1. log closes, aligned on the candle open time (the bundled files have no gaps);
  2. hedge ratio beta: OLS of log Y on a constant and log X (statsmodels ``OLS``);
  3. Engle-Granger test (statsmodels ``coint``, constant trend, AIC lag choice): p-value;
  4. half-life in bars: AR(1) of the residual spread, ``ds_t = a + b * s_{t-1}``,
     half-life = -ln 2 / ln(1 + b).
Pairs with beta <= 0 are dropped (the bot's sign convention needs beta > 0). Of the rest, the ten
with the lowest EG p-value are kept, each symbol used at most twice so one coin's move does not
drive half the book. Within a pair the leg with the higher price is Y, a readable convention.

Usage: ``python scripts/compute_pairs.py [--data DIR] [--out pairs_config.json] [--top 10]``.
Without ``--out`` it prints the JSON; it never overwrites a file unless told to.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import statsmodels.api as sm  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from statsmodels.tsa.stattools import coint  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "binance-usdm-perp-5m-2023-07"


def load_log_closes(data_dir: Path) -> pd.DataFrame:
    """One column of log close per symbol, indexed by candle open time (ms)."""
    frames = {}
    for path in sorted(data_dir.glob("*-5m.csv.gz")):
        symbol = path.name.split("-")[0]
        frame = pd.read_csv(path, usecols=["timestamp_ms", "close"]).set_index("timestamp_ms")
        frames[symbol] = np.log(frame["close"].astype(float))
    if not frames:
        raise SystemExit(f"no *-5m.csv.gz files under {data_dir}")
    return pd.DataFrame(frames).dropna()


def analyse_pair(log_x: pd.Series, log_y: pd.Series) -> dict[str, float]:
    """Hedge ratio, EG p-value and half-life of ``log_y - beta * log_x``."""
    ols = sm.OLS(log_y.to_numpy(), sm.add_constant(log_x.to_numpy())).fit()
    intercept, beta = float(ols.params[0]), float(ols.params[1])
    _, p_value, _ = coint(log_y.to_numpy(), log_x.to_numpy(), trend="c", autolag="aic")
    spread = log_y.to_numpy() - beta * log_x.to_numpy()
    lagged = spread[:-1]
    delta = np.diff(spread)
    ar = sm.OLS(delta, sm.add_constant(lagged)).fit()
    b = float(ar.params[1])
    half_life = -math.log(2.0) / math.log1p(b) if -1.0 < b < 0.0 else math.inf
    return {"beta": beta, "intercept": intercept, "p_value": float(p_value), "half_life": half_life}


def choose_pairs(closes: pd.DataFrame, top: int, max_uses: int = 2) -> list[dict[str, object]]:
    """Rank every symbol pair by EG p-value and keep the best ``top`` under the usage cap."""
    last_price = {sym: math.exp(closes[sym].iloc[-1]) for sym in closes.columns}
    candidates = []
    combos = list(itertools.combinations(closes.columns, 2))
    for a, b in track(combos, description=f"testing {len(combos)} pairs", console=Console(stderr=True)):
        x, y = (a, b) if last_price[a] <= last_price[b] else (b, a)
        stats = analyse_pair(closes[x], closes[y])
        if stats["beta"] <= 0 or not math.isfinite(stats["half_life"]):
            continue
        candidates.append((stats["p_value"], x, y, stats))
    candidates.sort(key=lambda row: row[0])
    uses: dict[str, int] = {}
    chosen: list[dict[str, object]] = []
    for p_value, x, y, stats in candidates:
        if uses.get(x, 0) >= max_uses or uses.get(y, 0) >= max_uses:
            continue
        uses[x] = uses.get(x, 0) + 1
        uses[y] = uses.get(y, 0) + 1
        chosen.append({
            "pair_id": f"{x.removesuffix('USDT')}_{y.removesuffix('USDT')}",
            "leg_a": f"{x.removesuffix('USDT')}/USDT",
            "leg_b": f"{y.removesuffix('USDT')}/USDT",
            "hedge_ratio": round(stats["beta"], 4),
            "z_score_threshold": 2.0,
            "stop_loss_z": 4.0,
            "half_life_candles": round(stats["half_life"], 1),
            "enabled": True,
            "_eg_p_value": round(p_value, 5),
        })
        if len(chosen) == top:
            break
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of <SYM>-5m.csv.gz files")
    parser.add_argument("--out", type=Path, help="write pairs_config.json here (default: print)")
    parser.add_argument("--top", type=int, default=10, help="how many pairs to keep (default 10)")
    args = parser.parse_args(argv)
    closes = load_log_closes(args.data)
    pairs = choose_pairs(closes, args.top)
    for pair in pairs:
        print(f"{pair['pair_id']:<12} beta={pair['hedge_ratio']:<8} half-life={pair['half_life_candles']:<6} "
              f"bars  EG p={pair.pop('_eg_p_value')}", file=sys.stderr)
    text = json.dumps({"pairs": pairs}, indent=2) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {len(pairs)} pairs to {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
