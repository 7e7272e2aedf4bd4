"""The bot as a user runs it: start, run, stop cleanly, save statistics, leak no secret."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import main as bot_main
from core.config import load_app_config
from core.launch import RunMode, load_secrets, resolve_run_mode
from core.errors import UsageError
from tests.conftest import assert_logged, clean_env, read_json, run_main, write_json
from tests.lifecycle_helpers import SECOND_CTRL_C_CHILD, BareBot, ChildProcess, HangingComponent

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
    watched_seconds = time.monotonic() - started  # run_main's timeout is the hang guard
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sessions = sorted((bot_dir / "logs").glob("session-*.json"))
    assert len(sessions) == 1
    stats = read_json(sessions[0])
    assert stats["mode"] == "PAPER"
    assert stats["stop_reason"] == "duration 2s reached"
    # seconds (not ms), at least the duration, and no more than the process lived
    assert 2.0 <= stats["uptime_seconds"] <= watched_seconds
    assert {"signals_processed", "trades_executed", "success_rate_pct", "sections"} <= stats.keys()
    assert "FINAL STATISTICS" in proc.stdout and "Decisions: " in proc.stdout
    text = _all_log_text(bot_dir / "logs") + proc.stdout + proc.stderr
    assert "keys present" in text  # the key was loaded ...
    assert FAKE_KEY not in text and FAKE_SECRET not in text  # ... and never shown
    for fragment in (FAKE_KEY[:12], FAKE_SECRET[-12:]):
        assert fragment not in text


def test_sigint_stops_gracefully(paper_bot_dir: Path, spawn_main: Any) -> None:
    """Ctrl+C: every component stops by itself (the shutdown bound is not what ends the run)."""
    bot_dir = paper_bot_dir
    proc = spawn_main(["--config", str(bot_dir / "config.json"), "--pairs", str(bot_dir / "pairs_config.json")],
                      cwd=bot_dir)
    proc.wait_for("Ctrl+C stops gracefully", timeout=60)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)  # hang guard only
    out = proc.output
    assert code == 0, out
    assert "stop requested: signal SIGINT" in out
    assert "graceful shutdown complete" in out and "remaining components abandoned" not in out
    assert "FINAL STATISTICS" in out
    (session,) = (bot_dir / "logs").glob("session-*.json")
    assert read_json(session)["stop_reason"] == "signal SIGINT"


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


async def test_shutdown_is_bounded_and_idempotent(bot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop that never returns is cancelled at the bound; the run still ends and reports."""
    monkeypatch.setattr(bot_main, "SHUTDOWN_TIMEOUT_SECONDS", 0.5)  # the mechanism, not the 4 s budget
    options = bot_main.parse_options(["--config", str(bot_dir / "config.json"), "--duration", "0.2"])
    component = HangingComponent()
    bot = BareBot(options, component)
    code = await asyncio.wait_for(bot.run(), timeout=60)  # hang guard only
    assert code == 0
    assert component.started and component.stop_cancelled  # abandoned, not awaited for ever
    await bot.shutdown_gracefully()  # second call: returns at once, writes nothing new
    sessions = list((bot_dir / "logs").glob("session-*.json"))
    assert len(sessions) == 1
    assert json.loads(sessions[0].read_text())["sections"]["hanging"] == {"started": True}
    assert bot.log_paths is not None
    log = bot.log_paths.main_log.read_text()
    assert_logged(log, f"shutdown took longer than {bot_main.SHUTDOWN_TIMEOUT_SECONDS}s",
                  "remaining components abandoned")
    assert log.count("initiating graceful shutdown") == 1


@pytest.fixture
def spawn_child() -> Iterator[Callable[..., ChildProcess]]:
    """Start ``python -c CODE ARGS``; every child still running at teardown is killed."""
    children: list[ChildProcess] = []

    def spawn(code: str, *args: str) -> ChildProcess:
        children.append(ChildProcess(code, *args))
        return children[-1]

    yield spawn
    for child in children:
        child.kill()


def test_second_ctrl_c_forces_exit(bot_dir: Path, spawn_child: Callable[..., ChildProcess]) -> None:
    """In a child process: the signals go to it, never to the pytest process."""
    child = spawn_child(SECOND_CTRL_C_CHILD, str(bot_dir / "config.json"))
    child.wait_for("hanging: started", timeout=60)  # the bot's handlers are installed by now
    child.send_signal(signal.SIGINT)
    child.wait_for("hanging: stop called", timeout=60)
    assert child.proc.poll() is None  # the first press waits for the (hanging) graceful stop
    child.send_signal(signal.SIGINT)
    code = child.wait(timeout=60)  # hang guard only
    out = child.output
    assert code == 130, out  # 128 + SIGINT, as a shell reports an interrupted program
    assert "stop requested: signal SIGINT" in out
    assert "second SIGINT: forcing exit without waiting" in out
    assert "run: cancelled" in out and "graceful shutdown complete" not in out


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


class _WatchedBot(BareBot):
    async def initialize_components(self) -> None:
        await super().initialize_components()
        self.watch_engine(self._component)


async def test_a_journal_failure_in_the_order_path_stops_the_bot_with_exit_code_1(bot_dir: Path) -> None:
    options = bot_main.parse_options(["--config", str(bot_dir / "config.json"), "--duration", "30"])
    bot = _WatchedBot(options, _EngineWhoseJournalFails())
    code = await asyncio.wait_for(bot.run(), timeout=120)  # hang guard only, beyond --duration
    assert code == 1
    (session,) = (bot_dir / "logs").glob("session-*.json")
    # the first stop request names the reason: the journal failure, not "duration 30s reached"
    assert json.loads(session.read_text())["stop_reason"] == (
        "fatal: journal failure in the order path: "
        "journal logs/journal.sqlite: write failed: disk I/O error")
