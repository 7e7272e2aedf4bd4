"""A start that cannot reach the exchange fails well: retried until the startup deadline, then one
line on stderr, every connection closed, the traceback in the log file only, exit 1. Rejected
API keys: one line, exit 2, no retry. Ctrl+C or SIGTERM while starting: a prompt, clean stop.

Every scenario runs ``python main.py`` as a user would, on loopback only: a port where nothing
listens, a server that accepts connections and never answers, and the bundled simulator (which
checks API keys). docs/architecture.md, "Errors, logs, exit codes", states the contract.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import PROJECT_DIR, PYTHON, SimulatorProcess, clean_env, read_json, write_json

NOISE = ("Traceback", "Unclosed", "requires to release all resources")
SLACK_SECONDS = 5.0  # a failed start ends within startup_timeout_seconds plus this
# The startup deadline of the tests that count attempts: a process start and the first attempt take
# over 3 s on a loaded 2-core machine, which left room for no retry (CI and the full suite under load).
DEADLINE_SECONDS = 6.0


def _config(tmp_path: Path, *, base_url: str, startup_timeout_seconds: float, request_timeout_ms: int,
            **top: Any) -> Path:
    """The shipped config.json pointed at ``base_url``, its files under ``tmp_path``."""
    config = read_json(PROJECT_DIR / "config.json")
    config["exchange"].update(base_url=base_url, startup_timeout_seconds=startup_timeout_seconds,
                              request_timeout_ms=request_timeout_ms, enable_rate_limit=False)
    config["logging"]["dir"] = str(tmp_path / "logs")
    config["storage"]["dir"] = str(tmp_path / "store")
    config.update(top)
    return write_json(tmp_path / "config.json", config)


def _argv(config_path: Path, *extra: str) -> list[str]:
    return [PYTHON, str(PROJECT_DIR / "main.py"), *extra, "--config", str(config_path),
            "--pairs", str(PROJECT_DIR / "pairs_config.json")]


def _main_log(tmp_path: Path) -> str:
    return (tmp_path / "logs" / "trading_bot.log").read_text(encoding="utf-8")


def _run_to_the_end(tmp_path: Path, argv: list[str], *, limit_seconds: float,
                    env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=tmp_path, env=env or clean_env(), capture_output=True, text=True,
                          timeout=limit_seconds)  # TimeoutExpired (the child killed) fails the test
    return proc, time.monotonic() - started


def _assert_one_clean_stderr_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr should be one line:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    for noise in NOISE:
        assert noise not in proc.stdout and noise not in proc.stderr, (noise, proc.stdout, proc.stderr)
    return lines[0]


def _free_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentServer:
    """Accepts TCP connections on loopback and never answers; closes them all at ``close``."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self._sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()




# ----------------------------------------------------------------------------- no exchange


