"""Fees as Binance charges them and funding at funding times, through real ccxt against the simulator.

Issue 11 items 4 and 5. The engine is the one ``tests/engine_rig.py`` builds (a ``CcxtExchange``
against an in-process ``SimulatorServer``); nothing is mocked. A funding time is made to come
soon by a short funding interval (``FundingConfig.default_interval_seconds``) and reached by
resuming the paused replay until the simulator has settled one.
"""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from app.report import pnl_rows, totals
from core.config import ExchangeConfig, PaperConfig, RiskConfig, Secrets
from core.types import Quote, SignalType
from execution.exchange import CcxtExchange
from execution.journal import OrderPurpose
from execution.paper import PaperExchange
from execution.results import ExecutionStatus, Reason
from simulator.config import AccountConfig, FillConfig, FundingConfig, SimulatorConfig
from simulator.server import SimulatorServer
from tests.engine_rig import BTC_ETH, D, EOS_AXS, REPLAY, SYMBOLS, TEST_TIMEOUT_S, ZERO, assert_round_trip_pnl

EIGHT = D("1E-8")
BNB_PRICE = D("243.7")


def _fee(notional: Decimal, rate: Decimal) -> Decimal:
    return (notional * rate).quantize(EIGHT, rounding=ROUND_HALF_UP)


async def _sim(sim_data, **config) -> SimulatorServer:
    sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=REPLAY, **config), data=sim_data)
    await sim.start()
    sim.pause()
    return sim


async def _run_past_funding(sim: SimulatorServer, symbols: set[str], after_ms: int) -> None:
    """Resume the replay until every symbol in ``symbols`` has a funding time settled after ``after_ms``."""
    sim.resume()
    try:
        while not symbols <= {r["symbol"] for r in sim.funding.history if r["fundingTime"] > after_ms}:
            await asyncio.sleep(0.02)
    finally:
        sim.pause()


async def test_entry_fills_are_booked_at_the_vip0_taker_fee_by_default(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.status is ExecutionStatus.EXECUTED
        fills = [f for o in rig.journal.orders_for_signal(entry.signal_id) if o.purpose is OrderPurpose.ENTRY
                 for f in rig.journal.fills_for_order(o.client_order_id)]
        assert len(fills) == 2
        for fill in fills:
            assert fill.fee == _fee(fill.qty * fill.price, D("0.0005"))
            assert (fill.fee_asset, fill.fee_native) == ("USDT", None)
        assert {s: (r.maker, r.taker, r.source) for s, r in rig.engine.fee_rates.items()} == {
            s: (D("0.0002"), D("0.0005"), "account") for s in (rig.pairs["EOS_AXS"].symbol_a,
                                                               rig.pairs["EOS_AXS"].symbol_b)}


async def test_a_fee_paid_in_bnb_is_booked_in_usdt_at_the_bnb_price_with_the_asset_kept(make_rig, sim_data) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data, fills=FillConfig(bnb_price_usdt=BNB_PRICE),
                         accounts=(AccountConfig(pay_fees_in_bnb=True, starting_balance_bnb=D("5")),))
        rig = await make_rig(sim=sim)
        wallet_before = D(sim.positions()["default"]["wallet_usdt"])
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.status is ExecutionStatus.EXECUTED
        fills = [f for o in rig.journal.orders_for_signal(entry.signal_id)
                 for f in rig.journal.fills_for_order(o.client_order_id)]
        assert fills
        for fill in fills:
            # Binance's BNB deduction: 10 % off the taker fee, charged in BNB
            native = (fill.qty * fill.price * D("0.0005") * D("0.9") / BNB_PRICE).quantize(EIGHT, ROUND_HALF_UP)
            assert (fill.fee_asset, fill.fee_native) == ("BNB", native)
            assert fill.fee == (native * BNB_PRICE).quantize(EIGHT)
        report = sim.positions()["default"]
        assert D(report["bnb"]) == D("5") - sum((f.fee_native for f in fills), ZERO)
        assert D(report["wallet_usdt"]) == wallet_before  # no USDT fee on an opening trade
        order = rig.journal.orders_for_signal(entry.signal_id)[0]
        assert order.fee == sum((f.fee for f in rig.journal.fills_for_order(order.client_order_id)), ZERO)


