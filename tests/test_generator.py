"""SignalGenerator state machine, gates, suppression, bad input and callbacks.

Bars are real ETHUSDT (leg_a, X) / BTCUSDT (leg_b, Y) 5m candles; the window is warmed up from
them. To hit a rule exactly, a test asks the driver for a bar whose close gives a chosen Z: leg
a closes at its real price and leg b's mid is solved so that the spread has that Z over the
real history (every other bar keeps real prices or a neutral Z).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from core.config import SignalParams
from core.types import PairState, Quote, SignalType, TradingSignal
from signals.generator import (SIGNAL_ID_MAX_LEN, Gate, RejectReason, SignalGenerator, Suppression,
                               make_signal_id)
from tests.signal_data import load_ohlcv

N = 20
BAR_MS = 300_000
WARM = 120  # candles used to warm up
ETH, BTC = load_ohlcv("ETHUSDT"), load_ohlcv("BTCUSDT")


def make_params(**overrides: object) -> SignalParams:
    base: dict[str, object] = dict(
        pair_id="ETH_BTC", leg_a="ETHUSDT", leg_b="BTCUSDT", hedge_ratio=0.79, bar_seconds=300, lookback_bars=N,
        entry_z=2.0, exit_z=0.5, stop_z=3.5, price_transform="log", min_std=1e-9, max_quote_age_ms=5_000,
        cooldown_seconds=600.0, stop_loss_cooldown_seconds=1_200.0, max_holding_bars=6)
    base.update(overrides)
    return SignalParams(**base)  # type: ignore[arg-type]


def z_of(history: np.ndarray, value: float) -> float:
    full = np.append(history, value)
    return float((value - full.mean()) / full.std(ddof=1))


def solve_spread(history: np.ndarray, target: float) -> float:
    """The current spread whose Z over ``history`` + itself is ``target`` (Z is increasing in it)."""
    sd = float(history.std(ddof=1))
    lo, hi = float(history.min()) - 100 * sd, float(history.max()) + 100 * sd
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if z_of(history, mid) < target else (lo, mid)
    return (lo + hi) / 2


class Driver:
    """Feeds one bar at a time: leg a's close at +299.0 s, leg b's at +299.5 s of the candle.

    Leg a's quote is gated as stale (leg b last quoted a bar ago), so each bar is decided once,
    on leg b's quote, with the bar-close spread: what the replay test relies on too.
    """

    def __init__(self, gen: SignalGenerator, start: int = WARM) -> None:
        self.gen = gen
        self.i = start
        beta = gen.params.hedge_ratio
        self.spreads = list(np.log(BTC[:start, 4]) - beta * np.log(ETH[:start, 4]))

    def quote(self, leg: str, mid: float, ts: int) -> Quote:
        symbol = self.gen.symbol_a if leg == "a" else self.gen.symbol_b
        return Quote(symbol=symbol, bid=mid, ask=mid, ts_ms=ts)

    def bar_quotes(self, z: float | None = None) -> tuple[Quote, Quote]:
        t = int(ETH[self.i, 0])
        mid_a = float(ETH[self.i, 4])
        if z is None:
            mid_b = float(BTC[self.i, 4])
        else:
            s = solve_spread(np.array(self.spreads[-(N - 1):]), z)
            mid_b = math.exp(s + self.gen.params.hedge_ratio * math.log(mid_a))
        self.i += 1
        self.spreads.append(math.log(mid_b) - self.gen.params.hedge_ratio * math.log(mid_a))
        return self.quote("a", mid_a, t + 299_000), self.quote("b", mid_b, t + 299_500)

    def bar(self, z: float | None = None) -> TradingSignal | None:
        qa, qb = self.bar_quotes(z)
        assert self.gen.update(qa) is None
        return self.gen.update(qb)

    @property
    def ts(self) -> int:
        """Timestamp of the last leg-b quote."""
        return int(ETH[self.i - 1, 0]) + 299_500


def warmed(**overrides: object) -> tuple[SignalGenerator, Driver]:
    gen = SignalGenerator(make_params(**overrides))
    gen.warm_up(ETH[:WARM].tolist(), BTC[:WARM].tolist())
    return gen, Driver(gen)


def counters(gen: SignalGenerator) -> dict[str, object]:
    return gen.snapshot().to_dict()


# -- the rules ----------------------------------------------------------------------------------


def test_z_targeting_driver_is_exact() -> None:
    gen, drv = warmed()
    assert drv.bar(z=0.1) is None
    assert gen.calculator.z == pytest.approx(0.1, abs=1e-9)


def test_entry_long_then_exit() -> None:
    gen, drv = warmed()
    sig = drv.bar(z=-2.5)
    assert sig is not None and sig.signal_type is SignalType.ENTER_LONG_SPREAD
    assert sig.z == pytest.approx(-2.5, abs=1e-9) and sig.ts_ms == drv.ts
    assert gen.state is PairState.FLAT  # nothing moves until the engine says done
    gen.complete(sig, True)
    assert gen.state is PairState.LONG_SPREAD
    assert drv.bar(z=-1.0) is None
    sig = drv.bar(z=-0.4)  # z >= -exit
    assert sig is not None and sig.signal_type is SignalType.EXIT
    gen.complete(sig, True)
    assert gen.state is PairState.FLAT


def test_entry_short_then_exit_mirrored() -> None:
    gen, drv = warmed()
    sig = drv.bar(z=2.2)
    assert sig is not None and sig.signal_type is SignalType.ENTER_SHORT_SPREAD
    gen.complete(sig, True)
    assert drv.bar(z=0.9) is None
    sig = drv.bar(z=0.3)  # z <= exit
    assert sig is not None and sig.signal_type is SignalType.EXIT


def test_signal_carries_the_audit_fields() -> None:
    gen, drv = warmed()
    sig = drv.bar(z=-2.5)
    assert sig is not None
    calc = gen.calculator
    assert (sig.spread, sig.mean, sig.std) == (calc.spread, calc.mean, calc.std)
    assert sig.z == pytest.approx((sig.spread - sig.mean) / sig.std, rel=1e-12)
    assert sig.mid_a == float(ETH[WARM, 4]) and sig.hedge_ratio == 0.79 and sig.pair_id == "ETH_BTC"


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_stop_loss_then_cooldown_before_reentry(side: float) -> None:
    gen, drv = warmed()
    gen.complete(drv.bar(z=2.5 * side), True)
    sig = drv.bar(z=3.6 * side)
    assert sig is not None and sig.signal_type is SignalType.STOP_LOSS
    stop_ts = sig.ts_ms
    gen.complete(sig, True)
    assert gen.state is PairState.FLAT
    for _ in range(3):  # 3 bars = 900 s < 1200 s cooldown
        assert drv.bar(z=2.5 * side) is None
    assert counters(gen)["suppressed"]["stop_cooldown"] == 3
    sig = drv.bar(z=2.5 * side)  # exactly 1200 s later: allowed
    assert sig is not None and sig.signal_type.is_entry and sig.ts_ms - stop_ts == 1_200_000


def test_time_stop_after_max_holding_bars() -> None:
    gen, drv = warmed()
    entry = drv.bar(z=-2.5)
    gen.complete(entry, True)
    for _ in range(6):  # held 6 bars = exactly max_holding_bars * bar: not longer
        assert drv.bar(z=-1.5) is None
    sig = drv.bar(z=-1.5)
    assert sig is not None and sig.signal_type is SignalType.TIME_STOP
    assert sig.ts_ms - entry.ts_ms == 7 * BAR_MS
    gen.complete(sig, True)
    assert gen.state is PairState.FLAT


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_time_stop_starts_a_cooldown_before_reentry(side: float) -> None:
    """Issue 10: TIME_STOP at z -2.43 was followed by ENTER_LONG at z -2.34 on the next bar.
    The cooldown defaults to the stop-loss one (1200 s = 4 bars here)."""
    gen, drv = warmed()
    gen.complete(drv.bar(z=2.5 * side), True)
    for _ in range(6):
        drv.bar(z=1.5 * side)
    sig = drv.bar(z=2.4 * side)
    assert sig is not None and sig.signal_type is SignalType.TIME_STOP
    gen.complete(sig, True)
    assert gen.snapshot().stop_cooldown_until_ms == sig.ts_ms + 1_200_000
    for _ in range(3):  # 900 s < 1200 s: the same side is not re-entered
        assert drv.bar(z=2.4 * side) is None
    assert counters(gen)["suppressed"]["stop_cooldown"] == 3
    again = drv.bar(z=2.4 * side)
    assert again is not None and again.signal_type.is_entry and again.ts_ms - sig.ts_ms == 1_200_000


def test_time_stop_cooldown_has_its_own_setting() -> None:
    gen, drv = warmed(time_stop_cooldown_seconds=300.0)
    gen.complete(drv.bar(z=-2.5), True)
    for _ in range(6):
        drv.bar(z=-1.5)
    sig = drv.bar(z=-2.4)
    gen.complete(sig, True)
    assert gen.snapshot().stop_cooldown_until_ms == sig.ts_ms + 300_000
    again = drv.bar(z=-2.4)  # one bar = 300 s later: allowed
    assert again is not None and again.signal_type is SignalType.ENTER_LONG_SPREAD


@pytest.mark.parametrize("side", [-1.0, 1.0])
def test_no_entry_at_or_beyond_the_stop(side: float) -> None:
    """Issue 10: SHORT CRV_WAVES at z 4.22 with a stop at 4 was stopped out 21 ms later. From
    FLAT, a z at or beyond the stop (the default entry_max_z) enters nothing."""
    gen, drv = warmed()
    assert drv.bar(z=4.0 * side) is None  # stop_z is 3.5
    assert drv.bar(z=3.6 * side) is None
    assert gen.state is PairState.FLAT and sum(counters(gen)["signals_emitted"].values()) == 0
    sig = drv.bar(z=3.4 * side)
    assert sig is not None and sig.signal_type is (SignalType.ENTER_SHORT_SPREAD if side > 0
                                                   else SignalType.ENTER_LONG_SPREAD)


def test_entry_max_z_narrows_the_band() -> None:
    gen, drv = warmed(entry_max_z=3.0)
    assert drv.bar(z=-3.2) is None and drv.bar(z=3.1) is None
    assert gen.state is PairState.FLAT and sum(counters(gen)["signals_emitted"].values()) == 0
    sig = drv.bar(z=-2.9)
    assert sig is not None and sig.signal_type is SignalType.ENTER_LONG_SPREAD


def test_exit_wins_over_time_stop_and_stop_over_exit() -> None:
    gen, drv = warmed()
    gen.complete(drv.bar(z=-2.5), True)
    for _ in range(6):
        drv.bar(z=-1.5)
    sig = drv.bar(z=-0.2)  # old and reverted: EXIT
    assert sig is not None and sig.signal_type is SignalType.EXIT


def test_failed_entry_stays_flat_and_duplicates_are_suppressed() -> None:
    gen, drv = warmed()
    sig = drv.bar(z=-2.5)
    gen.complete(sig, False)
    assert gen.state is PairState.FLAT
    assert drv.bar(z=-2.5) is None  # 300 s < 600 s cooldown_seconds
    assert counters(gen)["suppressed"]["duplicate"] == 1
    again = drv.bar(z=-2.5)  # 600 s: a new signal, with a new id
    assert again is not None and again.signal_type is SignalType.ENTER_LONG_SPREAD
    assert again.signal_id != sig.signal_id
    snap = gen.snapshot()
    assert snap.signals_failed == 1 and snap.signals_executed == 0


def test_same_bar_duplicate_is_suppressed() -> None:
    gen, drv = warmed()
    qa, qb = drv.bar_quotes(z=-2.5)
    gen.update(qa)
    sig = gen.update(qb)
    gen.complete(sig, False)
    later = dataclasses.replace(qb, ts_ms=qb.ts_ms + 100, bid=qb.bid * (1 - 1e-6))
    assert gen.update(later) is None
    assert counters(gen)["suppressed"]["duplicate"] == 1


def test_failed_exit_stays_in_position_and_retries_after_cooldown() -> None:
    gen, drv = warmed()
    gen.complete(drv.bar(z=2.5), True)
    sig = drv.bar(z=0.0)
    assert sig.signal_type is SignalType.EXIT
    gen.complete(sig, False)
    assert gen.state is PairState.SHORT_SPREAD
    assert drv.bar(z=0.0) is None
    retry = drv.bar(z=0.0)
    assert retry is not None and retry.signal_type is SignalType.EXIT


def test_stale_leg_blocks_signals() -> None:
    gen, drv = warmed()
    qa, qb = drv.bar_quotes(z=-2.5)
    qa = dataclasses.replace(qa, ts_ms=qa.ts_ms - 100_000)  # 199 s into the bar
    gen.update(qa)
    late_b = dataclasses.replace(qb, ts_ms=qa.ts_ms + 5_001)  # leg a's quote is 5.001 s old
    assert gen.update(late_b) is None
    gated = counters(gen)["gated"]
    assert gated["stale_leg"] == 1 and gated["no_quote"] == 1  # leg b had not quoted live before a
    fresh_a = dataclasses.replace(qa, ts_ms=late_b.ts_ms + 10)
    sig = gen.update(fresh_a)
    assert sig is not None and sig.signal_type is SignalType.ENTER_LONG_SPREAD


def test_no_signal_while_window_not_full_or_std_too_small() -> None:
    gen = SignalGenerator(make_params())
    gen.warm_up(ETH[:10].tolist(), BTC[:10].tolist())
    drv = Driver(gen, start=10)
    for _ in range(N - 11):
        assert drv.bar(z=None) is None
    assert counters(gen)["gated"]["window_not_full"] > 0
    assert not gen.snapshot().window_full
    drv.bar()
    assert gen.snapshot().window_full
    loud = SignalGenerator(make_params(min_std=1.0))  # log spread std is ~1e-3
    loud.warm_up(ETH[:WARM].tolist(), BTC[:WARM].tolist())
    assert Driver(loud).bar(z=-3.0) is None
    assert counters(loud)["gated"]["low_std"] == 1  # leg b's; leg a's met a leg b never quoted live


def test_halt_set_state_and_restore_state() -> None:
    gen, drv = warmed()
    gen.halt("rollback failed: ETH leg open")
    assert drv.bar(z=-2.5) is None
    snap = gen.snapshot()
    assert snap.state is PairState.HALTED and snap.halt_reason and snap.gated["halted"] == 1
    gen.set_state(PairState.FLAT)
    assert drv.bar(z=-2.5) is not None
    gen2, drv2 = warmed()
    entry_ts = int(ETH[WARM, 0]) - 5 * BAR_MS
    gen2.restore_state("LONG_SPREAD", entry_ts)
    assert gen2.state is PairState.LONG_SPREAD and gen2.snapshot().entry_ts_ms == entry_ts
    assert drv2.bar(z=-1.5) is None  # held 5 bars + 299.5 s: not yet longer than 6 bars
    sig = drv2.bar(z=-1.5)
    assert sig is not None and sig.signal_type is SignalType.TIME_STOP
    gen3, drv3 = warmed()
    gen3.restore_state(PairState.FLAT, stop_cooldown_until_ms=int(ETH[WARM + 2, 0]))
    assert drv3.bar(z=-2.5) is None and drv3.bar(z=-2.5) is None
    assert drv3.bar(z=-2.5) is not None


@pytest.mark.parametrize("status,cooled", [("EXECUTED", True), ("REFUSED", False)])
def test_a_stop_cooldown_survives_a_restart(tmp_path, status: str, cooled: bool) -> None:
    """Issue 10: the cooldown lived only in memory, so a restart right after a stop-loss could
    re-enter at once. The restarted pipeline rebuilds it from the journal's last stop (a refused
    stop closed nothing and starts none)."""
    from types import SimpleNamespace

    from app.pipeline import SignalRouter
    from core.stats import SessionStats
    from execution.journal import Journal

    gen, drv = warmed()
    entry = drv.bar(z=-2.5)
    gen.complete(entry, True)
    stop = drv.bar(z=-3.6)
    assert stop is not None and stop.signal_type is SignalType.STOP_LOSS
    journal = Journal.open(tmp_path / "journal.sqlite", mode="paper")
    try:
        for sig in (entry, stop):
            journal.record_signal(sig)
        journal.set_signal_outcome(entry.signal_id, "EXECUTED", "ok")
        journal.set_signal_outcome(stop.signal_id, status, "ok")
        # the process dies here; the new one warms up from history and restores from the engine
        restarted = SignalGenerator(make_params())
        restarted.warm_up(ETH[:drv.i].tolist(), BTC[:drv.i].tolist())
        drv2 = Driver(restarted, start=drv.i)
        router = SignalRouter(generators={"ETH_BTC": restarted}, stats=SessionStats(mode="PAPER"),
                              engine=SimpleNamespace(positions={}, journal=journal),  # type: ignore[arg-type]
                              history=None)  # type: ignore[arg-type]
        router.restore_from_engine()
    finally:
        journal.close()
    assert restarted.state is PairState.FLAT
    if not cooled:
        assert restarted.snapshot().stop_cooldown_until_ms is None
        assert drv2.bar(z=-2.5) is not None
        return
    assert restarted.snapshot().stop_cooldown_until_ms == stop.ts_ms + 1_200_000
    for _ in range(3):  # 900 s after the stop < 1200 s
        assert drv2.bar(z=-2.5) is None
    again = drv2.bar(z=-2.5)
    assert again is not None and again.signal_type.is_entry and again.ts_ms - stop.ts_ms == 1_200_000


def test_engine_state_wins_over_an_in_flight_completion() -> None:
    gen, drv = warmed()
    sig = drv.bar(z=-2.5)
    gen.set_state(PairState.HALTED)
    gen.complete(sig, True)
    assert gen.state is PairState.HALTED
    gen.complete(sig, True)  # unknown / already completed: ignored
    assert gen.snapshot().signals_executed == 1


# -- warm-up ---------------------------------------------------------------------------------------


def test_warm_up_aligns_candles_with_live_buckets() -> None:
    gen = SignalGenerator(make_params())
    used = gen.warm_up(ETH[:WARM].tolist(), BTC[:WARM].tolist())
    calc = gen.calculator
    assert used == WARM and calc.bars_in_window == N - 1 and calc.is_ready
    assert calc.open_bucket == int(ETH[WARM - 1, 0]) // BAR_MS  # last candle is the open bar
    # a live quote inside the last candle's bucket replaces its close (it was still forming)
    t_last = int(ETH[WARM - 1, 0])
    gen.update(Quote("ETHUSDT", ETH[WARM - 1, 4], ETH[WARM - 1, 4], t_last + 290_000))
    gen.update(Quote("BTCUSDT", BTC[WARM - 1, 4], BTC[WARM - 1, 4], t_last + 290_001))
    spreads = np.log(BTC[:WARM, 4]) - 0.79 * np.log(ETH[:WARM, 4])
    assert calc.z == pytest.approx(z_of(spreads[-N:-1], spreads[-1]), abs=1e-9)
    assert calc.bars_closed == WARM - 1


def test_warm_up_after_live_quotes_keeps_the_live_bar() -> None:
    gen = SignalGenerator(make_params())
    t = int(ETH[WARM, 0])
    gen.update(Quote("ETHUSDT", ETH[WARM, 4], ETH[WARM, 4], t + 10_000))
    gen.update(Quote("BTCUSDT", BTC[WARM, 4], BTC[WARM, 4], t + 10_001))
    used = gen.warm_up(ETH[:WARM + 1].tolist(), BTC[:WARM + 1].tolist())  # includes the live bucket
    assert used == WARM
    calc = gen.calculator
    assert calc.open_bucket == t // BAR_MS and calc.bars_in_window == N - 1
    assert calc.open_value == pytest.approx(math.log(BTC[WARM, 4]) - 0.79 * math.log(ETH[WARM, 4]), abs=1e-15)


def test_warm_up_joins_legs_and_restarts_the_window_after_missing_candles() -> None:
    gen = SignalGenerator(make_params())
    a = np.delete(ETH[:WARM], [50, 51], axis=0)  # two candles missing in leg a: never invented
    used = gen.warm_up(a, BTC[:WARM])
    calc = gen.calculator
    assert used == WARM - 2 and calc.gap_resets == 1 and calc.seed_missing == 2
    assert calc.bars_in_window == min(N - 1, WARM - 52 - 1)  # only the candles after the hole
    with pytest.raises(ValueError):
        gen.warm_up([[int(ETH[0, 0]) + 60_000, 1, 1, 1, 1, 1]], BTC[:1])  # 1m candles
    with pytest.raises(ValueError):
        gen.warm_up([[1, 2, 3]], BTC[:1])


# -- bad input ---------------------------------------------------------------------------------------


def _bad_quotes(t: int) -> list[tuple[RejectReason, object]]:
    return [
        (RejectReason.NON_FINITE, Quote("ETHUSDT", math.nan, 1900.0, t + 1)),
        (RejectReason.NON_FINITE, Quote("ETHUSDT", 1900.0, math.inf, t + 1)),
        (RejectReason.NON_POSITIVE, Quote("ETHUSDT", 0.0, 1900.0, t + 1)),
        (RejectReason.NON_POSITIVE, Quote("ETHUSDT", -1.0, -0.5, t + 1)),
        (RejectReason.CROSSED_BOOK, Quote("ETHUSDT", 1900.1, 1900.0, t + 1)),
        (RejectReason.OUT_OF_ORDER, Quote("ETHUSDT", 1900.0, 1900.1, t - 1)),
        (RejectReason.DUPLICATE, Quote("ETHUSDT", 1900.0, 1900.2, t)),
        (RejectReason.BAD_TIMESTAMP, Quote("ETHUSDT", 1900.0, 1900.1, -5)),
        (RejectReason.UNKNOWN_SYMBOL, Quote("SOLUSDT", 150.0, 150.1, t + 1)),
        (RejectReason.MALFORMED, Quote("ETHUSDT", None, 1900.1, t + 1)),  # type: ignore[arg-type]
        (RejectReason.MALFORMED, object()),
        (RejectReason.MALFORMED, Quote("ETHUSDT", 1900.0, 1900.1, "soon")),  # type: ignore[arg-type]
    ]


def test_every_bad_input_is_rejected_counted_and_moves_nothing() -> None:
    gen, drv = warmed()
    gen.complete(drv.bar(z=-2.5), True)
    t = drv.ts - 500  # leg a's last quote time; its last mid is ETH's close
    gen.update(Quote("ETHUSDT", 1900.0, 1900.2, t + 400))
    t += 400
    before = counters(gen)
    expected = {r.value: 0 for r in RejectReason}
    for reason, quote in _bad_quotes(t):
        assert gen.update(quote) is None  # type: ignore[arg-type]
        expected[reason.value] += 1
    after = counters(gen)
    assert after.pop("rejects") == expected
    before.pop("rejects")
    assert after == before


@pytest.mark.asyncio
async def test_bad_input_through_on_quote_never_raises() -> None:
    gen, _ = warmed()
    for _, quote in _bad_quotes(int(ETH[WARM, 0])):
        assert await gen.on_quote(quote) is None  # type: ignore[arg-type]


def test_same_millisecond_new_price_is_accepted() -> None:
    gen, drv = warmed()
    drv.bar()
    t = drv.ts
    gen.update(Quote("BTCUSDT", 30_000.0, 30_000.1, t + 1))
    gen.update(Quote("BTCUSDT", 30_000.1, 30_000.2, t + 1))  # same ms, new mid: a newer book
    snap = gen.snapshot()
    assert snap.rejects["duplicate"] == 0 and gen.calculator.spread == pytest.approx(
        math.log(30_000.15) - 0.79 * math.log(ETH[WARM, 4]), abs=1e-15)


def test_bind_symbols_and_unknown_symbols() -> None:
    gen = SignalGenerator(make_params(), symbol_a="ETH/USDT:USDT", symbol_b="BTC/USDT:USDT")
    gen.warm_up(ETH[:WARM].tolist(), BTC[:WARM].tolist())
    assert gen.update(Quote("ETHUSDT", 1900.0, 1900.1, 1)) is None
    assert gen.snapshot().rejects["unknown_symbol"] == 1
    drv = Driver(gen)
    assert drv.bar(z=-2.5) is not None
    with pytest.raises(ValueError):
        gen.bind_symbols("X", "X")


# -- ids, snapshot, params ------------------------------------------------------------------------


def test_signal_id_is_short_safe_stable_and_unique() -> None:
    gen, drv = warmed(pair_id="A_VERY_LONG_PAIR_ID_OF_FORTY_CHARACTERS_")
    ids = []
    for z in (-2.5, -0.1, 2.5, 0.0, -3.0):
        sig = drv.bar(z=z)
        if sig is not None:
            gen.complete(sig, True)
            ids.append(sig.signal_id)
            assert sig.signal_id == make_signal_id(sig.pair_id, sig.ts_ms, sig.signal_type)
    assert len(ids) == 5 and len(set(ids)) == 5
    for sid in ids:
        assert len(sid) <= SIGNAL_ID_MAX_LEN and re.fullmatch(r"[0-9a-f]{8}-\d{13}-[A-Z]{1,2}", sid)
        client_order_id = f"pb{sid}-b2"  # the engine's prefix + leg/attempt suffix
        assert len(client_order_id) <= 36 and re.fullmatch(r"[.A-Z:/a-z0-9_-]+", client_order_id)
    # stable across processes (blake2b, not hash()): the tag of this pair_id is fixed
    assert make_signal_id("ETH_BTC", 1688474400000, SignalType.ENTER_LONG_SPREAD) == "8696c9ce-1688474400000-EL"
    assert make_signal_id("P1", 1, SignalType.EXIT) != make_signal_id("P2", 1, SignalType.EXIT)


def _plain_json(value: object) -> bool:
    """Only JSON's own types, exactly (a str-Enum passes ``json.dumps`` but is not a plain str)."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    if type(value) is float:
        return math.isfinite(value)
    return value is None or type(value) in (str, int, bool)


