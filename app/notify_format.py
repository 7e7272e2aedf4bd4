"""What a notification says: pure functions from operator events and facts to one line of text.

No I/O here (app/notifications.py gathers the facts from the journal and the engine and sends),
so every message is tested as a plain function. One readable line per event: what happened, the
pair, the side, z, the legs' filled quantities and prices, the round trip's PnL when it closed.
The rate limit is a pure sliding window with the clock passed in, for the same reason.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from core.events import Event, EventKind, Severity

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

_CLOSE_TOPICS = {"EXIT": "exit", "STOP_LOSS": "stop_loss", "TIME_STOP": "time_stop", "FLATTEN": "flatten"}
_TOPIC_SEVERITY = {"entry": Severity.INFO, "exit": Severity.INFO, "stop_loss": Severity.WARNING,
                   "time_stop": Severity.WARNING, "flatten": Severity.WARNING,
                   "execution_problem": Severity.WARNING}
_HEADLINE = {"exit": "EXIT", "stop_loss": "STOP-LOSS", "time_stop": "TIME-STOP", "flatten": "FLATTEN"}
#: Execution outcomes worth a warning. HALTED is left to the lifecycle's ``halted`` alert, which
#: says what is open; REFUSED sends nothing (the engine logs it; the daily-loss stop has its alert).
_PROBLEM_STATUSES = {"FAILED", "ROLLED_BACK", "RESOLVING"}


@dataclass(frozen=True, slots=True)
class Notice:
    """One message to send: its topic (``notifications.events``), severity and line."""

    topic: str
    severity: Severity
    text: str


@dataclass(frozen=True, slots=True)
class LegFill:
    """What one side of one symbol filled for a signal (all its orders: top-ups, retries)."""

    symbol: str
    side: str  # "buy" | "sell"
    qty: Decimal
    avg_price: Decimal | None


@dataclass(frozen=True, slots=True)
class TradeFacts:
    """What the journal knows of an executed signal; None where it knows nothing."""

    z: float | None = None
    legs: tuple[LegFill, ...] = ()
    net_pnl: Decimal | None = None  # USDT, the round trip this signal closed
    fees: Decimal | None = None


@dataclass(frozen=True, slots=True)
class StartFacts:
    mode: str
    pairs: tuple[str, ...]
    balance: Decimal | None
    currency: str = "USDT"


@dataclass(frozen=True, slots=True)
class OpenPosition:
    pair_id: str
    state: str
    qty_a: Decimal
    qty_b: Decimal


@dataclass(frozen=True, slots=True)
class StopFacts:
    reason: str
    net_pnl: Decimal  # USDT, round trips closed during this run
    round_trips: int
    trades_executed: int
    open_positions: tuple[OpenPosition, ...] = ()
    balance: Decimal | None = None
    currency: str = "USDT"


def topic_of(event: Event) -> str | None:
    """The ``notifications.events`` topic of an operator event, or None when it is not notified.

    >>> from core.events import Event, EventKind
    >>> topic_of(Event(EventKind.EXECUTION, {"status": "EXECUTED", "signal_type": "STOP_LOSS"}))
    'stop_loss'
    """
    data = event.data
    if event.kind is EventKind.EXECUTION:
        status, kind = data.get("status"), str(data.get("signal_type"))
        if status == "EXECUTED":
            return "entry" if kind.startswith("ENTER_") else _CLOSE_TOPICS.get(kind)
        return "execution_problem" if status in _PROBLEM_STATUSES else None
    if event.kind is EventKind.ALERT:
        alert = data.get("alert")
        if alert == "started":
            return "start"
        if alert in ("halted", "blocked", "feed_lost", "feed_back", "daily_loss_stop"):
            return str(alert)
    return None


def needs_trade_facts(event: Event) -> bool:
    """An executed entry or close: its line shows the legs (and the PnL) from the journal."""
    return event.kind is EventKind.EXECUTION and event.data.get("status") == "EXECUTED"


def format_event(event: Event, facts: TradeFacts | None = None) -> Notice | None:
    """The notice of one operator event (None: not notified; ``started`` has ``format_start``)."""
    topic = topic_of(event)
    if topic is None or topic == "start":
        return None
    data = event.data
    pair = event.pair_id or data.get("pair_id") or "?"
    if topic == "entry":
        side = "LONG" if data.get("signal_type") == "ENTER_LONG_SPREAD" else "SHORT"
        text = " | ".join([f"ENTRY {side} {pair}", *_trade_parts(facts)])
    elif topic in _HEADLINE:
        parts = _trade_parts(facts)
        if facts is not None and facts.net_pnl is not None:
            fees = "" if facts.fees is None else f" (fees {money(facts.fees)})"
            parts.append(f"PnL {signed_money(facts.net_pnl)} USDT net{fees}")
        text = " | ".join([f"{_HEADLINE[topic]} {pair}", *parts])
    elif topic == "execution_problem":
        text = (f"EXECUTION {data.get('status')} {pair} {data.get('signal_type')} | {data.get('reason')}"
                + (f" | {data['detail']}" if data.get("detail") else "")
                + (f" | pair now {data['state_after']}" if data.get("state_after") else ""))
    elif topic in ("halted", "blocked"):
        text = (f"{topic.upper()} {pair} (was {data.get('from_state')}) | {data.get('reason') or 'no reason given'}"
                f" | held: {_qty(data.get('qty_a'))} A, {_qty(data.get('qty_b'))} B | needs an operator")
    elif topic == "feed_lost":
        text = (f"FEED LOST: no quotes from the exchange | on_feed_loss={data.get('policy')}"
                + (": open pairs are being closed at market" if data.get("policy") == "flatten"
                   else ": open pairs hold, no exit or stop until quotes return"))
    elif topic == "feed_back":
        text = "FEED BACK: quotes are flowing again"
    else:  # daily_loss_stop
        text = (f"DAILY-LOSS STOP: no new entries for the rest of the UTC day (refused on {pair})"
                + (f" | {data['detail']}" if data.get("detail") else ""))
    severity = event.severity if topic not in _TOPIC_SEVERITY else max(
        event.severity, _TOPIC_SEVERITY[topic], key=SEVERITY_RANK.__getitem__)
    return Notice(topic, severity, " ".join(text.split()))


def format_start(facts: StartFacts) -> Notice:
    """The start summary: mode, pairs, balance.

    >>> format_start(StartFacts("DEMO", ("A_B",), Decimal("100"))).text
    'STARTED pairs-bot | mode DEMO | 1 pair: A_B | balance 100.00 USDT'
    """
    pairs = f"{len(facts.pairs)} pair{'s' if len(facts.pairs) != 1 else ''}: {', '.join(facts.pairs) or 'none'}"
    balance = "balance unknown" if facts.balance is None else f"balance {money(facts.balance)} {facts.currency}"
    return Notice("start", Severity.INFO, f"STARTED pairs-bot | mode {facts.mode} | {pairs} | {balance}")


def format_stop(facts: StopFacts, suppressed: dict[str, int] | None = None) -> Notice:
    """The stop summary; what the rate limit held back and never sent is said on it too."""
    trips = f"{facts.round_trips} round trip{'s' if facts.round_trips != 1 else ''}"
    if facts.open_positions:
        held = ", ".join(f"{p.pair_id} {p.state} (A {_qty(p.qty_a)}, B {_qty(p.qty_b)})" for p in facts.open_positions)
    else:
        held = "none"
    parts = [f"STOPPED pairs-bot ({facts.reason or 'stopped'})", f"net PnL {signed_money(facts.net_pnl)} USDT over {trips}",
             f"{facts.trades_executed} trade{'s' if facts.trades_executed != 1 else ''} executed",
             f"open positions: {held}"]
    if facts.balance is not None:
        parts.append(f"balance {money(facts.balance)} {facts.currency}")
    if suppressed:
        parts.append(format_suppressed(suppressed, None))
    severity = Severity.WARNING if facts.open_positions else Severity.INFO
    return Notice("stop", severity, " | ".join(parts))


def format_suppressed(counts: dict[str, int], window_seconds: float | None) -> str:
    """The one line that says what the rate limit held back.

    >>> format_suppressed({"entry": 3, "exit": 1}, 60)
    'RATE LIMIT: 4 notifications not sent in the last 60 s (entry 3, exit 1)'
    """
    total = sum(counts.values())
    detail = ", ".join(f"{topic} {n}" for topic, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    when = f" in the last {window_seconds:g} s" if window_seconds is not None else ""
    return f"RATE LIMIT: {total} notification{'s' if total != 1 else ''} not sent{when} ({detail})"


def _trade_parts(facts: TradeFacts | None) -> list[str]:
    if facts is None:
        return []
    parts = [] if facts.z is None else [f"z {facts.z:+.2f}"]
    if facts.legs:
        parts.append(", ".join(
            f"{leg.side} {_qty(leg.qty)} {leg.symbol}" + ("" if leg.avg_price is None else f" @ {_qty(leg.avg_price)}")
            for leg in facts.legs))
    return parts


def _qty(value: Any) -> str:
    """An exact decimal without exponent or trailing zeros (``'0.0120'`` -> ``'0.012'``)."""
    if value is None:
        return "?"
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    text = f"{number.normalize():f}"
    return "0" if text in ("-0", "0") else text


def money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,}"


def signed_money(value: Decimal) -> str:
    rounded = value.quantize(Decimal("0.01"))
    return f"{'+' if rounded >= 0 else ''}{rounded:,}"


@dataclass(slots=True)
class RateLimit:
    """At most ``max_per_window`` sends in any ``window_seconds`` (a sliding window of sends).

    ``now`` is passed in (monotonic seconds), so the rule is tested without sleeping.
    """

    max_per_window: int
    window_seconds: float = 60.0
    _sent: deque[float] = field(default_factory=deque)

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window_seconds:
            self._sent.popleft()

    def try_acquire(self, now: float) -> bool:
        self._expire(now)
        if len(self._sent) >= self.max_per_window:
            return False
        self._sent.append(now)
        return True

    def next_free(self, now: float) -> float:
        """When the next send will be allowed (``now`` if it already is)."""
        self._expire(now)
        if len(self._sent) < self.max_per_window:
            return now
        return self._sent[0] + self.window_seconds
