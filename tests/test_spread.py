"""SpreadCalculator: bar sampling in exchange time and the live Z, on real quotes and candles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from signals.spread import SpreadCalculator
from tests.signal_data import (BAR_MS, decimal_z, load_book_ticker, load_ohlcv, merged_quotes,
                               pandas_fresh_z, pandas_z, rel_err)

TOL = 1e-9
N = 60


def _calc(**kw: object) -> SpreadCalculator:
    args: dict[str, object] = {"hedge_ratio": 0.79, "lookback_bars": N, "bar_seconds": 300, "price_transform": "log"}
    args.update(kw)
    return SpreadCalculator(**args)  # type: ignore[arg-type]


def _bar_close_spreads(calc: SpreadCalculator, x_sym: str, y_sym: str) -> tuple[np.ndarray, np.ndarray]:
    """Feed each real candle as intrabar quotes, open, high, low, close of leg a then leg b at
    increasing times inside the bucket; return the Z after each bar's last quote and the
    bar-close spreads."""
    a, b = load_ohlcv(x_sym), load_ohlcv(y_sym)
    z_at_close = np.empty(len(a))
    closes = np.empty(len(a))
    mid_a = mid_b = math.nan
    for i in range(len(a)):
        t = int(a[i, 0])
        for k, col in enumerate((1, 2, 3, 4)):
            mid_a = float(a[i, col])
            if not math.isnan(mid_b):
                calc.update(t + 60_000 * k + 1_000, mid_a, mid_b)
            mid_b = float(b[i, col])
            z_at_close[i] = calc.update(t + 60_000 * k + 2_000, mid_a, mid_b)
        closes[i] = calc.spread
    return z_at_close, closes


@pytest.mark.parametrize("transform", ["log", "raw"])
def test_live_z_at_bar_close_equals_pandas_rolling_on_bar_closes(transform: str) -> None:
    calc = _calc(price_transform=transform, hedge_ratio=0.79 if transform == "log" else 15.5)
    z, spreads = _bar_close_spreads(calc, "ETHUSDT", "BTCUSDT")
    x, y = load_ohlcv("ETHUSDT")[:, 4], load_ohlcv("BTCUSDT")[:, 4]
    f = np.log if transform == "log" else (lambda v: v)
    assert np.allclose(spreads, f(y) - calc.hedge_ratio * f(x), rtol=1e-14, atol=1e-12)
    assert rel_err(z, pandas_fresh_z(spreads, N)).max() <= TOL
    assert rel_err(z, pandas_z(spreads, N)).max() <= 1e-6  # pandas' own drift, see test_kernels
    assert calc.bars_closed == len(x) - 1 and calc.gaps == 0 and calc.gap_resets == 0


def test_intrabar_z_uses_last_n_minus_1_closes_plus_current() -> None:
    calc = _calc()
    _, spreads = _bar_close_spreads(calc, "LTCUSDT", "BCHUSDT")
    window = spreads[-N:-1]  # the N-1 completed bars before the (still open) last bar
    for probe in (spreads[-1], spreads[-1] + 0.01, window.mean(), window.max() * 1.001):
        z = calc.update(int(load_ohlcv("LTCUSDT")[-1, 0]) + 299_000, 1.0, math.exp(probe))
        full = np.append(window, calc.spread)
        assert z == pytest.approx((calc.spread - full.mean()) / full.std(ddof=1), rel=1e-9, abs=1e-9)
        assert calc.mean == pytest.approx(full.mean(), rel=1e-14)
        assert calc.std == pytest.approx(full.std(ddof=1), rel=1e-9)


@pytest.mark.parametrize("bar_seconds", [1, 5])
def test_real_book_ticker_bars_match_pandas_and_a_quiet_bucket_is_a_gap(bar_seconds: int) -> None:
    """Real BTC/ETH bookTicker quotes in arrival order; bars by exchange time, last value per
    bucket: pandas' groupby-last series. Three feed outages (3, 12 and 21 s) leave buckets
    without a quote: each is a gap, nothing is carried into it, and Z waits (NaN) until a rebuild. The test rebuilds the
    window from the real bars after each gap, as the router's backfill does from candles."""
    quotes = merged_quotes(("ETHUSDT", "BTCUSDT"), "20240719")
    start = quotes[0].ts_ms
    outages = [(start + k * 1000, start + (k + d) * 1000) for k, d in ((60, 3), (150, 12), (230, 21))]
    quotes = [q for q in quotes if not any(a <= q.ts_ms < b for a, b in outages)]  # the feed was down
    window = 20
    calc = SpreadCalculator(hedge_ratio=0.8, lookback_bars=window, bar_seconds=bar_seconds)
    bar_ms = bar_seconds * 1000
    mids = {"ETHUSDT": math.nan, "BTCUSDT": math.nan}
    rows = []
    closed: dict[int, float] = {}  # the real bar-close spreads so far: what a backfill would return
    last_value = math.nan
    waited = 0
    for q in quotes:
        mids[q.symbol] = q.mid
        if math.isnan(mids["ETHUSDT"]) or math.isnan(mids["BTCUSDT"]):
            continue
        before = calc.open_bucket
        z = calc.update(q.ts_ms, mids["ETHUSDT"], mids["BTCUSDT"])
        if calc.open_bucket != before and before >= 0:
            closed[before] = last_value
        last_value = calc.spread
        if calc.awaiting_backfill:
            waited += 1
            assert math.isnan(z) and math.isnan(calc.z)
            live_bucket, live_value = calc.open_bucket, calc.open_value
            calc.reset()
            for bucket in sorted(closed)[-window:]:
                calc.seed_bar(bucket * bar_ms, closed[bucket])
            calc.seed_bar(live_bucket * bar_ms, live_value)
            z = calc.update(q.ts_ms, mids["ETHUSDT"], mids["BTCUSDT"])
        rows.append((q.ts_ms, calc.spread, z))
    frame = pd.DataFrame(rows, columns=["ts", "spread", "z"])
    frame["bucket"] = frame["ts"].cummax() // bar_ms  # a late quote counts in the open bar
    last = frame.groupby("bucket").last(skipna=False)
    full = last.reindex(range(int(last.index.min()), int(last.index.max()) + 1))
    empty = full["spread"].isna().to_numpy()
    runs = int((empty[1:] & ~empty[:-1]).sum())  # runs of empty buckets = gaps
    assert runs > 0 and calc.gaps == runs == waited
    # The reference: pandas rolling Z over the real bars only, restarted after every gap (a
    # window of bars that are not consecutive is not a rolling window).
    segment = np.cumsum(empty)
    observed, ref = [], []
    for _, part in full[~empty].groupby(segment[~empty]):
        zs = pandas_fresh_z(part["spread"].to_numpy(), window)
        observed.extend(part["z"].to_numpy()[window - 1:])
        ref.extend(zs[window - 1:])
    observed_a, ref_a = np.array(observed), np.array(ref)
    assert np.isfinite(ref_a).sum() > (100 if bar_seconds == 1 else 10)
    assert rel_err(observed_a, ref_a).max() <= TOL


