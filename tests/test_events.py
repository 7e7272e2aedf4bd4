"""The operator event stream: bounded per subscriber, never blocking the publisher, and fed by
the journal (orders, fills), the lifecycle (positions, HALTED/BLOCKED alerts) and the router."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from core.events import EventBus, EventKind, Severity
from core.types import PairState
from execution.journal import Journal
from execution.journal_models import PairPosition
from execution.lifecycle import PairEvent, PairLifecycle


def test_a_slow_subscriber_loses_its_oldest_events_and_the_publisher_never_waits():
    bus = EventBus()
    slow = bus.subscribe(maxsize=3)
    signals_only = bus.subscribe(kinds={EventKind.SIGNAL})
    for i in range(5):
        bus.publish(EventKind.ORDER, {"i": i})
    bus.publish(EventKind.SIGNAL, {"i": 5})
    got = [slow.get_nowait() for _ in range(3)]
    assert [e.data["i"] for e in got] == [3, 4, 5]  # the latest kept, in order
    assert slow.dropped == 3 and bus.dropped == 3
    assert [e.seq for e in got] == [4, 5, 6]
    only = signals_only.get_nowait()
    assert only is not None and only.kind is EventKind.SIGNAL and signals_only.get_nowait() is None
    slow.close()
    bus.publish(EventKind.ALERT, {})
    assert slow.get_nowait() is None and bus.stats()["subscribers"] == 1


def test_async_iteration_yields_events_as_published():
    async def scenario() -> list[int]:
        bus = EventBus()
        sub = bus.subscribe()
        seen: list[int] = []

        async def consume() -> None:
            async for event in sub:
                seen.append(event.data["i"])
                if len(seen) == 2:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        bus.publish(EventKind.METRIC, {"i": 1})
        bus.publish(EventKind.METRIC, {"i": 2})
        await asyncio.wait_for(task, 2)
        return seen

    assert asyncio.run(scenario()) == [1, 2]


def test_journal_and_lifecycle_publish_orders_fills_positions_and_halt_alerts(tmp_path):
    bus = EventBus()
    sub = bus.subscribe()
    journal = Journal.open(tmp_path / "j.sqlite", mode="paper")
    journal.event_bus = bus
    order = journal.record_order_intent(client_order_id="s1-a-1", signal_id="s1", pair_id="P", leg="a",
                                        purpose="ENTRY", attempt=1, symbol="X/USDT:USDT", side="buy",
                                        order_type="market", qty=Decimal("2"))
    journal.update_order(order.client_order_id, status="SENT")
    journal.update_order(order.client_order_id, status="FILLED", filled_qty=Decimal("2"), avg_price=Decimal("10"),
                         fee=Decimal("0.01"))
    journal.record_fill(order.client_order_id, trade_id="t1", qty=Decimal("2"), price=Decimal("10"),
                        fee=Decimal("0.01"), ts_ms=1)
    events = []
    while (event := sub.get_nowait()) is not None:
        events.append(event)
    assert [e.data["status"] for e in events] == ["INTENT", "SENT", "FILLED", "FILLED"]
    assert all(e.kind is EventKind.ORDER and e.pair_id == "P" for e in events)
    assert events[-1].data["fill"] == {"trade_id": "t1", "qty": "2", "price": "10", "fee": "0.01",
                                       "fee_asset": "USDT", "ts_ms": 1}

    journal.close()


def test_lifecycle_changes_are_positions_and_halted_is_a_critical_alert(tmp_path, monkeypatch):
    """The engine's lifecycle listener, on a real engine's lifecycle: every change is a POSITION
    event; entering HALTED (and BLOCKED) also raises an ALERT, once."""
    from execution.engine import ExecutionEngine

    bus = EventBus()
    sub = bus.subscribe()
    journal = Journal.open(tmp_path / "j.sqlite", mode="paper")
    holder = type("Holder", (), {"events": bus})()
    positions = {p: PairPosition(p, PairState.FLAT, Decimal(0), Decimal(0), "X/USDT:USDT", "Y/USDT:USDT")
                 for p in ("P", "Q")}
    for position in positions.values():
        journal.save_position(position)
    lifecycle = PairLifecycle(journal, positions,
                              on_change=lambda *a: ExecutionEngine._publish_position(holder, *a))  # type: ignore[arg-type]
    lifecycle.apply("P", PairEvent.ENTRY_SENT, PairState.ENTERING)
    lifecycle.apply("P", PairEvent.HALT, PairState.HALTED, qty_a=Decimal("1"), reason="leg B refused")
    lifecycle.apply("Q", PairEvent.BLOCK, PairState.BLOCKED, reason="book unexplained")
    events = []
    while (event := sub.get_nowait()) is not None:
        events.append(event)
    kinds = [(e.kind, e.data.get("state") or e.data.get("alert")) for e in events]
    assert kinds == [(EventKind.POSITION, "ENTERING"), (EventKind.POSITION, "HALTED"), (EventKind.ALERT, "halted"),
                     (EventKind.POSITION, "BLOCKED"), (EventKind.ALERT, "blocked")]
    halted = events[2]
    assert halted.severity is Severity.CRITICAL and halted.pair_id == "P"
    assert halted.data["reason"] == "leg B refused" and halted.data["qty_a"] == "1"
    journal.close()


def test_the_daily_loss_alert_is_once_per_exchange_day_of_the_signals() -> None:
    """The engine's "today" for the daily loss is the signal's exchange-time UTC day, so in a replay
    (days pass in minutes) each replayed day that hits the limit raises its alert once."""
    from app.pipeline import SignalRouter
    from core.stats import SessionStats
    from core.types import SignalType
    from execution.results import ExecutionResult, ExecutionStatus, Reason

    async def no_history(*_: object, **__: object) -> dict:
        return {}

    bus = EventBus()
    sub = bus.subscribe(kinds={EventKind.ALERT})
    router = SignalRouter(generators={}, engine=None, stats=SessionStats(mode="DEMO"), history=no_history, events=bus)
    day_ms = 86_400_000
    for i, ts in enumerate((5 * day_ms + 1, 5 * day_ms + 3_600_000, 6 * day_ms + 1)):
        refused = ExecutionResult(f"s{i}", "P", SignalType.ENTER_LONG_SPREAD, ExecutionStatus.REFUSED,
                                  Reason.MAX_DAILY_LOSS, "realized today -101")
        router._publish_result(refused, ts)
    alerts = []
    while (event := sub.get_nowait()) is not None:
        alerts.append(event)
    assert [e.data["alert"] for e in alerts] == ["daily_loss_stop", "daily_loss_stop"]  # day 5 once, day 6 once
