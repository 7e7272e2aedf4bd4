"""The pair lifecycle (issue 9): one transition table, journaled, with sticky HALTED and BLOCKED.

Engine tests run through real ccxt against the simulator (``tests/engine_rig.py``).
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import ccxt.async_support as ccxt_async
import pytest

import main as bot_main
from core.types import PairState, SignalType
from execution.journal import Journal
from execution.journal_models import PairPosition
from execution.lifecycle import PAIR_TRANSITIONS, IllegalPairTransition, PairEvent, PairLifecycle
from execution.results import ExecutionStatus, Reason
from tests.engine_rig import (D, FAST_EXEC, REJECT, TEST_TIMEOUT_S, ZERO, _seed_for, assert_journal_matches_exchange,
                              wait_for_state)
from tests.sim_helpers import local_client


def transitions(journal: Journal, pair_id: str) -> list[tuple[str, str, str]]:
    return [(e["detail"]["from"], e["detail"]["event"], e["detail"]["to"])
            for e in journal.events("pair_transition") if e["pair_id"] == pair_id]


def test_an_illegal_transition_raises_naming_the_pair_the_state_and_the_event(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite", mode="demo") as journal:
        lifecycle = PairLifecycle(journal, {"P": PairPosition("P", PairState.FLAT, ZERO, ZERO, "A", "B")})
        held = lifecycle.apply("P", PairEvent.ENTRY_FILLED, PairState.LONG_SPREAD, qty_a=D(-1), qty_b=D(2))
        halted = lifecycle.apply("P", PairEvent.HALT, PairState.HALTED, reason="exit incomplete: A -1 open")
        assert (held.state, halted.state, halted.qty_a) == (PairState.LONG_SPREAD, PairState.HALTED, D(-1))
        with pytest.raises(IllegalPairTransition, match="pair P: HALTED --restored--> FLAT is illegal"):
            lifecycle.apply("P", PairEvent.RESTORED, PairState.FLAT)  # reconciliation cannot un-halt
        assert lifecycle.state("P") is PairState.HALTED and journal.get_position("P").state is PairState.HALTED
        with pytest.raises(IllegalPairTransition):
            lifecycle.apply("P", PairEvent.OPERATOR_RESUME, PairState.RESOLVING)  # RESOLVING needs a reason
        lifecycle.apply("P", PairEvent.OPERATOR_RESUME, PairState.RESOLVING, reason="operator")
        assert transitions(journal, "P") == [("FLAT", "entry_filled", "LONG_SPREAD"), ("LONG_SPREAD", "halt", "HALTED"),
                                             ("HALTED", "operator_resume", "RESOLVING")]


def test_only_an_operator_or_a_matching_exchange_leaves_a_sticky_state() -> None:
    leaving = {(state, event) for (state, event), targets in PAIR_TRANSITIONS.items()
               if state in (PairState.HALTED, PairState.BLOCKED) and targets - {state}}
    assert leaving == {(PairState.HALTED, PairEvent.OPERATOR_RESUME), (PairState.BLOCKED, PairEvent.OPERATOR_RESUME),
                       (PairState.BLOCKED, PairEvent.UNBLOCK)}


async def test_halted_survives_reconciliation_and_gets_no_repair_orders_until_resumed(make_rig) -> None:
    """A rollback refused for good halts the pair with a naked leg. Periodic reconciliation used to
    turn it back into a tradeable state and resend REPAIR orders on every pass; now the pair stays
    HALTED with its reason, and only the operator's resume lets reconciliation close the leg."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=FAST_EXEC.model_copy(update={"max_order_retries": 1}))
        seed = _seed_for(0.9, lambda r: r[0] != r[1] and r[2] and r[3], 4)
        rig.sim.set_faults(reject_probability=0.9, reject_code=REJECT, seed=seed)
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        rig.sim.set_faults(reject_probability=0.0)
        assert result.status is ExecutionStatus.HALTED
        halted = rig.engine.positions["EOS_AXS"]
        orders_before = len(rig.sim_orders("pb-"))
        for _ in range(2):
            async with rig.engine._lock:
                await rig.engine.reconciler.run(startup=False)
        assert rig.engine.positions["EOS_AXS"] == halted  # same state, legs, reason
        assert len(rig.sim_orders("pb-")) == orders_before  # no repair order went out
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert (exit_.status, exit_.reason) == (ExecutionStatus.REFUSED, Reason.PAIR_HALTED)
        assert rig.engine.resume("EOS_AXS")
        await wait_for_state(rig, "EOS_AXS", PairState.FLAT)
        spec = rig.pairs["EOS_AXS"]
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert [t[1] for t in transitions(rig.journal, "EOS_AXS")] == [
            "entry_sent", "halt", "operator_resume", "resolved"]
        assert_journal_matches_exchange(rig)


