"""Order outcomes are facts, never guesses (issue 8): unknown results, late orders, late fills.

Each test drives the real engine through real ccxt against the simulator (``tests/engine_rig.py``)
and asserts three things: the exchange's positions, each order's journal history, and that
nothing filled twice (no clientOrderId twice in the simulator's order log, no second attempt of a
logical order). Horizons are short here (recvWindow 500 ms + 100 ms margin) so that "not found
after the horizon" is reached in well under a second.

How an outcome is made unknown: the order's response is lost (the simulator drops the connection
after placing it), and from that moment every REST request fails with HTTP 503 until the test
lifts it, so the resolver's lookups cannot tell either, for longer than its budget.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from core.errors import PairsBotError
from core.types import PairState, SignalType
from execution.journal import Journal, JournalStorageError, OrderStatus
from execution.orders import Outcome, OutcomeUnknownError, PlacedOrder
from execution.results import ExecutionStatus, Reason
from tests.engine_rig import (D, EOS_AXS, FAST_EXEC, TEST_TIMEOUT_S, Pair, Rig, assert_journal_matches_exchange,
                              assert_round_trip_pnl, entry_plan, history, wait_for_state)

DOT_EOS = Pair("DOT_EOS", "DOT/USDT", "EOS/USDT", D("1.9"), D(1000))  # EOS is a leg of both pairs


def lost_seed(wanted: list[bool]) -> int:
    """A fault seed whose lost-response stream starts with ``wanted`` (True = response lost)."""
    for seed in range(10_000):
        rng = random.Random(f"{seed}:lost")
        if [rng.random() < 0.5 for _ in wanted] == wanted:
            return seed
    raise AssertionError("no seed found")


def unknown_then_unreachable(rig: Rig) -> None:
    """From the first unknown outcome on, the exchange answers nothing (every request 503)."""
    rig.adapter.on_unknown = lambda n: rig.sim.set_faults(http_error_probability=1.0, http_error_status=503)


def reachable_again(rig: Rig) -> None:
    rig.sim.set_faults(lost_response_probability=0.0, http_error_probability=0.0)


def assert_nothing_filled_twice(rig: Rig) -> None:
    """No clientOrderId twice on the exchange, and no logical order (signal, leg, purpose) filled
    under two attempts' ids while the first one's outcome was unknown."""
    log = rig.sim_orders("pb-")
    assert not [cid for cid, n in Counter(o["clientOrderId"] for o in log).items() if n > 1]
    for order in rig.journal.orders_for_pair("EOS_AXS") + rig.journal.orders_for_pair("DOT_EOS"):
        if order.attempt > 0:
            earlier = rig.journal.get_order(order.client_order_id[:-1] + str(order.attempt - 1))
            assert earlier is not None and earlier.status is not OrderStatus.UNKNOWN


async def test_an_inconclusive_close_is_never_resent_under_a_new_id(make_rig) -> None:
    """Scenario 1. An exit leg's response is lost and its lookups fail: the close loop must stop
    (no attempt 1 under a new clientOrderId), the pair goes RESOLVING (not HALTED, the account
    may well be flat), the other pair on the shared symbol is left alone, and the resolver finds
    the close once the exchange answers: the pair is FLAT with exactly one exit order per leg."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, DOT_EOS), hooked=True)
        eos = rig.pairs["EOS_AXS"].symbol_a
        for pair_id in ("EOS_AXS", "DOT_EOS"):
            entry = await rig.engine.execute_signal(rig.signal(pair_id, SignalType.ENTER_LONG_SPREAD))
            assert entry.status is ExecutionStatus.EXECUTED
        other = rig.engine.positions["DOT_EOS"]
        rig.sim.set_faults(lost_response_probability=0.5, seed=lost_seed([True, False]))
        unknown_then_unreachable(rig)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert (result.status, result.reason) == (ExecutionStatus.RESOLVING, Reason.OUTCOME_UNKNOWN)
        assert rig.engine.pair_state("EOS_AXS") is PairState.RESOLVING
        assert rig.engine.counters.halts == 0
        exits = [o for o in rig.journal.orders_for_signal(result.signal_id)]
        assert sorted(o.client_order_id[-3:] for o in exits) == ["aX0", "bX0"]  # no attempt 1
        assert OrderStatus.UNKNOWN in {o.status for o in exits}
        assert rig.engine.positions["DOT_EOS"] == other  # the shared symbol's other pair: untouched
        reachable_again(rig)
        await wait_for_state(rig, "EOS_AXS", PairState.FLAT)
        assert [o["clientOrderId"][-3:] for o in rig.sim_orders(f"pb-{result.signal_id}")] in (
            ["aX0", "bX0"], ["bX0", "aX0"])
        for order in rig.journal.orders_for_signal(result.signal_id):
            assert history(rig, order.client_order_id)[-1] is OrderStatus.FILLED
        dot_eos = rig.engine.positions["DOT_EOS"]
        assert rig.sim_qty(eos) == dot_eos.qty_b and dot_eos.state is PairState.LONG_SPREAD
        assert_nothing_filled_twice(rig)
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1


