"""Shared fixtures and helpers for the whole suite.

Every test that runs the bot does so in a temporary folder with its own copies of the
configuration, so nothing a test does lands in the repository's ``logs/``.
"""

from __future__ import annotations

import json
import os
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
    """A background ``python main.py`` whose output is collected line by line by a thread."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([PYTHON, str(PROJECT_DIR / "main.py"), *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
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
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not seen within {timeout}s; output:\n{self.output}")

    def send_signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, *, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
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


def assert_logged(text: str, *needles: str) -> None:
    """Assert one line of ``text`` holds every needle (a log line with all its parts)."""
    for line in text.splitlines():
        if all(n in line for n in needles):
            return
    raise AssertionError(f"no line contains all of {needles!r} in:\n{text}")
