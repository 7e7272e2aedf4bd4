"""ExecutionEngine safety protocols P1-P5, risk checks and PnL, against the real simulator.

Every test runs the engine the way ``app/assemble.py`` builds it: a ``CcxtExchange`` (real ccxt)
pointed at an in-process ``SimulatorServer`` on 127.0.0.1 port 0, a fresh demo ``Journal``,
``engine.start()`` (markets, leverage, margin mode, startup reconciliation). Nothing is mocked.
The replay is paused right after start, so books and prices stay fixed, and signals are built
from the simulator's current book.

How each branch is forced, deterministically:

- P2 partial fills by *liquidity*: with ``FillConfig(depth_levels=0)`` a market order fills at
  most the size shown at the top of the book and the rest EXPIRES, and a paused book is not
  consumed by fills. Sizing a leg at 1.5x / 2.5x the top size therefore gives an exact partial
  fill, an exact top-up, and an exact trim. The partial-fill fault knob (probability 1) is used
  on top for an invariant test over several seeds.
- P3 ghosts: ``lost_response_probability=1`` (order placed, connection dropped) and
  ``inject_http_errors`` (request refused before the handler: not placed). Where a fault must hit
  one precise request, ``HookedAdapter`` (below) injects it from the test right before that
  request; the request itself still goes through ccxt to the simulator.
- P5 rollbacks by a *seeded* reject fault: the simulator draws ``random.Random(f"{seed}:reject")``
  once per new order, in arrival order. ``_seed_for`` picks the seed whose draws reject exactly
  one of the two entry orders and then accept (or refuse) the rollback orders. Which leg comes
  first does not matter: either way exactly one leg fails, and the test reads which one from
  the journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import pytest

from core.types import PairState, SignalType
from execution.journal import OrderPurpose, OrderStatus
from execution.journal_models import OrderType
from execution.orders import OrderRequest
from execution.results import ExecutionStatus, PairSpec, Reason
from simulator.config import FillConfig
from tests.engine_rig import (
    BTC_ETH, D, EOS_AXS, FAST_EXEC, REJECT, THIN_BOOK, TEST_TIMEOUT_S, WIDE_RISK, ZERO, Pair, Rig, _seed_for,
    assert_journal_matches_exchange, assert_round_trip_pnl, entry_plan, hedge_excess, history, wait_for_state)


# ----------------------------------------------------------------------------- baseline


async def test_entry_and_exit_fill_both_legs_and_record_exact_pnl(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        spec = rig.pairs["EOS_AXS"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.status is ExecutionStatus.EXECUTED and entry.state_after is PairState.LONG_SPREAD
        want_a, want_b = entry_plan(rig, entry.signal_id)
        assert (entry.filled_a, entry.filled_b) == (want_a, want_b)
        assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (-want_a, want_b)
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED and exit_.state_after is PairState.FLAT
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        log = rig.sim_orders("pb-")
        assert [(o["clientOrderId"][-3:], o["status"], o["reduceOnly"]) for o in log] == [
            ("aE0", "FILLED", False), ("bE0", "FILLED", False), ("aX0", "FILLED", True), ("bX0", "FILLED", True)]
        assert rig.journal.get_signal(entry.signal_id).status == "EXECUTED"
        assert rig.engine.counters.fills_recorded == 4
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1
        # paused book: bought at the ask, sold at the bid, paid taker fees -> an exact loss
        assert rig.journal.round_trips()[0].net_pnl < 0


# ----------------------------------------------------------------------------- P2 partial fills


def _thin_pair(rig_book: Callable[[str], Any], step: Callable[[str], Decimal], *, symbol_a: str, symbol_b: str,
               want_b: Callable[[Decimal, Decimal], Decimal], fraction_a: Decimal = D("0.5"),
               pair_id: str = "THIN") -> tuple[PairSpec, Decimal, Decimal]:
    """A LONG_SPREAD pair (sell a at the bid, buy b at the ask) sized so that the engine plans
    exactly ``want_b(top_b, step_b)`` of b and ``fraction_a`` of a's top size: the plan's beta and
    gross notional are derived from the paused book (half-step padding keeps the floors exact)."""
    book_a, book_b = rig_book(symbol_a), rig_book(symbol_b)
    step_a, step_b = step(symbol_a), step(symbol_b)
    top_b = (book_b.ask_qty / step_b).to_integral_value(rounding=ROUND_DOWN) * step_b
    qty_b = want_b(top_b, step_b)
    qty_a = (book_a.bid_qty * fraction_a / step_a).to_integral_value(rounding=ROUND_DOWN) * step_a
    value_a = (qty_a + step_a / 2) * book_a.mid
    value_b = (qty_b + step_b / 2) * book_b.mid
    return PairSpec(pair_id, symbol_a, symbol_b, value_a / value_b, value_a + value_b, "log"), qty_a, qty_b


async def _thin_rig(make_rig, legs: tuple[str, str]) -> Rig:
    return await make_rig(pairs=(Pair("THIN", legs[0], legs[1], D(1), D(1000)),), replay=THIN_BOOK,
                          fills=FillConfig(depth_levels=0))


def _use_spec(rig: Rig, spec: PairSpec) -> None:
    rig.pairs[spec.pair_id] = spec
    rig.engine.pairs[spec.pair_id] = spec


async def test_p2_a_trim_that_fails_halts_the_pair_instead_of_passing_silently(make_rig) -> None:
    """As above (top-up cut short, so leg a must be trimmed), but every trim is refused: the
    entry used to report EXECUTED with more than one lot step of imbalance. Now it halts."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(Pair("THIN", "EOS/USDT", "AXS/USDT", D(1), D(1000)),), replay=THIN_BOOK,
                             fills=FillConfig(depth_levels=0), hooked=True)
        a, b = rig.pairs["THIN"].symbol_a, rig.pairs["THIN"].symbol_b
        spec, want_a, want_b = _thin_pair(rig.book, rig.step, symbol_a=a, symbol_b=b,
                                          want_b=lambda top, s: 2 * top + (top / 2 / s).to_integral_value() * s)
        _use_spec(rig, spec)
        rig.adapter.before_create = lambda n: rig.sim.set_faults(reject_probability=1.0, reject_code=REJECT) \
            if n == 4 else None  # aE0, bE0, bU0, then the trim aT0 and its retries are refused
        result = await rig.engine.execute_signal(rig.signal("THIN", SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.state_after) == (ExecutionStatus.HALTED, PairState.HALTED), result
        assert "hedge repair failed" in result.detail and a in result.detail
        held_a, held_b = -rig.sim_qty(a), rig.sim_qty(b)
        over_a, _ = hedge_excess(held_a, held_b, want_a, want_b, rig.step(a), rig.step(b))
        assert over_a >= 1  # the imbalance the halt reports is real
        position = rig.engine.positions["THIN"]
        assert (position.qty_a, position.qty_b) == (-held_a, held_b)


async def test_p2_short_leg_is_topped_up_to_the_full_hedge(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await _thin_rig(make_rig, ("EOS/USDT", "AXS/USDT"))
        a, b = rig.pairs["THIN"].symbol_a, rig.pairs["THIN"].symbol_b
        top_b = (rig.book(b).ask_qty / rig.step(b)).to_integral_value(rounding=ROUND_DOWN) * rig.step(b)
        spec, want_a, want_b = _thin_pair(rig.book, rig.step, symbol_a=a, symbol_b=b,
                                          want_b=lambda top, s: top + (top / 2 / s).to_integral_value() * s)
        _use_spec(rig, spec)
        result = await rig.engine.execute_signal(rig.signal("THIN", SignalType.ENTER_LONG_SPREAD))
        assert entry_plan(rig, result.signal_id) == (want_a, want_b)
        assert result.status is ExecutionStatus.EXECUTED
        assert (result.filled_a, result.filled_b) == (want_a, want_b)
        by_cid = {o["clientOrderId"][-3:]: o for o in rig.sim_orders(f"pb-{result.signal_id}")}
        assert set(by_cid) == {"aE0", "bE0", "bU0"}
        assert by_cid["bE0"]["status"] == "EXPIRED" and D(by_cid["bE0"]["executedQty"]) == top_b  # remainder expired
        assert D(by_cid["bU0"]["origQty"]) == want_b - top_b and by_cid["bU0"]["status"] == "FILLED"
        c = rig.engine.counters
        assert (c.partial_fills_repaired, c.top_ups, c.trims) == (1, 1, 0)
        assert (rig.sim_qty(a), rig.sim_qty(b)) == (-want_a, want_b)
        assert rig.engine.positions["THIN"].qty_b == want_b
        exit_ = await rig.engine.execute_signal(rig.signal("THIN", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED and rig.sim_qty(a) == rig.sim_qty(b) == 0
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1


async def test_p2_top_up_cut_short_trims_the_over_filled_leg_to_within_one_step(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await _thin_rig(make_rig, ("EOS/USDT", "AXS/USDT"))
        a, b = rig.pairs["THIN"].symbol_a, rig.pairs["THIN"].symbol_b
        top_b = (rig.book(b).ask_qty / rig.step(b)).to_integral_value(rounding=ROUND_DOWN) * rig.step(b)
        spec, want_a, want_b = _thin_pair(rig.book, rig.step, symbol_a=a, symbol_b=b,
                                          want_b=lambda top, s: 2 * top + (top / 2 / s).to_integral_value() * s)
        _use_spec(rig, spec)
        result = await rig.engine.execute_signal(rig.signal("THIN", SignalType.ENTER_LONG_SPREAD))
        assert result.status is ExecutionStatus.EXECUTED
        # entry b fills the top, the top-up fills the top again, the rest of both expires
        fb = 2 * top_b
        expected_trim = ((want_a * want_b - fb * want_a) // (want_b * rig.step(a))) * rig.step(a)
        assert expected_trim >= rig.step(a)
        assert (result.filled_a, result.filled_b) == (want_a - expected_trim, fb)
        by_cid = {o["clientOrderId"][-3:]: o for o in rig.sim_orders(f"pb-{result.signal_id}")}
        assert set(by_cid) == {"aE0", "bE0", "bU0", "aT0"}
        assert by_cid["bU0"]["status"] == "EXPIRED" and D(by_cid["bU0"]["executedQty"]) == top_b
        trim = by_cid["aT0"]
        assert (trim["side"], D(trim["origQty"]), trim["status"], trim["reduceOnly"]) == \
            ("BUY", expected_trim, "FILLED", True)
        c = rig.engine.counters
        assert (c.partial_fills_repaired, c.top_ups, c.trims) == (1, 1, 1)
        fa_sim, fb_sim = -rig.sim_qty(a), rig.sim_qty(b)
        assert (fa_sim, fb_sim) == (want_a - expected_trim, fb)
        over_a, over_b = hedge_excess(fa_sim, fb_sim, want_a, want_b, rig.step(a), rig.step(b))
        assert over_a < 1 and over_b < 1
        exit_ = await rig.engine.execute_signal(rig.signal("THIN", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED and rig.sim_qty(a) == rig.sim_qty(b) == 0
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1


async def test_p2_top_up_below_min_notional_trims_instead_with_reduce_only(make_rig) -> None:
    """DOT short by 5 lot steps (~2.6 USDT, under the 5 USDT minimum): no top-up is possible, so
    EOS is trimmed, by less than 5 USDT, which only a reduce-only order may do."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await _thin_rig(make_rig, ("EOS/USDT", "DOT/USDT"))
        a, b = rig.pairs["THIN"].symbol_a, rig.pairs["THIN"].symbol_b
        top_b = (rig.book(b).ask_qty / rig.step(b)).to_integral_value(rounding=ROUND_DOWN) * rig.step(b)
        spec, want_a, want_b = _thin_pair(rig.book, rig.step, symbol_a=a, symbol_b=b, fraction_a=D("0.8"),
                                          want_b=lambda top, s: top + 5 * s)
        _use_spec(rig, spec)
        assert 5 * rig.step(b) * rig.mid(b) < 5
        result = await rig.engine.execute_signal(rig.signal("THIN", SignalType.ENTER_LONG_SPREAD))
        assert result.status is ExecutionStatus.EXECUTED
        expected_trim = ((want_a * want_b - top_b * want_a) // (want_b * rig.step(a))) * rig.step(a)
        assert (result.filled_a, result.filled_b) == (want_a - expected_trim, top_b)
        assert any("no top-up" in line and "below_min_notional" in line for line in rig.lines("INFO"))
        by_cid = {o["clientOrderId"][-3:]: o for o in rig.sim_orders(f"pb-{result.signal_id}")}
        assert set(by_cid) == {"aE0", "bE0", "aT0"}
        trim = by_cid["aT0"]
        assert D(trim["origQty"]) == expected_trim and trim["reduceOnly"] is True and trim["status"] == "FILLED"
        assert expected_trim * rig.mid(a) < 5  # would be refused (-4164) without reduce-only
        c = rig.engine.counters
        assert (c.top_ups, c.trims, c.orders_rejected) == (0, 1, 0)
        over_a, over_b = hedge_excess(-rig.sim_qty(a), rig.sim_qty(b), want_a, want_b, rig.step(a), rig.step(b))
        assert over_a < 1 and over_b < 1
        assert_journal_matches_exchange(rig)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_p2_partial_fill_fault_on_every_order_keeps_hedge_within_one_step(make_rig, seed: int) -> None:
    """partial_fill_probability=1: every fill (entries, top-ups, trims, exits) is cut short."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        rig.sim.set_faults(partial_fill_probability=1.0, seed=seed)
        spec = rig.pairs["EOS_AXS"]
        a, b = spec.symbol_a, spec.symbol_b
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD))
        assert result.status is ExecutionStatus.EXECUTED
        want_a, want_b = entry_plan(rig, result.signal_id)
        fa, fb = rig.sim_qty(a), -rig.sim_qty(b)  # SHORT_SPREAD: long a, short b
        assert (fa, fb) == (result.filled_a, result.filled_b) and 0 < fa <= want_a and 0 < fb <= want_b
        over_a, over_b = hedge_excess(fa, fb, want_a, want_b, rig.step(a), rig.step(b))
        assert over_a < 1 and over_b < 1
        assert rig.engine.counters.partial_fills_repaired == 1
        assert rig.engine.counters.orders_rejected == 0
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED and rig.sim_qty(a) == rig.sim_qty(b) == 0
        assert len(rig.sim_orders(f"pb-{exit_.signal_id}")) > 2  # the exits were cut and continued
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1


# ----------------------------------------------------------------------------- P3 ghost orders


async def test_p3_lost_response_of_a_placed_order_is_found_and_adopted(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        rig.sim.set_faults(lost_response_probability=1.0)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert result.status is ExecutionStatus.EXECUTED
        assert rig.sim.stats()["faults_injected"]["response_lost"] == 2
        log = rig.sim_orders("pb-")
        assert sorted(o["clientOrderId"] for o in log) == [f"pb-{result.signal_id}-aE0", f"pb-{result.signal_id}-bE0"]
        c = rig.engine.counters
        assert (c.ghost_lookups, c.ghosts_adopted, c.ghost_resends, c.orders_sent) == (2, 2, 0, 2)
        for order in rig.journal.orders_for_signal(result.signal_id):
            assert history(rig, order.client_order_id) == [OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.FILLED]
            assert len(rig.journal.fills_for_order(order.client_order_id)) == 1
        rig.sim.set_faults(lost_response_probability=0.0)
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_p3_failed_request_not_placed_is_resent_once_with_the_same_id(make_rig, status: int) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        rig.sim.inject_http_errors(status, 1)  # the next REST request: the first entry leg to arrive
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert result.status is ExecutionStatus.EXECUTED
        log = rig.sim_orders("pb-")
        assert sorted(o["clientOrderId"] for o in log) == [f"pb-{result.signal_id}-aE0", f"pb-{result.signal_id}-bE0"]
        c = rig.engine.counters
        assert (c.ghost_lookups, c.ghosts_adopted, c.ghost_resends, c.orders_sent) == (1, 0, 1, 3)
        histories = {o.leg.value: history(rig, o.client_order_id)
                     for o in rig.journal.orders_for_signal(result.signal_id)}
        assert sorted(histories.values()) == sorted([
            [OrderStatus.INTENT, OrderStatus.FILLED],
            [OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.NOT_FOUND, OrderStatus.RESENDING,
             OrderStatus.FILLED]])
        # The resend went out only after a lookup sent past the order's horizon said "not found".
        resent = next(o for o in rig.journal.orders_for_signal(result.signal_id)
                      if len(history(rig, o.client_order_id)) > 2)
        events = rig.journal.order_events(resent.client_order_id)
        not_found = next(e for e in events if e.to_status is OrderStatus.NOT_FOUND)
        assert resent.horizon_ms is not None and not_found.ts_ms > resent.horizon_ms
        assert_journal_matches_exchange(rig)


async def test_p3_inconclusive_lookup_never_resends_and_the_resolver_adopts(make_rig) -> None:
    """Lost responses, then every lookup fails (503) past the resolver's budget: the engine cannot
    tell whether the orders exist, so it must not resend them (a clientOrderId is unique only among
    *open* orders: a resend of a filled order is accepted and doubles the position) and must not
    say "nothing is open" either (issue 8, scenario 2). The pair is RESOLVING, takes no entry, and
    the resolver adopts both legs as soon as the exchange answers again."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(hooked=True)
        rig.adapter.on_unknown = lambda n: rig.sim.set_faults(http_error_probability=1.0, http_error_status=503)
        rig.sim.set_faults(lost_response_probability=1.0)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.reason) == (ExecutionStatus.RESOLVING, Reason.OUTCOME_UNKNOWN)
        assert result.state_after is PairState.RESOLVING and not result.executed
        assert rig.adapter.creates == 2 and rig.engine.counters.ghost_resends == 0
        assert {o.status for o in rig.journal.orders_for_signal(result.signal_id)} == {OrderStatus.UNKNOWN}
        assert sum("outcome still unknown" in line for line in rig.lines("ERROR")) == 2
        spec = rig.pairs["EOS_AXS"]
        want_a, want_b = entry_plan(rig, result.signal_id)
        assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (-want_a, want_b)
        # While unresolved the pair takes no new entry (the next signal would double the position).
        again = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (again.status, again.reason) == (ExecutionStatus.REFUSED, Reason.PAIR_RESOLVING)
        rig.sim.set_faults(lost_response_probability=0.0, http_error_probability=0.0)
        await wait_for_state(rig, "EOS_AXS", PairState.LONG_SPREAD)
        position = rig.engine.positions["EOS_AXS"]
        assert (position.qty_a, position.qty_b) == (-want_a, want_b)
        log = rig.sim_orders("pb-")
        assert sorted(o["clientOrderId"] for o in log) == [f"pb-{result.signal_id}-aE0", f"pb-{result.signal_id}-bE0"]
        for order in rig.journal.orders_for_signal(result.signal_id):
            assert history(rig, order.client_order_id) == [OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.FILLED]
        assert_journal_matches_exchange(rig)


async def test_p3_resend_whose_outcome_is_lost_again_is_looked_up_not_crashed(make_rig) -> None:
    """503 on the first two sends of one order: unknown -> not found -> resend -> unknown again
    -> not found -> resend -> filled, every step recorded in the order's history."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(hooked=True)
        rig.adapter.before_create = lambda n: rig.sim.inject_http_errors(503, 1) if n <= 2 else None
        signal = rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)
        assert rig.journal.record_signal(signal)
        spec = rig.pairs["EOS_AXS"]
        request = OrderRequest(signal.signal_id, "EOS_AXS", "a", OrderPurpose.ENTRY, 0, spec.symbol_a, "sell", D(100))
        placed = await rig.engine.placer.place(request)
        assert placed.record.status is OrderStatus.FILLED and placed.filled == 100
        assert [o["clientOrderId"] for o in rig.sim_orders("pb-")] == [request.cid]
        assert history(rig, request.cid) == [
            OrderStatus.INTENT, OrderStatus.UNKNOWN, OrderStatus.NOT_FOUND, OrderStatus.RESENDING, OrderStatus.UNKNOWN,
            OrderStatus.NOT_FOUND, OrderStatus.RESENDING, OrderStatus.FILLED]
        c = rig.engine.counters
        assert (c.ghost_lookups, c.ghost_resends, rig.adapter.creates) == (2, 2, 3)
        assert rig.sim_qty(spec.symbol_a) == -100


# ----------------------------------------------------------------------------- P4 precision


@pytest.mark.parametrize(("pair", "reason"), [
    (replace(EOS_AXS, notional=D(8)), Reason.BELOW_MIN_NOTIONAL),  # ~3.7 USDT per leg
    (replace(BTC_ETH, notional=D(90)), Reason.HEDGE_ERROR),  # BTC 0.00148 floors to 0.001: 33 % off
    (replace(BTC_ETH, notional=D(40)), Reason.BELOW_ONE_STEP),  # BTC 0.00066 < one step
])
async def test_p4_unsendable_sizes_are_refused_before_any_order(make_rig, pair: Pair, reason: Reason) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(pair,))
        result = await rig.engine.execute_signal(rig.signal(pair.pair_id, SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.reason) == (ExecutionStatus.REFUSED, reason)
        assert rig.sim.order_log() == [] and rig.journal.orders_for_signal(result.signal_id) == []
        assert rig.engine.counters.precision_refusals == 1 and rig.engine.counters.orders_sent == 0
        # refused before anything is written: a persistent refusal must not cost a commit per retry
        assert rig.journal.get_signal(result.signal_id) is None
        assert rig.engine.stats()["refused_by_reason"] == {reason.value: 1}


# ----------------------------------------------------------------------------- P5 rollback


async def test_p5_one_leg_rejected_the_other_is_rolled_back(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        # draws in arrival order: exactly one entry leg refused, then the rollback accepted
        seed = _seed_for(0.5, lambda r: r[0] != r[1] and not r[2], 3)
        rig.sim.set_faults(reject_probability=0.5, reject_code=REJECT, seed=seed)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        rig.sim.set_faults(reject_probability=0.0)
        assert (result.status, result.reason) == (ExecutionStatus.ROLLED_BACK, Reason.ONE_LEG_FAILED)
        assert result.state_after is PairState.FLAT and rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        orders = {o.client_order_id[-3:]: o for o in rig.journal.orders_for_signal(result.signal_id)}
        rejected = [k for k, o in orders.items() if o.status is OrderStatus.REJECTED]
        assert len(rejected) == 1 and rejected[0][1] == "E"
        filled_leg = "b" if rejected[0][0] == "a" else "a"
        entry, rollback = orders[f"{filled_leg}E0"], orders[f"{filled_leg}R0"]
        assert entry.status is rollback.status is OrderStatus.FILLED
        assert rollback.qty == entry.qty and rollback.side != entry.side and rollback.reduce_only
        assert [o["clientOrderId"][-3:] for o in rig.sim_orders("pb-")] == [f"{filled_leg}E0", f"{filled_leg}R0"]
        spec = rig.pairs["EOS_AXS"]
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert (rig.engine.counters.rollbacks, rig.engine.counters.halts) == (1, 0)
        trip = rig.journal.round_trips()[0]
        assert trip.exit_reason == "rollback" and trip.net_pnl < 0  # spread + two taker fees
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1
        again = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert again.status is ExecutionStatus.EXECUTED  # a rolled-back pair trades again


async def test_p5_rollback_rejected_too_halts_the_pair_with_a_critical_line(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        execution = FAST_EXEC.model_copy(update={"max_order_retries": 1})
        rig = await make_rig(execution=execution)
        seed = _seed_for(0.9, lambda r: r[0] != r[1] and r[2] and r[3], 4)
        rig.sim.set_faults(reject_probability=0.9, reject_code=REJECT, seed=seed)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        rig.sim.set_faults(reject_probability=0.0)
        assert (result.status, result.reason, result.state_after) == \
            (ExecutionStatus.HALTED, Reason.ROLLBACK_FAILED, PairState.HALTED)
        spec = rig.pairs["EOS_AXS"]
        want_a, want_b = entry_plan(rig, result.signal_id)
        held_a, held_b = rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)
        assert (held_a, held_b) in ((-want_a, ZERO), (ZERO, want_b))  # one naked leg, as filled
        position = rig.engine.positions["EOS_AXS"]
        assert (position.state, position.qty_a, position.qty_b) == (PairState.HALTED, held_a, held_b)
        assert rig.journal.get_position("EOS_AXS").state is PairState.HALTED
        critical = rig.lines("CRITICAL")
        assert len(critical) == 1
        assert f"open: {spec.symbol_a} {held_a} , {spec.symbol_b} {held_b}" in critical[0]
        assert "EOS_AXS HALTED | rollback failed" in critical[0]
        c = rig.engine.counters
        assert (c.rollbacks, c.rollbacks_failed, c.halts, c.orders_rejected) == (0, 1, 1, 3)
        refused = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (refused.status, refused.reason) == (ExecutionStatus.REFUSED, Reason.PAIR_HALTED)
        assert len(rig.sim_orders("pb-")) == 1  # only the entry leg that filled
        assert_journal_matches_exchange(rig)


# ----------------------------------------------------------------------------- P1 lock and duplicates


async def test_p1_duplicate_signal_id_refused_also_after_restart(make_rig, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        path = tmp_path / "shared-journal.sqlite"
        rig = await make_rig(journal_path=path)
        signal = rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)
        assert (await rig.engine.execute_signal(signal)).status is ExecutionStatus.EXECUTED
        again = await rig.engine.execute_signal(signal)
        assert (again.status, again.reason) == (ExecutionStatus.REFUSED, Reason.DUPLICATE_SIGNAL)
        assert len(rig.sim_orders("pb-")) == 2
        # the refusal does not overwrite what the original signal became
        assert (rig.journal.get_signal(signal.signal_id).status, rig.journal.get_signal(signal.signal_id).reason) \
            == ("EXECUTED", "ok")
        assert not rig.lines("ERROR")
        await rig.engine.stop()
        rig.journal.close()
        restarted = await make_rig(journal_path=path, sim=rig.sim)
        assert restarted.engine.pair_state("EOS_AXS") is PairState.LONG_SPREAD  # restored from the journal
        exit_ = restarted.signal("EOS_AXS", SignalType.EXIT, ts_ms=signal.ts_ms + 10_000)
        assert (await restarted.engine.execute_signal(exit_)).executed
        # flat again, so only the journal (the new engine has seen nothing) stops a re-entry
        replayed = await restarted.engine.execute_signal(signal)
        assert (replayed.status, replayed.reason) == (ExecutionStatus.REFUSED, Reason.DUPLICATE_SIGNAL)
        assert len(restarted.sim_orders("pb-")) == 4 and restarted.engine.pair_state("EOS_AXS") is PairState.FLAT
        assert restarted.journal.get_signal(signal.signal_id).status == "EXECUTED"


async def test_p1_concurrent_signals_for_one_pair_execute_once(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH))
        first = rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)
        later = rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD)  # 2 s later: outside the window
        same_time = replace(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD), ts_ms=first.ts_ms)
        results = await asyncio.gather(*(rig.engine.execute_signal(s) for s in (first, later, same_time)))
        assert [(r.status, r.reason) for r in results] == [
            (ExecutionStatus.EXECUTED, Reason.OK),
            (ExecutionStatus.REFUSED, Reason.ALREADY_IN_POSITION),
            (ExecutionStatus.REFUSED, Reason.DUPLICATE_WINDOW)]
        assert len(rig.sim_orders("pb-")) == 2
        # a burst of entries for one pair and one for another pair, interleaved
        btc = [rig.signal("BTC_ETH", SignalType.ENTER_SHORT_SPREAD) for _ in range(3)]
        exits = [rig.signal("EOS_AXS", SignalType.EXIT) for _ in range(3)]
        results = await asyncio.gather(*(rig.engine.execute_signal(s) for pair in zip(btc, exits) for s in pair))
        executed = [r.signal_id for r in results if r.executed]
        assert executed == [btc[0].signal_id, exits[0].signal_id]
        assert {r.reason for r in results if not r.executed} == {Reason.ALREADY_IN_POSITION, Reason.NOT_IN_POSITION}
        assert len(rig.sim_orders("pb-")) == 6
        assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        assert rig.engine.pair_state("BTC_ETH") is PairState.SHORT_SPREAD
        assert not rig.lines("ERROR")  # refusals of unrecorded signals do not touch the journal
        assert_journal_matches_exchange(rig)


# ----------------------------------------------------------------------------- pre-trade risk


async def _open_then_close(rig: Rig, pair_id: str) -> None:
    assert (await rig.engine.execute_signal(rig.signal(pair_id, SignalType.ENTER_LONG_SPREAD))).executed
    assert (await rig.engine.execute_signal(rig.signal(pair_id, SignalType.EXIT))).executed


@pytest.mark.parametrize("case", ["max_open_pairs", "max_gross_exposure", "max_daily_loss", "insufficient_margin"])
async def test_risk_refusals_come_before_any_order(make_rig, case: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        leverage, pairs, risk = 2, (EOS_AXS, BTC_ETH), WIDE_RISK
        if case == "max_open_pairs":
            risk = WIDE_RISK.model_copy(update={"max_open_pairs": 1})
        elif case == "max_gross_exposure":
            risk = WIDE_RISK.model_copy(update={"max_gross_exposure_usdt": 1500})
        elif case == "max_daily_loss":
            risk = WIDE_RISK.model_copy(update={"max_daily_loss_usdt": 0.5})
        else:  # 10,000 USDT of margin at leverage 1 cannot carry 15,000 of notional
            leverage, pairs = 1, (EOS_AXS, replace(BTC_ETH, notional=D(15_000)))
        rig = await make_rig(pairs=pairs, risk=risk, leverage=leverage)
        if case == "max_daily_loss":
            await _open_then_close(rig, "EOS_AXS")  # a paused book: a sure loss of spread + fees
            assert rig.journal.round_trips()[0].net_pnl < D("-0.5")
        elif case != "insufficient_margin":
            assert (await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))).executed
        before = len(rig.sim.order_log())
        result = await rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.reason) == (ExecutionStatus.REFUSED, Reason(case))
        assert len(rig.sim.order_log()) == before and rig.journal.orders_for_signal(result.signal_id) == []
        assert rig.engine.stats()["refused_by_reason"] == {case: 1}
        assert rig.journal.get_signal(result.signal_id) is None  # refused before any write
        if case == "insufficient_margin":  # the same pair at a size the margin carries is allowed
            rig.engine.pairs["BTC_ETH"] = replace(rig.engine.pairs["BTC_ETH"], notional_usdt=D(5_000))
            assert (await rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.ENTER_LONG_SPREAD))).executed


