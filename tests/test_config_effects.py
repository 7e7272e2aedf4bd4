"""Configuration that must take effect, not merely load (issue 9).

- Per-pair overrides (``z_score_threshold``, ``exit_threshold``, ``stop_loss_z``,
  ``lookback_bars``, ``max_holding_bars``, ``notional_usdt``, ``price_transform``) reach the pair's
  ``SignalGenerator`` and the engine's ``PairSpec``; a pair without them gets ``config.json``'s
  defaults; a pair with ``"enabled": false`` gets no generator, no engine pair and no market-data
  subscription. Checked through the real loaders and ``app/assemble.py`` (against an in-process
  simulator on loopback), and through ``main.py check-config``'s printed table.
- Relative paths in ``config.json`` (``logging.dir``, ``storage.dir``) resolve against that
  file's folder, not the shell's working directory: ``main.py run --live --adopt`` runs as a
  subprocess from another folder against a standalone simulator on loopback, and the test looks
  where the logs, the journal and the external-positions file landed (and that ``--adopt``
  reached the engine: the file holds the user's position).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt

from core.config import Secrets, load_app_config, load_pairs_config
from core.launch import RunMode
from core.stats import SessionStats
from core.venue import point_at_local_exchange
from simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimulatorConfig
from simulator.server import MarketData, SimulatorServer
from tests.conftest import PROJECT_DIR, SimulatorProcess, clean_env, read_json, run_main, write_json
from tests.engine_rig import REPLAY, SYMBOLS

D = Decimal
TIMEOUT_S = 20

SIGNAL_DEFAULTS = {"entry_threshold": 2.1, "exit_threshold": 0.1, "stop_loss_threshold": 4.4, "lookback_bars": 50,
                   "max_holding_half_lives": 2.5, "price_transform": "log"}
PAIRS = [
    {"pair_id": "EOS_AXS", "leg_a": "EOS/USDT", "leg_b": "AXS/USDT", "hedge_ratio": 1.1664,
     "z_score_threshold": 1.7, "exit_threshold": 0.25, "stop_loss_z": 3.3, "lookback_bars": 40,
     "max_holding_bars": 17, "notional_usdt": 750.0, "price_transform": "raw", "half_life_candles": 48.7},
    {"pair_id": "BTC_ETH", "leg_a": "BTCUSDT", "leg_b": "ETH/USDT:USDT", "hedge_ratio": 0.9,
     "half_life_candles": 10.0},
    {"pair_id": "DOT_ETH", "leg_a": "DOT/USDT", "leg_b": "ETH/USDT", "hedge_ratio": 1.3,
     "z_score_threshold": 1.5, "notional_usdt": 300.0, "enabled": False},
]


def _config_files(folder: Path, **config_updates: Any) -> tuple[Path, Path]:
    config = read_json(PROJECT_DIR / "config.json")
    config["signal"].update(SIGNAL_DEFAULTS)
    config["execution"]["notional_per_pair_usdt"] = 1200.0
    for section, values in config_updates.items():
        config[section].update(values)
    folder.mkdir(parents=True, exist_ok=True)
    return write_json(folder / "config.json", config), write_json(folder / "pairs.json", {"pairs": PAIRS})


# ----------------------------------------------------------------------------- per-pair overrides


async def test_per_pair_overrides_and_enabled_false_reach_the_assembled_bot(sim_data: MarketData,
                                                                            tmp_path: Path) -> None:
    from app.assemble import assemble

    async with asyncio.timeout(TIMEOUT_S):
        sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=REPLAY), data=sim_data)
        await sim.start()
        started: list[Any] = []
        pipeline = None
        try:
            config_path, pairs_path = _config_files(tmp_path, exchange={"base_url": sim.base_url,
                                                                         "enable_rate_limit": False})
            config = load_app_config(config_path)
            pairs = load_pairs_config(pairs_path, config.signal)
            pipeline = await assemble(config=config, pairs=pairs, mode=RunMode.PAPER,
                                      secrets=Secrets(None, None, "none"), stats=SessionStats(mode="PAPER"),
                                      storage_dir=tmp_path / "store", started=started, demo_speed=600.0, adopt=False)
            generators = pipeline.router.generators
            assert sorted(generators) == ["BTC_ETH", "EOS_AXS"]  # DOT_ETH is disabled
            assert sorted(pipeline.engine.pairs) == ["BTC_ETH", "EOS_AXS"]
            assert pipeline.router.symbols == ["AXS/USDT:USDT", "BTC/USDT:USDT", "EOS/USDT:USDT", "ETH/USDT:USDT"]

            over = generators["EOS_AXS"].params  # every override wins over config.json
            assert (over.entry_z, over.exit_z, over.stop_z) == (1.7, 0.25, 3.3)
            assert (over.lookback_bars, over.max_holding_bars, over.price_transform) == (40, 17, "raw")
            assert over.hedge_ratio == 1.1664
            spec = pipeline.engine.pairs["EOS_AXS"]
            assert (spec.symbol_a, spec.symbol_b) == ("EOS/USDT:USDT", "AXS/USDT:USDT")
            assert (spec.hedge_ratio, spec.notional_usdt, spec.price_transform) == (D("1.1664"), D("750.0"), "raw")

            plain = generators["BTC_ETH"].params  # no overrides: config.json's signal section
            assert (plain.entry_z, plain.exit_z, plain.stop_z) == (2.1, 0.1, 4.4)
            assert (plain.lookback_bars, plain.price_transform) == (50, "log")
            assert plain.max_holding_bars == 25  # ceil(2.5 half-lives x 10 bars)
            spec = pipeline.engine.pairs["BTC_ETH"]
            assert (spec.symbol_a, spec.symbol_b) == ("BTC/USDT:USDT", "ETH/USDT:USDT")
            assert (spec.hedge_ratio, spec.notional_usdt, spec.price_transform) == (D("0.9"), D("1200.0"), "log")
        finally:
            for component in reversed(started):
                await component.stop()
            if pipeline is not None and pipeline.journal is not None:
                pipeline.journal.close()
            await sim.stop()


def _table_rows(stdout: str) -> dict[str, list[str]]:
    """check-config's table: pair_id -> its cells (an empty setting prints as "-"; the Y leg is on
    the row's second line, appended as the last cell)."""
    rows: dict[str, list[str]] = {}
    ids = {p["pair_id"] for p in PAIRS}
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        cells = line.split()
        if len(cells) == 11 and cells[0] in ids:
            rows[cells[0]] = cells + lines[i + 1].split()
    return rows


