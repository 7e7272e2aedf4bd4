"""Market replay and fault decisions: exact paths, determinism, klines, the tick source."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from simulator.config import ReplayConfig, SimulatorConfig
from simulator.faults import FaultConfig, FaultInjector
from market_replay.markets import build_rules
from simulator.replay import MarketReplay
from simulator.server import MarketData

BAR = 300_000


def _replay(data: MarketData, **changes: object) -> MarketReplay:
    config = replace(ReplayConfig(), **changes)  # type: ignore[arg-type]
    assert data.candles is not None
    candles = {s: data.candles[s] for s in ("BTCUSDT", "ETHUSDT", "DOGEUSDT")}
    rules = build_rules(data.recorded_info, {s: c.price_hint() for s, c in candles.items()})
    return MarketReplay(rules=rules, config=config, candles=candles)


def test_each_bar_path_hits_open_low_high_close_exactly(market_data: MarketData) -> None:
    replay = _replay(market_data, steps_per_bar=30)
    events = replay.advance_to(replay.start_ms + 5 * BAR - 1)
    assert len(events) == 5 * 30 * 3
    series = market_data.candles["BTCUSDT"]  # type: ignore[index]
    fmt = replay.inst.price_fmt[0]
    for bar in range(5):
        j = 1000 + bar
        bids = [e[2] for e in events if e[0] == 0][bar * 30:(bar + 1) * 30]
        assert fmt(bids[0]) == fmt(fmt.to_units(series.open[j]))
        assert fmt(bids[-1]) == fmt(fmt.to_units(series.close[j]))
        assert min(bids) == fmt.to_units(series.low[j])
        assert max(bids) == fmt.to_units(series.high[j])
    assert all(e[3] - e[2] == 1 for e in events)  # one-tick spread


def test_stream_is_identical_whatever_the_batching(market_data: MarketData) -> None:
    whole = _replay(market_data)
    expected = whole.advance_to(whole.start_ms + 2 * BAR)
    stepwise = _replay(market_data)
    got = []
    t = stepwise.start_ms
    while t <= stepwise.start_ms + 2 * BAR:
        got.extend(stepwise.advance_to(t))
        t += 777
    got.extend(stepwise.advance_to(stepwise.start_ms + 2 * BAR))
    assert got == expected


def test_seed_changes_sizes_not_prices(market_data: MarketData) -> None:
    a = _replay(market_data, seed=1).advance_to(_replay(market_data).start_ms + BAR)
    b = _replay(market_data, seed=2).advance_to(_replay(market_data).start_ms + BAR)
    assert [e[:4] for e in a] == [e[:4] for e in b]
    assert [e[4:6] for e in a] != [e[4:6] for e in b]


def test_seek_restores_the_same_quotes(market_data: MarketData) -> None:
    straight = _replay(market_data)
    straight.advance_to(straight.start_ms + BAR + 77_000)
    later = straight.advance_to(straight.start_ms + 2 * BAR)
    restored = _replay(market_data)
    restored.seek(restored.start_ms + BAR + 77_000)
    assert restored.advance_to(restored.start_ms + 2 * BAR) == later


def test_in_progress_kline_reflects_only_quoted_prices(market_data: MarketData) -> None:
    replay = _replay(market_data, steps_per_bar=60)
    replay.advance_to(replay.start_ms + 90_000)
    rows = replay.klines("BTCUSDT", BAR, limit=2)
    closed, live = rows
    assert live[0] == replay.start_ms and closed[0] == replay.start_ms - BAR
    half_tick = replay.inst.rules[replay.symbols.index("BTCUSDT")].tick_size / 2  # spread 1 tick
    assert Decimal(live[4]) == replay.last_price("BTCUSDT") + half_tick  # the mid of the last quote
    series = market_data.candles["BTCUSDT"]  # type: ignore[index]
    assert Decimal(live[5]) < Decimal(series.volume[1000])  # a share of the bar's volume
    assert Decimal(closed[4]) == Decimal(series.close[999]) + half_tick  # the mid when the path closed


def test_ticks_source_replays_recorded_book_tickers() -> None:
    config = SimulatorConfig(replay=ReplayConfig(source="ticks"))
    data = MarketData.load(config)
    assert data.ticks is not None
    rules = build_rules(data.recorded_info, {s: t.price_hint() for s, t in data.ticks.items()})
    replay = MarketReplay(rules=rules, config=config.replay, ticks=data.ticks)
    events = replay.advance_to(replay.start_ms + 1_000)
    first_btc = next(e for e in events if replay.symbols[e[0]] == "BTCUSDT")
    btc = data.ticks["BTCUSDT"]
    assert first_btc[1] == btc.event_ms[0] and first_btc[6] == btc.update_id[0]
    assert replay.inst.price_fmt[first_btc[0]](first_btc[2]) == btc.bid[0]
    assert replay.gap_jump_target() is None


def test_fault_decisions_are_seeded_per_kind() -> None:
    def decisions(config: FaultConfig) -> tuple[list[object], list[object]]:
        injector = FaultInjector(config)
        return ([injector.http_error() for _ in range(50)],
                [injector.reject_order() for _ in range(50)])

    base = FaultConfig(seed=9, http_error_probability=0.3, reject_probability=0.3)
    assert decisions(base) == decisions(base)
    http_a, reject_a = decisions(base)
    http_b, reject_b = decisions(replace(base, reject_probability=0.6))
    assert http_a == http_b  # changing one knob leaves the other stream alone
    assert reject_a != reject_b


def test_fault_config_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="reject_probability"):
        FaultConfig(reject_probability=2)
    with pytest.raises(ValueError, match="unknown fault setting"):
        FaultConfig.from_mapping({"nope": 1})
    with pytest.raises(ValueError, match="malformed_kinds"):
        FaultConfig.from_mapping({"malformed_kinds": "nan_price,bogus"})


# -- demo realism: spreads that follow the range, stamps of each symbol's own -------------------

def test_the_spread_follows_the_bar_range_and_never_drops_below_one_tick(market_data: MarketData) -> None:
    replay = _replay(market_data, steps_per_bar=30, spread_range_fraction=0.01)
    events = replay.advance_to(replay.start_ms + 40 * BAR - 1)
    source = replay.source
    by_bar: dict[tuple[int, int], set[int]] = {}
    for i, ts, bid, ask, *_ in events:
        j = (ts - source.t0) // BAR - source.offset[i]
        by_bar.setdefault((i, j), set()).add(ask - bid)
    widths = {}
    for (i, j), spreads in by_bar.items():
        assert len(spreads) == 1 and min(spreads) >= 1  # one spread per bar, at least a tick
        _, h, lo, _ = source.ohlc(i, j)
        assert spreads == {max(1, round((h - lo) * 0.01))}
        widths.setdefault(i, []).append((h - lo, next(iter(spreads))))
    btc = replay.symbols.index("BTCUSDT")
    ranges = sorted(widths[btc])
    assert ranges[-1][1] > ranges[0][1]  # the fastest bar quotes wider than the calmest


def test_each_symbol_keeps_its_own_timestamps_in_time_order_and_deterministic(market_data: MarketData) -> None:
    replay = _replay(market_data, steps_per_bar=30, stamp_jitter=True)
    step = BAR // 30
    events = replay.advance_to(replay.start_ms + 3 * BAR - 1)
    stamps = [e[1] for e in events]
    assert stamps == sorted(stamps)
    assert max(stamps) <= replay.now_ms  # never a quote from the replay's future
    same_step = {}
    for i, ts, *_ in events:
        k = (ts - replay.start_ms) // step
        assert replay.start_ms + k * step <= ts < replay.start_ms + (k + 1) * step  # inside its own step
        same_step.setdefault(k, set()).add(ts)
    assert sum(len(v) > 1 for v in same_step.values()) > 0.9 * len(same_step)  # symbols differ within a step
    again = _replay(market_data, steps_per_bar=30, stamp_jitter=True)
    chunks = []
    t = again.start_ms
    while t < again.start_ms + 3 * BAR - 1:  # other batching, same stream
        t = min(t + 7_777, again.start_ms + 3 * BAR - 1)
        chunks.extend(again.advance_to(t))
    assert chunks == events


def test_klines_agree_with_the_quoted_mids_when_the_spread_varies(market_data: MarketData) -> None:
    replay = _replay(market_data, steps_per_bar=30, spread_range_fraction=0.01, stamp_jitter=True)
    events = replay.advance_to(replay.start_ms + 6 * BAR - 1)
    btc = replay.symbols.index("BTCUSDT")
    tick = replay.inst.rules[btc].tick_size
    last_of_bar: dict[int, tuple[int, int]] = {}
    for i, ts, bid, ask, *_ in events:
        if i == btc:
            last_of_bar[(ts - replay.start_ms) // BAR] = (bid, ask)
    rows = replay.klines("BTCUSDT", BAR, start_ms=replay.start_ms, limit=5)
    assert len(rows) == 5
    for n, row in enumerate(rows):
        bid, ask = last_of_bar[n]
        assert Decimal(row[4]) == (bid + ask) * tick / 2  # the close is the mid of the bar's last quote


@pytest.mark.parametrize("jitter", [True, False], ids=["jittered", "aligned"])
def test_quote_block_arrays_are_the_streamed_quotes(market_data: MarketData, jitter: bool) -> None:
    """The backtest reads steps in bulk (``quote_block``); the simulator streams them (``advance_to``).
    Both must be the same quotes, from any step (mid-bar too), without moving the stream."""
    replay = _replay(market_data, steps_per_bar=30, stamp_jitter=jitter, spread_range_fraction=0.01)
    source = replay.source
    g0 = source.g + 7  # mid-bar
    block = source.quote_block(g0, g0 + 75)
    assert source.g == g0 - 7 and block.steps == 75
    source.advance_to(source.time_of(g0) - 1)  # up to the block's first step
    assert source.g == g0
    streamed = source.advance_to(source.ready_ms(g0 + 74))  # the block's last step
    assert len(streamed) == 75 * 3
    assert block.events() == streamed