async def test_blocked_stays_blocked_until_the_exchange_matches_the_journal_again(make_rig) -> None:
    """Someone else's EOS position on the account: every pair on EOS is BLOCKED, pass after pass.
    Once it is closed by hand, the next pass finds the exchange equal to the journal and unblocks."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        client = local_client(ccxt_async.binanceusdm, rig.sim)
        try:
            await client.load_markets()
            await client.create_order("EOS/USDT:USDT", "market", "buy", 50)
            for _ in range(2):
                async with rig.engine._lock:
                    await rig.engine.reconciler.run(startup=False)
                assert rig.engine.pair_state("EOS_AXS") is PairState.BLOCKED
                assert "difference 50" in rig.engine.blocked["EOS_AXS"]
            refused = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
            assert (refused.status, refused.reason) == (ExecutionStatus.REFUSED, Reason.PAIR_BLOCKED)
            await client.create_order("EOS/USDT:USDT", "market", "sell", 50, None, {"reduceOnly": True})
        finally:
            await client.close()
        async with rig.engine._lock:
            await rig.engine.reconciler.run(startup=False)
        assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT and rig.engine.blocked == {}
        assert [t[1] for t in transitions(rig.journal, "EOS_AXS")] == ["block", "unblock", "resolved"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed


def test_the_resume_command_clears_a_halted_pair_in_the_journal(tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dry_run": True, "storage": {"dir": "state"}}), encoding="utf-8")
    pairs = Path(bot_main.PROJECT_DIR / "pairs_config.json")
    with Journal.open(tmp_path / "state" / "journal-paper.sqlite", mode="paper") as journal:
        journal.save_position(PairPosition("EOS_AXS", PairState.HALTED, D(-5), ZERO, "EOS/USDT:USDT",
                                           "AXS/USDT:USDT", halted_reason="rollback failed: EOS -5 open"))
        journal.save_position(PairPosition("SAND_EOS", PairState.FLAT, ZERO, ZERO, "SAND/USDT:USDT", "EOS/USDT:USDT"))
    code = bot_main.main(["resume", "EOS_AXS", "SAND_EOS", "--config", str(config), "--pairs", str(pairs)])
    out = capsys.readouterr().out
    assert code == 0
    assert "EOS_AXS: HALTED -> RESOLVING" in out and "SAND_EOS: FLAT, nothing to resume" in out
    with Journal.open(tmp_path / "state" / "journal-paper.sqlite", mode="paper") as journal:
        assert journal.get_position("EOS_AXS").state is PairState.RESOLVING
        assert journal.get_position("EOS_AXS").qty_a == Decimal(-5)  # the legs stay as they are
        assert transitions(journal, "EOS_AXS") == [("HALTED", "operator_resume", "RESOLVING")]
    assert bot_main.main(["resume", "NOPE", "--config", str(config)]) == 2


async def test_a_contradicted_journal_row_is_an_anomaly_and_the_pass_goes_on(make_rig) -> None:
    """The journal says an order was REJECTED, the exchange has it resting (then CANCELED by the
    orphan sweep). Applying that view raised IllegalTransitionError out of the pass, which then
    skipped the position comparison (and at start aborted start()). Now it is an anomaly event
    with both versions, and the same pass still blocks a pair whose position is unexplained."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        signal = rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD)
        rig.journal.record_signal(signal)
        cid = f"pb-{signal.signal_id}-aE0"
        spec = rig.pairs["EOS_AXS"]
        book = rig.book(spec.symbol_a)
        rig.journal.record_order_intent(client_order_id=cid, signal_id=signal.signal_id, pair_id="EOS_AXS", leg="a",
                                        purpose="ENTRY", attempt=0, symbol=spec.symbol_a, side="buy",
                                        order_type="limit", qty=D(20), price=book.bid)
        rig.journal.update_order(cid, status="REJECTED", error="refused, as the journal believes")
        client = local_client(ccxt_async.binanceusdm, rig.sim)
        try:
            await client.load_markets()
            await client.create_order("EOS/USDT:USDT", "limit", "buy", 20, float(book.bid),
                                      {"newClientOrderId": cid})
            await client.create_order("AXS/USDT:USDT", "market", "buy", 3)  # unexplained, on AXS
        finally:
            await client.close()
        async with rig.engine._lock:
            report = await rig.engine.reconciler.run(startup=False)
        assert cid in report.anomalies and "REJECTED" in report.anomalies[cid]
        (event,) = rig.journal.events("anomaly")
        assert event["detail"]["journal"].startswith("REJECTED") and event["detail"]["exchange"].startswith("canceled")
        assert rig.journal.get_order(cid).status.value == "REJECTED"  # kept as recorded
        assert rig.engine.pair_state("EOS_AXS") is PairState.BLOCKED  # the comparison still ran
        assert "AXS" in rig.engine.blocked["EOS_AXS"]


