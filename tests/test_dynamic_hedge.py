"""``hedge_ratio_mode: rolling_ols`` (issue 13 item 4): the rolling-OLS hedge ratio, its residual Z,
warm-up, the signal's beta, the engine's entry sizing and the config switch.

References are independent of the code under test: statsmodels ``RollingOLS`` for beta, and per
window numpy (centred two-pass sums) for the residual's z, on the bundled 5m data
(AXS/EOS: a shipped pair; ETH/BTC raw prices for the ill-conditioned case).
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import re
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from statsmodels.regression.rolling import RollingOLS

from core.config import (ConfigurationError, SignalConfig, compact_symbol, load_app_config, load_pairs_config,
                         signal_params)
from core.types import Quote, SignalType
from execution.results import ExecutionStatus
from research.backtest import cash_pnl
from research.hedge_compare import money_cell
from signals import kernels as kn
from signals.generator import Gate, SignalGenerator
from signals.spread import RollingOLSCalculator, SpreadCalculator
from tests.engine_rig import TEST_TIMEOUT_S, entry_plan
from tests.conftest import run_main
from tests.signal_data import BAR_MS, load_ohlcv
from tests.test_generator import make_params

AXS, EOS = load_ohlcv("AXSUSDT"), load_ohlcv("EOSUSDT")
N = 93  # AXS_EOS's lookback in pairs_config.json
BACKTEST_PAIRS = Path(__file__).with_name("backtest_pairs.json")


def reference(x: np.ndarray, y: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(beta, alpha, z) per bar close, each window fitted from scratch with centred sums."""
    n = len(x)
    beta, alpha, z = (np.full(n, np.nan) for _ in range(3))
    with np.errstate(invalid="ignore"):  # a flat X: 0 / 0, NaN as wanted
        _fit_windows(x, y, window, beta, alpha, z)
    return beta, alpha, z


def _fit_windows(x: np.ndarray, y: np.ndarray, window: int, beta: np.ndarray, alpha: np.ndarray,
                 z: np.ndarray) -> None:
    for i in range(window - 1, len(x)):
        wx, wy = x[i - window + 1:i + 1], y[i - window + 1:i + 1]
        cx, cy = wx - wx.mean(), wy - wy.mean()
        b = (cx * cy).sum() / (cx * cx).sum()
        resid = cy - b * cx  # the spread y - b x minus its mean, centred first to keep a tight fit's digits
        resid -= resid.mean()  # (0 but for the rounding of the means: not small next to a tight fit's residual)
        std = resid.std(ddof=1)
        perfect = not std > 1e-10 * cy.std()  # two distinct points (short windows): a residual of rounding noise
        beta[i], alpha[i], z[i] = b, wy.mean() - b * wx.mean(), math.nan if perfect else resid[-1] / std


def exact_beta(x: np.ndarray, y: np.ndarray, i: int, window: int) -> Fraction:
    """The OLS slope of the window ending at bar ``i`` in exact rational arithmetic."""
    wx, wy = [Fraction(v) for v in x[i - window + 1:i + 1]], [Fraction(v) for v in y[i - window + 1:i + 1]]
    mx, my = sum(wx) / window, sum(wy) / window
    return sum((a - mx) * (b - my) for a, b in zip(wx, wy)) / sum((a - mx) ** 2 for a in wx)


