"""Shared fixtures and helpers for the whole suite.

Every test that runs the bot does so in a temporary folder with its own copies of the
configuration, so nothing a test does lands in the repository's ``logs/``.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture
def project_dir() -> Path:
    return PROJECT_DIR


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    """A folder holding copies of the shipped config.json and pairs_config.json."""
    shutil.copy(PROJECT_DIR / "config.json", tmp_path / "config.json")
    shutil.copy(PROJECT_DIR / "pairs_config.json", tmp_path / "pairs_config.json")
    return tmp_path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a bot subprocess: no inherited keys, deterministic, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
    env.update({"PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1", "NO_COLOR": "1"})
    env.update(extra)
    return env


def run_main(args: list[str], *, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python main.py ARGS`` to completion, bounded in time."""
    return subprocess.run([PYTHON, str(PROJECT_DIR / "main.py"), *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


class BotProcess:
    """A background ``python main.py`` whose output is collected line by line by threads.

    ``lines`` holds both streams in arrival order; ``out`` and ``err`` hold each stream alone
    (for tests about what goes to stderr).
    """

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], argv: list[str] | None = None) -> None:
        """``argv`` replaces ``python main.py ARGS`` as the whole command line when given."""
        self.proc = subprocess.Popen(argv or [PYTHON, str(PROJECT_DIR / "main.py"), *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, mine), daemon=True)
                         for stream, mine in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, mine: list[str]) -> None:
        for line in stream:
            mine.append(line)
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, *, timeout: float) -> None:
        """Block until a line contains ``needle``; fail after ``timeout`` or if the process ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in list(self.lines)):
                return
            if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                break
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not seen within {timeout}s; output:\n{self.output}")

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, *, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def spawn_main() -> Iterator[Callable[..., BotProcess]]:
    """Start ``python main.py`` in the background; every process is killed at teardown."""
    procs: list[BotProcess] = []

    def spawn(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> BotProcess:
        proc = BotProcess(args, cwd=cwd, env=env or clean_env())
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.kill()


@dataclass
class SimulatorProcess:
    """A standalone ``python -m simulator`` on a free loopback port."""

    proc: subprocess.Popen[str]
    base_url: str
    ws_url: str
    lines: list[str]

    def admin(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """GET (or POST with ``payload``) one of the simulator's /sim/ endpoints."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method="POST" if data else "GET",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_simulator(*args: str, timeout: float = 60.0) -> SimulatorProcess:
    """Start the simulator as its own process (as a user would) and wait until it listens."""
    proc = subprocess.Popen([PYTHON, "-m", "simulator", "--port", "0", *args], cwd=PROJECT_DIR, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"REST (http://127\.0\.0\.1:\d+)\s+WS (ws://127\.0\.0\.1:\d+\S*)", line)
        if match:
            threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
            return SimulatorProcess(proc, match.group(1), match.group(2), lines)
    proc.kill()
    raise AssertionError("simulator did not start:\n" + "".join(lines))


@pytest.fixture
def simulator_process() -> Iterator[SimulatorProcess]:
    """A standalone simulator replaying the shipped pairs' legs quickly (speed 300)."""
    sim = start_simulator("--speed", "300", "--steps-per-bar", "20")
    yield sim
    sim.stop()


@pytest.fixture
def paper_bot_dir(bot_dir: Path, simulator_process: SimulatorProcess) -> Path:
    """Shipped config, dry_run, pointed at the standalone simulator instead of Binance."""
    config = read_json(bot_dir / "config.json")
    config["exchange"]["base_url"] = simulator_process.base_url
    config["exchange"]["enable_rate_limit"] = False
    config["logging"]["status_interval_seconds"] = 2
    write_json(bot_dir / "config.json", config)
    return bot_dir


def assert_logged(text: str, *needles: str) -> None:
    """Assert one line of ``text`` holds every needle (a log line with all its parts)."""
    for line in text.splitlines():
        if all(n in line for n in needles):
            return
    raise AssertionError(f"no line contains all of {needles!r} in:\n{text}")


# The engine rig's fixtures (a real CcxtExchange against an in-process simulator), for every test module.
from tests.engine_rig import make_rig, sim_data  # noqa: E402,F401
from tests.api_rig import api_rig  # noqa: E402,F401  (the operator API rig: the whole bot plus its API)
