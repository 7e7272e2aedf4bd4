"""Per-symbol locks, fresh margin and shutdown that never cuts a protocol in half (issue 9).

Real ccxt against the simulator (``tests/engine_rig.py``). Orders of events are read from the
simulator's order log (its arrival order), never from wall time.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import ccxt.async_support as ccxt_async

from core.config import RiskConfig
from core.types import PairState, SignalType
from execution.journal_models import OrderPurpose
from execution.results import ExecutionStatus, Reason
from simulator.config import AccountConfig, SimulatorConfig
from simulator.server import SimulatorServer
from tests.sim_helpers import local_client
from tests.engine_rig import (BTC_ETH, EOS_AXS, FAST_EXEC, REJECT, REPLAY, SYMBOLS, TEST_TIMEOUT_S, _seed_for,
                              assert_journal_matches_exchange, wait_for_state)

LIMIT_EXEC = FAST_EXEC.model_copy(update={"use_limit_orders": True, "order_timeout_seconds": 1.5})


async def test_a_stop_loss_of_one_pair_does_not_wait_for_another_pairs_resting_limit(make_rig) -> None:
    """Pair A's limit entry rests at the touch for 1.5 s (a paused book never fills it). Pair B's
    stop-loss, sent meanwhile, is on the exchange before A's limits are cancelled and completed:
    with one global lock it went out only after A's whole entry."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH), execution=LIMIT_EXEC)
        opened = await rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.ENTER_SHORT_SPREAD))
        assert opened.executed
        entry_a = asyncio.create_task(rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)))
        while not rig.sim_orders("pb-t2-"):  # A's limits are resting
            await asyncio.sleep(0.01)
        stop_b = await rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.STOP_LOSS))
        assert stop_b.executed and not entry_a.done()  # B is flat while A still rests
        assert (await entry_a).executed
        log = [o["clientOrderId"] for o in rig.sim.order_log()]
        stop_orders = [i for i, cid in enumerate(log) if cid.startswith(f"pb-{stop_b.signal_id}-")]
        chases = [i for i, cid in enumerate(log) if cid.startswith("pb-t2-") and cid[-2] == "L"]
        assert stop_orders and chases and max(stop_orders) < min(chases), log
        assert_journal_matches_exchange(rig)


async def test_a_burst_of_two_entries_is_refused_by_the_risk_check_not_by_the_exchange(sim_data, make_rig) -> None:
    """Margin for one entry only. Two entries on different pairs at once: the second must be
    refused by the engine's risk check (insufficient_margin), because the first one's margin is
    reserved until a balance refresh has seen it; before, it passed on the stale balance and the
    exchange refused one of its legs (-2019), which was then rolled back."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=REPLAY,
                                              accounts=(AccountConfig(starting_balance_usdt=Decimal(700)),)),
                              data=sim_data)
        await sim.start()
        sim.pause()
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH), sim=sim,
                             risk=RiskConfig(max_open_pairs=5, max_gross_exposure_usdt=50_000,
                                             max_daily_loss_usdt=1_000))
        first, second = await asyncio.gather(
            rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)),
            rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.ENTER_LONG_SPREAD)))
        assert first.executed
        assert (second.status, second.reason) == (ExecutionStatus.REFUSED, Reason.INSUFFICIENT_MARGIN)
        assert not rig.sim_orders(f"pb-{second.signal_id}")  # nothing of it reached the exchange
        assert rig.engine.counters.orders_rejected == 0 and rig.engine.counters.rollbacks == 0


async def test_stop_lets_a_limit_entry_in_flight_finish(make_rig) -> None:
    """Shutdown during a resting limit entry: the execution finishes (cancel, complete at market)
    before the engine closes; nothing is left resting and the legs are hedged."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=LIMIT_EXEC)
        caller = asyncio.create_task(rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)))
        while not rig.sim_orders("pb-t1-"):
            await asyncio.sleep(0.01)
        caller.cancel()  # the caller goes away (as the router's task does at shutdown) ...
        await rig.engine.stop()  # ... and the stop waits for the protocol, shielded
        assert rig.engine.pair_state("EOS_AXS") is PairState.LONG_SPREAD
        chases = [o for o in rig.journal.orders_for_signal("t1-LONG") if o.purpose is OrderPurpose.LIMIT_CHASE]
        assert len(chases) == 2
        assert_journal_matches_exchange(rig)  # nothing resting, journal equals exchange