def test_snapshot_is_json_ready() -> None:
    gen, drv = warmed()
    gen.complete(drv.bar(z=-2.5), True)
    snapshot = gen.snapshot().to_dict()
    assert _plain_json(snapshot), snapshot
    data = json.loads(json.dumps(snapshot, allow_nan=False))  # what a reader of the file sees
    assert data["state"] == "LONG_SPREAD" and data["bars_in_window"] == N - 1 and data["window_full"]
    assert data["quote_age_a_ms"] == 500 and data["quote_age_b_ms"] == 0
    assert data["signals_emitted"]["ENTER_LONG_SPREAD"] == 1 and data["entry_ts_ms"] == drv.ts
    assert set(data["gated"]) == {g.value for g in Gate} and set(data["suppressed"]) == {s.value for s in Suppression}
    empty = SignalGenerator(make_params()).snapshot().to_dict()
    assert _plain_json(empty), empty
    assert empty["state"] == "FLAT" and empty["bars_in_window"] == 0 and empty["window_full"] is False
    assert all(empty[k] is None for k in ("z", "spread", "mean", "std", "last_ts_ms"))  # NaN -> None
    assert set(empty["signals_emitted"].values()) == {0} and empty["quotes_accepted"] == 0


@pytest.mark.parametrize("bad", [dict(exit_z=2.5), dict(stop_z=1.5), dict(bar_seconds=0), dict(max_quote_age_ms=0),
                                 dict(cooldown_seconds=-1.0), dict(max_holding_bars=0), dict(hedge_ratio=-1.0),
                                 dict(lookback_bars=2), dict(entry_max_z=2.0), dict(entry_max_z=3.6),
                                 dict(time_stop_cooldown_seconds=-1.0)])