async def test_an_entry_with_one_unconfirmed_leg_does_not_roll_back_the_known_leg(make_rig) -> None:
    """Scenario 2, one-leg variant. One entry leg fills and is known; the other's outcome is
    unknown. Rolling the known leg back (the old behaviour) leaves the unknown one naked if it
    did fill. Now nothing more is sent: the pair is RESOLVING, and once the exchange answers the
    unknown leg is found filled and the pair is restored in position, both legs hedged."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(hooked=True)
        spec = rig.pairs["EOS_AXS"]
        rig.sim.set_faults(lost_response_probability=0.5, seed=lost_seed([True, False]))
        unknown_then_unreachable(rig)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.reason) == (ExecutionStatus.RESOLVING, Reason.OUTCOME_UNKNOWN)
        statuses = sorted(o.status.value for o in rig.journal.orders_for_signal(result.signal_id))
        assert statuses in (["FILLED", "UNKNOWN"], ["INTENT", "UNKNOWN"], ["UNKNOWN", "UNKNOWN"])
        assert not [o for o in rig.journal.orders_for_pair("EOS_AXS") if o.purpose.value == "ROLLBACK"]
        want_a, want_b = entry_plan(rig, result.signal_id)
        assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (-want_a, want_b)  # both landed
        reachable_again(rig)
        await wait_for_state(rig, "EOS_AXS", PairState.LONG_SPREAD)
        position = rig.engine.positions["EOS_AXS"]
        assert (position.qty_a, position.qty_b) == (-want_a, want_b)
        assert position.entry_signal_id == result.signal_id and position.round_trip_id is not None
        assert len(rig.sim_orders("pb-")) == 2
        assert_nothing_filled_twice(rig)
        assert_journal_matches_exchange(rig)
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED
        assert await assert_round_trip_pnl(rig) == 1


async def test_an_exit_waits_for_the_resolution_of_its_pair_then_runs(make_rig) -> None:
    """While a pair is RESOLVING its exit waits (bounded) instead of trading on a guess; when the
    resolver restores the position the exit goes out and closes exactly what is held."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(hooked=True)
        spec = rig.pairs["EOS_AXS"]
        rig.sim.set_faults(lost_response_probability=1.0)
        unknown_then_unreachable(rig)
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD))
        assert entry.status is ExecutionStatus.RESOLVING
        waiting = asyncio.create_task(rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT)))
        await asyncio.sleep(0.3)
        assert not waiting.done() and not rig.sim_orders(f"pb-{entry.signal_id[:0]}t2")
        reachable_again(rig)
        exit_ = await waiting
        assert exit_.status is ExecutionStatus.EXECUTED, exit_
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert_nothing_filled_twice(rig)
        assert_journal_matches_exchange(rig)


