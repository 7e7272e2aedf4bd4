"""The bot as a user runs it: start, run, stop cleanly, save statistics, leak no secret."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import main as bot_main
from core.config import load_app_config
from core.launch import RunMode, load_secrets, resolve_run_mode
from core.errors import UsageError
from core.log_setup import setup_logging
from core.stats import SessionStats
from tests.conftest import clean_env, read_json, run_main, write_json

FAKE_KEY = "FAKEKEYabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU"
FAKE_SECRET = "FAKESECRETzyxwvutsrqponmlkjihgfedcba9876543210ZYXWVUTSRQPONMLK"


def _all_log_text(directory: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in directory.rglob("*") if p.is_file())


def test_duration_run_exits_0_writes_stats_and_leaks_no_secret(paper_bot_dir: Path) -> None:
    bot_dir = paper_bot_dir
    env = clean_env(BINANCE_API_KEY=FAKE_KEY, BINANCE_API_SECRET=FAKE_SECRET)
    started = time.monotonic()
    proc = run_main(["--config", str(bot_dir / "config.json"), "--pairs", str(bot_dir / "pairs_config.json"),
                     "--duration", "2", "--log-level", "DEBUG"], cwd=bot_dir, env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 30
    sessions = sorted((bot_dir / "logs").glob("session-*.json"))
    assert len(sessions) == 1
    stats = read_json(sessions[0])
    assert stats["mode"] == "PAPER"
    assert stats["stop_reason"] == "duration 2s reached"
    assert 2.0 <= stats["uptime_seconds"] < 10
    assert {"signals_processed", "trades_executed", "success_rate_pct", "sections"} <= stats.keys()
    assert "FINAL STATISTICS" in proc.stdout and "Success rate: " in proc.stdout
    text = _all_log_text(bot_dir / "logs") + proc.stdout + proc.stderr
    assert "keys present" in text  # the key was loaded ...
    assert FAKE_KEY not in text and FAKE_SECRET not in text  # ... and never shown
    for fragment in (FAKE_KEY[:12], FAKE_SECRET[-12:]):
        assert fragment not in text


def test_sigint_stops_gracefully_within_5s(paper_bot_dir: Path, spawn_main: Any) -> None:
    bot_dir = paper_bot_dir
    proc = spawn_main(["--config", str(bot_dir / "config.json"), "--pairs", str(bot_dir / "pairs_config.json")],
                      cwd=bot_dir)
    proc.wait_for("Ctrl+C stops gracefully", timeout=60)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=10)
    assert time.monotonic() - sent < 5.0
    out = proc.output
    assert code == 0, out
    assert "stop requested: signal SIGINT" in out
    assert "FINAL STATISTICS" in out
    assert len(list((bot_dir / "logs").glob("session-*.json"))) == 1


def test_sigterm_stops_gracefully(paper_bot_dir: Path, spawn_main: Any) -> None:
    bot_dir = paper_bot_dir
    proc = spawn_main(["--config", str(bot_dir / "config.json")], cwd=bot_dir)
    proc.wait_for("Ctrl+C stops gracefully", timeout=60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert "stop requested: signal SIGTERM" in proc.output


def test_original_design_files_load_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed_config = {
        "binance_api_key": "YOUR_KEY", "binance_api_secret": "YOUR_SECRET",
        "trading_mode": "paper", "dry_run": True,
        "data": {"exchange": "binance", "use_testnet": False},
        "signal": {"lookback_bars": 60, "entry_threshold": 2.0, "exit_threshold": 0.0, "stop_loss_threshold": 4.0},
        "execution": {"use_limit_orders": False, "max_slippage_pct": 0.001, "order_timeout_seconds": 30,
                      "max_order_retries": 3},
    }
    seed_pairs = {"pairs": [{"pair_id": "1000CAT_1MBABYDOGE", "leg_a": "1000CAT/USDT", "leg_b": "1MBABYDOGE/USDT",
                             "hedge_ratio": 0.7387, "z_score_threshold": 2.0, "stop_loss_z": 4.0,
                             "half_life_candles": 5}]}
    config_path = write_json(tmp_path / "config.json", seed_config)
    pairs_path = write_json(tmp_path / "pairs_config.json", seed_pairs)
    assert bot_main.main(["check-config", "--config", str(config_path), "--pairs", str(pairs_path)]) == 0
    assert "1000CAT_1MBABYDOGE" in capsys.readouterr().out
    config = load_app_config(config_path)
    assert config.exchange.id == "binanceusdm" and config.dry_run is True
    secrets, warnings = load_secrets(config, environ={}, dotenv_path=tmp_path / "absent.env")
    assert secrets.source == "config.json" and secrets.present
    assert any("anyone who sees that file" in w for w in warnings)
    assert "YOUR_KEY" not in repr(secrets) and "YOUR_SECRET" not in str(secrets)
    env_secrets, env_warnings = load_secrets(config, environ={"BINANCE_API_KEY": "k" * 20,
                                                              "BINANCE_API_SECRET": "s" * 20})
    assert env_secrets.api_key == "k" * 20 and env_secrets.source == "environment"
    assert any("take precedence" in w for w in env_warnings)


def test_trading_mode_alone_sets_dry_run(tmp_path: Path) -> None:
    path = write_json(tmp_path / "config.json", {"trading_mode": "live"})
    assert load_app_config(path).dry_run is False
    path = write_json(tmp_path / "config.json", {"trading_mode": "paper", "dry_run": True})
    assert load_app_config(path).dry_run is True


def test_dotenv_file_supplies_keys(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BINANCE_API_KEY=dotenvkey123\nBINANCE_API_SECRET=dotenvsecret456\n")
    config = load_app_config(write_json(tmp_path / "config.json", {}))
    secrets, warnings = load_secrets(config, environ={}, dotenv_path=tmp_path / ".env")
    assert (secrets.api_key, secrets.api_secret, secrets.source) == ("dotenvkey123", "dotenvsecret456", ".env")
    assert warnings == []
    env_wins, _ = load_secrets(config, environ={"BINANCE_API_KEY": "envkey", "BINANCE_API_SECRET": "envsec"},
                               dotenv_path=tmp_path / ".env")
    assert env_wins.api_key == "envkey"


@pytest.mark.parametrize("dry_run,live_flag,keys,outcome", [
    (True, False, False, RunMode.PAPER),
    (True, False, True, RunMode.PAPER),
    (True, True, True, "dry_run true"),
    (False, False, True, "--live was not given"),
    (False, True, False, "no API keys"),
    (False, True, True, RunMode.LIVE),
])
def test_live_needs_all_three(tmp_path: Path, dry_run: bool, live_flag: bool, keys: bool,
                              outcome: RunMode | str) -> None:
    config = load_app_config(write_json(tmp_path / "config.json", {"dry_run": dry_run}))
    environ = {"BINANCE_API_KEY": "key-123456", "BINANCE_API_SECRET": "sec-123456"} if keys else {}
    secrets, _ = load_secrets(config, environ=environ, dotenv_path=tmp_path / "none")
    if isinstance(outcome, RunMode):
        assert resolve_run_mode(config, live_flag=live_flag, secrets=secrets, demo=False) is outcome
    else:
        with pytest.raises(UsageError, match=outcome):
            resolve_run_mode(config, live_flag=live_flag, secrets=secrets, demo=False)


def test_refused_live_start_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    write_json(tmp_path / "config.json", {"dry_run": False})
    proc = run_main(["--config", str(tmp_path / "config.json"), "--live", "--duration", "1"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("refusing live trading: no API keys")
    assert not (tmp_path / "logs").exists()


class _HangingComponent:
    """A component whose stop never returns, to prove shutdown is bounded."""

    name = "hanging"

    def __init__(self) -> None:
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        await asyncio.sleep(3600)

    def stats(self) -> dict[str, Any]:
        return {"started": self.started}


class _BareBot(bot_main.TradingBot):
    """The real lifecycle with one test component instead of the trading pipeline."""

    def __init__(self, options: bot_main.CliOptions, component: Any) -> None:
        super().__init__(options)
        self._component = component

    async def initialize_components(self) -> None:
        self.log_paths = setup_logging(self.config.logging.model_copy(
            update={"dir": str(self.options.config_path.parent / "logs")}), secrets=[])
        self.stats = SessionStats(mode="PAPER")
        self.components = [self._component]
        self.stats.register_section(self._component.name, self._component.stats)


async def test_shutdown_is_bounded_and_idempotent(bot_dir: Path) -> None:
    options = bot_main.parse_options(["--config", str(bot_dir / "config.json"), "--duration", "0.2"])
    component = _HangingComponent()
    bot = _BareBot(options, component)
    started = time.monotonic()
    code = await bot.run()
    assert code == 0
    assert component.started
    assert time.monotonic() - started < bot_main.SHUTDOWN_TIMEOUT_SECONDS + 2
    await bot.shutdown_gracefully()  # second call: returns at once, writes nothing new
    sessions = list((bot_dir / "logs").glob("session-*.json"))
    assert len(sessions) == 1
    assert json.loads(sessions[0].read_text())["sections"]["hanging"] == {"started": True}


async def test_second_ctrl_c_forces_exit(bot_dir: Path) -> None:
    options = bot_main.parse_options(["--config", str(bot_dir / "config.json")])
    bot = _BareBot(options, _HangingComponent())
    task = asyncio.create_task(bot.run())
    for _ in range(100):
        if bot._handled_signals:
            break
        await asyncio.sleep(0.02)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(0.2)
    assert not task.done()  # the first press waits for the (hanging) graceful stop
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)


class _EngineWhoseJournalFails:
    """Plays the engine's part in the lifecycle: at start its journal fails in the order path."""

    name = "execution"

    def __init__(self) -> None:
        self.on_fatal: Any = None

    async def start(self) -> None:
        from execution.journal_models import JournalStorageError
        self.on_fatal(JournalStorageError("journal logs/journal.sqlite: write failed: disk I/O error"))

    async def stop(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}


class _WatchedBot(_BareBot):
    async def initialize_components(self) -> None:
        await super().initialize_components()
        self.watch_engine(self._component)


async def test_a_journal_failure_in_the_order_path_stops_the_bot_with_exit_code_1(bot_dir: Path) -> None:
    options = bot_main.parse_options(["--config", str(bot_dir / "config.json"), "--duration", "30"])
    bot = _WatchedBot(options, _EngineWhoseJournalFails())
    started = time.monotonic()
    code = await asyncio.wait_for(bot.run(), timeout=10)
    assert code == 1 and time.monotonic() - started < 10  # it did not wait for --duration
    (session,) = (bot_dir / "logs").glob("session-*.json")
    assert "journal failure" in json.loads(session.read_text())["stop_reason"]