def test_invalid_params_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SignalGenerator(make_params(**bad))


# -- callbacks ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_on_quote_moves_state_only_when_a_callback_says_done() -> None:
    gen, drv = warmed()
    seen: list[TradingSignal] = []

    async def observer(signal: TradingSignal) -> bool:
        seen.append(signal)
        return False

    results = iter([False, "yes", True])

    async def engine(signal: TradingSignal) -> bool:
        return next(results)  # type: ignore[return-value]

    gen.register_signal_callback(observer)
    gen.register_signal_callback(engine)
    for expected_state in (PairState.FLAT, PairState.FLAT, PairState.LONG_SPREAD):
        qa, qb = drv.bar_quotes(z=-2.5)
        await gen.on_quote(qa)
        sig = await gen.on_quote(qb)
        assert sig is not None and gen.state is expected_state  # a truthy non-True is not done
        drv.bar(z=-2.5)  # let the duplicate window pass
    assert len(seen) == 3


@pytest.mark.asyncio
async def test_no_new_signal_while_one_is_in_flight() -> None:
    gen, drv = warmed()
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow_engine(signal: TradingSignal) -> bool:
        started.set()
        await release.wait()
        return True

    gen.register_signal_callback(slow_engine)
    qa, qb = drv.bar_quotes(z=-2.5)
    await gen.on_quote(qa)
    task = asyncio.create_task(gen.on_quote(qb))
    await started.wait()
    assert gen.snapshot().in_flight_signal_id is not None
    qa2, qb2 = drv.bar_quotes(z=-3.6)  # would be a stop-loss if the entry were done
    assert await gen.on_quote(qa2) is None and await gen.on_quote(qb2) is None
    assert gen.snapshot().gated["in_flight"] == 2
    release.set()
    sig = await task
    assert sig.signal_type is SignalType.ENTER_LONG_SPREAD and gen.state is PairState.LONG_SPREAD
    assert gen.snapshot().in_flight_signal_id is None


