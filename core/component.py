"""The small interface every long-lived part of the bot plugs in behind.

``TradingBot`` starts components in order, stops them in reverse order, and pulls their
statistics at the end; it knows nothing else about them. A component owns its asyncio tasks:
``stop`` cancels them and awaits them, so nothing outlives the bot.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    """A part with a lifecycle: market-data hub, signal generators, execution engine, ..."""

    name: str

    async def start(self) -> None:
        """Connect and begin work. Raise a ``core.errors`` type if it cannot."""

    async def stop(self) -> None:
        """Finish in-flight work (bounded), cancel and await owned tasks, close connections.

        Must be idempotent: shutdown may call it after a failed or partial start.
        """

    def stats(self) -> dict[str, Any]:
        """Counters for the final statistics (a JSON-serialisable dict)."""