def test_empty_buckets_are_a_gap_never_carried_forward() -> None:
    calc = SpreadCalculator(hedge_ratio=1.0, lookback_bars=5, bar_seconds=60, price_transform="raw")
    for t in range(6):
        calc.update(t * 60_000, 10.0, 10.0 + t % 3)
    assert calc.is_ready and not math.isnan(calc.z)
    z = calc.update(9 * 60_000, 10.0, 11.0)  # buckets 6, 7, 8 empty
    assert calc.awaiting_backfill and calc.gaps == 1 and calc.bars_missing == 3 and calc.gap_epoch == 1
    assert math.isnan(z) and calc.bars_in_window == 4  # the closed bar 5 is real and kept; nothing carried
    calc.update(9 * 60_000 + 5, 10.0, 12.0)
    assert calc.awaiting_backfill and math.isnan(calc.z)  # still waiting for the missing bars
    calc.update(10 * 60_000, 10.0, 12.0)  # a later bar without a gap: still waiting
    assert calc.awaiting_backfill and calc.gaps == 1


def test_a_hole_in_history_restarts_the_window_after_it() -> None:
    calc = SpreadCalculator(hedge_ratio=1.0, lookback_bars=5, bar_seconds=60, price_transform="raw")
    values = {t: float(t % 3) for t in range(12) if t not in (5, 6)}  # candles 5 and 6 do not exist
    for t, v in values.items():
        calc.seed_bar(t * 60_000, v)
    assert calc.gap_resets == 1 and calc.seed_missing == 2 and not calc.awaiting_backfill
    assert calc.bars_in_window == 4 and calc.is_ready  # bars 7..10 closed, 11 open
    z = calc.update(11 * 60_000 + 1, 10.0, 10.0 + 2.0)
    window = np.array([values[t] for t in (7, 8, 9, 10)] + [2.0])
    assert z == pytest.approx((2.0 - window.mean()) / window.std(ddof=1), rel=1e-12)