@pytest.mark.asyncio
async def test_hub_pattern_update_inline_dispatch_in_a_task() -> None:
    """The hub keeps feeding quotes (window stays current) while the execution runs."""
    gen, drv = warmed()
    release = asyncio.Event()

    async def engine(signal: TradingSignal) -> bool:
        await release.wait()
        return True

    gen.register_signal_callback(engine)
    qa, qb = drv.bar_quotes(z=2.5)
    gen.update(qa)
    sig = gen.update(qb)
    task = asyncio.create_task(gen.dispatch(sig))
    await asyncio.sleep(0)
    closed = gen.calculator.bars_closed
    for z in (3.8, 0.0):  # a stop and an exit that must not fire: the entry is in flight
        assert drv.bar(z=z) is None
    assert gen.calculator.bars_closed == closed + 2
    release.set()
    assert await task is True and gen.state is PairState.SHORT_SPREAD


@pytest.mark.asyncio
async def test_callback_error_counts_as_not_done_and_cancellation_propagates() -> None:
    gen, drv = warmed()

    async def broken(signal: TradingSignal) -> bool:
        raise RuntimeError("engine bug")

    gen.register_signal_callback(broken)
    qa, qb = drv.bar_quotes(z=-2.5)
    await gen.on_quote(qa)
    assert (await gen.on_quote(qb)) is not None
    assert gen.state is PairState.FLAT and gen.snapshot().callback_errors == 1

    gen2, drv2 = warmed()

    async def hangs(signal: TradingSignal) -> bool:
        await asyncio.sleep(3600)
        return True

    gen2.register_signal_callback(hangs)
    qa, qb = drv2.bar_quotes(z=-2.5)
    await gen2.on_quote(qa)
    task = asyncio.create_task(gen2.on_quote(qb))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snap = gen2.snapshot()
    assert snap.in_flight_signal_id is None and snap.state is PairState.FLAT and snap.signals_failed == 1


