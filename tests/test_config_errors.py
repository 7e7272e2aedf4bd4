"""Every invalid configuration gives one line naming file, field path and value; exit 2.

Each case runs the real entry point (``main.main``) with a broken copy of the shipped files,
and also checks that nothing was started or written (no log folder appears).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest

import main as bot_main
from tests.conftest import PROJECT_DIR, read_json, write_json

SHIPPED_CONFIG = read_json(PROJECT_DIR / "config.json")
SHIPPED_PAIRS = read_json(PROJECT_DIR / "pairs_config.json")


def _cfg(mutate: Callable[[dict[str, Any]], None]) -> Callable[[dict, dict], None]:
    return lambda config, pairs: mutate(config)


def _pairs(mutate: Callable[[list[dict[str, Any]]], None]) -> Callable[[dict, dict], None]:
    return lambda config, pairs: mutate(pairs["pairs"])


def _set(section: str | None, key: str, value: Any) -> Callable[[dict, dict], None]:
    def mutate(config: dict[str, Any]) -> None:
        (config if section is None else config.setdefault(section, {}))[key] = value
    return _cfg(mutate)


def _pair0(**fields: Any) -> Callable[[dict, dict], None]:
    return _pairs(lambda pairs: pairs[0].update(fields))


def _pair0_without(key: str) -> Callable[[dict, dict], None]:
    return _pairs(lambda pairs: pairs[0].pop(key))


# (case id, file the error is in, mutation, expected field path in the message, expected value text)
CASES: list[tuple[str, str, Callable[[dict, dict], None], str, str]] = [
    ("unknown-top-key", "config", _set(None, "dry_runn", True), "dry_runn", "True"),
    ("unknown-nested-key", "config", _set("signal", "lookback", 60), "signal.lookback", "60"),
    ("dry-run-string", "config", _set(None, "dry_run", "yes"), "dry_run", "'yes'"),
    ("lookback-string", "config", _set("signal", "lookback_bars", "60"), "signal.lookback_bars", "'60'"),
    ("lookback-float", "config", _set("signal", "lookback_bars", 60.5), "signal.lookback_bars", "60.5"),
    ("lookback-too-small", "config", _set("signal", "lookback_bars", 2), "signal.lookback_bars", "2"),
    ("entry-negative", "config", _set("signal", "entry_threshold", -1.0), "signal.entry_threshold", "-1.0"),
    ("exit-above-entry", "config", _set("signal", "exit_threshold", 2.5), "signal.exit_threshold", "2.5"),
    ("exit-equals-entry", "config", _set("signal", "exit_threshold", 2.0), "signal.exit_threshold", "2.0"),
    ("stop-below-entry", "config", _set("signal", "stop_loss_threshold", 1.5),
     "signal.stop_loss_threshold", "1.5"),
    ("bar-not-a-timeframe", "config", _set("signal", "bar_seconds", 120), "signal.bar_seconds", "120"),
    ("transform-unknown", "config", _set("signal", "price_transform", "sqrt"), "signal.price_transform", "'sqrt'"),
    ("slippage-too-big", "config", _set("execution", "max_slippage_pct", 5.0), "execution.max_slippage_pct", "5.0"),
    ("retries-negative", "config", _set("execution", "max_order_retries", -1), "execution.max_order_retries", "-1"),
    ("notional-zero", "config", _set("execution", "notional_per_pair_usdt", 0), "execution.notional_per_pair_usdt",
     "0"),
    ("open-pairs-zero", "config", _set("risk", "max_open_pairs", 0), "risk.max_open_pairs", "0"),
    ("mode-disagrees", "config", _set(None, "trading_mode", "live"), "trading_mode", "'live'"),
    ("mode-unknown", "config", _set(None, "trading_mode", "demo"), "trading_mode", "'demo'"),
    ("url-bad-scheme", "config", _set("exchange", "base_url", "ftp://127.0.0.1:9"), "exchange.base_url",
     "'ftp://127.0.0.1:9'"),
    ("leverage-too-high", "config", _set("exchange", "leverage", 200), "exchange.leverage", "200"),
    ("log-level-unknown", "config", _set("logging", "level", "LOUD"), "logging.level", "'LOUD'"),
    ("seed-venue-conflict", "config",
     _cfg(lambda c: (c["exchange"].update(id="okx"), c.update(data={"exchange": "binance"}))),
     "data.exchange", "'binance'"),
    ("partial-prob-above-one", "config", _set("paper", "partial_fill_probability", 1.5),
     "paper.partial_fill_probability", "1.5"),
    ("section-not-object", "config", _set(None, "signal", [1, 2]), "signal", "[1, 2]"),
    ("duplicate-pair-id", "pairs", _pairs(lambda p: p[1].update(pair_id=p[0]["pair_id"])), "pairs[1].pair_id",
     repr(SHIPPED_PAIRS["pairs"][0]["pair_id"])),
    ("same-legs", "pairs", _pair0(leg_b=SHIPPED_PAIRS["pairs"][0]["leg_a"]), "pairs[0].leg_b",
     repr(SHIPPED_PAIRS["pairs"][0]["leg_a"])),
    ("same-legs-other-notation", "pairs", _pair0(leg_a="BTC/USDT", leg_b="BTCUSDT"), "pairs[0].leg_b", "'BTCUSDT'"),
    ("hedge-zero", "pairs", _pair0(hedge_ratio=0), "pairs[0].hedge_ratio", "0"),
    ("hedge-negative", "pairs", _pair0(hedge_ratio=-0.5), "pairs[0].hedge_ratio", "-0.5"),
    ("hedge-string", "pairs", _pair0(hedge_ratio="0.5"), "pairs[0].hedge_ratio", "'0.5'"),
    ("hedge-missing", "pairs", _pair0_without("hedge_ratio"), "pairs[0].hedge_ratio", "<missing>"),
    ("pair-unknown-key", "pairs", _pair0(hedge=1.0), "pairs[0].hedge", "1.0"),
    ("pair-stop-below-entry", "pairs", _pair0(z_score_threshold=2.5, stop_loss_z=2.0), "pairs[0].stop_loss_z",
     "2.0"),
    ("pair-exit-above-entry", "pairs", _pair0(exit_threshold=2.5), "pairs[0].exit_threshold", "2.5"),
    ("leg-bad-shape", "pairs", _pair0(leg_a="btc usdt"), "pairs[0].leg_a", "'btc usdt'"),
    ("enabled-string", "pairs", _pair0(enabled="yes"), "pairs[0].enabled", "'yes'"),
    ("pairs-empty", "pairs", _pairs(lambda p: p.clear()), "pairs", "[]"),
    ("pair-id-bad-chars", "pairs", _pair0(pair_id="EOS AXS!"), "pairs[0].pair_id", "'EOS AXS!'"),
]


@pytest.mark.parametrize("case_id,which,mutate,field,value", CASES, ids=[c[0] for c in CASES])
def test_invalid_config_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case_id: str,
                                              which: str, mutate: Callable[[dict, dict], None], field: str,
                                              value: str) -> None:
    config, pairs = copy.deepcopy(SHIPPED_CONFIG), copy.deepcopy(SHIPPED_PAIRS)
    mutate(config, pairs)
    config_path = write_json(tmp_path / "config.json", config)
    pairs_path = write_json(tmp_path / "pairs_config.json", pairs)
    before = sorted(p.name for p in tmp_path.iterdir())

    code = bot_main.main(["--config", str(config_path), "--pairs", str(pairs_path), "--duration", "1"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    expected_file = str(config_path if which == "config" else pairs_path)
    assert err.startswith(f"config error: {expected_file}: {field} = {value}: expected "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing may be written"


# Issue 10: settings that can never act. The current value is inside its own window of N, so
# |z| <= (N-1)/sqrt(N): 17 bars -> 3.8806 (a stop at 4 never fires), 5 bars -> 1.7889 (nor an
# entry at 2). (case id, file, mutation, field path, value text, bound the message must give)
UNREACHABLE: list[tuple[str, str, Callable[[dict, dict], None], str, str, str]] = [
    ("entry-unreachable", "config", _set("signal", "lookback_bars", 5), "signal.entry_threshold", "2.0",
     "(N-1)/sqrt(N) = 1.7889"),
    ("stop-unreachable", "config", _set("signal", "lookback_bars", 17), "signal.stop_loss_threshold", "4.0",
     "(N-1)/sqrt(N) = 3.8806"),
    ("stop-at-the-bound", "config",
     _cfg(lambda c: c["signal"].update(lookback_bars=4, entry_threshold=1.0, stop_loss_threshold=1.5)),
     "signal.stop_loss_threshold", "1.5", "(N-1)/sqrt(N) = 1.5000"),
    ("pair-stop-unreachable", "pairs", _pair0(lookback_bars=17), "pairs[0].stop_loss_z", "4.0",
     "(N-1)/sqrt(N) = 3.8806"),
    ("pair-lookback-makes-default-unreachable", "pairs",
     _pairs(lambda p: (p[0].pop("stop_loss_z"), p[0].update(lookback_bars=17))), "pairs[0].lookback_bars", "17",
     "(N-1)/sqrt(N) = 3.8806"),
    ("gross-below-one-pair", "config", _set("risk", "max_gross_exposure_usdt", 500.0), "risk.max_gross_exposure_usdt",
     "500.0", "execution.notional_per_pair_usdt = 1000"),
    ("pair-notional-above-gross", "pairs", _pair0(notional_usdt=7000.0), "pairs[0].notional_usdt", "7000.0",
     "risk.max_gross_exposure_usdt (6000)"),
    ("entry-max-above-stop", "config", _set("signal", "entry_max_z", 4.5), "signal.entry_max_z", "4.5",
     "at most the stop-loss threshold (4.0)"),
    ("pair-entry-max-below-entry", "pairs", _pair0(entry_max_z=1.5), "pairs[0].entry_max_z", "1.5",
     "above the entry threshold (2.0)"),
]


@pytest.mark.parametrize("command", [[], ["check-config"]], ids=["run", "check-config"])
@pytest.mark.parametrize("case_id,which,mutate,field,value,bound", UNREACHABLE, ids=[c[0] for c in UNREACHABLE])
def test_settings_that_can_never_act_exit_2_and_give_the_bound(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str], case_id: str, which: str,
        mutate: Callable[[dict, dict], None], field: str, value: str, bound: str) -> None:
    config, pairs = copy.deepcopy(SHIPPED_CONFIG), copy.deepcopy(SHIPPED_PAIRS)
    mutate(config, pairs)
    config_path = write_json(tmp_path / "config.json", config)
    pairs_path = write_json(tmp_path / "pairs_config.json", pairs)
    before = sorted(p.name for p in tmp_path.iterdir())

    code = bot_main.main([*command, "--config", str(config_path), "--pairs", str(pairs_path)]
                         + ([] if command else ["--duration", "1"]))

    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured.out
    assert len(err.splitlines()) == 1, err
    expected_file = str(config_path if which == "config" else pairs_path)
    assert err.startswith(f"config error: {expected_file}: {field} = {value}: expected "), err
    assert bound in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing may be written"


def test_thresholds_just_below_the_bound_are_accepted(tmp_path: Path) -> None:
    """60 bars (the shipped lookback) reach |z| 7.62: entry 2 and stop 4 are fine, and so is
    a stop just under the bound of a short window."""
    from core.config import load_app_config, reachable_z

    assert reachable_z(60) == pytest.approx(7.6168, abs=1e-4)
    config = copy.deepcopy(SHIPPED_CONFIG)
    config["signal"].update(lookback_bars=17, stop_loss_threshold=3.88)
    assert load_app_config(write_json(tmp_path / "config.json", config)).signal.stop_loss_threshold == 3.88


@pytest.mark.parametrize("content,field", [
    ("{\"dry_run\": true,,}", "line 1 column 18"),
    ("[1, 2]", ""),
    ("{\"dry_run\": NaN}", ""),
    ("", "line 1 column 1"),
], ids=["invalid-json", "not-an-object", "nan-constant", "empty-file"])
def test_unreadable_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                field: str) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(content, encoding="utf-8")
    code = bot_main.main(["check-config", "--config", str(config_path),
                          "--pairs", str(PROJECT_DIR / "pairs_config.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    prefix = f"config error: {config_path}: {field} = " if field else f"config error: {config_path} = "
    assert err.startswith(prefix), err


def test_missing_pairs_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    code = bot_main.main(["check-config", "--pairs", str(missing)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"config error: {missing} = <missing>: expected an existing JSON file"


def test_unknown_key_lists_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = copy.deepcopy(SHIPPED_CONFIG)
    config["risk"]["max_open_pair"] = 3
    path = write_json(tmp_path / "config.json", config)
    assert bot_main.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "risk.max_open_pair = 3: expected a known key (one of: " in err
    assert "max_open_pairs" in err


def test_bad_cli_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert bot_main.main(["--duration", "-3"]) == 2
    assert "expected a positive number of seconds" in capsys.readouterr().err
    assert bot_main.main(["--log-level", "LOUD", "check-config"]) == 2
    assert bot_main.main(["frobnicate"]) == 2


def test_shipped_files_have_ten_valid_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    assert bot_main.main(["check-config"]) == 0
    out = capsys.readouterr().out
    for pair in SHIPPED_PAIRS["pairs"]:
        assert pair["pair_id"] in out
    assert len(SHIPPED_PAIRS["pairs"]) == 10
    assert "config OK" in out
    # what a fresh checkout runs: paper trading, and no key fields for a user to fill in
    # (keys belong in the environment or .env, never in a file people share)
    assert "| paper (dry_run)" in out and SHIPPED_CONFIG["dry_run"] is True
    assert not [key for key in SHIPPED_CONFIG if "key" in key or "secret" in key]


def test_local_exchange_urls_with_paths_are_accepted(tmp_path: Path) -> None:
    from core.config import load_app_config

    config = copy.deepcopy(SHIPPED_CONFIG)
    config["exchange"].update(base_url="http://127.0.0.1:8765", ws_url="ws://127.0.0.1:8765/ws")
    loaded = load_app_config(write_json(tmp_path / "config.json", config))
    assert (loaded.exchange.base_url, loaded.exchange.ws_url) == ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/ws")
