"""The backtest's replay kernel does exactly what ``SignalGenerator.update`` does, quote for quote.

Both paths get the same adversarial stream (two legs, one quote each per step in the replay's
order, with duplicates, same-ms new prices, out-of-order stamps, crossed, zero and NaN prices, a
leg that goes stale) and the same outcome for every signal (executed or refused, by its id); the
per-quote path also runs the session report's recorder as the router does. Every signal (all its
floats), every counter of the generator's snapshot and every bar sample must be equal, across
block boundaries and with the generator moved by hand between signals (HALTED, entries blocked).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from app.series import SeriesRecorder
from core.config import SignalParams
from core.types import PairState, Quote, TradingSignal
from execution.journal import Journal
from market_replay.sources import QuoteBlock
from research.fast_replay import FloatBlock, PairCursor, ReplayDiverged
from signals import replay_kernel as rk
from signals.generator import Gate, RejectReason, SignalGenerator
from signals.spread import ReplayUnsupported

SYMBOLS = ("AAA/USDT:USDT", "BBB/USDT:USDT")
BAR_S = 60
STEP_MS = 10_000  # six quotes per bar and leg


def _params(**changes: object) -> SignalParams:
    base = dict(pair_id="AAA_BBB", leg_a=SYMBOLS[0], leg_b=SYMBOLS[1], hedge_ratio=0.8, bar_seconds=BAR_S,
                lookback_bars=8, entry_z=1.0, exit_z=0.2, stop_z=2.3, price_transform="log", min_std=1e-6,
                max_quote_age_ms=25_000, cooldown_seconds=20.0, stop_loss_cooldown_seconds=120.0,
                max_holding_bars=4)
    base.update(changes)
    return SignalParams(**base)  # type: ignore[arg-type]


def _stream(seed: int, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stamp, bid, ask) [2, steps]: random walks with every kind of bad quote sprinkled in."""
    rng = np.random.default_rng(seed)
    t0 = 1_700_000_040_000
    stamp = np.zeros((2, steps), dtype=np.int64)
    bid = np.zeros((2, steps))
    ask = np.zeros((2, steps))
    for leg, start in enumerate((30.0, 12.0)):
        mid = start * np.exp(np.cumsum(rng.normal(0, 0.004, steps)))
        spread = mid * 1e-4
        bid[leg] = np.round(mid - spread, 4)
        ask[leg] = np.round(mid + spread, 4)
        stamp[leg] = t0 + np.arange(steps) * STEP_MS + rng.integers(0, STEP_MS, steps)
        roll = rng.random(steps)
        dup = roll < 0.03  # same ms as the quote before: a duplicate or a same-ms new price
        stamp[leg, 1:][dup[1:]] = stamp[leg, :-1][dup[1:]]
        same_price = rng.random(steps) < 0.5
        for t in np.flatnonzero(dup)[1:]:
            if same_price[t]:
                bid[leg, t], ask[leg, t] = bid[leg, t - 1], ask[leg, t - 1]
        back = (roll > 0.03) & (roll < 0.04)  # older than the quote before
        stamp[leg, 1:][back[1:]] -= 3 * STEP_MS
        bid[leg][(roll > 0.04) & (roll < 0.05)] = math.nan
        bid[leg][(roll > 0.05) & (roll < 0.055)] = 0.0
        crossed = (roll > 0.055) & (roll < 0.06)
        bid[leg][crossed] = ask[leg][crossed] + 0.01
        absent = (roll > 0.06) & (roll < 0.064) if leg == 1 else np.zeros(steps, dtype=bool)
        stamp[leg][absent] = -1  # no quote of this leg at that step
    stamp[1, steps // 3: steps // 3 + 4] = -1  # leg b silent for 40 s: leg a's quotes see it stale
    return stamp, bid, ask


def _outcome(signal: TradingSignal) -> bool:
    """Executed or refused, decided by the id alone (both paths get the same)."""
    return hashlib.blake2b(signal.signal_id.encode(), digest_size=1).digest()[0] % 4 != 0


#: Moves by hand at the start of a step, as the engine and an operator make them.
INTERVENTIONS = {1_000: "halt", 1_300: "flat", 2_000: "block", 2_400: "unblock", 3_000: "restore"}


def _intervene(gen: SignalGenerator, step: int) -> None:
    what = INTERVENTIONS.get(step)
    if what == "halt":
        gen.halt("test")
    elif what == "flat":
        gen.set_state(PairState.FLAT)
    elif what == "block":
        gen.block_entries("removed from the configuration")
    elif what == "unblock":
        gen.block_entries(None)
    elif what == "restore":  # a restart found a position with no entry time: the clock starts at the next quote
        gen.restore_state(PairState.LONG_SPREAD, None)


def _recorder(gen: SignalGenerator, tmp_path: Path, name: str) -> SeriesRecorder:
    tmp_path.mkdir(parents=True, exist_ok=True)
    journal = Journal.open(tmp_path / f"{name}.sqlite", mode="paper", durable=False)
    return SeriesRecorder({gen.pair_id: gen}, journal=journal, max_bars=100_000)


def _warm(gen: SignalGenerator, stamp: np.ndarray, bid: np.ndarray, ask: np.ndarray) -> None:
    """A short history, so the window fills after a few live bars (both paths alike)."""
    t0 = (int(stamp[0, 0]) // (BAR_S * 1000) - 3) * BAR_S * 1000
    rows = [[t0 + k * BAR_S * 1000, 1, 1, 1, close, 1] for k, close in enumerate((30.0, 30.1, 29.9))]
    rows_b = [[r[0], 1, 1, 1, close, 1] for r, close in zip(rows, (12.0, 12.05, 11.97))]
    gen.warm_up(rows, rows_b)


def _per_quote(params: SignalParams, stamp: np.ndarray, bid: np.ndarray, ask: np.ndarray, tmp_path: Path):
    gen = SignalGenerator(params)
    _warm(gen, stamp, bid, ask)
    recorder = _recorder(gen, tmp_path, "per-quote")
    signals: list[TradingSignal] = []
    for t in range(stamp.shape[1]):
        _intervene(gen, t)
        order = sorted((int(stamp[i, t]), i) for i in (0, 1) if stamp[i, t] >= 0)
        for ts, i in order:
            quote = Quote(SYMBOLS[i], float(bid[i, t]), float(ask[i, t]), ts, 1.0, 1.0)
            recorder.on_quote(quote)
            signal = gen.update(quote)
            if signal is not None:
                signals.append(signal)
                gen.complete(signal, _outcome(signal))
    return gen, recorder, signals


def _kernel(params: SignalParams, stamp: np.ndarray, bid: np.ndarray, ask: np.ndarray, tmp_path: Path,
            block: int):
    gen = SignalGenerator(params)
    _warm(gen, stamp, bid, ask)
    recorder = _recorder(gen, tmp_path, "kernel")
    cursor = PairCursor(gen, 0, 1, recorder, block)
    signals: list[TradingSignal] = []
    n = stamp.shape[1]
    cuts = sorted(set(range(0, n, block)) | set(INTERVENTIONS)) + [n]
    for g0, g1 in zip(cuts, cuts[1:]):
        _intervene(gen, g0)
        sl = slice(g0, g1)
        zeros = np.zeros_like(stamp[:, sl])
        fb = FloatBlock(QuoteBlock(g0, stamp[:, sl].copy(), zeros, zeros, zeros, zeros), bid[:, sl].copy(),
                        ask[:, sl].copy())
        cursor.t = cursor.sub = 0
        cursor.load()
        while cursor.run(fb) == rk.FIRED:
            cursor.store()
            signal = gen.emit_replayed(cursor.state)  # type: ignore[arg-type]
            signals.append(signal)
            gen.complete(signal, _outcome(signal))
            cursor.load()
        cursor.store()
    return gen, recorder, signals


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("block", [4_000, 777], ids=["one-block", "blocks-of-777"])
def test_kernel_equals_the_per_quote_path(tmp_path: Path, seed: int, block: int) -> None:
    stamp, bid, ask = _stream(seed, 4_000)
    params = _params(price_transform="log" if seed % 2 else "raw", max_holding_bars=None if seed % 3 == 0 else 4)
    ref_gen, ref_rec, ref_signals = _per_quote(params, stamp, bid, ask, tmp_path)
    gen, rec, signals = _kernel(params, stamp, bid, ask, tmp_path, block)
    assert len(ref_signals) > 15  # the stream trades (every kind: the next test)
    assert signals == ref_signals  # ids, kinds, times and every float (z, spread, mean, std, mids)
    ref, got = ref_gen.snapshot().to_dict(), gen.snapshot().to_dict()
    assert got == ref
    for reason in (RejectReason.DUPLICATE, RejectReason.OUT_OF_ORDER, RejectReason.NON_FINITE,
                   RejectReason.CROSSED_BOOK, RejectReason.NON_POSITIVE):
        assert ref["rejects"][reason.value] > 0, reason
    for gate in (Gate.STALE_LEG, Gate.HALTED, Gate.WINDOW_NOT_FULL):
        assert ref["gated"][gate.value] > 0, gate
    assert list(rec.samples["AAA_BBB"]) == list(ref_rec.samples["AAA_BBB"])
    assert len(ref_rec.samples["AAA_BBB"]) > 500


def test_the_streams_reach_every_rule_the_kernel_reimplements(tmp_path: Path) -> None:
    kinds: set[str] = set()
    for seed in range(12):
        stamp, bid, ask = _stream(seed, 4_000)
        params = _params(price_transform="log" if seed % 2 else "raw", max_holding_bars=None if seed % 3 == 0 else 4)
        kinds |= {s.signal_type.value for s in _per_quote(params, stamp, bid, ask, tmp_path / str(seed))[2]}
    assert kinds == {"ENTER_LONG_SPREAD", "ENTER_SHORT_SPREAD", "EXIT", "STOP_LOSS", "TIME_STOP"}


def test_a_gap_stops_the_kernel_before_the_quote(tmp_path: Path) -> None:
    stamp, bid, ask = _stream(1, 600)
    stamp[:, 300:] += 5 * BAR_S * 1000  # five bars without a quote
    gen = SignalGenerator(_params())
    _warm(gen, stamp, bid, ask)
    cursor = PairCursor(gen, 0, 1, _recorder(gen, tmp_path, "gap"), 600)
    zeros = np.zeros_like(stamp)
    cursor.load()
    fb = FloatBlock(QuoteBlock(0, stamp, zeros, zeros, zeros, zeros), bid, ask)
    with pytest.raises(ReplayDiverged, match="bars without a quote before step"):
        while cursor.run(fb) == rk.FIRED:
            cursor.store()
            gen.complete(gen.emit_replayed(cursor.state), False)  # type: ignore[arg-type]
            cursor.load()


def test_what_the_kernel_does_not_model_is_refused() -> None:
    with pytest.raises(ReplayUnsupported, match="rolling-OLS"):
        SignalGenerator(_params(hedge_ratio_mode="rolling_ols")).export_replay()
    gen = SignalGenerator(_params())
    gen.set_state(PairState.BLOCKED)
    with pytest.raises(ReplayUnsupported, match="BLOCKED"):
        gen.export_replay()


def test_the_kernel_counter_layout_is_the_generators() -> None:
    gates, reasons = list(Gate), list(RejectReason)
    assert [gates.index(g) for g in (Gate.NO_QUOTE, Gate.HALTED, Gate.WINDOW_NOT_FULL, Gate.LOW_STD,
                                     Gate.STALE_LEG, Gate.BAD_BETA)] == \
        [rk.G_NO_QUOTE, rk.G_HALTED, rk.G_NOT_FULL, rk.G_LOW_STD, rk.G_STALE, rk.G_BAD_BETA]
    assert [reasons.index(r) for r in (RejectReason.NON_FINITE, RejectReason.NON_POSITIVE,
                                       RejectReason.CROSSED_BOOK, RejectReason.BAD_TIMESTAMP,
                                       RejectReason.OUT_OF_ORDER, RejectReason.DUPLICATE)] == \
        [rk.R_NON_FINITE, rk.R_NON_POSITIVE, rk.R_CROSSED, rk.R_BAD_TS, rk.R_OUT_OF_ORDER, rk.R_DUPLICATE]