def live_bar_closes(calc: SpreadCalculator, a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Feed three quotes per bar (open, high-ish, close: the close is the bar's value) and record
    what the calculator says at each bar's last quote."""
    n = len(a)
    out = {k: np.full(n, np.nan) for k in ("beta", "z", "mean", "std", "spread")}
    for i in range(n):
        t0 = int(a[i, 0])
        calc.update(t0, a[i, 1], b[i, 1])
        calc.update(t0 + 1_000, a[i, 2], b[i, 3])
        calc.update(t0 + BAR_MS - 1, a[i, 4], b[i, 4])
        if calc.is_ready:
            out["beta"][i], out["z"][i], out["mean"][i] = calc.hedge_ratio, calc.z, calc.mean
            out["std"][i], out["spread"][i] = calc.std, calc.spread
    return out


@pytest.mark.parametrize("legs, transform, window", [(("AXSUSDT", "EOSUSDT"), "log", N),
                                                    (("ETHUSDT", "BTCUSDT"), "raw", 20),
                                                    (("AXSUSDT", "EOSUSDT"), "log", 4)])
def test_rolling_beta_and_residual_z_match_the_references_at_every_bar_close(legs, transform, window) -> None:
    a, b = load_ohlcv(legs[0]), load_ohlcv(legs[1])
    f = np.log if transform == "log" else (lambda v: v)
    x, y = f(a[:, 4]), f(b[:, 4])
    calc = RollingOLSCalculator(hedge_ratio=1.0, lookback_bars=window, bar_seconds=300, price_transform=transform)
    got = live_bar_closes(calc, a, b)
    beta, alpha, z = reference(x, y, window)
    assert np.isnan(got["z"][:window - 1]).all()  # the window fills first
    flat = np.isnan(z)  # short windows on tick-sized prices: X (or the residual) can be flat
    assert np.isnan(got["z"][flat]).all()
    full = np.flatnonzero(~flat)
    fitted = np.flatnonzero(np.isfinite(beta))  # beta and the mean exist wherever X is not flat
    assert np.abs(got["beta"][fitted] - beta[fitted]).max() <= 1e-9 * max(1.0, np.abs(beta[fitted]).max())
    assert np.abs(got["z"][full] - z[full]).max() <= 1e-9
    assert np.abs(got["mean"][fitted] - alpha[fitted]).max() <= 1e-9 * max(1.0, np.abs(alpha[fitted]).max())
    assert np.allclose(got["spread"][full], y[full] - got["beta"][full] * x[full], rtol=0, atol=1e-12 * np.abs(y).max())
    # the compiled streaming kernel is the same arithmetic
    kb, kz = kn.stream_rolling_ols(x, y, window)
    assert np.abs(kz[full] - got["z"][full]).max() <= 1e-9 and np.abs(kb[full] - got["beta"][full]).max() <= 1e-9
    if window == N:  # the shipped pair (statsmodels on 4-bar windows is off by ~2e-6: not a reference)
        # statsmodels' RollingOLS solves the uncentred [1, x] normal equations: on log AXS (x ~ 1.6,
        # small spread) that costs it ~9e-9 at its worst bar, where exact rational arithmetic agrees
        # with this code to ~1e-16. So: statsmodels within 1e-7, exact arithmetic within 1e-12.
        fit = RollingOLS(y, np.column_stack([np.ones_like(x), x]), window=window).fit(reset=window)
        assert np.abs(got["beta"][full] - fit.params[full, 1]).max() <= 1e-7
        assert np.abs(got["mean"][full] - fit.params[full, 0]).max() <= 1e-7
        worst = int(full[np.argmax(np.abs(got["beta"][full] - fit.params[full, 1]))])
        assert got["beta"][worst] == pytest.approx(float(exact_beta(x, y, worst, window)), abs=1e-12)
    # the beta really moves (else this would test the static ratio)
    assert len(full) > 8000 and np.nanstd(got["beta"]) > 0.01


def test_static_mode_keeps_the_static_calculator() -> None:
    gen = SignalGenerator(make_params())
    assert type(gen.calculator) is SpreadCalculator
    assert type(SignalGenerator(make_params(hedge_ratio_mode="rolling_ols")).calculator) is RollingOLSCalculator


def quotes_for(bars_a: np.ndarray, bars_b: np.ndarray, sym_a: str, sym_b: str) -> list[Quote]:
    """Two quotes per leg per bar, the last at the close (bid == ask == price)."""
    out = []
    for ra, rb in zip(bars_a, bars_b, strict=True):
        t0 = int(ra[0])
        for dt, ia in ((1_000, 1), (BAR_MS - 2, 4)):
            out.append(Quote(sym_a, ra[ia], ra[ia], t0 + dt))
            out.append(Quote(sym_b, rb[ia], rb[ia], t0 + dt + 1))
    return out


def window_points(calc: RollingOLSCalculator) -> list[tuple[float, float]]:
    buf = calc._pbuf[:, :calc.bars_in_window]  # noqa: SLF001 - the window's contents are the point
    return sorted(zip(buf[0].tolist(), buf[1].tolist(), strict=True))


def test_warm_up_then_live_gives_the_window_of_a_pure_replay() -> None:
    params = make_params(pair_id="AXS_EOS", leg_a="AXSUSDT", leg_b="EOSUSDT", hedge_ratio=0.7699, lookback_bars=N,
                         hedge_ratio_mode="rolling_ols", entry_z=50.0, entry_max_z=60.0, stop_z=60.0)
    warm, end = 300, 500
    warmed, replayed = SignalGenerator(params), SignalGenerator(params)
    assert warmed.warm_up(AXS[:warm].tolist(), EOS[:warm].tolist()) == warm
    for q in quotes_for(AXS[:warm - 1], EOS[:warm - 1], "AXSUSDT", "EOSUSDT"):
        replayed.update(q)
    compared = 0
    for q in quotes_for(AXS[warm - 1:end], EOS[warm - 1:end], "AXSUSDT", "EOSUSDT"):
        warmed.update(q)
        replayed.update(q)
        if q.symbol != "EOSUSDT":  # the warmed generator decides from its first quote of both legs on
            continue
        cw, cr = warmed.calculator, replayed.calculator
        assert cw.bars_in_window == cr.bars_in_window == N - 1
        assert window_points(cw) == window_points(cr)  # the same bars, bit for bit
        assert cw.hedge_ratio == pytest.approx(cr.hedge_ratio, rel=1e-12)
        if math.isfinite(cr.z):
            assert cw.z == pytest.approx(cr.z, abs=1e-10)
            compared += 1
    assert compared > 300


def test_signal_carries_the_window_beta_and_residual_z() -> None:
    params = make_params(pair_id="AXS_EOS", leg_a="AXSUSDT", leg_b="EOSUSDT", hedge_ratio=0.7699, lookback_bars=N,
                         hedge_ratio_mode="rolling_ols", entry_z=1.5, exit_z=0.0, stop_z=4.5,
                         cooldown_seconds=0.0, stop_loss_cooldown_seconds=0.0, max_holding_bars=None)
    gen = SignalGenerator(params)
    x, y = np.log(AXS[:, 4]), np.log(EOS[:, 4])
    entries = 0
    for i in range(1500):
        t0 = int(AXS[i, 0])
        gen.update(Quote("AXSUSDT", AXS[i, 4], AXS[i, 4], t0 + BAR_MS - 2))
        signal = gen.update(Quote("EOSUSDT", EOS[i, 4], EOS[i, 4], t0 + BAR_MS - 1))
        if signal is None:
            continue
        wx, wy = x[i - N + 1:i + 1], y[i - N + 1:i + 1]
        beta, _, z = (v[-1] for v in reference(wx, wy, N))
        assert signal.hedge_ratio == pytest.approx(beta, abs=1e-9)
        assert signal.z == pytest.approx(z, abs=1e-9)
        assert signal.spread == pytest.approx(y[i] - signal.hedge_ratio * x[i], abs=1e-12)
        assert abs(signal.hedge_ratio - params.hedge_ratio) > 1e-6  # not the configured ratio
        entries += signal.signal_type in (SignalType.ENTER_LONG_SPREAD, SignalType.ENTER_SHORT_SPREAD)
        gen.complete(signal, True)
    assert entries >= 2


def test_no_entry_is_offered_with_a_non_positive_beta() -> None:
    """Y falling while X rises over the window: beta < 0 cannot be sized (one leg's quantity < 0)."""
    params = make_params(hedge_ratio_mode="rolling_ols", price_transform="raw", lookback_bars=5, entry_z=0.5,
                         exit_z=0.0, stop_z=1.7, entry_max_z=1.6)
    gen = SignalGenerator(params)
    xs = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    ys = [20.0, 19.0, 18.0, 17.3, 16.0, 14.0]
    for k, (px, py) in enumerate(zip(xs, ys, strict=True)):
        gen.update(Quote("ETHUSDT", px, px, k * BAR_MS + 1))
        assert gen.update(Quote("BTCUSDT", py, py, k * BAR_MS + 2)) is None
    assert gen.calculator.hedge_ratio < 0 and abs(gen.calculator.z) >= 0.5
    assert gen.snapshot().gated[Gate.BAD_BETA.value] >= 1


async def test_engine_sizes_a_rolling_ols_entry_with_the_signal_beta(make_rig) -> None:  # noqa: F811
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        static = rig.pairs["EOS_AXS"]
        dynamic = replace(static, hedge_ratio_mode="rolling_ols")
        rig.pairs["EOS_AXS"] = rig.engine.pairs["EOS_AXS"] = dynamic
        beta = 0.6  # far from the spec's 1.1664
        signal = replace(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD), hedge_ratio=beta)
        result = await rig.engine.execute_signal(signal)
        assert result.status is ExecutionStatus.EXECUTED, result
        qty_a, qty_b = entry_plan(rig, signal.signal_id)
        assert (result.filled_a, result.filled_b) == (qty_a, qty_b)
        gross, b = dynamic.notional_usdt, Decimal(repr(beta))
        want_a = b * gross / (1 + b) / Decimal(repr(signal.mid_a))  # log sizing, independent of sizing.py
        want_b = gross / (1 + b) / Decimal(repr(signal.mid_b))
        step_a, step_b = rig.step(static.symbol_a), rig.step(static.symbol_b)
        # each leg is its exact share floored to the lot step: within one step of the signal's beta
        assert 0 <= want_a - qty_a < step_a and 0 <= want_b - qty_b < step_b, (qty_a, qty_b, want_a, want_b)
        static_a = static.hedge_ratio * gross / (1 + static.hedge_ratio) / Decimal(repr(signal.mid_a))
        assert abs(static_a - qty_a) > 10 * step_a  # the configured ratio would have sized it differently
        # the exit closes what is held, whatever ratio the exit signal carries
        exit_ = await rig.engine.execute_signal(replace(rig.signal("EOS_AXS", SignalType.EXIT), hedge_ratio=2.5))
        assert exit_.status is ExecutionStatus.EXECUTED and rig.sim_qty(static.symbol_a) == 0 \
            and rig.sim_qty(static.symbol_b) == 0


def test_config_mode_default_override_and_unknown_value(tmp_path: Path) -> None:
    assert SignalConfig().hedge_ratio_mode == "static"
    pairs_path = tmp_path / "pairs.json"
    pair = {"pair_id": "AXS_EOS", "leg_a": "AXS/USDT", "leg_b": "EOS/USDT", "hedge_ratio": 0.77}
    pairs_path.write_text(json.dumps({"pairs": [pair, {**pair, "pair_id": "P2", "hedge_ratio_mode": "rolling_ols"}]}))
    first, second = load_pairs_config(pairs_path, SignalConfig())
    assert signal_params(SignalConfig(), first).hedge_ratio_mode == "static"
    assert signal_params(SignalConfig(), second).hedge_ratio_mode == "rolling_ols"
    assert signal_params(SignalConfig(hedge_ratio_mode="rolling_ols"), first).hedge_ratio_mode == "rolling_ols"
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"signal": {"hedge_ratio_mode": "kalman"}}))
    with pytest.raises(ConfigurationError) as info:
        load_app_config(config_path)
    text = str(info.value)
    assert "\n" not in text and "signal.hedge_ratio_mode" in text and "kalman" in text
    pairs_path.write_text(json.dumps({"pairs": [{**pair, "hedge_ratio_mode": "ols"}]}))
    with pytest.raises(ConfigurationError) as info:
        load_pairs_config(pairs_path, SignalConfig())
    assert "\n" not in str(info.value) and "pairs[0].hedge_ratio_mode" in str(info.value)
    with pytest.raises(ValueError, match="hedge_ratio_mode"):
        SignalGenerator(make_params(hedge_ratio_mode="kalman"))


