"""``CandleSource``: one kernel behind the simulator's stream and the backtest's bulk read.

``quote_block`` and ``advance_to`` must give the same quotes from any step, for any seed, with
and without jittered stamps, for symbols whose data start and end at different bars; the stream
must not depend on the batching or on a seek; and both must be what the plain-Python reference
(``tests/quote_reference.py``: today's semantics, draw by draw) computes from the recorded text.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from market_replay.candle_arrays import text_to_units
from market_replay.config import ReplayConfig
from market_replay.datasets import CandleSeries, DatasetError
from market_replay.markets import build_rules
from market_replay.sources import _UID_BASE, CandleSource, Instruments, QuoteTick
from simulator.server import MarketData
from tests.quote_reference import ref_quotes

SYMBOLS = ("BTCUSDT", "ETHUSDT", "DOGEUSDT")
BARS = 40


def _cut(series: CandleSeries, a: int, b: int) -> CandleSeries:
    return replace(series, open_ms=series.open_ms[a:b], open=series.open[a:b], high=series.high[a:b],
                   low=series.low[a:b], close=series.close[a:b], volume=series.volume[a:b])


def _source(data: MarketData, *, staggered: bool = True, **changes: object) -> CandleSource:
    """Three symbols; with ``staggered`` ETH starts 5 bars after BTC and DOGE ends 9 bars early."""
    assert data.candles is not None
    spans = {"BTCUSDT": (0, BARS), "ETHUSDT": (5, BARS), "DOGEUSDT": (0, BARS - 9)} if staggered else {}
    candles = {s: _cut(data.candles[s], *spans.get(s, (0, BARS))) for s in SYMBOLS}
    rules = build_rules(data.recorded_info, {s: c.price_hint() for s, c in candles.items()})
    config = replace(ReplayConfig(steps_per_bar=30, warmup_bars=2, spread_range_fraction=0.01), **changes)  # type: ignore[arg-type]
    return CandleSource(Instruments.from_rules(rules), candles, config)


def _stream(source: CandleSource, rng: random.Random) -> list[QuoteTick]:
    """The whole replay through ``advance_to`` in uneven chunks of replay time."""
    out: list[QuoteTick] = []
    t = source.start_ms
    while not source.finished:
        t += rng.choice((1, 777, 9_999, 61_000, 250_000))
        out.extend(source.advance_to(t))
    return out


def _steps(events: list[QuoteTick], g0: int, g1: int) -> list[QuoteTick]:
    return [e for e in events if g0 <= e[6] - _UID_BASE < g1]


CONFIGS = [
    pytest.param({"seed": 7, "stamp_jitter": True}, id="seed7-jitter"),
    pytest.param({"seed": 7, "stamp_jitter": False}, id="seed7-aligned"),
    pytest.param({"seed": 1, "stamp_jitter": True, "path_order": "random"}, id="seed1-random-order"),
    pytest.param({"seed": 123456789, "stamp_jitter": True, "spread_range_fraction": 0.0, "spread_ticks": 3},
                 id="seed-big-fixed-odd-spread"),
]


@pytest.mark.parametrize("changes", CONFIGS)
def test_quote_block_is_the_stream_from_any_step(market_data: MarketData, changes: dict[str, object]) -> None:
    source = _source(market_data, **changes)
    first = source.g
    streamed = _stream(source, random.Random(3))
    assert {e[0] for e in _steps(streamed, first, first + 30)} == {0, 2}  # ETH has no bar yet
    assert {e[0] for e in _steps(streamed, source.total_steps - 30, source.total_steps)} == {0, 1}  # DOGE ended
    assert len(streamed) == 30 * ((BARS - 2) + (BARS - 5) + (BARS - 9 - 2))
    whole = source.quote_block(first, source.total_steps)
    assert whole.events() == streamed
    rng = random.Random(5)
    for _ in range(12):  # mid-bar starts, blocks across bar and offset boundaries
        g0 = rng.randrange(first, source.total_steps)
        g1 = min(source.total_steps, g0 + rng.randrange(1, 200))
        assert source.quote_block(g0, g1).events() == _steps(streamed, g0, g1), (g0, g1)
    assert source.quote_block(source.total_steps - 5, source.total_steps + 50).steps == 5


@pytest.mark.parametrize("changes", CONFIGS[:3])
def test_the_quotes_are_the_reference_semantics(market_data: MarketData, changes: dict[str, object]) -> None:
    """Bid/ask around the path, sizes around a share of the volume, stamps within the step: the
    plain-Python statement from the recorded text, in Python integers, equals the kernel."""
    source = _source(market_data, **changes)
    g0 = 3 * 30 + 11  # mid-bar, ETH not yet quoting, then quoting from bar 5
    assert source.quote_block(g0, g0 + 120).events() == ref_quotes(source, g0, g0 + 120)
    end = source.total_steps
    assert source.quote_block(end - 300, end).events() == ref_quotes(source, end - 300, end)


def test_blocks_do_not_depend_on_their_batching(market_data: MarketData) -> None:
    source = _source(market_data, stamp_jitter=True)
    first, end = source.g, source.total_steps
    whole = source.quote_block(first, end)
    rng = random.Random(11)
    cuts = sorted({first, end, *(rng.randrange(first, end) for _ in range(25))})
    parts = [source.quote_block(a, b) for a, b in zip(cuts, cuts[1:])]
    for name in ("stamp", "bid", "ask", "bid_lots", "ask_lots"):
        glued = np.concatenate([getattr(p, name) for p in parts], axis=1)
        assert np.array_equal(glued, getattr(whole, name)), name
    assert source.g == first  # a block does not move the stream


def test_seek_mid_bar_resumes_the_same_stream(market_data: MarketData) -> None:
    straight = _source(market_data, stamp_jitter=True)
    streamed = _stream(straight, random.Random(1))
    for at in (7 * 300_000 + 123_457, 5 * 300_000 + 10_001, 33 * 300_000 + 299_999):
        seeker = _source(market_data, stamp_jitter=True)
        target = seeker.t0 + at
        first = seeker.seek(target)
        g = seeker.g - 1  # the step seek returned
        assert first == _steps(streamed, g, g + 1) and first
        assert _stream(seeker, random.Random(2)) == _steps(streamed, g + 1, seeker.total_steps)
        assert straight.seek(target) == first  # back, on a source that has streamed past it
        assert straight.advance_to(target + 40_000) == _steps(streamed, g + 1, straight.g)


def test_sizes_and_stamps_change_with_the_seed_prices_do_not(market_data: MarketData) -> None:
    a = _source(market_data, seed=1, stamp_jitter=True).quote_block(60, 400)
    b = _source(market_data, seed=2, stamp_jitter=True).quote_block(60, 400)
    assert np.array_equal(a.bid, b.bid) and np.array_equal(a.ask, b.ask)  # no tie bar in this range
    assert not np.array_equal(a.bid_lots, b.bid_lots) and not np.array_equal(a.stamp, b.stamp)
    aligned = _source(market_data, seed=1, stamp_jitter=False).quote_block(60, 400)
    assert np.array_equal(aligned.bid_lots, a.bid_lots)  # the stamps' stream is a stream of its own


def test_the_arrays_are_to_units_of_every_bundled_candle(market_data: MarketData) -> None:
    """All 20 symbols, every bar: OHLC ticks, base lots and spreads as the per-bar Python made them."""
    assert market_data.candles is not None
    candles = market_data.candles
    rules = build_rules(market_data.recorded_info, {s: c.price_hint() for s, c in candles.items()})
    cfg = ReplayConfig(steps_per_bar=30, spread_range_fraction=0.01)
    source = CandleSource(Instruments.from_rules(rules), candles, cfg)
    for i, symbol in enumerate(source.inst.symbols):
        s, pf, qf = candles[symbol], source.inst.price_fmt[i], source.inst.qty_fmt[i]
        rows = slice(source.bars.start[i], source.bars.start[i] + len(s))
        for name, column in (("o", s.open), ("h", s.high), ("lo", s.low), ("c", s.close)):
            assert getattr(source.bars, name)[rows].tolist() == [pf.to_units(x) for x in column], (symbol, name)
        base = [max(1, int(qf.to_units(v) * cfg.top_qty_volume_fraction)) for v in s.volume]
        assert source.bars.base_lots[rows].tolist() == base, symbol
        h, lo = source.bars.h[rows].tolist(), source.bars.lo[rows].tolist()
        assert source.bars.spread[rows].tolist() == [max(1, round((a - b) * 0.01)) for a, b in zip(h, lo)]
    assert text_to_units(candles["BTCUSDT"].close, source.inst.price_fmt[0]).dtype == np.int64


def test_an_inconsistent_candle_is_refused_at_construction(market_data: MarketData) -> None:
    assert market_data.candles is not None
    btc = _cut(market_data.candles["BTCUSDT"], 0, BARS)
    broken = replace(btc, high=btc.high[:7] + (btc.low[7],) + btc.high[8:])  # high below the open
    rules = build_rules(market_data.recorded_info, {"BTCUSDT": btc.price_hint()})
    with pytest.raises(DatasetError, match=f"BTCUSDT: candle at open time {btc.open_ms[7]} is inconsistent"):
        CandleSource(Instruments.from_rules(rules), {"BTCUSDT": broken}, ReplayConfig(steps_per_bar=30))


def test_a_block_written_into_an_earlier_ones_memory_is_the_same_block(market_data: MarketData) -> None:
    source = _source(market_data, stamp_jitter=True)
    out = source.quote_block(0, 300)
    for g0, g1 in ((400, 700), (650, 660), (source.total_steps - 100, source.total_steps)):
        fresh, reused = source.quote_block(g0, g1), source.quote_block(g0, g1, out=out)
        assert np.shares_memory(reused.stamp, out.stamp) and reused.steps == g1 - g0
        assert reused.events() == fresh.events()
    with pytest.raises(ValueError, match="out holds"):
        source.quote_block(0, 301, out=out)
