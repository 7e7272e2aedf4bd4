"""Writing state files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomically(path: Path, payload: Any, *, indent: int | None = None, default: Any = None) -> Path:
    """Write ``payload`` as JSON to a temporary sibling, fsync it, then rename it over ``path``.

    A reader (or a restart after SIGKILL) sees either the old file or the new one, never a mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    separators = None if indent is not None else (",", ":")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=indent, separators=separators, default=default)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
