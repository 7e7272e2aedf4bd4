"""Reduce-only never trusts an unknown outcome as zero (found by the fault campaign, seed 41).

Pairs share legs and the account is one-way, so an exit leg goes reduce-only only if the
account's net position absorbs it. Another pair's order on the same symbol whose outcome is
unknown may have landed: counted as zero, the exit's reduce-only buy was refused (-2022) four
times and the pair HALTED with one leg open. Here the other order did land on the exchange,
and the journal holds it as UNKNOWN, as the resolver would while it looks it up.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from core.types import PairState, SignalType
from execution.journal import OrderStatus
from tests.engine_rig import BTC_ETH, EOS_AXS, TEST_TIMEOUT_S

ZERO = Decimal(0)


async def test_an_exit_goes_without_reduce_only_while_an_order_on_its_symbol_is_unknown(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH))
        rig.sim.resume()
        spec = rig.pairs["EOS_AXS"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed and entry.state_after is PairState.LONG_SPREAD
        short_eos = -rig.sim_qty(spec.symbol_a)
        assert short_eos > 0  # long spread: X (EOS) is sold
        # Another order buys EOS and its answer is lost: placed on the exchange, UNKNOWN in the journal.
        other = "pb-other-1688000000000-EL-aE0"
        extra = (short_eos / 2).quantize(rig.step(spec.symbol_a))
        rig.journal.record_order_intent(client_order_id=other, signal_id="other-1688000000000-EL", pair_id="BTC_ETH",
                                        leg="a", purpose="ENTRY", attempt=0, symbol=spec.symbol_a, side="buy",
                                        order_type="market", qty=extra)
        rig.journal.update_order(other, status=OrderStatus.SENT)
        await rig.adapter.create_order(symbol=spec.symbol_a, side="buy", qty=extra, order_type="market",
                                       client_order_id=other)
        rig.journal.update_order(other, status=OrderStatus.UNKNOWN)
        assert rig.journal.open_order_qty(spec.symbol_a, "buy") == extra
        closed = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert closed.executed, closed.detail
        assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        exit_orders = [o for o in rig.journal.orders_for_pair("EOS_AXS") if o.purpose.value == "EXIT"]
        eos_exit = [o for o in exit_orders if o.symbol == spec.symbol_a]
        assert eos_exit and not any(o.reduce_only for o in eos_exit)  # the net could not absorb it for sure
        assert all(o.reduce_only for o in exit_orders if o.symbol == spec.symbol_b)  # AXS: nothing unknown
        # The exchange holds exactly what the unknown order bought: this pair is flat.
        assert rig.sim_qty(spec.symbol_a) == extra and rig.sim_qty(spec.symbol_b) == ZERO
