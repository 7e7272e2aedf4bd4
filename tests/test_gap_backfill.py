"""Gaps are backfilled, never carried forward (issue 10, defect 4).

A replay of real 5-minute ETH/BTC bars through the router, with the feed down for 58 bars (less
than the window) or 90 bars (more than the window) in the middle. After the outage the pair
shows WARMING, makes no decision, the router fetches the missing candles from its history
source, and from the first bar after the outage on, the live z equals the pandas rolling z of
the real bars to 1e-9. The history source answers like the exchange: closed candles only, up
to the replay time.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from app.pipeline import SignalRouter
from core.config import SignalParams
from core.stats import SessionStats
from core.types import Quote
from signals.generator import SignalGenerator
from tests.signal_data import BAR_MS, load_ohlcv, pandas_fresh_z, rel_err

N = 60
BETA = 0.79


def _params() -> SignalParams:
    return SignalParams(pair_id="ETH_BTC", leg_a="ETHUSDT", leg_b="BTCUSDT", hedge_ratio=BETA, bar_seconds=300,
                        lookback_bars=N, entry_z=50.0, exit_z=0.0, stop_z=60.0, price_transform="log",
                        min_std=1e-12, max_quote_age_ms=BAR_MS, cooldown_seconds=0.0,
                        stop_loss_cooldown_seconds=0.0, max_holding_bars=None)


class ExchangeHistory:
    """Closed candles of the recorded data as of the replay time, like ``MarketDataHub.fetch_history``."""

    def __init__(self, bars: dict[str, np.ndarray]) -> None:
        self.bars = bars
        self.now_ms = 0
        self.calls: list[int] = []

    async def __call__(self, symbols: list[str], *, bar_seconds: int, bars: int) -> dict[str, list[list[float]]]:
        self.calls.append(self.now_ms)
        bar_ms = bar_seconds * 1000
        out = {}
        for symbol in symbols:
            rows = self.bars[symbol]
            closed = rows[rows[:, 0] + bar_ms <= self.now_ms]
            out[symbol] = closed[-bars:].tolist()
        return out


@pytest.mark.parametrize("outage_bars", [58, 90])
async def test_after_an_outage_the_window_is_backfilled_and_z_equals_pandas(outage_bars: int) -> None:
    eth, btc = load_ohlcv("ETHUSDT"), load_ohlcv("BTCUSDT")
    assert (eth[:, 0] == btc[:, 0]).all()
    spreads = np.log(btc[:, 4]) - BETA * np.log(eth[:, 4])
    reference = pandas_fresh_z(spreads, N)
    history = ExchangeHistory({"ETHUSDT": eth, "BTCUSDT": btc})
    gen = SignalGenerator(_params())
    router = SignalRouter(generators={"ETH_BTC": gen}, engine=None, stats=SessionStats(mode="PAPER"),
                          history=history)
    start, outage = 200, 400  # warm up from bars before `start`; the feed is down for bars [400, 400 + gap)
    history.now_ms = int(eth[start, 0])
    await router.warm_up()
    assert gen.calculator.is_ready
    observed: dict[int, float] = {}
    warming_seen = False
    for i in range(start, start + 400):
        if outage <= i < outage + outage_bars:
            continue  # no quote at all: the feed is down
        t = int(eth[i, 0])
        for leg, rows, dt in (("ETHUSDT", eth, 1_000), ("BTCUSDT", btc, 2_000)):
            history.now_ms = t + dt
            price = float(rows[i, 4])
            router.on_quote(Quote(leg, price, price, t + dt))
            if i == outage + outage_bars and leg == "ETHUSDT":  # the first quote after the outage
                snap = gen.snapshot()
                assert snap.warming and math.isnan(snap.z)
                assert snap.gated["warming"] >= 0 and "ETH_BTC" in router.backfilling
                warming_seen = True
                async with asyncio.timeout(5):
                    while router.backfilling:
                        await asyncio.sleep(0)
                assert not gen.snapshot().warming
        observed[i] = gen.calculator.z
    assert warming_seen and len(history.calls) == 2  # the warm-up, then one backfill
    after = [i for i in observed if i >= outage + outage_bars]
    before = [i for i in observed if i < outage]
    assert len(after) > 100 and len(before) > 100
    for bars in (before, after):
        got = np.array([observed[i] for i in bars])
        assert np.isfinite(got).all()
        assert rel_err(got, reference[bars]).max() <= 1e-9
    assert gen.calculator.gaps == 1 and gen.calculator.gap_resets == 0


async def test_when_the_exchange_has_no_candles_for_the_gap_the_window_restarts_after_it() -> None:
    """Exchange maintenance: no quotes and no candles for 20 bars. Nothing is invented: the
    window restarts from the bars after the hole and the pair fills live (no decision before)."""
    eth, btc = load_ohlcv("ETHUSDT"), load_ohlcv("BTCUSDT")
    hole = np.r_[300:320]
    history = ExchangeHistory({"ETHUSDT": np.delete(eth, hole, axis=0), "BTCUSDT": np.delete(btc, hole, axis=0)})
    gen = SignalGenerator(_params())
    router = SignalRouter(generators={"ETH_BTC": gen}, engine=None, stats=SessionStats(mode="PAPER"),
                          history=history)
    history.now_ms = int(eth[200, 0])
    await router.warm_up()
    for i in [*range(200, 300), *range(320, 330)]:
        t = int(eth[i, 0])
        for leg, rows, dt in (("ETHUSDT", eth, 1_000), ("BTCUSDT", btc, 2_000)):
            history.now_ms = t + dt
            router.on_quote(Quote(leg, float(rows[i, 4]), float(rows[i, 4]), t + dt))
            async with asyncio.timeout(5):
                while router.backfilling:
                    await asyncio.sleep(0)
    calc = gen.calculator
    assert calc.gaps == 1 and calc.gap_resets == 1 and not calc.awaiting_backfill
    assert calc.bars_in_window == 9 and not calc.is_ready  # bars 320..328 closed, 329 open
    assert math.isnan(calc.z) and gen.snapshot().gated["window_not_full"] > 0
