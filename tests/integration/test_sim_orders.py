"""Real ccxt against the simulator: orders, positions, balances, leverage, margin mode."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import ccxt
import ccxt.pro as ccxt_pro
import pytest

BTC = "BTC/USDT:USDT"
ETH = "ETH/USDT:USDT"


async def test_market_round_trip_by_client_order_id(rest, sim) -> None:
    async with asyncio.timeout(10):
        opened = await rest.create_order(BTC, "market", "buy", 0.01,
                                         params={"newClientOrderId": "rt-open-1"})
        assert opened["status"] == "closed" and opened["filled"] == 0.01
        assert opened["clientOrderId"] == "rt-open-1"
        found = await rest.fetch_order(None, BTC, params={"origClientOrderId": "rt-open-1"})
        assert found["id"] == opened["id"] and found["average"] == opened["average"]
        positions = await rest.fetch_positions([BTC])
        assert len(positions) == 1
        assert positions[0]["side"] == "long" and positions[0]["contracts"] == 0.01
        assert positions[0]["entryPrice"] == opened["average"]
        closed = await rest.create_order(BTC, "market", "sell", 0.01,
                                         params={"reduceOnly": True, "clientOrderId": "rt-close-1"})
        assert closed["status"] == "closed" and closed["reduceOnly"] is True
        assert await rest.fetch_positions([BTC]) == []
        balance = await rest.fetch_balance()
    # wallet = start + realized PnL - taker fees, exactly
    buy, sell = Decimal(opened["info"]["avgPrice"]), Decimal(closed["info"]["avgPrice"])
    qty, fee_rate = Decimal("0.01"), sim.config.fills.taker_fee_rate
    expected = Decimal(10000) + (sell - buy) * qty - (buy + sell) * qty * fee_rate
    assert Decimal(sim.positions()["default"]["wallet_usdt"]) == expected
    assert balance["USDT"]["total"] == pytest.approx(float(expected))
    log = sim.order_log()
    assert [o["clientOrderId"] for o in log] == ["rt-open-1", "rt-close-1"]


async def test_limit_order_rests_lists_and_cancels(rest) -> None:
    async with asyncio.timeout(10):
        book = await rest.fetch_bids_asks([ETH])
        far = rest.price_to_precision(ETH, book[ETH]["bid"] * 0.8)
        order = await rest.create_order(ETH, "limit", "buy", 0.01, float(far),
                                        params={"clientOrderId": "rest-lim-1"})
        assert order["status"] == "open" and order["filled"] == 0.0
        listed = await rest.fetch_open_orders()  # no symbol: allowed by the venue options
        assert [o["clientOrderId"] for o in listed] == ["rest-lim-1"]
        canceled = await rest.cancel_order(order["id"], ETH)
        assert canceled["status"] == "canceled"
        assert await rest.fetch_open_orders(ETH) == []
        with pytest.raises(ccxt.OrderNotFound):  # -2011: no longer open
            await rest.cancel_order(order["id"], ETH)
        with pytest.raises(ccxt.OrderNotFound):  # -2013
            await rest.fetch_order("123", ETH)
        with pytest.raises(ccxt.OrderNotFound):
            await rest.fetch_order(None, ETH, params={"origClientOrderId": "never-sent"})


async def test_resting_limit_fills_as_maker_when_the_market_reaches_it(rest, sim) -> None:
    async with asyncio.timeout(20):
        book = await rest.fetch_bids_asks([BTC])
        order = await rest.create_order(BTC, "limit", "buy", 0.002, book[BTC]["bid"],
                                        params={"clientOrderId": "maker-1"})
        while order["status"] == "open":
            await asyncio.sleep(0.05)
            order = await rest.fetch_order(order["id"], BTC)
        trades = await rest.fetch_my_trades(BTC)
    assert order["status"] == "closed" and order["average"] == book[BTC]["bid"]
    assert trades[-1]["takerOrMaker"] == "maker"
    fee = Decimal(str(book[BTC]["bid"])) * Decimal("0.002") * sim.config.fills.maker_fee_rate
    assert Decimal(str(trades[-1]["fee"]["cost"])) == fee.quantize(Decimal("1E-8"))


async def test_duplicate_client_order_id_among_open_orders(rest) -> None:
    async with asyncio.timeout(10):
        book = await rest.fetch_bids_asks([ETH])
        price = float(rest.price_to_precision(ETH, book[ETH]["bid"] * 0.8))
        first = await rest.create_order(ETH, "limit", "buy", 0.01, price,
                                        params={"clientOrderId": "dup-1"})
        with pytest.raises(ccxt.InvalidOrder, match="-4116"):
            await rest.create_order(ETH, "limit", "buy", 0.01, price,
                                    params={"clientOrderId": "dup-1"})
        await rest.cancel_order(first["id"], ETH)
        # As on Binance, uniqueness is among OPEN orders: the id is free again.
        again = await rest.create_order(ETH, "limit", "buy", 0.01, price,
                                        params={"clientOrderId": "dup-1"})
        found = await rest.fetch_order(None, ETH, params={"origClientOrderId": "dup-1"})
        assert found["id"] == again["id"]  # the newest order with that id


async def test_reduce_only_without_position_is_rejected(rest) -> None:
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):
            await rest.create_order(BTC, "market", "sell", 0.001, params={"reduceOnly": True})


async def test_reduce_only_larger_than_position_is_rejected(rest) -> None:
    async with asyncio.timeout(5):
        await rest.create_order(BTC, "market", "sell", 0.002)
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):
            await rest.create_order(BTC, "market", "buy", 0.003, params={"reduceOnly": True})
        closed = await rest.create_order(BTC, "market", "buy", 0.002, params={"reduceOnly": True})
    assert closed["filled"] == 0.002


async def test_set_leverage_and_margin_mode(rest, make_client) -> None:
    async with asyncio.timeout(10):
        response = await rest.set_leverage(10, BTC)
        assert response["leverage"] == 10
        with pytest.raises(ccxt.BadRequest):  # ccxt refuses > 125 before sending
            await rest.set_leverage(200, BTC)
        with pytest.raises(ccxt.BadRequest, match="-4028"):  # CELO allows at most 50x
            await rest.set_leverage(100, "CELO/USDT:USDT")
        assert (await rest.set_margin_mode("isolated", BTC))["code"] == 200
        # ccxt 4.5.90 raises MarginModeAlreadySet for -4046 by default ...
        with pytest.raises(ccxt.MarginModeAlreadySet):
            await rest.set_margin_mode("isolated", BTC)
        lenient = make_client(options={"setMarginMode": {"throwMarginModeAlreadySet": False}})
        await lenient.load_markets()
        # ... and returns Binance's body when told not to.
        assert (await lenient.set_margin_mode("isolated", BTC))["code"] == -4046
        await rest.create_order(BTC, "market", "buy", 0.001)
        positions = await rest.fetch_positions([BTC])
        assert positions[0]["marginMode"] == "isolated"
        with pytest.raises(ccxt.ExchangeError, match="-4048"):  # not with an open position
            await rest.set_margin_mode("cross", BTC)


async def test_balance_reports_margin_in_use(rest) -> None:
    async with asyncio.timeout(10):
        await rest.set_leverage(5, ETH)
        order = await rest.create_order(ETH, "market", "buy", 0.1)
        balance = await rest.fetch_balance()
    used = Decimal(str(balance["USDT"]["used"]))
    notional = Decimal(order["info"]["cumQuote"])
    assert used == pytest.approx(notional / 5, rel=Decimal("0.01"))
    assert balance["USDT"]["free"] < balance["USDT"]["total"]


async def test_watch_orders_streams_new_and_trade_updates(sim, make_client) -> None:
    pro = make_client(ccxt_pro.binanceusdm)
    async with asyncio.timeout(10):
        await pro.load_markets()
        watcher = asyncio.ensure_future(pro.watch_orders(BTC))
        while not any(client.account for client in sim.hub.clients):  # listenKey + connect
            await asyncio.sleep(0.01)
        created = await pro.create_order(BTC, "market", "buy", 0.001,
                                         params={"newClientOrderId": "stream-1"})
        seen = await watcher
        while seen[-1]["status"] != "closed":
            seen = await pro.watch_orders(BTC)
    last = seen[-1]
    assert last["id"] == created["id"] and last["clientOrderId"] == "stream-1"
    assert last["filled"] == 0.001 and last["fee"]["currency"] == "USDT"
    assert last["timestamp"] < 1_700_000_000_000  # replay time (2023), not the wall clock


async def test_partial_fills_expire_market_remainder_and_keep_limit_open(rest, sim) -> None:
    sim.set_faults(partial_fill_probability=1.0, seed=3)
    async with asyncio.timeout(10):
        market = await rest.create_order(ETH, "market", "buy", 0.05)
        assert market["status"] == "expired"  # Binance EXPIRED: the rest was not filled
        assert 0 < market["filled"] < 0.05
        book = await rest.fetch_bids_asks([ETH])
        limit = await rest.create_order(ETH, "limit", "sell", 0.05, book[ETH]["bid"])
        assert limit["status"] == "open" and 0 < limit["filled"] < 0.05
        await rest.cancel_order(limit["id"], ETH)
    assert sim.stats()["orders"] == 2


async def test_lost_response_order_exists_and_is_found_by_client_id(rest, sim) -> None:
    sim.set_faults(lost_response_probability=1.0)
    async with asyncio.timeout(10):
        with pytest.raises(ccxt.NetworkError):
            await rest.create_order(BTC, "market", "buy", 0.001,
                                    params={"newClientOrderId": "ghost-1"})
        sim.set_faults(lost_response_probability=0.0)
        found = await rest.fetch_order(None, BTC, params={"origClientOrderId": "ghost-1"})
    assert found["status"] == "closed" and found["filled"] == 0.001
    assert [o["clientOrderId"] for o in sim.order_log()] == ["ghost-1"]  # placed exactly once


async def test_random_reject_leaves_no_order(rest, sim) -> None:
    sim.set_faults(reject_probability=1.0, reject_code=-2019)
    async with asyncio.timeout(5):
        with pytest.raises(ccxt.InsufficientFunds):
            await rest.create_order(BTC, "market", "buy", 0.001)
    assert sim.order_log() == []
    assert sim.stats()["faults_injected"] == {"order_rejected": 1}
