"""Push notifications (Discord, Telegram, Slack, any webhook) from the operator event stream.

Why apprise: one URL scheme for 100+ services, maintained upstream, so the bot carries no
per-service code. Why a component of its own that reads ``core/events.py``: the order path only
ever calls ``EventBus.publish``, which never waits (a bounded queue per subscriber), and every
send happens in this component's task. apprise is synchronous (requests), so each send runs in
a daemon thread of its own, awaited for at most ``timeout_seconds`` (the request's own connect
and read timeouts are set to the same bound, so the thread ends by itself too, and a daemon
thread never holds up the process's exit). A receiver that fails or hangs costs one log line
naming the service with its secrets masked; nothing raises into the bot.

Placed first among the components (app/assemble.py), the notifier starts first and stops last:
its stop summary sees the engine's final state. The start summary goes out when the bot says it
is running (``started`` alert, main.py). Message text: app/notify_format.py (pure).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Protocol

from loguru import logger

from app.notify_format import (SEVERITY_RANK, LegFill, Notice, OpenPosition, RateLimit, StartFacts, StopFacts,
                               TradeFacts, format_event, format_start, format_stop, format_suppressed,
                               needs_trade_facts, topic_of)
from core.config import NotificationsConfig, redacted_url
from core.events import Event, EventBus, EventKind, Severity, Subscription
from core.types import PairState

RATE_WINDOW_SECONDS = 60.0
IDLE_WAKE_SECONDS = 1.0
QUEUE_SIZE = 256
MAX_LINGERING_SENDS = 8  # threads still in a timed-out request; past this a send is skipped, not stacked
_IDLE = (PairState.FLAT,)


class Facts(Protocol):
    """What the notifier asks about the bot; ``PipelineFacts`` answers from the journal and engine."""

    def trade(self, signal_id: str, pair_id: str) -> TradeFacts: ...

    def start(self) -> StartFacts: ...

    def stop(self, reason: str) -> StopFacts: ...


@dataclass(slots=True)
class NotifierCounters:
    sent: int = 0
    failed: int = 0
    timed_out: int = 0
    suppressed: int = 0  # held back by the rate limit (said in a summary line)
    filtered: int = 0  # below min_severity or not in notifications.events
    format_errors: int = 0
    skipped_busy: int = 0  # too many earlier sends still hung


class _AppriseLog(logging.Handler):
    """apprise logs through the standard logging module; keep its last warning per thread, so a
    failed send's one line can say why, and let nothing of it reach the console on its own."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        self.local.last = record.getMessage()


_APPRISE_LOG = _AppriseLog()


def _quiet_apprise() -> None:
    log = logging.getLogger("apprise")
    if _APPRISE_LOG not in log.handlers:
        log.addHandler(_APPRISE_LOG)
    log.propagate = False


def service_label(url: str, plugin: Any = None) -> str:
    """The service as a log line may show it: apprise's privacy URL (tokens masked) cut to its
    first segment, no query; the bare scheme when apprise cannot say."""
    try:
        private = plugin.url(privacy=True) if plugin is not None else None
    except Exception:  # noqa: BLE001 - a label must never fail a send
        private = None
    if not private:
        return redacted_url(url)
    scheme, _, rest = private.partition("://")
    head, slash, tail = rest.split("?", 1)[0].partition("/")
    return f"{scheme}://{head}" + ("/..." if slash and tail.strip("/") else "")


def scrub(text: str, url: str) -> str:
    """``text`` with every longer piece of ``url`` (tokens, ids, hosts) masked."""
    for piece in sorted(set(re.split(r"[/:@?&=#,]+", url.partition("://")[2])), key=len, reverse=True):
        if len(piece) >= 6:
            text = text.replace(piece, "***")
    return text


