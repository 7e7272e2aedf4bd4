"""A feed that stays down: every pair STALE, and ``on_feed_loss: flatten`` closes an open pair.

Real ccxt against the simulator, the real engine, hub and router. A pair is entered through the
engine; quotes flow; then the venue drops every WebSocket and refuses every new subscription.
The hub's supervisor keeps restarting the watch task, and after ``max_feed_outage_seconds``
without a quote the router flattens the pair through the engine's protocols. While that runs,
the journal and the exchange are compared at every step: the pair's two legs stay hedged
(both open or both closed), never one without the other beyond the execution in flight.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from app.pipeline import SignalRouter
from app.report import status_table
from core.config import ExchangeConfig, SignalParams
from core.stats import SessionStats
from core.types import PairState, SignalType
from signals.generator import SignalGenerator
from signals.market_data import MarketDataHub
from tests.engine_rig import TEST_TIMEOUT_S, assert_journal_matches_exchange, wait_for_state

ZERO = Decimal(0)


def _never_deciding(pair_id: str, leg_a: str, leg_b: str) -> SignalParams:
    """Thresholds no z reaches: only a flatten can close the pair."""
    return SignalParams(pair_id=pair_id, leg_a=leg_a, leg_b=leg_b, hedge_ratio=1.1664, bar_seconds=300,
                        lookback_bars=60, entry_z=49.0, exit_z=-49.0, stop_z=50.0, price_transform="log",
                        min_std=1e-12, max_quote_age_ms=60_000, cooldown_seconds=0.0,
                        stop_loss_cooldown_seconds=0.0, max_holding_bars=None)


async def _run(make_rig, policy: str) -> tuple[object, SignalRouter, MarketDataHub, list[tuple[Decimal, Decimal]]]:
    rig = await make_rig()
    spec = rig.pairs["EOS_AXS"]
    rig.sim.resume()
    entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
    assert entry.executed, entry.detail
    gen = SignalGenerator(_never_deciding("EOS_AXS", "EOS/USDT", "AXS/USDT"),
                          symbol_a=spec.symbol_a, symbol_b=spec.symbol_b)
    gen.restore_state(PairState.LONG_SPREAD, rig.base_ts)
    router = SignalRouter(generators={"EOS_AXS": gen}, engine=rig.engine, stats=SessionStats(mode="DEMO"),
                          history=None, on_feed_loss=policy)  # type: ignore[arg-type]  # no warm-up here
    hub = MarketDataHub(exchange_config=ExchangeConfig(base_url=rig.sim.base_url, enable_rate_limit=False,
                                                       request_timeout_ms=2_000),
                        max_quote_age_ms=300, reconnect_base_ms=20, reconnect_max_ms=100, seed=3,
                        max_feed_outage_s=1.0, watch_timeout_s=0.5)
    hub.on_feed_change(router.on_feed_change)
    await hub.connect()
    for symbol in router.symbols:
        hub.subscribe(symbol, router.on_quote)
    legs: list[tuple[Decimal, Decimal]] = []
    try:
        await hub.start()
        async with asyncio.timeout(TEST_TIMEOUT_S):
            while gen.quotes_accepted < 10:
                await asyncio.sleep(0.01)
            rig.sim.refuse_subscriptions(10**9)  # the venue stops serving market data for good
            await rig.sim.drop_websockets()
            deadline = asyncio.get_running_loop().time() + 4.0
            while asyncio.get_running_loop().time() < deadline:
                a, b = rig.sim_qty(spec.symbol_a), rig.sim_qty(spec.symbol_b)
                legs.append((a, b))
                if rig.engine.pair_state("EOS_AXS") not in (PairState.EXITING,):
                    assert (a == ZERO) == (b == ZERO), f"one leg without the other: {a} {b}"
                await asyncio.sleep(0.02)
    finally:
        await hub.stop()
        await router.stop()
    return rig, router, hub, legs


async def test_feed_lost_for_good_with_flatten_closes_the_open_pair(make_rig) -> None:
    rig, router, hub, legs = await _run(make_rig, "flatten")
    spec = rig.pairs["EOS_AXS"]
    assert legs[0][0] != ZERO and legs[0][1] != ZERO  # the pair was open when the feed died
    await wait_for_state(rig, "EOS_AXS", PairState.FLAT)
    assert rig.sim_qty(spec.symbol_a) == ZERO and rig.sim_qty(spec.symbol_b) == ZERO
    assert hub.counters.feed_losses == 1 and hub.counters.feed_restarts >= 2 and router.feed_lost
    trips = rig.journal.round_trips("EOS_AXS")
    assert len(trips) == 1 and not trips[0].is_open and trips[0].exit_reason == SignalType.FLATTEN.value
    assert any("FEED LOST" in line for line in rig.lines("CRITICAL"))
    assert_journal_matches_exchange(rig)


async def test_feed_lost_with_hold_keeps_the_pair_open(make_rig) -> None:
    rig, router, hub, legs = await _run(make_rig, "hold")
    spec = rig.pairs["EOS_AXS"]
    assert hub.counters.feed_losses == 1 and router.feed_lost
    assert rig.engine.pair_state("EOS_AXS") is PairState.LONG_SPREAD
    assert rig.sim_qty(spec.symbol_a) != ZERO and rig.sim_qty(spec.symbol_b) != ZERO
    assert any("on_feed_loss=hold" in line for line in rig.lines("CRITICAL"))
    assert_journal_matches_exchange(rig)
    # The status shows the dead feed: STALE, and quote ages by the wall clock, not the pair's own.
    table = status_table(router.generators, hub=hub)
    row = next(line for line in table.splitlines() if "EOS_AXS" in line)
    assert "STALE" in row
    assert hub.quote_age_ms(spec.symbol_a) > 1_000 and str(hub.quote_age_ms(spec.symbol_a))[:2] in row