def test_check_config_prints_each_pairs_effective_settings(tmp_path: Path) -> None:
    config_path, pairs_path = _config_files(tmp_path / "conf")
    proc = run_main(["check-config", "--config", str(config_path), "--pairs", str(pairs_path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = _table_rows(proc.stdout)
    # pair_id, leg_a, hedge_ratio, entry/exit/stop z, lookback, price transform, half_life, max_hold_bars,
    # notional, enabled, scan verdict ("-": never scanned), then leg_b (the cell's second line)
    assert rows == {
        "EOS_AXS": ["EOS_AXS", "EOS/USDT", "1.1664", "1.7/0.25/3.3", "40", "raw", "48.7", "17", "750", "yes", "-",
                    "AXS/USDT"],
        "BTC_ETH": ["BTC_ETH", "BTCUSDT", "0.9", "2.1/0.1/4.4", "50", "log", "10", "25", "1200", "yes", "-",
                    "ETH/USDT:USDT"],
        "DOT_ETH": ["DOT_ETH", "DOT/USDT", "1.3", "1.5/0.1/4.4", "50", "log", "-", "-", "300", "no", "-", "ETH/USDT"],
    }, proc.stdout
    assert f"config OK: {config_path}" in proc.stdout
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["conf", "config.json", "pairs.json"]  # wrote nothing


# ----------------------------------------------------------------------------- relative paths


def test_relative_paths_resolve_against_the_config_folder_and_run_adopt_writes_there(
        tmp_path: Path, simulator_process: SimulatorProcess) -> None:
    """config.json in conf/ (``logging.dir`` "run-logs", ``storage.dir`` "state/journal"), the
    pairs file in pairs/, ``main.py run --live --adopt`` started from elsewhere/ with relative
    ``--config``/``--pairs``, against a standalone simulator on loopback (live mode: the external
    positions file is the live one). The user holds 100 EOS the journal cannot explain: the run
    adopts it (the ``--adopt`` flag reaches the engine) and every file lands under conf/."""
    conf, pairs_dir, elsewhere = tmp_path / "conf", tmp_path / "pairs", tmp_path / "elsewhere"
    config = read_json(PROJECT_DIR / "config.json")
    config["dry_run"] = False
    config["exchange"].update(base_url=simulator_process.base_url, enable_rate_limit=False)
    config["logging"]["dir"] = "run-logs"
    config["storage"]["dir"] = "state/journal"
    conf.mkdir()
    write_json(conf / "config.json", config)
    pairs_dir.mkdir()
    shipped = read_json(PROJECT_DIR / "pairs_config.json")["pairs"]
    assert "EOS/USDT" in (shipped[0]["leg_a"], shipped[0]["leg_b"])  # the pair trades the user's EOS
    write_json(pairs_dir / "pairs.json", {"pairs": shipped[:1]})
    elsewhere.mkdir()
    user = ccxt.binanceusdm({"apiKey": DEFAULT_API_KEY, "secret": DEFAULT_API_SECRET, "timeout": 5000,
                             "enableRateLimit": False})
    point_at_local_exchange(user, base_url=simulator_process.base_url, ws_url=simulator_process.ws_url)
    user.load_markets()
    user.set_margin_mode("isolated", "EOS/USDT:USDT")  # the bot's margin type (see test_reconcile_features)
    user.create_order("EOS/USDT:USDT", "market", "buy", 100)

    proc = run_main(["run", "--live", "--adopt", "--config", os.path.join("..", "conf", "config.json"),
                     "--pairs", os.path.join("..", "pairs", "pairs.json"), "--duration", "1"], cwd=elsewhere,
                    env=clean_env(BINANCE_API_KEY=DEFAULT_API_KEY, BINANCE_API_SECRET=DEFAULT_API_SECRET))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    logs, store = conf / "run-logs", conf / "state" / "journal"
    assert f"logs: {logs}" in proc.stderr  # the console log line (loguru writes to stderr)
    assert "pairs-bot starting | mode LIVE" in (logs / "trading_bot.log").read_text(encoding="utf-8")
    (session,) = logs.glob("session-*.json")
    assert json.loads(session.read_text(encoding="utf-8"))["mode"] == "LIVE"
    series = session.with_name(session.name.replace("session-", "series-"))  # the session report's data, and the report
    assert {"trading_bot.log", "trades.jsonl", session.name, series.name, "reports"} == {p.name for p in logs.iterdir()}
    with sqlite3.connect(store / "journal-live.sqlite") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"signals", "orders", "fills", "round_trips"} <= tables
    assert read_json(store / "external-positions-live.json") == {"EOS/USDT:USDT": "100"}
    assert "EOS/USDT:USDT 100 on the exchange is not the bot's; adopted as external" in proc.stderr
    assert "kept out of trading" not in proc.stderr
    # nothing in the working directory, nothing next to the pairs file, nothing anywhere else
    assert list(elsewhere.iterdir()) == []
    assert [p.name for p in pairs_dir.iterdir()] == ["pairs.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf", "elsewhere", "pairs"]
    assert sorted(p.name for p in conf.iterdir()) == ["config.json", "run-logs", "state"]
