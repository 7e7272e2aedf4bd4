"""Liquidation and auto-deleveraging (issue 11, item 6).

The simulator liquidates an isolated position when its mark price crosses the liquidation
price that Binance's formula gives from the leverage bracket (maintenance rate and amount), with
a venue order named as Binance names it (clientOrderId ``autoclose-...``, ADL
``adl_autoclose``). The bot sees a leg vanish with no order of its own, reads the venue's order
from the order history, prices the vanished leg with its trades, names the cause in a CRITICAL
line and closes the surviving leg: end to end, real ccxt against the simulator.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async
import pytest

from core.types import PairState, SignalType
from matching.config import AccountConfig, FillConfig
from matching.engine import PartialFills, TradingEngine
from matching.fill_model import BookTop
from matching.requests import NewOrder
from market_replay.markets import PriceHint, build_rules, load_exchange_info
from simulator.config import SimulatorConfig
from tests.engine_rig import (D, FAST_EXEC, TEST_TIMEOUT_S, ZERO, assert_journal_matches_exchange,
                              assert_round_trip_pnl, wait_for_state)
from tests.sim_helpers import local_client

#: Periodic reconciliation every 0.3 s: the bot finds the vanished leg by itself.
WATCHING = FAST_EXEC.model_copy(update={"reconcile_interval_seconds": 0.3})


@pytest.mark.parametrize("adl", [False, True], ids=["liquidation", "adl"])
async def test_a_liquidated_leg_closes_the_other_leg_and_the_journal_prices_the_liquidation(
        make_rig, adl: bool) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=WATCHING)
        spec = rig.pairs["EOS_AXS"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.executed and rig.sim_qty(spec.symbol_a) < 0 < rig.sim_qty(spec.symbol_b)
        liquidation = rig.sim.liquidate("EOSUSDT", adl=adl)
        assert liquidation is not None and liquidation["type"] == "LIQUIDATION"
        assert liquidation["clientOrderId"] == "adl_autoclose" if adl \
            else liquidation["clientOrderId"].startswith("autoclose-")
        await wait_for_state(rig, "EOS_AXS", PairState.FLAT)
        async with asyncio.timeout(5):
            while rig.sim_qty(spec.symbol_b) != 0:
                await asyncio.sleep(0.02)
        cause = "auto-deleveraging" if adl else "liquidation"
        critical = [line for line in rig.lines("CRITICAL") if "VANISHED" in line]
        assert len(critical) == 1 and f"cause: {cause}" in critical[0] and liquidation["clientOrderId"] in critical[0]
        (vanished,) = [o for o in rig.journal.orders_for_pair("EOS_AXS") if o.purpose.value == "VANISHED"]
        assert vanished.exchange_order_id == str(liquidation["orderId"])
        (fill,) = rig.journal.fills_for_order(vanished.client_order_id)
        assert fill.price == D(liquidation["avgPrice"]) and fill.qty == D(liquidation["executedQty"])
        assert_journal_matches_exchange(rig)  # the liquidation's fill is in the journal at its price
        assert await assert_round_trip_pnl(rig) == 1  # PnL == the exchange's trades, liquidation included


async def test_the_liquidation_order_is_in_the_history_ccxt_reads(make_rig) -> None:
    """What ccxt returns for a liquidation: ``fetch_orders`` shows type ``liquidation`` with the
    autoclose id, ``fetch_my_trades`` its trade; ``fetch_positions`` a liquidation price."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(leverage=20)
        client = local_client(ccxt_async.binanceusdm, rig.sim)
        try:
            await client.load_markets()
            await client.set_leverage(20, "EOS/USDT:USDT")
            await client.create_order("EOS/USDT:USDT", "market", "sell", 100)
            (position,) = await client.fetch_positions(["EOS/USDT:USDT"])
            entry = D(position["info"]["entryPrice"])
            # short 100 at 20x; EOS's bracket (max 50x): maintenance 1 %, cum 0 -> LP = entry * 1.05 / 1.01
            assert D(position["info"]["liquidationPrice"]) == (entry * D("1.05") / D("1.01")).quantize(D("1E-8"))
            rig.sim.liquidate("EOSUSDT")
            orders = await client.fetch_orders("EOS/USDT:USDT")
            trades = await client.fetch_my_trades("EOS/USDT:USDT")
        finally:
            await client.close()
        liq = orders[-1]
        assert liq["type"] == "liquidation" and liq["clientOrderId"].startswith("autoclose-")
        assert liq["status"] == "closed" and liq["filled"] == 100
        assert str(trades[-1]["order"]) == liq["id"] and trades[-1]["side"] == "buy"
        assert rig.sim_qty("EOS/USDT:USDT") == ZERO


