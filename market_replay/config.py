"""How recorded data become a live-looking market: the replay's settings.

Shared by the simulator (which serves the quotes over Binance's protocol) and the backtest (which
feeds them straight to the generators and the paper exchange), so both build the same quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEMO_QUOTE_SECONDS", "DEMO_SPREAD_RANGE_FRACTION", "DEMO_STEPS_PER_BAR", "ReplayConfig", "demo_replay_config"]

# The demo's book (``app/demo.py``): a quote per symbol every 10 s of exchange time (30 per 5m
# candle, 6 per 1m candle), a spread that widens with the bar's range (1 % of it, never below one
# tick), each symbol stamping its own quotes as live feeds do.
DEMO_QUOTE_SECONDS = 10
DEMO_STEPS_PER_BAR = 300 // DEMO_QUOTE_SECONDS  # of the bundled 5m candles
DEMO_SPREAD_RANGE_FRACTION = 0.01


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """How recorded data become a live-looking market (see ``simulator/replay.py``).

    ``speed``: replay milliseconds per wall millisecond; 0 = as fast as the server loop runs.
    Quote rate of the candle source = symbols x ``steps_per_bar`` x speed / bar seconds
    (20 symbols, 300 s bars, 60 steps, speed 1000 -> 4,000 quotes/s).
    """

    source: Literal["candles", "ticks"] = "candles"
    speed: float = 1.0
    steps_per_bar: int = 60
    warmup_bars: int = 1000
    spread_ticks: int = 1
    # The spread follows the bar's range: max(spread_ticks, round(range_ticks * this)); 0 keeps
    # it constant. Fast bars quote wider, as real books do; never below one tick.
    spread_range_fraction: float = 0.0
    # Each symbol's quotes carry their own timestamps: step k of symbol s is stamped within
    # [step k, step k + 1) by a seeded draw, instead of every symbol on the same millisecond.
    stamp_jitter: bool = False
    path_order: Literal["nearest", "random"] = "nearest"
    top_qty_volume_fraction: float = 0.02
    seed: int = 7
    tick_dates: tuple[str, ...] | None = None
    max_gap_ms: int = 60_000
    max_steps_per_advance: int = 250

    def __post_init__(self) -> None:
        if self.source not in ("candles", "ticks"):
            raise ValueError("source must be 'candles' or 'ticks'")
        if not (self.speed >= 0 and math.isfinite(self.speed)):
            raise ValueError("speed must be a finite number >= 0 (0 = as fast as possible)")
        if self.steps_per_bar < 1:
            raise ValueError("steps_per_bar must be >= 1")
        if self.warmup_bars < 0:
            raise ValueError("warmup_bars must be >= 0")
        if self.spread_ticks < 1:
            raise ValueError("spread_ticks must be >= 1")
        if self.path_order not in ("nearest", "random"):
            raise ValueError("path_order must be 'nearest' or 'random'")
        if not 0 <= self.spread_range_fraction <= 1:
            raise ValueError("spread_range_fraction must be within [0, 1]")
        if not 0 < self.top_qty_volume_fraction <= 1:
            raise ValueError("top_qty_volume_fraction must be within (0, 1]")
        if self.max_gap_ms < 1 or self.max_steps_per_advance < 1:
            raise ValueError("max_gap_ms and max_steps_per_advance must be >= 1")




def demo_replay_config(*, speed: float = 0.0, warmup_bars: int = 1000, seed: int = 7,
                       bar_seconds: int = 300) -> ReplayConfig:
    """The replay of ``python main.py demo``; the backtest uses the same by default, on candles of
    ``bar_seconds`` (the same quote rate: a quote per symbol every ``DEMO_QUOTE_SECONDS``)."""
    steps = max(1, bar_seconds // DEMO_QUOTE_SECONDS)
    return ReplayConfig(source="candles", speed=speed, steps_per_bar=steps, warmup_bars=warmup_bars,
                        spread_range_fraction=DEMO_SPREAD_RANGE_FRACTION, stamp_jitter=True, seed=seed)