def test_check_config_shows_the_rolling_pairs(tmp_path: Path) -> None:
    pair = {"pair_id": "AXS_EOS", "leg_a": "AXS/USDT", "leg_b": "EOS/USDT", "hedge_ratio": 0.77}
    (tmp_path / "pairs.json").write_text(json.dumps({"pairs": [pair, {**pair, "pair_id": "P2",
                                                                      "hedge_ratio_mode": "rolling_ols"}]}))
    proc = run_main(["check-config", "--pairs", str(tmp_path / "pairs.json")], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["AXS_EOS"], ["P2"])}
    assert rows["AXS_EOS"][2] == "0.77" and rows["P2"][2] == "ols(0.77)", proc.stdout



def entry_value_ratios(fills_csv: Path, pairs: dict) -> list[tuple[str, float]]:
    """Per entry in a backtest's fills.csv (the fills from flat until the first that shrinks a leg):
    (pair, value of leg A / value of leg B), the ratio log sizing makes equal to beta."""
    legs = {p["pair_id"]: (compact_symbol(p["leg_a"]), compact_symbol(p["leg_b"])) for p in pairs["pairs"]}
    held: dict[tuple[str, str], Decimal] = {}
    entry: dict[str, dict[str, Decimal]] = {}
    out = []
    with fills_csv.open() as handle:
        for r in csv.DictReader(handle):
            if not r["side"]:  # a funding row
                continue
            pid, sym = r["pair"], compact_symbol(r["symbol"])
            a, b = legs[pid]
            if held.get((pid, a), 0) == 0 and held.get((pid, b), 0) == 0:
                entry[pid] = {a: Decimal(0), b: Decimal(0)}
            before = held.get((pid, sym), Decimal(0))
            after = before + Decimal(r["qty"]) * (1 if r["side"] == "buy" else -1)
            held[(pid, sym)] = after
            if pid in entry and abs(after) > abs(before):
                entry[pid][sym] += Decimal(r["qty"]) * Decimal(r["price"])
            elif pid in entry:
                legs_value = entry.pop(pid)
                out.append((pid, float(legs_value[a] / legs_value[b])))
    return out