def test_an_unknown_outcome_has_no_filled_quantity() -> None:
    """Nothing above the placer can turn unknown into zero: asking an unknown order's fill raises."""
    record: Any = type("R", (), {"client_order_id": "pb-x-aE0", "status": OrderStatus.UNKNOWN,
                                 "filled_qty": Decimal(0)})()
    placed = PlacedOrder(record, None, Outcome.UNKNOWN)
    try:
        placed.filled
    except OutcomeUnknownError as exc:
        assert "pb-x-aE0" in str(exc) and isinstance(exc, PairsBotError)
    else:
        raise AssertionError("an unknown outcome gave a filled quantity")
    assert PlacedOrder(record, None, Outcome.NONE).filled == 0


class FailingJournal(Journal):
    """The real journal, whose write of one order's final state fails as a full disk would."""

    fail_cid_suffix: str | None = None
    failures: int = 0

    def update_order(self, client_order_id: str, **kwargs: Any) -> Any:
        if self.fail_cid_suffix and client_order_id.endswith(self.fail_cid_suffix) \
                and kwargs.get("status") is OrderStatus.FILLED:
            self.failures += 1
            raise JournalStorageError(f"journal {self.path}: write failed: database or disk is full")
        return super().update_order(client_order_id, **kwargs)


async def test_a_journal_failure_during_an_entry_stops_everything_safely(make_rig, tmp_path) -> None:
    """Scenario 5. The journal fails while recording leg a's fill. The other leg's task is not
    left running unawaited: it finishes (its fill recorded) before the engine answers. The pair
    is not reported FLAT and tradeable; every new entry on any pair is refused; the bot is told to
    stop (exit code 1). A restart on the repaired journal finds leg a by its clientOrderId."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        path = tmp_path / "failing.sqlite"
        rig = await make_rig(pairs=(EOS_AXS, DOT_EOS), journal_cls=FailingJournal, journal_path=path)
        fatal: list[BaseException] = []
        rig.engine.on_fatal = fatal.append
        rig.journal.fail_cid_suffix = "-aE0"  # type: ignore[attr-defined]
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.reason) == (ExecutionStatus.FAILED, Reason.JOURNAL_ERROR)
        assert len(fatal) == 1 and isinstance(fatal[0], JournalStorageError)
        assert rig.engine.pair_state("EOS_AXS") is not PairState.FLAT
        legs = {o.leg.value: o for o in rig.journal.orders_for_signal(result.signal_id)}
        assert legs["b"].status is OrderStatus.FILLED and rig.journal.fills_for_order(legs["b"].client_order_id)
        assert legs["a"].status is OrderStatus.INTENT  # its FILLED write is what failed
        again = await rig.engine.execute_signal(rig.signal("DOT_EOS", SignalType.ENTER_LONG_SPREAD))
        assert (again.status, again.reason) == (ExecutionStatus.REFUSED, Reason.ENGINE_STOPPING)
        want_a, want_b = entry_plan(rig, result.signal_id)
        spec = rig.pairs["EOS_AXS"]
        assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (-want_a, want_b)
        await rig.engine.stop()
        rig.journal.close()
        restarted = await make_rig(pairs=(EOS_AXS, DOT_EOS), journal_path=path, sim=rig.sim)
        position = restarted.engine.positions["EOS_AXS"]
        assert (position.state, position.qty_a, position.qty_b) == (PairState.LONG_SPREAD, -want_a, want_b)
        assert [o.status for o in restarted.journal.orders_for_signal(result.signal_id)] == [OrderStatus.FILLED] * 2
        assert_journal_matches_exchange(restarted)


# ----------------------------------------------------------------------------- Binance semantics (scenario 6)


def clear_after_first_unknown(rig: Rig, **cleared: Any) -> None:
    """The fault hits the first request(s) only: the resend (if any) goes through clean."""
    rig.adapter.on_unknown = lambda n: rig.sim.set_faults(**cleared)


@pytest.mark.parametrize(("faults", "cleared", "landed"), [
    # lost response, applied 150 ms later (within its recvWindow), after the first lookup said -2013
    ({"lands_late_probability": 1.0, "lands_late_ms": 150}, {"lands_late_probability": 0.0}, True),
    # lands 900 ms later: past timestamp + recvWindow (500 ms), so Binance would refuse it: never
    ({"lands_late_probability": 1.0, "lands_late_ms": 900}, {"lands_late_probability": 0.0}, False),
    ({"unknown_503_probability": 1.0, "unknown_503_applied_probability": 1.0}, {"unknown_503_probability": 0.0},
     True),
    ({"unknown_503_probability": 1.0, "unknown_503_applied_probability": 0.0}, {"unknown_503_probability": 0.0},
     False),
    ({"timeout_1007_probability": 1.0, "timeout_1007_applied_probability": 1.0}, {"timeout_1007_probability": 0.0},
     True),
    ({"timeout_1007_probability": 1.0, "timeout_1007_applied_probability": 0.0}, {"timeout_1007_probability": 0.0},
     False),
], ids=["lands_late", "lands_too_late", "503_applied", "503_not_applied", "1007_applied", "1007_not_applied"])
async def test_unknown_outcomes_of_binance_resolve_to_one_fill(make_rig, faults: dict[str, Any],
                                                               cleared: dict[str, Any], landed: bool) -> None:
    """Each way Binance leaves an order's outcome unknown, on an entry's first leg to arrive:
    the order is either found (it landed, possibly after a "not found") and adopted, or confirmed
    absent only by a lookup sent after its horizon, and then resent under the SAME id. Either way
    each leg fills exactly once and the entry executes."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(hooked=True)
        spec = rig.pairs["EOS_AXS"]
        rig.sim.set_faults(**faults)
        clear_after_first_unknown(rig, **cleared)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert result.status is ExecutionStatus.EXECUTED, result
        want_a, want_b = entry_plan(rig, result.signal_id)
        assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (-want_a, want_b)
        histories = [history(rig, o.client_order_id) for o in rig.journal.orders_for_signal(result.signal_id)]
        if landed:
            assert [OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.FILLED] in histories
            assert rig.engine.counters.ghost_resends == 0
        else:
            assert [OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.NOT_FOUND, OrderStatus.RESENDING,
                    OrderStatus.FILLED] in histories
            resent = next(o for o in rig.journal.orders_for_signal(result.signal_id)
                          if OrderStatus.RESENDING in history(rig, o.client_order_id))
            not_found = next(e for e in rig.journal.order_events(resent.client_order_id)
                             if e.to_status is OrderStatus.NOT_FOUND)
            assert not_found.ts_ms > resent.horizon_ms  # the "none" came from a lookup past the horizon
        if "lands_late_ms" in faults and faults["lands_late_ms"] < 500:
            assert rig.engine.resolver.counters.not_found_before_horizon >= 1  # -2013 first, found later
        if not landed and "lands_late_ms" in faults:
            await asyncio.sleep(1.0)  # give the refused late order every chance to appear
            assert rig.sim.stats()["faults_injected"]["late_order_expired"] >= 1  # one per leg it hit
        assert sorted(o["clientOrderId"] for o in rig.sim_orders("pb-")) == sorted(
            f"pb-{result.signal_id}-{leg}E0" for leg in "ab")
        assert_nothing_filled_twice(rig)
        assert_journal_matches_exchange(rig)


