"""The seam to hot reload: the operator API calls a reloader it does not build.

Any object with ``async def reload(self, source: str) -> result`` (``result.ok``, ``result.message``)
fits; ``source`` says who asked (``"api"``). Without one, ``POST /config/reload`` answers 503.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ReloadResult(Protocol):
    ok: bool
    message: str


@runtime_checkable
class ConfigReloader(Protocol):
    async def reload(self, source: str) -> ReloadResult:
        """Re-read and validate the configuration as at start; apply it only if valid."""
        ...
