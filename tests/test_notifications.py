"""Notifications (app/notifications.py, app/notify_format.py): what they say, that the rate limit
holds and says what it held back, and that a receiver that hangs never delays an order.

Everything is sent for real: apprise's ``json://`` scheme posts to an aiohttp receiver on
127.0.0.1 started by the test. Trades are real executions through the engine against the
simulator (tests/engine_rig.py); the quantities and PnL a line shows are checked against the
simulator's positions and the journal's round trips, not against the formatter itself.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

import main as bot_main
from app.notifications import Notifier, NotifierCounters, PipelineFacts, WebhookSender, scrub, service_label
from app.notify_format import (LegFill, OpenPosition, RateLimit, StartFacts, StopFacts, TradeFacts, format_event,
                               format_start, format_stop, format_suppressed, topic_of)
from app.pipeline import SignalRouter
from core.config import NotificationsConfig, PairConfig, RiskConfig, SignalConfig, signal_params
from core.events import Event, EventBus, EventKind, Severity
from core.stats import SessionStats
from core.types import PairState, SignalType
from execution.lifecycle import PairEvent
from signals.generator import SignalGenerator
from tests.conftest import PROJECT_DIR, PYTHON, clean_env, read_json, write_json
from tests.engine_rig import TEST_TIMEOUT_S, Rig

D = Decimal


# ----------------------------------------------------------------------------- the receiver


@dataclass
class Receiver:
    """A webhook on 127.0.0.1 that records what apprise's json:// posts, and can hang: while
    ``hang`` is set a request waits until the test calls ``release()`` (no timer)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    hang: bool = False
    refuse: bool = False  # answer 500 (a receiver that is up but failing)
    open_requests: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.refuse:
            return web.json_response({"error": "down for maintenance"}, status=500)
        self.open_requests += 1
        self.arrived.set()
        try:
            if self.hang:
                await self._release.wait()
            self.bodies.append(body)
        finally:
            self.open_requests -= 1
        return web.json_response({"ok": True})

    def release(self) -> None:
        self.hang = False
        self._release.set()
        self._release = asyncio.Event()

    @property
    def messages(self) -> list[str]:
        return [b["message"] for b in self.bodies]

    async def wait_for(self, predicate: Any, timeout_s: float = TEST_TIMEOUT_S) -> list[str]:
        """Event-driven wait (polling what arrived, bounded) until ``predicate(messages)``."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self.messages):
                await asyncio.sleep(0.01)
        return self.messages


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{token}", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rx.url = f"json://127.0.0.1:{port}/hook/SECRETTOKEN42"
    yield rx
    rx.release()
    await runner.cleanup()


def _settings(**overrides: Any) -> NotificationsConfig:
    return NotificationsConfig(**{"urls": ["json://placeholder"], "timeout_seconds": 5.0, **overrides})


def _router(rig: Rig, bus: EventBus, stats: SessionStats) -> tuple[SignalGenerator, SignalRouter]:
    """The production seam: generator -> router callback -> engine; the router publishes the
    execution and alert events the notifier reads."""
    spec = rig.pairs["EOS_AXS"]
    params = signal_params(SignalConfig(), PairConfig(pair_id="EOS_AXS", leg_a="EOS/USDT", leg_b="AXS/USDT",
                                                      hedge_ratio=1.1664))
    gen = SignalGenerator(params, symbol_a=spec.symbol_a, symbol_b=spec.symbol_b)
    rig.engine.events = bus  # as app/assemble.py wires them: lifecycle and journal publish too
    rig.journal.event_bus = bus
    router = SignalRouter(generators={"EOS_AXS": gen}, engine=rig.engine, stats=stats, history=None,  # type: ignore[arg-type]
                          events=bus)
    return gen, router


def _started(bus: EventBus) -> None:
    """What main.py publishes once every component has started (``TradingBot._announce``)."""
    bus.publish(EventKind.ALERT, {"alert": "started", "mode": "DEMO"})


def _leg_text(rig: Rig, symbol: str) -> str:
    """How a line must show a leg's fill, from the simulator's position (not from the journal)."""
    held = rig.sim_qty(symbol)
    return f"{'buy' if held > 0 else 'sell'} {abs(held).normalize():f} {symbol} @ "


# ----------------------------------------------------------------------------- pure formatting


def _execution(signal_type: str, status: str = "EXECUTED", **data: Any) -> Event:
    return Event(EventKind.EXECUTION, {"signal_id": "s1", "signal_type": signal_type, "status": status,
                                       "reason": "ok", "detail": "", "state_after": "FLAT", **data},
                 pair_id="ETH_SOL")


def test_each_trade_event_is_one_line_with_pair_side_z_quantities_and_pnl() -> None:
    legs = (LegFill("SOL/USDT:USDT", "buy", D("3.20"), D("142.125")), LegFill("ETH/USDT:USDT", "sell",
                                                                            D("0.150"), D("3012.5")))
    entry = format_event(_execution("ENTER_LONG_SPREAD"), TradeFacts(z=-2.314, legs=legs))
    assert entry is not None and entry.topic == "entry" and entry.severity is Severity.INFO
    assert entry.text == ("ENTRY LONG ETH_SOL | z -2.31 | buy 3.2 SOL/USDT:USDT @ 142.125, "
                          "sell 0.15 ETH/USDT:USDT @ 3012.5")
    short = format_event(_execution("ENTER_SHORT_SPREAD"), TradeFacts(z=2.5))
    assert short is not None and short.text == "ENTRY SHORT ETH_SOL | z +2.50"
    exit_ = format_event(_execution("EXIT"), TradeFacts(z=-0.1, legs=legs[:1], net_pnl=D("1.2345"), fees=D("0.4")))
    assert exit_ is not None and exit_.topic == "exit"
    assert exit_.text == "EXIT ETH_SOL | z -0.10 | buy 3.2 SOL/USDT:USDT @ 142.125 | PnL +1.23 USDT net (fees 0.40)"
    stop = format_event(_execution("STOP_LOSS"), TradeFacts(z=-4.2, net_pnl=D("-12.5")))
    assert stop is not None and stop.topic == "stop_loss" and stop.severity is Severity.WARNING
    assert stop.text == "STOP-LOSS ETH_SOL | z -4.20 | PnL -12.50 USDT net"
    for kind, topic in (("TIME_STOP", "time_stop"), ("FLATTEN", "flatten")):
        notice = format_event(_execution(kind), None)
        assert notice is not None and notice.topic == topic and "\n" not in notice.text


def test_problems_and_alerts_are_lines_and_refusals_and_halted_results_are_not() -> None:
    rolled = format_event(_execution("ENTER_LONG_SPREAD", "ROLLED_BACK", reason="one_leg_failed",
                                     detail="leg B refused: -2019"))
    assert rolled is not None and rolled.topic == "execution_problem" and rolled.severity is Severity.WARNING
    assert rolled.text == ("EXECUTION ROLLED_BACK ETH_SOL ENTER_LONG_SPREAD | one_leg_failed | leg B refused: -2019 "
                           "| pair now FLAT")
    assert format_event(_execution("ENTER_LONG_SPREAD", "REFUSED")) is None
    assert format_event(_execution("EXIT", "HALTED")) is None  # the lifecycle's halted alert says it
    halted = format_event(Event(EventKind.ALERT, {"alert": "halted", "from_state": "ENTERING", "reason": "leg B lost",
                                                  "qty_a": "-1.50", "qty_b": "0"},
                                pair_id="ETH_SOL", severity=Severity.CRITICAL))
    assert halted is not None and halted.severity is Severity.CRITICAL
    assert halted.text == "HALTED ETH_SOL (was ENTERING) | leg B lost | held: -1.5 A, 0 B | needs an operator"
    lost = format_event(Event(EventKind.ALERT, {"alert": "feed_lost", "policy": "hold"}, severity=Severity.CRITICAL))
    assert lost is not None and lost.text.startswith("FEED LOST: no quotes from the exchange | on_feed_loss=hold")
    daily = format_event(Event(EventKind.ALERT, {"alert": "daily_loss_stop", "detail": "loss 101 >= 100"},
                               pair_id="ETH_SOL", severity=Severity.CRITICAL))
    assert daily is not None and daily.text.startswith("DAILY-LOSS STOP") and "loss 101 >= 100" in daily.text
    assert topic_of(Event(EventKind.ALERT, {"alert": "stopping"})) is None
    assert topic_of(Event(EventKind.ORDER, {"status": "FILLED"})) is None


def test_start_and_stop_summaries() -> None:
    start = format_start(StartFacts("PAPER", ("A_B", "C_D"), D("10000")))
    assert start.text == "STARTED pairs-bot | mode PAPER | 2 pairs: A_B, C_D | balance 10,000.00 USDT"
    stop = format_stop(StopFacts("signal SIGINT", D("-3.456"), 2, 4,
                                 (OpenPosition("A_B", "LONG_SPREAD", D("-10"), D("5.50")),), D("9996.54")),
                       {"entry": 2})
    assert stop.severity is Severity.WARNING  # something is still open
    assert stop.text == ("STOPPED pairs-bot (signal SIGINT) | net PnL -3.46 USDT over 2 round trips | 4 trades executed"
                         " | open positions: A_B LONG_SPREAD (A -10, B 5.5) | balance 9,996.54 USDT"
                         " | RATE LIMIT: 2 notifications not sent (entry 2)")
    flat = format_stop(StopFacts("duration 10s reached", D("1"), 1, 2))
    assert flat.severity is Severity.INFO and "open positions: none" in flat.text


def test_rate_limit_is_a_sliding_window() -> None:
    limit = RateLimit(2, 60.0)
    assert limit.try_acquire(0.0) and limit.try_acquire(10.0)
    assert not limit.try_acquire(59.0) and limit.next_free(59.0) == 60.0
    assert limit.try_acquire(60.0) and not limit.try_acquire(69.0)
    assert limit.try_acquire(70.0)
    assert format_suppressed({"exit": 1, "entry": 3}, None) == "RATE LIMIT: 4 notifications not sent (entry 3, exit 1)"


def test_log_lines_show_the_service_with_its_secrets_masked() -> None:
    import apprise

    url = "tgram://123456789:ABCdefGHIjklMNOpqrSTUvwx/987654"
    label = service_label(url, apprise.Apprise.instantiate(url))
    assert label.startswith("tgram://") and "ABCdef" not in label and "987654" not in label
    assert service_label("json://u:pw@127.0.0.1:9/hook/TOKEN99", None) == "json://..."
    assert "TOKEN99" not in scrub("sending to 127.0.0.1:9/hook/TOKEN99 failed", "json://127.0.0.1:9/hook/TOKEN99")


# ----------------------------------------------------------------------------- configuration

SHIPPED_CONFIG = read_json(PROJECT_DIR / "config.json")


@pytest.mark.parametrize("url,shown", [("foo://SECRETPART/x", "foo://..."), ("https://hooks.example/SECRETPART", "https://..."),
                                        ("SECRETPART", "<not a URL>"), ("env:9BAD", "'env:9BAD'")])
def test_a_bad_notification_url_is_one_config_line_exit_2_that_shows_no_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, shown: str) -> None:
    config = copy.deepcopy(SHIPPED_CONFIG)
    config["notifications"] = {"urls": ["json://127.0.0.1:9/ok", url]}
    path = write_json(tmp_path / "config.json", config)
    code = bot_main.main(["check-config", "--config", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == [err] and err.startswith(f"config error: {path}: notifications.urls[1] = {shown}: "), err
    assert "SECRETPART" not in err


def test_an_unset_env_url_and_unknown_keys_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("PB_NOTIFY_TEST_URL", raising=False)
    config = copy.deepcopy(SHIPPED_CONFIG)
    config["notifications"] = {"urls": ["env:PB_NOTIFY_TEST_URL"]}
    path = write_json(tmp_path / "config.json", config)
    assert bot_main.main(["--config", str(path), "--pairs", str(PROJECT_DIR / "pairs_config.json"),
                          "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"config error: {path}: notifications.urls[0] = 'env:PB_NOTIFY_TEST_URL': expected the variable "
                   "PB_NOTIFY_TEST_URL set (environment or .env) to an apprise URL")
    assert not (tmp_path / "logs").exists()
    config["notifications"] = {"urls": [], "max_per_minut": 3}
    write_json(path, config)
    assert bot_main.main(["check-config", "--config", str(path)]) == 2
    assert "notifications.max_per_minut" in capsys.readouterr().err


# ----------------------------------------------------------------------------- end to end


async def test_entries_exits_stop_losses_and_summaries_arrive_with_the_right_text(make_rig, receiver) -> None:
    rig = await make_rig()
    bus, stats = EventBus(), SessionStats(mode="DEMO")
    gen, _router_ = _router(rig, bus, stats)
    # A stop budget this test cannot exhaust under load: it checks the content; the budget has its own test.
    notifier = Notifier(settings=_settings(stop_timeout_seconds=20.0), urls=[receiver.url], events=bus,
                        facts=PipelineFacts(rig.engine, rig.journal, stats, "DEMO"))
    await notifier.start()
    spec = rig.pairs["EOS_AXS"]
    try:
        _started(bus)
        balance = rig.engine.balance_at_start.total
        await receiver.wait_for(lambda m: len(m) == 1)
        assert receiver.messages[0] == f"STARTED pairs-bot | mode DEMO | 1 pair: EOS_AXS | balance {balance:,.2f} USDT"
        rig.sim.resume()

        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        legs_b, legs_a = _leg_text(rig, spec.symbol_b), _leg_text(rig, spec.symbol_a)
        assert legs_b.startswith("buy") and legs_a.startswith("sell")  # long the spread: buy Y, sell X
        entry = (await receiver.wait_for(lambda m: len(m) == 2))[1]
        assert entry.startswith("ENTRY LONG EOS_AXS | z -2.50 | ") and legs_b in entry and legs_a in entry, entry

        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.EXIT))
        exit_ = (await receiver.wait_for(lambda m: len(m) == 3))[2]
        trip = rig.journal.round_trips("EOS_AXS")[-1]
        assert exit_.startswith("EXIT EOS_AXS | z +0.00 | ") and legs_b.replace("buy", "sell") in exit_
        assert f"PnL {trip.net_pnl:+,.2f} USDT net (fees {trip.fees:,.2f})" in exit_, exit_

        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD))
        await receiver.wait_for(lambda m: len(m) == 4)
        assert receiver.messages[3].startswith("ENTRY SHORT EOS_AXS | z +2.50 | ")
        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.STOP_LOSS))
        stop_loss = (await receiver.wait_for(lambda m: len(m) == 5))[4]
        trip = rig.journal.round_trips("EOS_AXS")[-1]
        assert stop_loss.startswith("STOP-LOSS EOS_AXS | z +0.00 | ")
        assert f"PnL {trip.net_pnl:+,.2f} USDT net" in stop_loss, stop_loss
        assert receiver.bodies[4]["type"] == "warning" and receiver.bodies[4]["title"] == "pairs-bot: stop loss"

        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))  # left open at the stop
        await receiver.wait_for(lambda m: len(m) == 6)
        bus.publish(EventKind.ALERT, {"alert": "stopping", "reason": "duration 5s reached"})
    finally:
        await asyncio.wait_for(notifier.stop(), TEST_TIMEOUT_S)
    summary = receiver.messages[-1]
    net = sum((t.net_pnl for t in rig.journal.round_trips() if t.net_pnl is not None), D(0))
    held = rig.engine.positions["EOS_AXS"]
    assert summary == (f"STOPPED pairs-bot (duration 5s reached) | net PnL {net:+,.2f} USDT over 2 round trips | "
                       f"5 trades executed | open positions: EOS_AXS LONG_SPREAD (A {held.qty_a.normalize():f}, "
                       f"B {held.qty_b.normalize():f}) | balance {rig.engine.balance.total:,.2f} USDT")
    assert len(receiver.messages) == 7 and notifier.stats()["sent"] == 7


async def test_halted_blocked_feed_loss_and_the_daily_loss_stop_are_notified(make_rig, receiver) -> None:
    rig = await make_rig(risk=RiskConfig(max_open_pairs=5, max_gross_exposure_usdt=50_000, max_daily_loss_usdt=0.01))
    bus, stats = EventBus(), SessionStats(mode="DEMO")
    gen, router = _router(rig, bus, stats)
    notifier = Notifier(settings=_settings(min_severity="warning"), urls=[receiver.url], events=bus,
                        facts=PipelineFacts(rig.engine, rig.journal, stats, "DEMO"))
    await notifier.start()
    try:
        rig.sim.resume()
        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.EXIT))
        assert rig.journal.round_trips()[-1].net_pnl < D("-0.01")  # fees alone cross the daily limit
        assert not await gen.dispatch(rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD))
        assert not await gen.dispatch(rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD))  # once a day
        daily = (await receiver.wait_for(lambda m: len(m) == 1))[0]
        assert daily.startswith("DAILY-LOSS STOP: no new entries for the rest of the UTC day (refused on EOS_AXS)")
        router.on_feed_change(True)
        router.on_feed_change(False)  # info: below min_severity warning, not sent
        rig.engine.lifecycle.apply("EOS_AXS", PairEvent.HALT, PairState.HALTED, qty_a=D("-12"),
                                   reason="rollback failed: leg A still open")
        messages = await receiver.wait_for(lambda m: len(m) == 3)
        assert messages[1] == ("FEED LOST: no quotes from the exchange | on_feed_loss=hold: open pairs hold, "
                               "no exit or stop until quotes return")
        assert messages[2] == ("HALTED EOS_AXS (was FLAT) | rollback failed: leg A still open | held: -12 A, 0 B | "
                               "needs an operator")
        rig.engine.resume("EOS_AXS")
        rig.engine.lifecycle.apply("EOS_AXS", PairEvent.BLOCK, PairState.BLOCKED, reason="exchange holds 5 EOS")
        blocked = (await receiver.wait_for(lambda m: len(m) == 4))[3]
        assert blocked.startswith("BLOCKED EOS_AXS (was RESOLVING) | exchange holds 5 EOS")
        assert all(b["type"] == "failure" for b in receiver.bodies)  # critical
    finally:
        await asyncio.wait_for(notifier.stop(), TEST_TIMEOUT_S)
    assert "FEED BACK" not in " ".join(receiver.messages) and notifier.stats()["filtered"] >= 3  # entry, exit, back


async def test_the_rate_limit_suppresses_and_then_says_what_it_held_back(receiver) -> None:
    """The limiter's clock is the test's: nothing but the test moves it, so what is suppressed
    does not depend on how fast the sends are."""
    bus, now = EventBus(), [1_000.0]
    notifier = Notifier(settings=_settings(max_per_minute=2), urls=[receiver.url], events=bus,
                        facts=PipelineFacts(None, None, None, "DEMO"), clock=lambda: now[0])
    await notifier.start()
    try:
        for i in range(5):
            bus.publish(EventKind.ALERT, {"alert": "halted", "from_state": "FLAT", "reason": f"r{i}", "qty_a": "0",
                                          "qty_b": "0"}, pair_id=f"P{i}", severity=Severity.CRITICAL)
        bus.publish(EventKind.ALERT, {"alert": "feed_lost", "policy": "hold"}, severity=Severity.CRITICAL)
        await receiver.wait_for(lambda m: len(m) == 2)
        async with asyncio.timeout(TEST_TIMEOUT_S):
            while notifier.counters.suppressed < 4:
                assert len(receiver.messages) <= 2  # never more than the limit inside the window
                await asyncio.sleep(0.01)
        assert [m.split(" | ")[1] for m in receiver.messages] == ["r0", "r1"]
        now[0] += 60.0  # the window has room again; no further event: the summary goes out by itself
        messages = await receiver.wait_for(lambda m: len(m) == 3)
        assert messages[2] == "RATE LIMIT: 4 notifications not sent in the last 60 s (halted 3, feed_lost 1)"
        bus.publish(EventKind.ALERT, {"alert": "feed_lost", "policy": "hold"}, severity=Severity.CRITICAL)
        await receiver.wait_for(lambda m: len(m) == 4)
        assert receiver.messages[3].startswith("FEED LOST") and notifier.counters.suppressed == 4
    finally:
        await asyncio.wait_for(notifier.stop(), TEST_TIMEOUT_S)


async def test_a_hung_receiver_never_delays_an_execution_and_the_stop_is_bounded(make_rig, receiver) -> None:
    rig = await make_rig()
    bus, stats = EventBus(), SessionStats(mode="DEMO")
    gen, router = _router(rig, bus, stats)
    notifier = Notifier(settings=_settings(timeout_seconds=30.0, stop_timeout_seconds=1.0), urls=[receiver.url],
                        events=bus, facts=PipelineFacts(rig.engine, rig.journal, stats, "DEMO"))
    await notifier.start()
    spec = rig.pairs["EOS_AXS"]
    try:
        receiver.hang = True
        router.on_feed_change(True)  # the first notification: its request hangs at the receiver
        await asyncio.wait_for(receiver.arrived.wait(), TEST_TIMEOUT_S)
        rig.sim.resume()
        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        # The execution is done, both legs on the exchange, while the notification still hangs:
        # the receiver holds the request and the notifier's send has not come back (no outcome).
        assert receiver.open_requests == 1 and receiver.bodies == []
        assert notifier.counters == NotifierCounters(), notifier.counters
        qty_a, qty_b = rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)
        position = rig.engine.positions["EOS_AXS"]
        assert qty_a < 0 < qty_b and (position.qty_a, position.qty_b) == (qty_a, qty_b)
        assert rig.engine.pair_state("EOS_AXS") is PairState.LONG_SPREAD
        receiver.release()
        messages = await receiver.wait_for(lambda m: len(m) == 2)
        assert messages[0].startswith("FEED LOST") and messages[1].startswith("ENTRY LONG EOS_AXS")
        assert _leg_text(rig, spec.symbol_b) in messages[1]

        receiver.hang, receiver.arrived = True, asyncio.Event()
        _started(bus)  # the start summary hangs; the stop still returns, its summary abandoned
        await asyncio.wait_for(receiver.arrived.wait(), TEST_TIMEOUT_S)
        assert await gen.dispatch(rig.signal("EOS_AXS", SignalType.EXIT))
    finally:
        await asyncio.wait_for(notifier.stop(), TEST_TIMEOUT_S)
    assert receiver.open_requests >= 1 and len(receiver.bodies) == 2  # stop did not wait for the receiver
    assert notifier.counters.timed_out >= 1


async def test_a_receiver_that_refuses_is_one_warning_with_the_service_masked(receiver) -> None:
    """A dead receiver is one WARNING line per run of failures, not one per event; one INFO line
    says when it works again."""
    from loguru import logger

    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), level="INFO")
    counters = NotifierCounters()
    try:
        sender = WebhookSender(receiver.url, timeout_seconds=5.0)
        receiver.refuse = True
        assert not await sender.send("t", "body 1", Severity.INFO, counters=counters)
        assert not await sender.send("t", "body 2", Severity.INFO, counters=counters)
        assert counters.failed == 2 and len(lines) == 1, lines
        receiver.refuse = False
        assert await sender.send("t", "body 3", Severity.INFO, counters=counters)
    finally:
        logger.remove(sink)
    level, line = lines[0]
    assert level == "WARNING" and line.startswith(f"notification to {sender.label} failed: ") and "500" in line
    assert "SECRETTOKEN42" not in line
    assert lines[1:] == [("INFO", f"notifications to {sender.label} delivered again after 2 failed")]
    assert receiver.messages == ["body 3"]


async def test_the_demo_sends_its_start_and_stop_summaries_before_it_exits(receiver, tmp_path: Path) -> None:
    config = copy.deepcopy(SHIPPED_CONFIG)
    config["notifications"] = {"urls": ["env:PB_NOTIFY_HOOK"], "events": ["start", "stop"]}
    write_json(tmp_path / "config.json", config)
    proc = await asyncio.create_subprocess_exec(
        PYTHON, str(PROJECT_DIR / "main.py"), "demo", "--config", str(tmp_path / "config.json"), "--duration", "6",
        "--speed", "600", cwd=tmp_path, env=clean_env(PB_NOTIFY_HOOK=receiver.url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 150)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode() + err.decode()
    assert proc.returncode == 0, text[-3000:]
    messages = receiver.messages  # all in by the time the process has exited
    assert len(messages) == 2, messages
    assert messages[0].startswith("STARTED pairs-bot | mode DEMO | ")
    assert messages[1].startswith("STOPPED pairs-bot (duration 6s reached) | net PnL ")
    session = json.loads(next((tmp_path / "logs").glob("session-*.json")).read_text())
    assert f"{session['trades_executed']} trade" in messages[1]
    logs = " ".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "notifications on: 1 service(s): json://127.0.0.1:" in text + logs
    assert "SECRETTOKEN42" not in text + logs