# ----------------------------------------------------------------------------- exits


async def test_exit_legs_rejected_at_first_are_retried_until_flat(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed
        # both first exit attempts refused, both retries accepted (whatever the arrival order)
        seed = _seed_for(0.5, lambda r: r[0] and r[1] and not r[2] and not r[3], 4)
        rig.sim.set_faults(reject_probability=0.5, reject_code=REJECT, seed=seed)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        rig.sim.set_faults(reject_probability=0.0)
        assert result.status is ExecutionStatus.EXECUTED and result.state_after is PairState.FLAT
        statuses = {o.client_order_id[-3:]: o.status for o in rig.journal.orders_for_signal(result.signal_id)}
        assert statuses == {"aX0": OrderStatus.REJECTED, "bX0": OrderStatus.REJECTED,
                            "aX1": OrderStatus.FILLED, "bX1": OrderStatus.FILLED}
        assert sorted(o["clientOrderId"][-3:] for o in rig.sim_orders(f"pb-{result.signal_id}")) == ["aX1", "bX1"]
        assert (rig.engine.counters.exit_retries, rig.engine.counters.orders_rejected) == (2, 2)
        spec = rig.pairs["EOS_AXS"]
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1


async def test_exit_refused_for_good_halts_with_what_is_still_open(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=FAST_EXEC.model_copy(update={"max_order_retries": 1}))
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed
        rig.sim.set_faults(reject_probability=1.0, reject_code=REJECT)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        rig.sim.set_faults(reject_probability=0.0)
        assert (result.status, result.reason) == (ExecutionStatus.HALTED, Reason.EXIT_INCOMPLETE)
        spec = rig.pairs["EOS_AXS"]
        held_a, held_b = rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)
        assert (held_a, held_b) == (-entry.filled_a, entry.filled_b)
        assert f"open: {spec.symbol_a} {held_a} , {spec.symbol_b} {held_b}" in rig.lines("CRITICAL")[0]
        assert rig.journal.round_trips()[0].is_open  # no PnL booked for a trip still open
        assert len(rig.journal.orders_for_signal(result.signal_id)) == 4  # 2 legs x (1 + 1 retry)
        assert_journal_matches_exchange(rig)


