"""Responses that vary (issue 11, item 8): a MARKET order answered before it has executed.

Binance may answer ``POST /fapi/v1/order`` for a MARKET order with status NEW and executedQty 0
(or PARTIALLY_FILLED), the fills following; with ``newOrderRespType=ACK`` it always answers
before execution. The simulator's ``market_delay`` fault does both. The engine must treat such an
answer as "placed, fills not known yet", never as "filled 0": it follows the order to its final
state and records the fills that come (docs/architecture.md, "Order outcomes").
"""

from __future__ import annotations

import asyncio

import ccxt.async_support as ccxt_async

from core.types import PairState, SignalType
from execution.exchange import ExchangeOrderStatus
from tests.engine_rig import (D, TEST_TIMEOUT_S, assert_journal_matches_exchange, assert_round_trip_pnl, entry_plan,
                              hedge_excess)
from tests.sim_helpers import local_client


async def test_a_market_order_answered_new_gets_its_fills_recorded_once_and_the_hedge_is_kept(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(hooked=True)
        # seed 0: one leg answered NEW, the other PARTIALLY_FILLED; userTrades lag 300 ms behind too
        rig.sim.set_faults(market_delay_probability=1.0, market_delay_ms=300, market_delay_partial_probability=0.5,
                           trade_lag_ms=300, seed=0)
        spec = rig.pairs["EOS_AXS"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed, entry.detail
        answered = [(a.status, a.filled) for a in rig.adapter.answers]
        assert all(status is ExchangeOrderStatus.OPEN for status, _ in answered)  # nothing final at the answer
        assert any(filled == 0 for _, filled in answered)
        want_a, want_b = entry_plan(rig, entry.signal_id)
        assert (entry.filled_a, entry.filled_b) == (want_a, want_b)  # the fills that came, all of them
        over_a, over_b = hedge_excess(entry.filled_a, entry.filled_b, want_a, want_b, rig.step(spec.symbol_a),
                                      rig.step(spec.symbol_b))
        assert over_a < 1 and over_b < 1
        assert_journal_matches_exchange(rig)
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.executed and rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert_journal_matches_exchange(rig)
        assert await assert_round_trip_pnl(rig) == 1  # every trade once: journal fills == exchange trades
        injected = rig.sim.faults.injected
        assert injected["market_delayed_new"] > 0 and injected["market_delayed_partial"] > 0


async def test_new_order_resp_type_ack_answers_before_execution_and_the_fills_follow(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        client = local_client(ccxt_async.binanceusdm, rig.sim)
        try:
            await client.load_markets()
            ack = await client.create_order("EOS/USDT:USDT", "market", "buy", 100, None,
                                            {"newOrderRespType": "ACK", "newClientOrderId": "user-ack-1"})
            later = await client.fetch_order(None, "EOS/USDT:USDT", {"origClientOrderId": "user-ack-1"})
        finally:
            await client.close()
        assert (ack["status"], ack["info"]["executedQty"]) == ("open", "0")
        assert (later["status"], D(later["info"]["executedQty"])) == ("closed", D(100))
