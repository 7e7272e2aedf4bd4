"""The simulator's state file: engine state and replay position, written atomically.

Why it exists: the simulator keeps everything in memory, which already survives client
reconnects and bot restarts. The file additionally survives a restart of the simulator
itself, so a "crash the bot, restart everything" drill finds its positions again.

Format: one JSON object ``{"version": 1, "replay_ms": ..., "engine": {...},
"listen_keys": {...}, "saved_wall_ms": ...}``; decimals are strings. Written to a temporary
file next to the target and renamed over it, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from core.files import write_json_atomically

STATE_VERSION = 1


class StateFileError(ValueError):
    """The state file exists but cannot be used (bad JSON, other version, other symbols)."""


def save_state(path: Path, *, replay_ms: int, engine: dict[str, Any],
               listen_keys: dict[str, str]) -> Path:
    """Write the state atomically; returns ``path``."""
    payload = {
        "version": STATE_VERSION,
        "saved_wall_ms": int(time.time() * 1000),
        "replay_ms": replay_ms,
        "engine": engine,
        "listen_keys": listen_keys,
    }
    return write_json_atomically(path, payload)


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, None if there is no file. Raises ``StateFileError`` if unusable."""
    if not path.exists():
        return None
    try:
        with path.open("r", encoding="utf-8") as handle:
            payload = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise StateFileError(f"{path}: cannot read simulator state ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("version") != STATE_VERSION:
        raise StateFileError(f"{path}: not a version-{STATE_VERSION} simulator state file")
    for key in ("replay_ms", "engine", "listen_keys"):
        if key not in payload:
            raise StateFileError(f"{path}: state file lacks '{key}'")
    return payload