# ----------------------------------------------------------------------------- PnL


async def test_pnl_of_every_round_trip_equals_its_fills_and_the_exchange_trades(make_rig) -> None:
    """Several round trips on two pairs sharing no leg, with partial fills on, and a moving market
    between them: each closed trip's PnL is re-derived from the fills table and from ccxt trades."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH))
        rig.sim.set_faults(partial_fill_probability=0.3, seed=4)
        for round_no in range(3):
            for pair_id, kind in (("EOS_AXS", SignalType.ENTER_LONG_SPREAD), ("BTC_ETH", SignalType.ENTER_SHORT_SPREAD)):
                assert (await rig.engine.execute_signal(rig.signal(pair_id, kind))).executed
            rig.sim.resume()
            await asyncio.sleep(0.05)  # the replay moves prices between entry and exit
            rig.sim.pause()
            for pair_id in ("EOS_AXS", "BTC_ETH"):
                assert (await rig.engine.execute_signal(rig.signal(pair_id, SignalType.EXIT))).executed
        assert await assert_round_trip_pnl(rig) == 6
        assert_journal_matches_exchange(rig)
        stats = rig.engine.stats()
        assert stats["round_trips"] == 6
        total = sum((t.net_pnl for t in rig.journal.round_trips()), ZERO)
        assert abs(D(repr(stats["realized_pnl_usdt"])) - total) < D("1e-6")


# ----------------------------------------------------------------------------- limit entries


LIMIT_EXEC = FAST_EXEC.model_copy(update={"use_limit_orders": True, "order_timeout_seconds": 0.3,
                                          "max_slippage_pct": 0.001})


async def test_limit_entry_rests_at_the_touch_then_completes_at_market_within_slippage(make_rig) -> None:
    """Paused book: a buy at the bid and a sell at the ask never fill; after the timeout both are
    cancelled and completed at market, since prices did not move."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=LIMIT_EXEC)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert result.executed, result
        orders = rig.journal.orders_for_signal(result.signal_id)
        limits = [o for o in orders if o.order_type is OrderType.LIMIT]
        chases = [o for o in orders if o.purpose is OrderPurpose.LIMIT_CHASE]
        assert len(limits) == 2 and all(o.status is OrderStatus.CANCELED and o.filled_qty == 0 for o in limits)
        book = {leg: rig.sim.replay.book(rig.engine.adapter.rules(sym).exchange_symbol)
                for leg, sym in (("a", rig.pairs["EOS_AXS"].symbol_a), ("b", rig.pairs["EOS_AXS"].symbol_b))}
        for order in limits:  # LONG_SPREAD sells A at its ask and buys B at its bid
            assert order.price == (book["a"].ask if order.leg.value == "a" else book["b"].bid)
        assert len(chases) == 2 and all(o.order_type is OrderType.MARKET and o.status is OrderStatus.FILLED
                                        for o in chases)
        assert {o.leg.value: o.qty for o in chases} == {o.leg.value: o.qty for o in limits}
        assert_journal_matches_exchange(rig)