# -- property: nothing before the window is full ------------------------------------------------------


def _random_walk_run(lookback: int, steps: list[tuple[bool, int, float]]) -> int:
    """Feed real closes perturbed by ``steps`` (leg, ms to advance, relative move); check every
    signal happens on a full window; return how many fired."""
    gen = SignalGenerator(make_params(lookback_bars=lookback, bar_seconds=60, entry_z=0.3, exit_z=0.1, stop_z=0.6,
                                      cooldown_seconds=0.0, max_quote_age_ms=120_000, max_holding_bars=2))
    t = int(ETH[0, 0])
    fired = 0
    for k, (is_a, dt, ret) in enumerate(steps):
        t += dt
        base = ETH[k % len(ETH), 4] if is_a else BTC[k % len(BTC), 4]
        mid = float(base) * (1.0 + ret)
        sig = gen.update(Quote("ETHUSDT" if is_a else "BTCUSDT", mid, mid, t))
        calc = gen.calculator
        if sig is not None:
            assert calc.is_ready and calc.bars_in_window == lookback - 1
            assert calc.bars_closed >= lookback - 1 and not calc.awaiting_backfill
            fired += 1
            gen.complete(sig, True)
    return fired


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lookback=st.integers(3, 12), steps=st.lists(
    st.tuples(st.booleans(), st.integers(0, 60_000), st.floats(-0.02, 0.02)), min_size=40, max_size=150))
def test_no_signal_before_the_window_is_full(lookback: int, steps: list[tuple[bool, int, float]]) -> None:
    target(float(_random_walk_run(lookback, steps)))  # steer towards runs that do fire


def test_the_property_setting_does_fire_signals() -> None:
    """Guard against a vacuous property: the same setting fires plenty of signals."""
    rng = np.random.default_rng(7)
    steps = [(bool(rng.integers(2)), int(rng.integers(0, 60_000)), float(rng.uniform(-0.02, 0.02)))
             for _ in range(150)]
    assert _random_walk_run(5, steps) >= 5