class WebhookSender:
    """One notification URL: sends in a daemon thread, awaited for a bounded time."""

    def __init__(self, url: str, *, timeout_seconds: float) -> None:
        import apprise

        _quiet_apprise()
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:  # config validation refused these already; a safety net
            raise ValueError(f"not an apprise URL: {redacted_url(url)}")
        # The request's own timeouts are the send's bound (apprise's default is 4 s; a URL's cto/rto
        # are overridden), so a thread left in a hung request ends when the wait for it does.
        plugin.socket_connect_timeout = timeout_seconds
        plugin.socket_read_timeout = timeout_seconds
        self._plugin = plugin
        self._url = url
        self.label = service_label(url, plugin)
        self.timeout_seconds = timeout_seconds
        self.lingering = 0  # sends that timed out here and whose thread is still in its request
        self.failures_in_row = 0

    async def send(self, title: str, body: str, severity: Severity, *, timeout_seconds: float | None = None,
                   counters: NotifierCounters) -> bool:
        """True if the receiver took it. Never raises (cancellation aside): a failure or a hang is
        one WARNING line, and a hung thread is left to its request's timeout."""
        if self.lingering >= MAX_LINGERING_SENDS:
            counters.skipped_busy += 1
            logger.warning("notification to {} skipped: {} earlier send(s) still hung", self.label, self.lingering)
            return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, str]] = loop.create_future()
        notify_type = {Severity.INFO: "info", Severity.WARNING: "warning", Severity.CRITICAL: "failure"}[severity]
        state = {"timed_out": False}

        def deliver(result: tuple[bool, str]) -> None:
            if not future.done():
                future.set_result(result)

        def run() -> None:
            try:
                ok = bool(self._plugin.notify(body=body, title=title, notify_type=notify_type))
                reason = "" if ok else getattr(_APPRISE_LOG.local, "last", "") or "the receiver refused it"
            except Exception as exc:  # noqa: BLE001 - reported on the loop as one line
                ok, reason = False, f"{type(exc).__name__}: {exc}"
            finally:
                if state["timed_out"]:
                    loop.call_soon_threadsafe(self._finished_lingering)
            try:
                loop.call_soon_threadsafe(deliver, (ok, reason))
            except RuntimeError:  # the loop is closed: the process is exiting, nobody waits
                pass

        thread = threading.Thread(target=run, name=f"notify:{self.label[:24]}", daemon=True)
        thread.start()
        bound = self.timeout_seconds if timeout_seconds is None else max(0.0, min(timeout_seconds, self.timeout_seconds))
        try:
            ok, reason = await asyncio.wait_for(asyncio.shield(future), timeout=bound)
        except TimeoutError:
            state["timed_out"] = True
            if thread.is_alive():
                self.lingering += 1
            counters.timed_out += 1
            self._failed(f"timed out after {bound:g} s (receiver not answering); not retried")
            return False
        if not ok:
            counters.failed += 1
            self._failed(scrub(" ".join(reason.split()), self._url))
            return False
        counters.sent += 1
        if self.failures_in_row:
            logger.info("notifications to {} delivered again after {} failed", self.label, self.failures_in_row)
            self.failures_in_row = 0
        return True

    def _failed(self, why: str) -> None:
        """One WARNING per run of failures of a service (a dead receiver is one line, not one per
        event); the rest at DEBUG, and an INFO line when it works again."""
        self.failures_in_row += 1
        if self.failures_in_row == 1:
            logger.warning("notification to {} failed: {}; further failures of it are logged at DEBUG until "
                           "one succeeds", self.label, why)
        else:
            logger.debug("notification to {} failed ({} in a row): {}", self.label, self.failures_in_row, why)

    def _finished_lingering(self) -> None:
        self.lingering = max(0, self.lingering - 1)


