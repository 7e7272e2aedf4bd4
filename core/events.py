"""The bot's event stream for operators: what the API's ``/ws`` pushes and notifications read.

Publishing never waits and never fails the publisher: the order path and the quote loop call
``publish`` inline, and each subscriber has its own bounded queue. A subscriber that falls behind
loses its oldest events, counted in ``dropped`` (and in ``stats``), so a slow browser or a hung
webhook can never hold up an order. Events are plain JSON-ready dicts, so every consumer
renders them the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, AsyncIterator


class EventKind(str, Enum):
    SIGNAL = "signal"  # a generator's new signal (router)
    ORDER = "order"  # an order's journaled state changed (journal)
    POSITION = "position"  # a pair's lifecycle state or position changed (lifecycle)
    EXECUTION = "execution"  # what an execution came to (router)
    METRIC = "metric"  # a periodic snapshot (the operator API's ticker)
    ALERT = "alert"  # needs an operator: HALTED, BLOCKED, feed lost, daily-loss stop, start/stop


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    data: dict[str, Any]
    pair_id: str | None = None
    severity: Severity = Severity.INFO
    ts_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind.value, "seq": self.seq, "ts_ms": self.ts_ms, "pair_id": self.pair_id,
                "severity": self.severity.value, "data": self.data}


class Subscription:
    """One consumer's bounded queue; iterate it with ``async for`` or ``await get()``."""

    def __init__(self, bus: EventBus, maxsize: int, kinds: frozenset[EventKind] | None) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=maxsize)
        self.kinds = kinds
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self.kinds is not None and event.kind not in self.kinds:
            return
        if self._queue.full():
            self._queue.get_nowait()  # the oldest goes: a consumer that lags sees the latest state
            self.dropped += 1
            self._bus.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event:
        return await self._queue.get()

    def get_nowait(self) -> Event | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def close(self) -> None:
        self._bus.unsubscribe(self)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()


class EventBus:
    """Fan-out of ``Event``s to subscribers; no subscriber, no cost beyond building the dict."""

    name = "events"

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self.published = 0
        self.dropped = 0
        self._seq = 0

    def publish(self, kind: EventKind, data: dict[str, Any], *, pair_id: str | None = None,
                severity: Severity = Severity.INFO) -> Event:
        self._seq += 1
        event = Event(kind, data, pair_id, severity, seq=self._seq)
        self.published += 1
        for subscriber in list(self._subscribers):
            subscriber.offer(event)
        return event

    def subscribe(self, *, maxsize: int = 1000, kinds: set[EventKind] | None = None) -> Subscription:
        subscription = Subscription(self, maxsize, None if kinds is None else frozenset(kinds))
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def stats(self) -> dict[str, Any]:
        return {"published": self.published, "dropped": self.dropped, "subscribers": len(self._subscribers)}
