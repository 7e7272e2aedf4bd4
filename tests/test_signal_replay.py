"""Replay a real pair through SignalGenerator at bar closes; compare with a pandas rewrite.

ETHUSDT (leg_a, X) / BTCUSDT (leg_b, Y), the bundled 8,639 5m candles. Each bar becomes two
quotes at the bar's close prices: leg a at +299.0 s, leg b at +299.5 s of the candle. With
``max_quote_age_ms = 1000`` leg a's quote meets a bar-old leg b and is gated as stale, so the
generator decides once per bar, on leg b's quote, with the bar-close spread -- and its live Z
there is by definition the rolling Z of the bar-close series. The reference below is written
independently: pandas for Z, a plain loop for the rules of docs/architecture.md, "Signals and sizing". Every callback returns True.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from core.config import SignalParams
from core.types import Quote, SignalType, TradingSignal
from signals.generator import SignalGenerator
from signals.kernels import ols_hedge_ratio
from tests.signal_data import load_ohlcv

BAR_MS = 300_000
N = 60
ENTRY, EXIT, STOP, HOLD = 2.0, 0.0, 3.0, 36
COOLDOWN_S, STOP_COOLDOWN_S = 3_600.0, 3_600.0  # 12 bars: the duplicate window does bite
CODES = {"EL": SignalType.ENTER_LONG_SPREAD, "ES": SignalType.ENTER_SHORT_SPREAD, "X": SignalType.EXIT,
         "SL": SignalType.STOP_LOSS, "TS": SignalType.TIME_STOP}


def _legs() -> tuple[np.ndarray, np.ndarray, float]:
    eth, btc = load_ohlcv("ETHUSDT"), load_ohlcv("BTCUSDT")
    assert np.array_equal(eth[:, 0], btc[:, 0])
    beta = float(ols_hedge_ratio(np.log(eth[:, 4]), np.log(btc[:, 4]), True)[0])
    return eth, btc, round(beta, 6)


def _params(beta: float, cooldown_s: float = COOLDOWN_S) -> SignalParams:
    return SignalParams(pair_id="ETHUSDT-BTCUSDT", leg_a="ETHUSDT", leg_b="BTCUSDT", hedge_ratio=beta,
                        bar_seconds=300, lookback_bars=N, entry_z=ENTRY, exit_z=EXIT, stop_z=STOP,
                        price_transform="log", min_std=1e-9, max_quote_age_ms=1_000, cooldown_seconds=cooldown_s,
                        stop_loss_cooldown_seconds=STOP_COOLDOWN_S, max_holding_bars=HOLD)


def reference_signals(z: np.ndarray, ts: np.ndarray, start: int, cooldown_s: float) -> list[tuple[int, str]]:
    """docs/architecture.md, "Signals and sizing" over the bar-close Z series, from bar ``start`` on, starting FLAT."""
    state, entry_ts, stop_until = "FLAT", 0, -math.inf
    last: dict[str, float] = {}
    out = []
    for i in range(start, len(z)):
        zi, t = z[i], int(ts[i])
        if np.isnan(zi):
            continue
        kind = None
        if state == "FLAT":
            # the entry band: entry_max defaults to the stop, never enter where it would fire
            kind = "EL" if -STOP < zi <= -ENTRY else "ES" if ENTRY <= zi < STOP else None
            if kind and t < stop_until:
                continue
        elif state == "LONG":
            if zi <= -STOP:
                kind = "SL"
            elif zi >= -EXIT:
                kind = "X"
            elif t - entry_ts > HOLD * BAR_MS:
                kind = "TS"
        else:
            if zi >= STOP:
                kind = "SL"
            elif zi <= EXIT:
                kind = "X"
            elif t - entry_ts > HOLD * BAR_MS:
                kind = "TS"
        if kind is None or t - last.get(kind, -math.inf) < max(cooldown_s * 1000, 1):
            continue
        last[kind] = t
        out.append((t, kind))
        if kind in ("EL", "ES"):
            state, entry_ts = ("LONG" if kind == "EL" else "SHORT"), t
        else:
            state = "FLAT"
            if kind in ("SL", "TS"):  # the time-stop cooldown defaults to the stop-loss one
                stop_until = t + STOP_COOLDOWN_S * 1000
    return out


def _pandas_z(eth: np.ndarray, btc: np.ndarray, beta: float) -> np.ndarray:
    spread = pd.Series([math.log(b) - beta * math.log(a) for a, b in zip(eth[:, 4], btc[:, 4])])
    z = ((spread - spread.rolling(N).mean()) / spread.rolling(N).std()).to_numpy()
    margins = np.abs(np.subtract.outer(z[~np.isnan(z)], [-STOP, -ENTRY, -EXIT, EXIT, ENTRY, STOP]))
    assert margins.min() > 1e-6  # pandas' own drift (~1e-8) cannot flip a threshold here
    return z


async def _replay(gen: SignalGenerator, eth: np.ndarray, btc: np.ndarray, start: int) -> list[TradingSignal]:
    emitted: list[TradingSignal] = []

    async def engine(signal: TradingSignal) -> bool:
        emitted.append(signal)
        return True

    gen.register_signal_callback(engine)
    for i in range(start, len(eth)):
        t = int(eth[i, 0])
        await gen.on_quote(Quote("ETHUSDT", float(eth[i, 4]), float(eth[i, 4]), t + 299_000))
        await gen.on_quote(Quote("BTCUSDT", float(btc[i, 4]), float(btc[i, 4]), t + 299_500))
    return emitted


@pytest.mark.asyncio
@pytest.mark.parametrize("warm_bars", [0, 2_000])
async def test_replay_matches_pandas_reference(warm_bars: int) -> None:
    eth, btc, beta = _legs()
    z = _pandas_z(eth, btc, beta)
    decision_ts = eth[:, 0].astype(np.int64) + 299_500
    expected = reference_signals(z, decision_ts, warm_bars, COOLDOWN_S)
    gen = SignalGenerator(_params(beta))
    if warm_bars:
        gen.warm_up(eth[:warm_bars].tolist(), btc[:warm_bars].tolist())
    emitted = await _replay(gen, eth, btc, warm_bars)
    got = [(s.ts_ms, next(code for code, t in CODES.items() if t is s.signal_type)) for s in emitted]
    assert got == expected
    kinds = Counter(kind for _, kind in expected)
    assert len(expected) > 100 and set(kinds) == set(CODES), kinds
    index = {int(t): i for i, t in enumerate(decision_ts)}
    for signal in emitted:
        assert signal.z == pytest.approx(z[index[signal.ts_ms]], abs=1e-6)
    snap = gen.snapshot()
    assert snap.signals_executed == len(expected)
    assert snap.gated["stale_leg"] >= len(eth) - warm_bars - N  # every leg-a quote on a full window
    assert len({s.signal_id for s in emitted}) == len(emitted)


def test_duplicate_window_matters_in_this_replay() -> None:
    """The cooldown is not vacuous here: without it the reference sequence differs."""
    eth, btc, beta = _legs()
    z = _pandas_z(eth, btc, beta)
    ts = eth[:, 0].astype(np.int64) + 299_500
    assert reference_signals(z, ts, 0, COOLDOWN_S) != reference_signals(z, ts, 0, 0.0)