@dataclass(slots=True)
class PipelineFacts:
    """Answers the notifier's questions from the journal, the engine and the session counters."""

    engine: Any
    journal: Any
    stats: Any
    mode: str
    #: Round trips already closed when the bot said it started; the stop counts the others. (By
    #: id, not time: a trip's close time is exchange time, which a replay sets in the past.)
    closed_before: frozenset[int] = frozenset()

    def trade(self, signal_id: str, pair_id: str) -> TradeFacts:
        record = self.journal.get_signal(signal_id)
        legs: dict[tuple[str, str], list[Decimal]] = {}
        for order in self.journal.orders_for_signal(signal_id):
            if order.filled_qty <= 0:
                continue
            qty_cost = legs.setdefault((order.symbol, order.side.value), [Decimal(0), Decimal(0), Decimal(0)])
            qty_cost[0] += order.filled_qty
            if order.avg_price is not None:
                qty_cost[1] += order.filled_qty * order.avg_price
                qty_cost[2] += order.filled_qty
        fills = tuple(LegFill(symbol, side, q, (cost / priced).quantize(Decimal("1e-8")).normalize() if priced else None)
                      for (symbol, side), (q, cost, priced) in legs.items())
        trip = next((t for t in reversed(self.journal.round_trips(pair_id)) if t.exit_signal_id == signal_id), None)
        return TradeFacts(z=None if record is None else record.signal.z, legs=fills,
                          net_pnl=None if trip is None else trip.net_pnl, fees=None if trip is None else trip.fees)

    def start(self) -> StartFacts:
        self.closed_before = frozenset(t.id for t in self.journal.round_trips() if not t.is_open)
        balance = getattr(self.engine, "balance_at_start", None)
        return StartFacts(self.mode, tuple(getattr(self.engine, "pairs", {})),
                          None if balance is None else balance.total,
                          "USDT" if balance is None else balance.currency)

    def stop(self, reason: str) -> StopFacts:
        closed = [t for t in self.journal.round_trips() if not t.is_open and t.id not in self.closed_before
                  and t.net_pnl is not None]
        held = tuple(OpenPosition(p.pair_id, p.state.value, p.qty_a, p.qty_b)
                     for p in getattr(self.engine, "positions", {}).values()
                     if p.state not in _IDLE or p.qty_a or p.qty_b)
        balance = getattr(self.engine, "balance", None)
        return StopFacts(reason=reason, net_pnl=sum((t.net_pnl for t in closed), Decimal(0)), round_trips=len(closed),
                         trades_executed=int(getattr(self.stats, "trades_executed", 0)), open_positions=held,
                         balance=None if balance is None else balance.total)