def test_nothing_listening_retries_until_the_deadline_then_one_line_and_exit_1(tmp_path: Path) -> None:
    timeout = DEADLINE_SECONDS
    config = _config(tmp_path, base_url=f"http://127.0.0.1:{_free_port()}", startup_timeout_seconds=timeout,
                     request_timeout_ms=500)
    proc, seconds = _run_to_the_end(tmp_path, _argv(config), limit_seconds=timeout + SLACK_SECONDS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert seconds < timeout + SLACK_SECONDS
    line = _assert_one_clean_stderr_line(proc)
    assert "startup failed after" in line and "cannot load markets from binanceusdm" in line
    assert "Connect call failed" in line and "exchange.base_url" in line and str(config) in line
    assert proc.stdout.count("start attempt ") >= 1  # one line per failed attempt that is retried ...
    assert "attempts)" in line  # ... so more than one attempt was made
    log = _main_log(tmp_path)
    assert "startup failure detail" in log and "Traceback (most recent call last)" in log
    assert "core.errors.RetryableError: cannot load markets from binanceusdm" in log
    assert log.count("pairs-bot starting") == 1  # logging and the banner once, whatever the attempts


@pytest.mark.parametrize("request_timeout_ms,attempt_hangs", [(500, False), (60_000, True)],
                         ids=["request-times-out", "attempt-cut-by-the-deadline"])
def test_a_server_that_never_answers_fails_the_start_by_the_deadline(
        tmp_path: Path, silent_server: SilentServer, request_timeout_ms: int, attempt_hangs: bool) -> None:
    """With a request timeout longer than the startup timeout, only the deadline ends the attempt."""
    timeout = DEADLINE_SECONDS
    config = _config(tmp_path, base_url=f"http://127.0.0.1:{silent_server.port}", startup_timeout_seconds=timeout,
                     request_timeout_ms=request_timeout_ms)
    proc, seconds = _run_to_the_end(tmp_path, _argv(config), limit_seconds=timeout + SLACK_SECONDS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert seconds < timeout + SLACK_SECONDS
    assert silent_server.accepted  # the bot did reach the server
    line = _assert_one_clean_stderr_line(proc)
    assert "startup failed after" in line and f"127.0.0.1:{silent_server.port}" in line
    log = _main_log(tmp_path)
    assert "Traceback (most recent call last)" in log
    if attempt_hangs:
        assert "(1 attempt)" in line and "no answer from the exchange before the deadline" in line
        assert "load_markets" in log and "TimeoutError" in log  # the traceback shows where it hung
    else:
        assert "RequestTimeout" in line and "attempts)" in line
        assert "start attempt 1 failed" in proc.stdout and "start attempt 1 failed" in log


# ----------------------------------------------------------------------------- signals while starting


@pytest.mark.parametrize("moment,signum", [("hanging-attempt", signal.SIGINT), ("backoff-wait", signal.SIGINT),
                                           ("backoff-wait", signal.SIGTERM)],
                         ids=["SIGINT-in-a-hanging-attempt", "SIGINT-in-the-backoff-wait", "SIGTERM-in-the-backoff-wait"])
def test_a_signal_while_starting_stops_promptly_and_cleanly(
        tmp_path: Path, silent_server: SilentServer, spawn_main: Any, moment: str, signum: int) -> None:
    if moment == "hanging-attempt":  # the request would wait a minute; the start, 30 s
        config = _config(tmp_path, base_url=f"http://127.0.0.1:{silent_server.port}", startup_timeout_seconds=30,
                         request_timeout_ms=60_000)
    else:
        config = _config(tmp_path, base_url=f"http://127.0.0.1:{_free_port()}", startup_timeout_seconds=30,
                         request_timeout_ms=500)
    bot = spawn_main(_argv(config)[2:], cwd=tmp_path)
    bot.wait_for("pairs-bot starting", timeout=30)  # logging is set up: the handlers are in place
    if moment == "hanging-attempt":
        deadline = time.monotonic() + 30
        while not silent_server.accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert silent_server.accepted, "the bot never connected"
        time.sleep(0.5)  # the request is in flight, waiting for an answer that never comes
    else:
        bot.wait_for("start attempt 1 failed", timeout=30)  # now in the wait before attempt 2
    sent = time.monotonic()
    bot.proc.send_signal(signum)
    code = bot.wait(timeout=10)  # hang guard; the bound asserted is below
    took = time.monotonic() - sent
    out, err = "".join(bot.out), "".join(bot.err)
    assert code == 0, out + err
    assert took < 5.0, f"{took:.1f}s after the signal"
    assert f"stopped during startup (signal {signal.Signals(signum).name})" in err
    for noise in NOISE:
        assert noise not in out and noise not in err, (noise, out, err)
    assert "FINAL STATISTICS" not in out  # nothing ran, nothing to report


# ----------------------------------------------------------------------------- rejected keys


def test_rejected_api_keys_exit_2_with_one_line_and_no_retry(tmp_path: Path,
                                                              simulator_process: SimulatorProcess) -> None:
    """Live mode against the simulator, which answers -2015 (HTTP 401) to a key it does not know:
    the engine's first signed call at start is refused."""
    config = _config(tmp_path, base_url=simulator_process.base_url, startup_timeout_seconds=30,
                     request_timeout_ms=5_000, dry_run=False)
    env = clean_env(BINANCE_API_KEY="WRONGKEY" + "k" * 56, BINANCE_API_SECRET="WRONGSECRET" + "s" * 53)
    proc, seconds = _run_to_the_end(tmp_path, _argv(config, "--live"), limit_seconds=60, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert seconds < 30  # not retried until the startup deadline
    line = _assert_one_clean_stderr_line(proc)
    assert "the exchange rejected the API key" in line and "-2015" in line and "BINANCE_API_KEY" in line
    log = _main_log(tmp_path)
    assert "mode LIVE" in proc.stdout
    assert "start attempt" not in proc.stdout and "start attempt" not in log
    assert "Traceback (most recent call last)" in log and "AuthenticationError" in log
    assert "WRONGKEY" not in log + proc.stdout + proc.stderr  # redacted, as every secret