async def test_stop_with_a_short_grace_journals_resolving_and_the_restart_repairs(make_rig, tmp_path) -> None:
    """The grace runs out while the limits rest: the pair is journaled RESOLVING, the execution is
    cut, and the next start cancels the resting limits and leaves no naked leg."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        path = tmp_path / "grace.sqlite"
        execution = LIMIT_EXEC.model_copy(update={"order_timeout_seconds": 5.0, "shutdown_grace_seconds": 0.3})
        rig = await make_rig(execution=execution, journal_path=path)
        caller = asyncio.create_task(rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)))
        while len(rig.sim_orders("pb-t1-")) < 2:
            await asyncio.sleep(0.01)
        await rig.engine.stop()
        assert rig.journal.get_position("EOS_AXS").state is PairState.RESOLVING
        assert caller.done()
        assert any(o["status"] == "NEW" and o["type"] == "LIMIT" for o in rig.sim_orders("pb-t1-"))  # left resting
        rig.journal.close()
        restarted = await make_rig(execution=FAST_EXEC, journal_path=path, sim=rig.sim)
        await wait_for_state(restarted, "EOS_AXS", PairState.FLAT)
        spec = restarted.pairs["EOS_AXS"]
        assert restarted.sim_qty(spec.symbol_a) == restarted.sim_qty(spec.symbol_b) == 0
        assert not [o for o in restarted.sim_orders("pb-") if o["status"] in ("NEW", "PARTIALLY_FILLED")]
        assert_journal_matches_exchange(restarted)


async def test_closes_count_adopted_external_positions_like_reconciliation(make_rig, sim_data) -> None:
    """100 EOS on the account are the user's, adopted at start (``--adopt``). The pair then sells
    EOS. Its exit buys it back: the engine decided reduce-only on its own positions only and sent
    a reduce-only buy the exchange refused (-2022) four times, then HALTED. The one close routine
    decides on the journal's net plus the adopted positions, as reconciliation does."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=REPLAY), data=sim_data)
        await sim.start()
        sim.pause()
        client = local_client(ccxt_async.binanceusdm, sim)
        try:
            await client.load_markets()
            await client.set_margin_mode("isolated", "EOS/USDT:USDT")  # as the bot will want it
            await client.create_order("EOS/USDT:USDT", "market", "buy", 100)
        finally:
            await client.close()
        rig = await make_rig(sim=sim, adopt=True)
        spec = rig.pairs["EOS_AXS"]
        assert rig.engine.reconciler.external == {spec.symbol_a: Decimal(100)}
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED, exit_
        assert rig.engine.counters.orders_rejected == 0 and rig.engine.counters.halts == 0
        assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (Decimal(100), 0)  # the user's, untouched


async def test_the_duplicate_window_holds_across_a_restart(make_rig, tmp_path) -> None:
    """A second signal for a pair inside duplicate_window_seconds is refused, also when the first
    one was handled before a restart (the window was kept in memory only)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        path = tmp_path / "window.sqlite"
        rig = await make_rig(journal_path=path)
        first = rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)
        assert (await rig.engine.execute_signal(first)).executed
        await rig.engine.stop()
        rig.journal.close()
        restarted = await make_rig(journal_path=path, sim=rig.sim)
        soon = restarted.signal("EOS_AXS", SignalType.EXIT, ts_ms=first.ts_ms + 500)  # window: 1 s
        refused = await restarted.engine.execute_signal(soon)
        assert (refused.status, refused.reason) == (ExecutionStatus.REFUSED, Reason.DUPLICATE_WINDOW)
        later = restarted.signal("EOS_AXS", SignalType.EXIT, ts_ms=first.ts_ms + 1500)
        assert (await restarted.engine.execute_signal(later)).executed


async def test_stop_during_a_rollback_lets_it_finish_and_leaves_no_naked_leg(make_rig) -> None:
    """One entry leg is refused, the other filled; its rollback's first attempt is refused too and
    the next waits out a backoff. A stop in that moment waits for the rollback: the pair ends FLAT
    with nothing open, where a cancelled protocol left the filled leg naked."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=FAST_EXEC.model_copy(update={"retry_backoff_ms": 400}))
        seed = _seed_for(0.5, lambda r: r[0] != r[1] and r[2] and not r[3], 4)
        rig.sim.set_faults(reject_probability=0.5, reject_code=REJECT, seed=seed)
        caller = asyncio.create_task(rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)))
        while not [o for o in rig.journal.orders_for_pair("EOS_AXS") if o.purpose is OrderPurpose.ROLLBACK]:
            await asyncio.sleep(0.005)
        await rig.engine.stop()  # in the middle of the rollback (its backoff)
        result = await caller
        assert (result.status, result.reason) == (ExecutionStatus.ROLLED_BACK, Reason.ONE_LEG_FAILED), result
        rollbacks = [o for o in rig.journal.orders_for_pair("EOS_AXS") if o.purpose is OrderPurpose.ROLLBACK]
        assert [o.status.value for o in rollbacks] == ["REJECTED", "FILLED"]
        spec = rig.pairs["EOS_AXS"]
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert rig.journal.get_position("EOS_AXS").state is PairState.FLAT


async def test_a_limit_whose_cancel_fails_is_unknown_not_chased(make_rig) -> None:
    """The limits rest until the timeout, and then the exchange stops answering (503) while they
    are cancelled. The old code went on with the stale state: it completed the 'missing' quantity
    at market while the limits were still working, and a limit filling later overfilled the leg.
    Now a working order whose cancel failed is an unknown outcome: no completion is sent, the pair
    is RESOLVING, and once the exchange answers the resolver cancels the limits and finds it flat."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=LIMIT_EXEC.model_copy(update={"order_timeout_seconds": 0.3}), hooked=True)
        rig.adapter.before_cancel = lambda: rig.sim.set_faults(http_error_probability=1.0, http_error_status=503)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (result.status, result.reason) == (ExecutionStatus.RESOLVING, Reason.OUTCOME_UNKNOWN), result
        assert not [o for o in rig.journal.orders_for_signal(result.signal_id)
                    if o.purpose is OrderPurpose.LIMIT_CHASE]  # nothing completed on a stale state
        rig.adapter.before_cancel = None
        rig.sim.set_faults(http_error_probability=0.0)
        await wait_for_state(rig, "EOS_AXS", PairState.FLAT)
        assert not [o for o in rig.sim_orders("pb-") if o["status"] in ("NEW", "PARTIALLY_FILLED")]
        spec = rig.pairs["EOS_AXS"]
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert_journal_matches_exchange(rig)