# ----------------------------------------------------------------------------- crash during a resend (scenario 3)


class Crash(BaseException):
    """The process died here: nothing after this point runs."""


async def test_a_crash_while_resending_is_resolved_after_restart(make_rig, tmp_path) -> None:
    """Scenario 3. The first request's outcome is unknown and it never landed; after its horizon
    the order is resent under the same id, the exchange fills it, and the process dies before
    the answer is read. The journal says RESENDING, an open status: the restart looks the order
    up, finds the fill, and restores the pair. (As NOT_FOUND, a closed status, it was never
    looked up again: the journal explained 0, the exchange held the leg, the pair was blocked.)"""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        path = tmp_path / "crash.sqlite"
        rig = await make_rig(hooked=True, journal_path=path)
        spec = rig.pairs["EOS_AXS"]
        rig.sim.set_faults(unknown_503_probability=1.0, unknown_503_applied_probability=0.0)
        clear_after_first_unknown(rig, unknown_503_probability=0.0)
        resent: list[str] = []
        inner_create = rig.adapter.create_order

        async def create_then_die_on_a_resend(**kwargs: Any) -> Any:
            state = await inner_create(**kwargs)
            record = rig.journal.get_order(kwargs["client_order_id"])
            if record is not None and record.status is OrderStatus.RESENDING:
                resent.append(record.client_order_id)
                raise Crash("the process died with the resend's answer unread")
            return state

        rig.adapter.create_order = create_then_die_on_a_resend
        signal = rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)
        try:
            await rig.engine.execute_signal(signal)
        except Crash:
            pass
        else:
            raise AssertionError("the resend never went out")
        (cid,) = resent
        assert rig.journal.get_order(cid).status is OrderStatus.RESENDING  # as the dead process left it
        want_a, want_b = entry_plan(rig, signal.signal_id)
        assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (-want_a, want_b)
        rig.journal.close()
        restarted = await make_rig(journal_path=path, sim=rig.sim)
        assert restarted.engine.blocked == {}
        assert history(restarted, cid)[-2:] == [OrderStatus.RESENDING, OrderStatus.FILLED]
        position = restarted.engine.positions["EOS_AXS"]
        assert (position.state, position.qty_a, position.qty_b) == (PairState.LONG_SPREAD, -want_a, want_b)
        assert [o["clientOrderId"] for o in rig.sim_orders("pb-")].count(cid) == 1
        assert_journal_matches_exchange(restarted)


