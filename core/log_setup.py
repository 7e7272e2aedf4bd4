"""Log sinks for operators: console, a rotating debug file, and a JSON-lines trade record.

The console is stderr, except the startup progress lines (the banner, one line per failed
start attempt; see ``progress``), which go to stdout, so that a start that fails leaves exactly
its one failure line on stderr (docs/architecture.md, "Errors, logs, exit codes").

Every record passes one redaction step before any sink sees it, exception text included (the
traceback is rendered, redacted and folded into the message), so an API key or a request
signature cannot reach a terminal, a file or a shipped log by any path.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Iterable

from loguru import logger

from core.config import LoggingConfig

TRADE_EVENT_KEY = "trade_event"
PROGRESS_KEY = "startup_progress"
_MASK = "***"
# Things that are secret whatever their value: request signatures and key headers.
_GENERIC_SECRETS = [
    re.compile(r"(signature=)[0-9a-fA-F]{16,}"),
    re.compile(r"(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9]{8,}"),
    re.compile(r"((?:api_?key|api_?secret|secret)['\"]?\s*[:=]\s*['\"])[^'\"]{6,}", re.IGNORECASE),
]


@dataclass(frozen=True, slots=True)
class LogPaths:
    """Where this run's files are, for the banner and for tests."""

    directory: Path
    main_log: Path
    trades_log: Path


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every ``trades.jsonl`` line says about the run that wrote it: the mode (demo, paper,
    live) and the session id (``core.stats.new_session_id``, also in the session statistics)."""

    mode: str | None = None
    session_id: str | None = None


class Redactor:
    """Replaces every known secret, and anything shaped like one, with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first so a secret containing another is masked whole.
        self._literals = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for literal in self._literals:
            if literal in text:
                text = text.replace(literal, _MASK)
        for pattern in _GENERIC_SECRETS:
            text = pattern.sub(lambda m: m.group(1) + _MASK, text)
        return text

    def patch(self, record: Any) -> None:
        """loguru patcher: redact the message, the extras, and the exception text."""
        record["message"] = self(record["message"])
        exc = record["exception"]
        if exc is not None and exc.type is not None:
            rendered = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
            record["message"] = record["message"] + "\n" + self(rendered.rstrip())
            record["exception"] = None
        for key, value in list(record["extra"].items()):
            if isinstance(value, str):
                record["extra"][key] = self(value)


def setup_logging(config: LoggingConfig, *, secrets: Iterable[str], console_level: str | None = None,
                  console: Any = None, progress_console: Any = None,
                  run: RunContext | None = None) -> LogPaths:
    """Replace loguru's default sink with the sinks of docs/architecture.md, "Errors, logs, exit codes".

    Called only after the configuration is valid, so a bad config writes nothing. ``console``
    (default stderr) and ``progress_console`` (default stdout) replace the streams in tests.
    ``run`` stamps every ``trades.jsonl`` line with the mode and session id.
    """
    directory = Path(config.dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = LogPaths(directory, directory / "trading_bot.log", directory / "trades.jsonl")
    redactor = Redactor(secrets)
    compression = None if config.compression == "none" else config.compression
    rotation = f"{config.rotation_mb} MB"
    logger.remove()
    logger.configure(patcher=redactor.patch)
    console_format = "<green>{time:HH:mm:ss.SSS}</green> | <level>{level:<8}</level> | {message}"
    logger.add(console if console is not None else sys.stderr, level=console_level or config.level,
               format=console_format, colorize=None, backtrace=False, diagnose=False,
               filter=lambda r: TRADE_EVENT_KEY not in r["extra"] and PROGRESS_KEY not in r["extra"])
    logger.add(progress_console if progress_console is not None else sys.stdout,
               level=console_level or config.level, format=console_format, colorize=None, backtrace=False,
               diagnose=False, filter=lambda r: PROGRESS_KEY in r["extra"])
    logger.add(paths.main_log, level="DEBUG", rotation=rotation, retention=config.retention_files,
               compression=compression, enqueue=False, backtrace=False, diagnose=False,
               format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level:<8} | {name}:{line} | {message}",
               filter=lambda r: TRADE_EVENT_KEY not in r["extra"])
    logger.add(paths.trades_log, level="DEBUG", rotation=rotation, retention=config.retention_files,
               compression=compression, format=_trade_line_format(run or RunContext()),
               filter=lambda r: TRADE_EVENT_KEY in r["extra"])
    return paths


TRADE_LINE_KEY = "trade_line"


def log_trade_event(event: str, **fields: Any) -> None:
    """Write one structured event (order, fill, trade) as a line of ``trades.jsonl``.

    The sink adds ``ts``, ``ts_ms``, ``mode`` and ``session_id`` in front (README, "trades.jsonl").
    """
    payload = {"event": event, **fields}
    logger.bind(**{TRADE_EVENT_KEY: event}).info(json.dumps(payload, default=str, sort_keys=True))


def trade_line(record: Any, run: RunContext) -> str:
    """One ``trades.jsonl`` line from a (redacted) trade record: the record's time as ISO-8601
    UTC with milliseconds and as epoch ms, the run's mode and session id, then the event."""
    moment = record["time"].astimezone(timezone.utc)
    ms = moment.microsecond // 1000
    head = {"ts": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}Z",
            "ts_ms": int(moment.replace(microsecond=0).timestamp()) * 1000 + ms,
            "mode": run.mode, "session_id": run.session_id}
    event = json.loads(record["message"])
    return json.dumps({**head, "event": event.pop("event", None), **event}, default=str)


def _trade_line_format(run: RunContext) -> Any:
    """loguru format callable: the line goes through ``extra`` so its braces are not a template."""
    def fmt(record: Any) -> str:
        record["extra"][TRADE_LINE_KEY] = trade_line(record, run)
        return "{extra[%s]}\n" % TRADE_LINE_KEY
    return fmt


def progress() -> Any:
    """The logger for startup progress lines (``progress().info(...)``): the console copy goes
    to stdout, never stderr; the log file gets them like any other record."""
    return logger.bind(**{PROGRESS_KEY: True})


def reset_logging() -> None:
    """Drop every sink and the redaction patcher (tests; and before a process exits)."""
    logger.remove()
    logger.configure(patcher=None)