async def test_funding_at_a_funding_time_reaches_journal_round_trip_daily_loss_and_statistics(make_rig,
                                                                                               sim_data) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        # AXS long pays a positive rate, EOS short pays a negative one: the trip pays on both legs
        funding = FundingConfig(default_interval_seconds=600, rates={"AXSUSDT": D("0.003"), "EOSUSDT": D("-0.002")})
        sim = await _sim(sim_data, funding=funding)
        rig = await make_rig(sim=sim)
        spec = rig.pairs["EOS_AXS"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD,
                                                           ts_ms=sim.replay.now_ms))
        assert entry.status is ExecutionStatus.EXECUTED
        trip_id = rig.engine.positions["EOS_AXS"].round_trip_id
        opened = sim.replay.now_ms
        await _run_past_funding(sim, {"EOSUSDT", "AXSUSDT"}, opened)
        income = [r for r in sim.engine.income if r["account"] == "default"]
        assert {r["symbol"] for r in income} == {"EOSUSDT", "AXSUSDT"}
        paid = sum((D(r["income"]) for r in income), ZERO)
        assert paid < 0
        # each payment is notional at the mark x rate, longs paying a positive rate
        for row in income:
            settle = next(h for h in sim.funding.history if h["symbol"] == row["symbol"]
                          and h["fundingTime"] == row["time"])
            held = -entry.filled_a if row["symbol"] == "EOSUSDT" else entry.filled_b
            assert D(row["income"]) == -(held * D(settle["markPrice"]) * D(settle["fundingRate"])).quantize(
                EIGHT, ROUND_HALF_UP)
        assert D(sim.positions()["default"]["funding_usdt"]) == paid

        # open trip: read with reconciliation (idempotent), counted in the daily-loss figure
        assert await rig.engine.collect_funding() == len(income)
        assert await rig.engine.collect_funding() == 0
        assert sum((f.amount for f in rig.journal.funding_for_round_trip(trip_id)), ZERO) == paid
        now = sim.replay.now_ms
        assert rig.engine._risk_snapshot(now).realized_pnl_today_usdt == paid
        open_row = pnl_rows(rig.journal, rig.engine.positions, rig.mid)[0]
        assert open_row["funding_usdt"] == float(round(paid, 6))

        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT, ts_ms=now + 1))
        assert exit_.status is ExecutionStatus.EXECUTED
        trip = rig.journal.get_round_trip(trip_id)
        assert trip.funding == paid and trip.net_pnl == trip.gross_pnl - trip.fees + paid
        assert await assert_round_trip_pnl(rig) == 1
        assert rig.engine._risk_snapshot(now + 2).realized_pnl_today_usdt == trip.net_pnl
        rows = pnl_rows(rig.journal, rig.engine.positions, rig.mid)
        assert rows[0]["funding_usdt"] == float(round(paid, 6)) == totals(rows)["funding_usdt"]
        assert rows[0]["realized_usdt"] == float(round(trip.net_pnl, 6))
        assert rig.engine.stats()["funding_usdt"] == float(paid)
        assert {spec.symbol_a, spec.symbol_b} == {f.symbol for f in rig.journal.funding_since(0)}


