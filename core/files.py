"""Writing state files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_bytes_atomically(path: Path, payload: bytes) -> Path:
    """Write ``payload`` to a temporary sibling, fsync it, rename it over ``path``, fsync the folder.

    A reader (or a restart after SIGKILL) sees either the old file or the new one, never a mix.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def write_json_atomically(path: Path, payload: Any, *, indent: int | None = None, default: Any = None) -> Path:
    """``payload`` as JSON (compact unless ``indent``), written by ``write_bytes_atomically``."""
    separators = None if indent is not None else (",", ":")
    text = json.dumps(payload, indent=indent, separators=separators, default=default) + "\n"
    return write_bytes_atomically(path, text.encode("utf-8"))