# ----------------------------------------------------------------------------- late fills (scenario 4)


async def test_late_fills_reprice_the_closed_round_trip_and_the_daily_loss(make_rig) -> None:
    """The exit's trades lag its orders by longer than the engine waits for them: the round trip
    is closed on incomplete fills (its booked PnL is wrong). When reconciliation records the late
    fills, the trip is repriced from all of them, an event says so, and the daily-loss figure
    (which reads the stored PnL) follows."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=FAST_EXEC.model_copy(update={"fill_wait_seconds": 0.1}))
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed
        rig.sim.set_faults(trade_lag_ms=1500)
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.executed
        (trip,) = rig.journal.round_trips()
        booked = trip.net_pnl
        exits = rig.journal.orders_for_signal(exit_.signal_id)
        assert all(o.status is OrderStatus.FILLED for o in exits)
        assert not any(rig.journal.fills_for_order(o.client_order_id) for o in exits)  # the trades lag
        assert rig.engine.counters.fill_fetch_failures >= 2
        await asyncio.sleep(1.6)
        rig.sim.set_faults(trade_lag_ms=0)
        async with rig.engine._lock:
            await rig.engine.reconciler.run(startup=False)
        (repriced,) = rig.journal.round_trips()
        assert repriced.net_pnl != booked
        assert rig.journal.realized_pnl_since(0) == repriced.net_pnl
        events = rig.journal.events("round_trip_repriced")
        assert events and events[-1]["detail"]["net_after"] == format(repriced.net_pnl, "f")
        assert events[0]["detail"]["net_before"] == format(booked, "f")
        assert await assert_round_trip_pnl(rig) == 1  # equal to its fills and the exchange's trades, 1e-8