def test_backtest_compare_hedge_runs_both_modes_on_the_same_data(tmp_path: Path) -> None:
    pairs = json.loads(BACKTEST_PAIRS.read_text())
    pairs["pairs"] = [p for p in pairs["pairs"] if p["pair_id"] in ("EOS_AXS", "SAND_EOS")]
    pairs["pairs"][0]["hedge_ratio_mode"] = "rolling_ols"  # a pair's own override: replaced in both runs
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    out = tmp_path / "out"
    proc = run_main(["backtest", "--pairs", str(tmp_path / "pairs.json"), "--from", "2023-07-05", "--to",
                     "2023-07-05", "--out", str(out), "--compare-hedge"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    combined = json.loads((out / "summary.json").read_text())
    assert combined["compare_hedge"] == ["static", "rolling_ols"]
    static, rolling = combined["static"], combined["rolling_ols"]
    for key in ("pairs", "from", "to", "bars", "quotes"):  # the same data
        assert static[key] == rolling[key], key
    assert static["bars"] == 288 and static["pairs"] == ["EOS_AXS", "SAND_EOS"]
    assert (static["settings"]["hedge_ratio_mode"], rolling["settings"]["hedge_ratio_mode"]) == ("static", "rolling_ols")
    for mode, summary in (("static", static), ("rolling_ols", rolling)):
        with (out / mode / "fills.csv").open() as handle:  # each run's PnL is its own fills' cash flows
            rows = list(csv.DictReader(handle))
        flows = cash_pnl([(r["ts"], r["pair"], r["symbol"], r["side"], r["qty"], r["price"], r["fee"]) for r in rows
                          if r["side"]], [(r["ts"], r["pair"], r["symbol"], r["funding"]) for r in rows if not r["side"]])
        assert str(flows[0]) == summary["pnl_usdt"], mode
        assert json.loads((out / mode / "summary.json").read_text())["pnl_usdt"] == summary["pnl_usdt"]
        page = (out / mode / "report.html").read_text(encoding="utf-8")  # each run's own report, in its folder
        total = re.search(r'<tr data-pair="TOTAL" data-net-usdt="([^"]+)"', page)
        assert total and Decimal(total.group(1)) == Decimal(summary["realized_round_trips_usdt"]), mode
        assert f"backtest report: {out / mode / 'report.html'}" in proc.stdout, mode
    assert static["signals"] > 0 and rolling["signals"] > 0
    # the rolling run's entries are sized with the window's beta (the backtest's PairSpec carries the
    # mode), the static run's with the configured ratio (within max_hedge_error after lot rounding)
    betas = {p["pair_id"]: p["hedge_ratio"] for p in pairs["pairs"]}
    static_rel = [ratio / betas[pid] for pid, ratio in entry_value_ratios(out / "static" / "fills.csv", pairs)]
    rolling_rel = [ratio / betas[pid] for pid, ratio in entry_value_ratios(out / "rolling_ols" / "fills.csv", pairs)]
    assert static_rel and all(abs(r - 1) <= 0.05 for r in static_rel), static_rel
    assert rolling_rel and sum(abs(r - 1) > 0.1 for r in rolling_rel) >= len(rolling_rel) // 2, rolling_rel
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if "static" in line and "rolling_ols" in line)
    assert header.index("static") < header.index("rolling_ols")
    pnl_row = next(line for line in lines if "PnL (USDT)" in line)
    assert money_cell(static["pnl_usdt"]) in pnl_row and money_cell(rolling["pnl_usdt"]) in pnl_row


# fixtures, imported last so the tests' parameters do not shadow them (ruff F811)
from tests.engine_rig import make_rig, sim_data  # noqa: E402,F401
