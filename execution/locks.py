"""Per-symbol locks, always taken in one order, so pairs that share a symbol take turns and no
pair waits on another's resting order (docs/architecture.md, "Locks")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable


class SymbolLocks:
    """One ``asyncio.Lock`` per symbol. ``hold`` takes the locks of the given symbols in sorted
    order and releases them in reverse: two holders can never wait on each other in a cycle."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, symbols: Iterable[str]) -> AsyncIterator[None]:
        taken: list[asyncio.Lock] = []
        try:
            for symbol in sorted(set(symbols)):
                lock = self._locks.setdefault(symbol, asyncio.Lock())
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