async def test_paper_mode_applies_funding_from_premium_index_at_funding_times(sim_data, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data, funding=FundingConfig(default_interval_seconds=600, rates={"BTCUSDT": D("0.0004")}))
        markets = CcxtExchange(ExchangeConfig(base_url=sim.base_url, enable_rate_limit=False),
                               Secrets(sim.api_key, sim.api_secret, "test"))
        paper = PaperExchange(markets=markets, paper=PaperConfig(slippage_bps=0.0), state_path=None)
        try:
            await paper.load_markets()
            btc = markets.resolve_symbol("BTC/USDT")
            book = sim.replay.book("BTCUSDT")
            t0 = sim.replay.now_ms

            def quote(ts_ms: int) -> Quote:
                return Quote(symbol=btc, bid=float(book.bid), ask=float(book.ask), ts_ms=ts_ms,
                             bid_qty=float(book.bid_qty), ask_qty=float(book.ask_qty))

            paper.on_quote(quote(t0))
            order = await paper.create_order(symbol=btc, side="sell", qty=D("0.01"), order_type="market",
                                             client_order_id="short-1")
            fill = (await paper.fetch_order_fills(symbol=btc, exchange_order_id=order.exchange_order_id))[0]
            assert fill.fee == _fee(fill.qty * fill.price, D("0.0005"))  # paper's VIP 0 default
            assert await paper.fetch_funding_payments(btc, t0) == []  # learns the next funding time
            next_ms = sim.funding.next_funding_ms("BTCUSDT")
            paper.on_quote(quote(next_ms - 1))
            assert await paper.fetch_funding_payments(btc, t0) == []  # not reached yet
            paper.on_quote(quote(next_ms + 5))
            payments = await paper.fetch_funding_payments(btc, t0)
            assert len(payments) == 1 and payments[0].ts_ms == next_ms
            # a short receives a positive rate: 0.01 x mid x 0.0004
            assert payments[0].amount == (D("0.01") * book.mid * D("0.0004")).quantize(EIGHT, ROUND_HALF_UP)
            balance = await paper.fetch_balance()
            assert balance.total == D(10_000) - fill.fee + payments[0].amount + (
                (fill.price - book.mid) * D("0.01")).quantize(EIGHT)
            assert await paper.fetch_funding_payments(btc, t0) == payments  # settled once
        finally:
            await markets.close()
            await sim.stop()


async def test_an_exit_reads_the_funding_its_round_trip_paid_before_closing_it(make_rig, sim_data) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data, funding=FundingConfig(default_interval_seconds=600, rates={"AXSUSDT": D("0.003")}))
        rig = await make_rig(sim=sim)
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD,
                                                           ts_ms=sim.replay.now_ms))
        trip_id = rig.engine.positions["EOS_AXS"].round_trip_id
        await _run_past_funding(sim, {"EOSUSDT", "AXSUSDT"}, sim.replay.now_ms)
        paid = sum((D(r["income"]) for r in sim.engine.income), ZERO)
        assert paid != 0 and rig.journal.funding_for_round_trip(trip_id) == []  # nothing read yet
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT, ts_ms=sim.replay.now_ms))
        assert entry.status is exit_.status is ExecutionStatus.EXECUTED
        trip = rig.journal.get_round_trip(trip_id)
        assert trip.funding == paid and trip.net_pnl == trip.gross_pnl - trip.fees + paid


async def test_funding_paid_by_an_open_round_trip_stops_new_entries_at_the_daily_loss_limit(make_rig,
                                                                                           sim_data) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        funding = FundingConfig(default_interval_seconds=600, rates={"AXSUSDT": D("0.003"), "EOSUSDT": D("-0.002")})
        sim = await _sim(sim_data, funding=funding)
        risk = RiskConfig(max_open_pairs=5, max_gross_exposure_usdt=50_000, max_daily_loss_usdt=1.0)
        rig = await make_rig(sim=sim, pairs=(EOS_AXS, BTC_ETH), risk=risk)
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD,
                                                           ts_ms=sim.replay.now_ms))
        assert entry.status is ExecutionStatus.EXECUTED
        await _run_past_funding(sim, {"EOSUSDT", "AXSUSDT"}, sim.replay.now_ms)
        await rig.engine.collect_funding()
        paid = sum((f.amount for f in rig.journal.funding_since(0)), ZERO)
        assert paid < -1  # more than the 1 USDT limit, and no round trip is closed
        refused = await rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.ENTER_LONG_SPREAD,
                                                             ts_ms=sim.replay.now_ms))
        assert refused.status is ExecutionStatus.REFUSED and refused.reason is Reason.MAX_DAILY_LOSS
