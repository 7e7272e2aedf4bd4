"""``python main.py scan`` (research/): its numbers against statsmodels on the bundled real data,
the family correction, the checks, and the command line's writing rules.

Accuracy: every pair of the shipped ``pairs_config.json`` on the 5m set it was chosen from here;
all 435 pairs of the 1h set in ``tests/test_scan_every_pair.py`` (about four statsmodels reference
calls a pair, a few minutes, so a file of its own); ``bench/bench_research.py`` also prints the
largest differences over all 435.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from statsmodels.stats.multitest import multipletests
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.stattools import adfuller, coint

import main as bot_main
from core.config import SignalConfig, load_app_config, load_pairs_config, reachable_z
from research.bars import load_bars
from research.cli import ranked_table
from research.cointegration import eg_autolag, hurst_exponent, hurst_lags, mean_crossings
from research.multiple_testing import adjust
from research.scan import CHECKS, ScanReport, ScanSettings, proposed_pairs, run_scan, scan_mark
from tests.conftest import PROJECT_DIR, read_json

H1 = PROJECT_DIR / "data" / "binance-spot-1h-2020-12_2021-07"
M5 = PROJECT_DIR / "data" / "binance-usdm-perp-5m-2023-07"
STAT_TOL, P_TOL = 1e-8, 1e-6


@pytest.fixture(scope="module")
def bars_1h():
    return load_bars(H1, "1h")


@pytest.fixture(scope="module")
def report_1h(bars_1h) -> ScanReport:
    return run_scan(bars_1h, ScanSettings())


@pytest.fixture(scope="module")
def report_5m() -> ScanReport:
    return run_scan(load_bars(M5, "5m"), ScanSettings())


def _by_legs(report: ScanReport) -> dict[frozenset[str], object]:
    return {frozenset((r.leg_x, r.leg_y)): r for r in report.results}


def _coint(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CollinearityWarning never fires on these, but be quiet if it does
        res = coint(y, x)
    return float(res[0]), float(res[1])


def _check_against_statsmodels(report: ScanReport, bars, pair) -> None:
    """Every figure of one pair against its statsmodels reference, on the slices the scan used."""
    idx = {s: i for i, s in enumerate(bars.symbols)}
    x, y = bars.log_close[idx[pair.leg_x]], bars.log_close[idx[pair.leg_y]]
    h = report.split
    where = pair.pair_id
    stat, p = _coint(y[:h], x[:h])
    assert abs(pair.eg_stat - stat) <= STAT_TOL and abs(pair.eg_p - p) <= P_TOL, (where, pair.eg_stat, stat)
    stat, p = _coint(x[:h], y[:h])
    assert abs(pair.eg_stat_reverse - stat) <= STAT_TOL and abs(pair.eg_p_reverse - p) <= P_TOL, where
    assert pair.p_value == max(pair.eg_p, pair.eg_p_reverse)
    assert pair.eg_stat <= pair.eg_stat_reverse  # the direction traded is the more negative statistic
    stat, p = _coint(y[h:], x[h:])
    assert abs(pair.oos_stat - stat) <= STAT_TOL and abs(pair.oos_p - p) <= P_TOL, where
    spread = y[:h] - pair.alpha - pair.beta * x[:h]
    adf = adfuller(spread, regression="c", autolag="aic", result_object=False)
    assert abs(pair.adf_stat - adf[0]) <= STAT_TOL and abs(pair.adf_p - adf[1]) <= P_TOL, where
    phi = AutoReg(spread, lags=1, trend="c").fit().params[1]
    ref_hl = -math.log(2.0) / math.log(phi) if 0 < phi < 1 else math.inf
    assert abs(pair.half_life - ref_hl) <= 1e-9 * ref_hl, (where, pair.half_life, ref_hl)
    lags = hurst_lags(h)
    ref_h = np.polyfit(np.log(lags), [np.log(np.std(spread[k:] - spread[:-k])) for k in lags], 1)[0]
    assert abs(pair.hurst - ref_h) <= 1e-9, where
    ref_r = np.corrcoef(np.diff(x[:h]), np.diff(y[:h]))[0, 1]
    assert abs(pair.correlation - ref_r) <= 1e-12, where
    centred = spread - spread.mean()
    signs = np.sign(centred[centred != 0])
    assert pair.crossings == int((signs[1:] != signs[:-1]).sum()), where
    drift = abs(pair.oos_beta / pair.beta - 1)
    assert pair.beta_drift == pytest.approx(drift, rel=1e-12)


def test_scanner_matches_statsmodels_on_every_shipped_pair(report_5m) -> None:
    bars = load_bars(M5, "5m")
    by_legs = _by_legs(report_5m)
    shipped = read_json(PROJECT_DIR / "pairs_config.json")["pairs"]
    for pair in shipped:
        legs = frozenset(p.split("/")[0] + "USDT" for p in (pair["leg_a"], pair["leg_b"]))
        _check_against_statsmodels(report_5m, bars, by_legs[legs])


def test_collinear_legs_give_minus_infinity_as_coint_does() -> None:
    x = np.log(pd.read_csv(H1 / "BTCUSDT-1h.csv.gz")["close"].to_numpy())[:500]
    stat, lag, beta, _ = eg_autolag(x, 2.0 * x + 1.0)
    assert (stat, lag) == (-math.inf, -1) and beta == pytest.approx(2.0)
    assert _coint(2.0 * x + 1.0, x) == (-math.inf, 0.0)


def test_hurst_reads_a_random_walk_near_one_half_and_crossings_count_sign_changes() -> None:
    walk = np.cumsum(np.random.default_rng(5).standard_normal(20_000))
    assert 0.45 < hurst_exponent(walk) < 0.55
    assert mean_crossings(np.array([1.0, -1.0, 0.0, -2.0, 3.0, 3.0, -1.0])) == 3  # mean 0.4286


def test_family_corrections_match_statsmodels_and_are_applied_to_the_scan(report_1h) -> None:
    rng = np.random.default_rng(11)
    for p in (rng.uniform(size=200) ** 3, np.array([0.01, 0.01, 0.5, 1.0]), report_1h_p(report_1h)):
        for method, name in (("bh", "fdr_bh"), ("bonferroni", "bonferroni")):
            assert np.allclose(adjust(p, method), multipletests(p, method=name)[1], rtol=0, atol=1e-15), method
    # the scan's p_adj is BH over the whole family of the pairs' (max of both ways) p-values
    ps = report_1h_p(report_1h)
    expected = dict(zip([r.pair_id for r in report_1h.results], multipletests(ps, method="fdr_bh")[1]))
    for r in report_1h.results:
        assert r.p_adj == pytest.approx(expected[r.pair_id], abs=1e-15)
    bonf = run_scan(load_bars(H1, "1h", ["BTC", "ETH", "LTC", "BCH", "EOS"]), ScanSettings(correction="bonferroni"))
    for r in bonf.results:
        assert r.p_adj == min(1.0, 10 * r.p_value)


def report_1h_p(report: ScanReport) -> np.ndarray:
    return np.array([r.p_value for r in report.results])


def test_every_failed_check_is_the_rule_it_names(report_1h, report_5m) -> None:
    for report in (report_1h, report_5m):
        s = report.settings
        for r in report.results:
            rules = {"liq": r.min_quote_volume < s.min_quote_volume_usdt_day, "beta": r.beta <= 0,
                     "p_adj": r.p_adj > s.alpha,
                     "hl": not 1 <= r.half_life <= s.max_half_life_fraction * report.split,
                     "cross": r.crossings < s.min_crossings, "oos_p": r.oos_p > s.oos_alpha,
                     "oos_beta": r.beta_drift > s.max_beta_drift}
            assert set(rules) == set(CHECKS)
            assert r.failed == tuple(code for code in CHECKS if rules[code]), r.pair_id
        keys = [(len(r.failed), r.p_adj) for r in report.results]
        assert keys == sorted(keys)  # ranked: fewer failed checks first, then p adj


def test_the_proposal_loads_and_says_which_pairs_pass(report_5m) -> None:
    signal = load_app_config(PROJECT_DIR / "config.json").signal
    proposal = proposed_pairs(report_5m, signal)
    assert len(proposal["pairs"]) == 10
    uses: dict[str, int] = {}
    by_id = {r.pair_id: r for r in report_5m.results}
    for p in proposal["pairs"]:
        r = by_id[p["pair_id"]]
        assert p["scan"]["passed"] is r.passed and p["scan"]["failed"] == list(r.failed)
        assert p["hedge_ratio"] == round(r.beta, 4) > 0
        want = math.ceil(2 * r.half_life)  # two half-lives; a 5m scan for 5m signal bars
        assert p["lookback_bars"] == want if 21 <= want <= 1000 else p["lookback_bars"] in (21, 1000)
        assert reachable_z(p["lookback_bars"]) > signal.stop_loss_threshold
        for leg in (p["leg_a"], p["leg_b"]):
            uses[leg] = uses.get(leg, 0) + 1
    assert max(uses.values()) <= 2


def test_ranked_table_fits_100_columns(report_1h) -> None:
    signal = SignalConfig()
    for width in (100, 200):  # at 200 its natural width shows: it must not need more than 100
        console = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)
        console.print(ranked_table(report_1h, 40, shipped=set(), signal=signal))
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= 100
        assert "…" not in text


# ----------------------------------------------------------------------------- the command line


def _scan(tmp_path: Path, *extra: str) -> list[str]:
    return ["scan", "--data", str(H1), "--timeframe", "1h", "--symbols", "BTC", "ETH", "LTC", "BCH", "EOS",
            "--config", str(PROJECT_DIR / "config.json"), "--top", "3", *extra]


def test_scan_writes_only_the_proposal_unless_told_and_backs_up_with_write(tmp_path: Path, capsys) -> None:
    pairs = tmp_path / "pairs_config.json"
    original = (PROJECT_DIR / "pairs_config.json").read_text(encoding="utf-8")
    pairs.write_text(original, encoding="utf-8")
    out = tmp_path / "proposed.json"
    assert bot_main.main(_scan(tmp_path, "--pairs", str(pairs), "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert "10 pairs of 5 symbols" in printed and f"proposal: {out}" in printed
    assert pairs.read_text(encoding="utf-8") == original  # untouched without --write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs_config.json", "proposed.json"]
    config = load_app_config(PROJECT_DIR / "config.json")
    proposed = load_pairs_config(out, config.signal, risk=config.risk)
    assert len(proposed) == 3 and all(p.scan is not None for p in proposed)

    # --out naming the pairs file without --write is refused, and nothing changes
    assert bot_main.main(_scan(tmp_path, "--pairs", str(pairs), "--out", str(pairs))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to overwrite" in err[0] and "--write" in err[0]
    assert pairs.read_text(encoding="utf-8") == original

    assert bot_main.main(_scan(tmp_path, "--pairs", str(pairs), "--out", str(out), "--write")) == 0
    backups = [p for p in tmp_path.iterdir() if p.name.startswith("pairs_config.json.bak-")]
    assert len(backups) == 1 and backups[0].read_text(encoding="utf-8") == original
    assert read_json(pairs) == read_json(out)
    assert "the previous file is kept as" in capsys.readouterr().out

    # check-config shows the verdict of each scanned pair
    console = Console(width=80, record=True, file=open(tmp_path / "cc.txt", "w"), color_system=None)
    options = bot_main.parse_options(["check-config", "--config", str(PROJECT_DIR / "config.json"),
                                      "--pairs", str(pairs)])
    assert bot_main.check_config(options, console) == 0
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for p in read_json(pairs)["pairs"]:
        row = next(line for line in text.splitlines() if line.startswith(p["pair_id"] + " "))
        assert row.split()[-1] == ("pass" if p["scan"]["passed"] else "fail")


def _short_copy(folder: Path, rows: int) -> Path:
    folder.mkdir()
    for sym in ("BTCUSDT", "ETHUSDT"):
        frame = pd.read_csv(H1 / f"{sym}-1h.csv.gz").head(rows)  # real bars, just too few of them
        frame.to_csv(folder / f"{sym}-1h.csv.gz", index=False)
    return folder


@pytest.mark.parametrize("case", ["unknown symbol", "missing dir", "too few bars", "bad timeframe"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, capsys, case: str) -> None:
    out = tmp_path / "out" / "proposed.json"
    args = {"unknown symbol": ["--data", str(H1), "--timeframe", "1h", "--symbols", "BTC", "NOPE"],
            "missing dir": ["--data", str(tmp_path / "nowhere"), "--timeframe", "1h"],
            "too few bars": ["--data", str(_short_copy(tmp_path / "short", 150)), "--timeframe", "1h"],
            "bad timeframe": ["--data", str(H1), "--timeframe", "7m"]}[case]
    assert bot_main.main(["scan", *args, "--out", str(out), "--pairs", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    expected = {"unknown symbol": "NOPEUSDT", "missing dir": "no such folder", "too few bars": "only 150",
                "bad timeframe": "7m"}[case]
    assert expected in err[0]
    assert not out.exists() and not (tmp_path / "p.json").exists()


#: Research modules that run the bot's own engine on replayed data (the issue's point: the very code
#: that trades live); every other research module is statistics and files only. None imports ccxt or
#: the simulator (the test exchange).
RUNS_THE_ENGINE = {"backtest.py", "fast_replay.py", "replay_feed.py", "sweep.py"}  # replay_feed: the engine's offline markets; fast_replay: the backtest loop that feeds it


def test_research_code_never_imports_ccxt_or_the_simulator() -> None:
    for path in sorted((PROJECT_DIR / "research").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        forbidden = {"ccxt", "simulator"} | (set() if path.name in RUNS_THE_ENGINE else {"execution"})
        assert not names & forbidden, path


def test_a_figure_that_could_not_be_computed_is_written_as_null(report_5m) -> None:
    """pairs_config.json must stay strict JSON: NaN p-values and infinite drifts become null."""
    broken = dataclasses.replace(report_5m.results[0], oos_stat=math.nan, oos_p=math.nan, beta_drift=math.inf)
    mark = scan_mark(broken, report_5m)
    assert (mark["oos_p"], mark["beta_drift"]) == (None, None)
    json.dumps(mark, allow_nan=False)
    json.dumps(proposed_pairs(report_5m, SignalConfig()), allow_nan=False)
