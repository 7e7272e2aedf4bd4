"""The backtest's bulk prices are the floats a Quote of the simulator's text carries."""

from __future__ import annotations

import numpy as np
import pytest

from market_replay.formats import UnitFormatter
from research.backtest import BacktestRequest, load_market
from research.fast_replay import PriceScale
from research.replay_feed import ReplayFeed
from market_replay.config import demo_replay_config
from tests.test_backtest import _inputs


@pytest.mark.parametrize("unit", ["0.01", "0.5", "1", "0.00001", "0.0001", "5", "0.025"])
def test_price_scale_is_float_of_the_text(unit: str) -> None:
    from decimal import Decimal

    fmt = UnitFormatter(Decimal(unit))
    units = np.random.default_rng(3).integers(1, 10**9, 50_000)
    assert [float(fmt(int(u))) for u in units] == PriceScale.of(fmt).floats(units).tolist()


def test_price_scale_matches_every_replayed_symbol() -> None:
    _, pairs = _inputs()
    candles, rules = load_market(BacktestRequest(), pairs)
    feed = ReplayFeed(rules=rules, candles=candles, config=demo_replay_config(warmup_bars=100))
    block = feed.source.quote_block(feed.source.g, feed.source.g + 60_000)  # about 3,500 candles
    for i, fmt in enumerate(feed.inst.price_fmt):
        ticks = np.unique(block.bid[i][block.stamp[i] >= 0])
        assert ticks.size > 20
        assert [float(fmt(int(t))) for t in ticks] == PriceScale.of(fmt).floats(ticks).tolist()