def test_late_quote_counts_in_the_open_bar() -> None:
    calc = SpreadCalculator(hedge_ratio=1.0, lookback_bars=3, bar_seconds=60, price_transform="raw")
    calc.update(0, 10.0, 11.0)
    calc.update(60_000, 10.0, 12.0)
    calc.update(59_999, 10.0, 13.0)  # the other leg's clock is behind: bucket 0 stays closed
    assert calc.open_bucket == 1 and calc.open_value == 3.0 and calc.bars_closed == 1


def test_seed_bar_uses_candle_open_time_and_leaves_the_last_candle_open() -> None:
    a, b = load_ohlcv("ETHUSDT"), load_ohlcv("BTCUSDT")
    calc = _calc()
    for i in range(N + 10):
        assert calc.seed_bar(int(a[i, 0]), calc.spread_of(a[i, 4], b[i, 4]))
    assert calc.open_bucket == int(a[N + 9, 0]) // BAR_MS
    assert calc.bars_in_window == N - 1  # the last candle is the open bar, not yet pushed
    assert not calc.seed_bar(int(a[0, 0]), 0.0)  # older than the open bar: ignored
    # a live quote in the next bucket closes the last candle; Z equals pandas on closes
    nxt = N + 10
    z = calc.update(int(a[nxt, 0]) + 299_000, float(a[nxt, 4]), float(b[nxt, 4]))
    spreads = np.log(b[:nxt + 1, 4]) - 0.79 * np.log(a[:nxt + 1, 4])
    assert z == pytest.approx(pandas_fresh_z(spreads, N)[-1], rel=1e-9, abs=1e-9)


def test_flat_window_has_zero_std_and_no_z() -> None:
    calc = SpreadCalculator(hedge_ratio=1.0, lookback_bars=4, bar_seconds=60, price_transform="raw")
    for t in range(5):
        z = calc.update(t * 60_000, 100.0, 101.5)
    assert calc.is_ready and calc.std == 0.0 and math.isnan(z)
    z = calc.update(5 * 60_000, 100.0, 101.75)
    assert calc.std > 0 and z == pytest.approx(1.5, rel=1e-12)


def test_raw_btc_level_with_tiny_spread_through_the_calculator() -> None:
    """Raw transform, a spread at ~3e4 (BTC) moving by cents: the calculator's Python-float
    query on top of the kernel state stays exact (50-digit reference)."""
    btc = load_book_ticker("BTCUSDT", "20240719")
    calc = SpreadCalculator(hedge_ratio=1e-9, lookback_bars=N, bar_seconds=1, price_transform="raw")
    for ts, bid, ask in zip(btc["event_time_ms"], btc["bid_price"], btc["ask_price"]):
        calc.update(int(ts), 1.0, (bid + ask) / 2)
    # rebuild the bar series the calculator saw and check its last Z
    frame = btc.assign(mid=(btc["bid_price"] + btc["ask_price"]) / 2 - 1e-9, bucket=btc["event_time_ms"] // 1000)
    last = frame.groupby("bucket")["mid"].last()
    closes = last.reindex(range(int(last.index.min()), int(last.index.max()) + 1)).ffill().to_numpy()
    truth = decimal_z(closes, N, len(closes) - 1)
    assert calc.z == pytest.approx(truth, rel=1e-9, abs=1e-9)


def test_constructor_validation() -> None:
    for bad in ({"hedge_ratio": 0.0}, {"hedge_ratio": math.nan}, {"lookback_bars": 2}, {"bar_seconds": 0},
                {"price_transform": "sqrt"}):
        with pytest.raises(ValueError):
            _calc(**bad)