class Notifier:
    """The notifications component: subscribes to the event bus, formats, rate-limits, sends."""

    name = "notifications"

    def __init__(self, *, settings: NotificationsConfig, urls: tuple[str, ...] | list[str], events: EventBus,
                 facts: Facts, clock: Callable[[], float] = time.monotonic, title: str = "pairs-bot") -> None:
        self._settings = settings
        self._senders = [WebhookSender(u, timeout_seconds=settings.timeout_seconds) for u in urls]
        self._events = events
        self._facts = facts
        self._clock = clock
        self._title = title
        self._topics = frozenset(settings.events)
        self._min_rank = SEVERITY_RANK[Severity(settings.min_severity)]
        self._limit = RateLimit(settings.max_per_minute, RATE_WINDOW_SECONDS)
        self._suppressed: dict[str, int] = {}
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._announced = False
        self._stop_reason = ""
        self._stopped = False
        self.counters = NotifierCounters()

    @property
    def services(self) -> list[str]:
        return [s.label for s in self._senders]

    async def start(self) -> None:
        if self._task is not None:
            return
        self._subscription = self._events.subscribe(maxsize=QUEUE_SIZE, kinds={EventKind.EXECUTION, EventKind.ALERT})
        self._task = asyncio.create_task(self._run(), name="notifications")
        logger.info("notifications on: {} service(s): {} | events {} | min severity {} | at most {}/min",
                    len(self._senders), ", ".join(self.services), len(self._topics), self._settings.min_severity,
                    self._settings.max_per_minute)

    async def stop(self) -> None:
        """Cancel the loop, then send what is queued and the stop summary within
        ``stop_timeout_seconds``; whatever is left then is abandoned (logged), never waited for."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        pending: list[Notice] = []
        if self._subscription is not None:
            while (event := self._subscription.get_nowait()) is not None:
                self._observe(event)
                notice = self._notice(event)
                if notice is not None and self._wanted(notice):
                    pending.append(notice)
            self._subscription.close()
        budget = self._settings.stop_timeout_seconds
        deadline = self._clock() + budget
        for notice in pending:  # in order, leaving at least half the budget for the summary
            left = deadline - self._clock() - budget / 2
            if left <= 0 or not self._limit.try_acquire(self._clock()):
                self._suppressed[notice.topic] = self._suppressed.get(notice.topic, 0) + 1
                self.counters.suppressed += 1
                continue
            await self._send(notice, timeout_seconds=left)
        if self._announced and "stop" in self._topics:
            summary = self._safe(lambda: format_stop(self._facts.stop(self._stop_reason), self._suppressed))
            if summary is not None:
                self._suppressed = {}
                await self._send(summary, timeout_seconds=max(0.1, deadline - self._clock()))
        elif self._suppressed:
            await self._send(Notice("rate_limit", Severity.INFO, format_suppressed(self._suppressed, None)),
                             timeout_seconds=max(0.1, deadline - self._clock()))

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {"services": len(self._senders), "sent": c.sent, "failed": c.failed, "timed_out": c.timed_out,
                "suppressed": c.suppressed, "filtered": c.filtered, "format_errors": c.format_errors,
                "skipped_busy": c.skipped_busy,
                "dropped": 0 if self._subscription is None else self._subscription.dropped}

    # -- the loop ---------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._subscription is not None
        while True:
            wait = None
            if self._suppressed:  # wake when the window frees, to say what was held back (and
                # at least every IDLE_WAKE_SECONDS, so a clock that jumps is followed)
                wait = min(IDLE_WAKE_SECONDS, max(0.0, self._limit.next_free(self._clock()) - self._clock()) + 0.01)
            try:
                event = await asyncio.wait_for(self._subscription.get(), timeout=wait)
            except TimeoutError:
                await self._flush_suppressed()
                continue
            self._observe(event)
            notice = self._notice(event)
            if notice is not None and self._wanted(notice):
                await self._deliver(notice)

    def _observe(self, event: Event) -> None:
        if event.kind is EventKind.ALERT and event.data.get("alert") == "stopping":
            self._stop_reason = str(event.data.get("reason") or "")

    def _notice(self, event: Event) -> Notice | None:
        """The event's notice with its facts; a formatting or lookup error is logged, never raised."""
        if topic_of(event) == "start":
            self._announced = True
            return self._safe(lambda: format_start(self._facts.start()))
        if needs_trade_facts(event):
            signal_id, pair_id = str(event.data.get("signal_id")), str(event.pair_id)
            return self._safe(lambda: format_event(event, self._facts.trade(signal_id, pair_id)))
        return self._safe(lambda: format_event(event))

    def _safe(self, build: Callable[[], Notice | None]) -> Notice | None:
        try:
            return build()
        except Exception as exc:  # noqa: BLE001 - a notification must never take the bot down
            self.counters.format_errors += 1
            logger.warning("notification not built: {}: {}", type(exc).__name__, exc)
            return None

    def _wanted(self, notice: Notice) -> bool:
        if notice.topic not in self._topics or SEVERITY_RANK[notice.severity] < self._min_rank:
            self.counters.filtered += 1
            return False
        return True

    async def _deliver(self, notice: Notice) -> None:
        await self._flush_suppressed()
        if not self._limit.try_acquire(self._clock()):
            self._suppressed[notice.topic] = self._suppressed.get(notice.topic, 0) + 1
            self.counters.suppressed += 1
            return
        await self._send(notice)

    async def _flush_suppressed(self) -> None:
        if self._suppressed and self._limit.try_acquire(self._clock()):
            line = format_suppressed(self._suppressed, RATE_WINDOW_SECONDS)
            self._suppressed = {}
            logger.info("notifications: {}", line)
            await self._send(Notice("rate_limit", Severity.INFO, line))

    async def _send(self, notice: Notice, *, timeout_seconds: float | None = None) -> None:
        title = f"{self._title}: {notice.topic.replace('_', ' ')}"
        await asyncio.gather(*(s.send(title, notice.text, notice.severity, timeout_seconds=timeout_seconds,
                                      counters=self.counters) for s in self._senders))