async def test_limit_entry_unwinds_when_prices_left_the_slippage_band(make_rig) -> None:
    """Leg a's limit crosses (fills at once), leg b rests unfilled; the mids then report a 1 %
    move, beyond max_slippage_pct: leg a is closed again and nothing stays open."""
    def crossing_a(book):
        def touch(symbol: str):
            bid, ask = book(symbol)
            return (ask, bid) if symbol.startswith("EOS") else (bid, ask)  # a sells at the bid: crosses
        return touch

    async with asyncio.timeout(TEST_TIMEOUT_S):
        holder: dict[str, Any] = {}

        def moved(symbol: str) -> Decimal | None:
            top = holder["rig"].sim.replay.book(holder["rig"].engine.adapter.rules(symbol).exchange_symbol)
            return top.mid * D("1.01")

        rig = await make_rig(execution=LIMIT_EXEC, books=crossing_a, moved_mids=moved)
        holder["rig"] = rig
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.reason) == (ExecutionStatus.ROLLED_BACK, Reason.SLIPPAGE_EXCEEDED), result
        orders = rig.journal.orders_for_signal(result.signal_id)
        entry_a = next(o for o in orders if o.purpose is OrderPurpose.ENTRY and o.leg.value == "a")
        rollback = [o for o in orders if o.purpose is OrderPurpose.ROLLBACK]
        assert entry_a.status is OrderStatus.FILLED and entry_a.filled_qty == entry_a.qty
        assert sum(o.filled_qty for o in rollback) == entry_a.qty
        assert not [o for o in orders if o.purpose is OrderPurpose.LIMIT_CHASE]
        assert rig.sim_qty(rig.pairs["EOS_AXS"].symbol_a) == 0 and rig.sim_qty(rig.pairs["EOS_AXS"].symbol_b) == 0
        assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        assert_journal_matches_exchange(rig)