class _MovableMarket:
    """A MarketView whose one book the test moves: the mark is its mid."""

    def __init__(self, book: BookTop) -> None:
        self.now_ms = 1_700_000_000_000
        self.top = book

    def book(self, symbol: str) -> BookTop | None:
        return self.top

    def mark_price(self, symbol: str) -> Decimal | None:
        return self.top.mid


def test_a_mark_price_through_the_liquidation_price_liquidates_the_position() -> None:
    """High leverage and a price move: the matching engine liquidates by itself, at the mark,
    with the user-stream events Binance sends (NEW, then a CALCULATED execution)."""
    info = load_exchange_info(SimulatorConfig().exchange_info_file)
    rules = build_rules(info, {"EOSUSDT": PriceHint(D("0.7"), 3)})
    market = _MovableMarket(BookTop(D("0.700"), D("0.701"), D(100_000), D(100_000)))
    events: list[dict[str, Any]] = []
    engine = TradingEngine(rules=rules, market=market, fills=FillConfig(), faults=PartialFills(),
                           accounts=[AccountConfig(default_margin_type="ISOLATED", default_leverage=50)],
                           first_order_id=1, sink=lambda account, event: events.append(event))
    account = engine.accounts["default"]
    engine.place_order(account, NewOrder(symbol="EOSUSDT", side="BUY", order_type="MARKET", quantity=D(1000), price=None,
                                         time_in_force="GTC", client_order_id="mine", reduce_only=False,
                                         response_type="RESULT"))
    limit = engine.liquidation_price(account, "EOSUSDT")
    assert limit is not None and D("0.69") < limit < D("0.70")  # 50x, 1 % maintenance: about 1 % below entry
    market.top = BookTop(limit + D("0.001"), limit + D("0.002"), D(100_000), D(100_000))
    assert engine.check_liquidations() == []  # above the liquidation price: kept
    market.top = BookTop(limit - D("0.002"), limit - D("0.001"), D(100_000), D(100_000))
    (order,) = engine.check_liquidations()
    assert account.position("EOSUSDT").amount == 0
    assert order.client_order_id.startswith("autoclose-") and order.order_type == "LIQUIDATION"
    assert order.avg_price == (market.top.mid / D("0.001")).to_integral_value() * D("0.001")
    updates = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["c"] == order.client_order_id]
    assert [(u["x"], u["X"]) for u in updates] == [("NEW", "NEW"), ("CALCULATED", "FILLED")]


async def test_the_running_simulator_liquidates_a_50x_position_when_the_replayed_price_moves(make_rig) -> None:
    """No hook: a short EOS position at 50x (liquidated about 1 % above entry) and the replay run
    as fast as it goes; the market loop liquidates it when the mark crosses."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        client = local_client(ccxt_async.binanceusdm, rig.sim)
        try:
            await client.load_markets()
            await client.set_leverage(50, "EOS/USDT:USDT")
            await client.create_order("EOS/USDT:USDT", "market", "sell", 1000)
            (position,) = await client.fetch_positions(["EOS/USDT:USDT"])
            limit = D(position["info"]["liquidationPrice"])
            rig.sim.set_speed(0)
            rig.sim.resume()
            async with asyncio.timeout(15):
                while rig.sim_qty("EOS/USDT:USDT") != 0:
                    await asyncio.sleep(0.05)
            rig.sim.pause()
        finally:
            await client.close()
        (liq,) = [o for o in rig.sim.order_log() if o["clientOrderId"].startswith("autoclose-")]
        assert liq["side"] == "BUY" and D(liq["executedQty"]) == 1000
        assert D(liq["avgPrice"]) >= limit - D("0.001")  # closed at the mark, once it crossed (to the tick)