@pytest.mark.parametrize("policy", ["close", "alert"])
async def test_a_vanished_leg_closes_the_surviving_leg_or_halts(make_rig, policy: str) -> None:
    """The EOS leg of a held pair disappears with no order of ours (here: closed by hand, as a
    liquidation or auto-deleveraging would). Before, the pair was blocked for the rest of the run
    with its AXS leg open and unhedged. Now a CRITICAL line says what vanished, the journal records
    it, and the surviving leg is closed (``close``) or the pair HALTED with nothing sent (``alert``)."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=FAST_EXEC.model_copy(update={"on_leg_vanished": policy}))
        spec = rig.pairs["EOS_AXS"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed
        eos, axs = rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)
        assert eos < 0 < axs
        client = local_client(ccxt_async.binanceusdm, rig.sim)
        try:
            await client.load_markets()
            await client.create_order("EOS/USDT:USDT", "market", "buy", float(-eos), None, {"reduceOnly": True})
        finally:
            await client.close()
        orders_before = len(rig.sim_orders("pb-"))
        async with rig.engine._lock:
            report = await rig.engine.reconciler.run(startup=False)
        assert any("VANISHED" in line and "EOS" in line for line in rig.lines("CRITICAL"))
        assert rig.engine.blocked == {}
        vanished = [o for o in rig.journal.orders_for_pair("EOS_AXS") if o.purpose.value == "VANISHED"]
        assert [(o.symbol, o.side.value, o.filled_qty) for o in vanished] == [(spec.symbol_a, "buy", -eos)]
        if policy == "close":
            assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT
            assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0  # AXS closed too
            assert "closed naked" in report.repaired["EOS_AXS"]
        else:
            assert rig.engine.pair_state("EOS_AXS") is PairState.HALTED
            assert (rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)) == (0, axs)
            assert len(rig.sim_orders("pb-")) == orders_before  # nothing sent


async def test_run_resume_halted_clears_a_halted_pair_at_start(make_rig, tmp_path) -> None:
    """``run --resume-halted``: a pair HALTED with a naked leg in the journal stays HALTED across a
    plain restart, and a start with the flag clears it; the startup pass closes the leg."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        path = tmp_path / "halted.sqlite"
        rig = await make_rig(execution=FAST_EXEC.model_copy(update={"max_order_retries": 1}), journal_path=path)
        seed = _seed_for(0.9, lambda r: r[0] != r[1] and r[2] and r[3], 4)
        rig.sim.set_faults(reject_probability=0.9, reject_code=REJECT, seed=seed)
        assert (await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))).status \
            is ExecutionStatus.HALTED
        rig.sim.set_faults(reject_probability=0.0)
        await rig.engine.stop()
        rig.journal.close()
        plain = await make_rig(journal_path=path, sim=rig.sim)
        assert plain.engine.pair_state("EOS_AXS") is PairState.HALTED  # sticky across a restart
        await plain.engine.stop()
        plain.journal.close()
        resumed = await make_rig(journal_path=path, sim=rig.sim, resume_halted=True)
        await wait_for_state(resumed, "EOS_AXS", PairState.FLAT)
        spec = resumed.pairs["EOS_AXS"]
        assert resumed.sim_qty(spec.symbol_a) == resumed.sim_qty(spec.symbol_b) == 0
        assert ("HALTED", "operator_resume", "RESOLVING") in transitions(resumed.journal, "EOS_AXS")
