"""Market replay and fault decisions: exact paths, determinism, klines, the tick source."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from simulator.config import ReplayConfig, SimulatorConfig
from simulator.faults import FaultConfig, FaultInjector
from simulator.markets import build_rules
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
