"""Rate limits and bans (issue 11): the RateGovernor alone, then the engine against the
simulator's enforced limits (scaled windows, the documented weights).

- unit: headers feed the budget, 80% holds back what does not reduce risk, Retry-After and
  bans stop everything, reservations keep concurrent requests from seeing the same headroom;
- a 418 ban: after the bot has seen it, nothing reaches the venue until it ends, one CRITICAL
  line names the end, and then the exits go before the entries;
- the issue's test: a burst of entries and exits on several pairs with lost responses (the
  resolver's lookups cost weight) never earns a 418, never ignores a Retry-After, and leaves
  the journal equal to the exchange.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from loguru import logger

from core.config import ExchangeConfig, ExecutionConfig
from core.types import PairState, SignalType
from execution.journal import OrderStatus
from execution.rate_limit import Priority, RateGovernor, RateLimitedError, RateLimits
from execution.results import ExecutionStatus
from simulator.rate_limits import RateLimitConfig
from tests.engine_rig import BTC_ETH, EOS_AXS, TEST_TIMEOUT_S, Pair, assert_journal_matches_exchange, history
from tests.sim_helpers import local_client

D = Decimal
DOT_ETH = Pair("DOT_ETH", "DOT/USDT", "ETH/USDT", D("0.9"), D(1000))
EXEC = ExecutionConfig(max_order_retries=3, retry_backoff_ms=5, order_timeout_seconds=5,
                       reconcile_interval_seconds=3600, duplicate_window_seconds=0.0,
                       clock_error_margin_ms=100, resolve_extra_seconds=0.5)


class Clock:
    def __init__(self, ms: int = 1_000_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def caplog_loguru() -> Any:
    """Every loguru line while the test runs, as "LEVEL message"."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"), level="DEBUG")
    yield lines
    logger.remove(sink)


def governor(clock: Clock, **limits: Any) -> RateGovernor:
    return RateGovernor(limits=RateLimits(**limits), clock_ms=clock, max_wait_seconds=5.0)


# ----------------------------------------------------------------------------- the governor alone


def test_above_the_soft_fraction_only_risk_reducing_requests_go() -> None:
    clock = Clock()
    g = governor(clock, weight_per_window=100, weight_window_ms=60_000)
    g.observe(200, {"X-MBX-USED-WEIGHT-1M": "75"})
    assert g.wait_seconds(priority=Priority.NORMAL, weight=5) == 0  # 80 of 100: at the line
    g.observe(200, {"x-mbx-used-weight-1m": "80"})  # header names are case-insensitive
    to_roll = (60_000 - clock.ms % 60_000) / 1000
    assert g.wait_seconds(priority=Priority.NORMAL, weight=1) == pytest.approx(to_roll)
    assert g.wait_seconds(priority=Priority.URGENT, weight=20) == 0  # the last 20% is for exits
    assert g.wait_seconds(priority=Priority.URGENT, weight=21) == pytest.approx(to_roll)  # never over
    clock.ms += int(to_roll * 1000)  # a new fixed window: the estimate starts again
    assert g.wait_seconds(priority=Priority.NORMAL, weight=1) == 0


def test_order_counts_have_their_own_windows() -> None:
    clock = Clock(1_000_000_000_000)
    g = governor(clock, orders_per_short_window=10, short_order_window_ms=10_000)
    g.observe(200, {"X-MBX-ORDER-COUNT-10S": "8", "X-MBX-ORDER-COUNT-1M": "8", "X-MBX-USED-WEIGHT-1M": "1"})
    assert g.wait_seconds(priority=Priority.NORMAL, weight=0, orders=1) == pytest.approx(10.0)
    assert g.wait_seconds(priority=Priority.URGENT, weight=0, orders=1) == 0
    assert g.wait_seconds(priority=Priority.NORMAL, weight=1) == 0  # no order: not held back


def test_retry_after_and_bans_stop_every_request_and_a_ban_is_one_critical_line(caplog_loguru: list[str]) -> None:
    clock = Clock()
    g = governor(clock)
    g.observe(429, {"Retry-After": "3", "X-MBX-USED-WEIGHT-1M": "2401"})
    for priority in Priority:
        assert g.wait_seconds(priority=priority, weight=1) == pytest.approx(3.0)
    clock.ms += 3_000
    g.observe(418, {"Retry-After": "120"})
    g.observe(418, {"Retry-After": "119"})  # the same ban, said again: no second line
    assert g.wait_seconds(priority=Priority.URGENT, weight=1) == pytest.approx(120.0)
    critical = [m for m in caplog_loguru if m.startswith("CRITICAL")]
    assert len(critical) == 1 and "HTTP 418" in critical[0] and "until" in critical[0]
    assert g.banned_until_ms == clock.ms + 120_000
    assert g.counters.answered_429 == 1 and g.counters.answered_418 == 2


async def test_a_normal_request_that_would_wait_too_long_is_not_sent() -> None:
    g = RateGovernor(max_wait_seconds=0.2)
    g.observe(418, {"Retry-After": "5"})
    started = time.monotonic()
    with pytest.raises(RateLimitedError, match="not sent"):
        await g.acquire(priority=Priority.NORMAL, weight=1, what="create_order X")
    assert time.monotonic() - started < 0.1 and g.counters.refused == 1


async def test_concurrent_requests_reserve_their_weight() -> None:
    g = RateGovernor(limits=RateLimits(weight_per_window=100, weight_window_ms=60_000), max_wait_seconds=0)
    if 60 - time.time() % 60 < 1:
        await asyncio.sleep(1.1)
    await g.acquire(priority=Priority.NORMAL, weight=50)
    await g.acquire(priority=Priority.NORMAL, weight=30)  # 80: at the line, no header needed
    with pytest.raises(RateLimitedError):
        await g.acquire(priority=Priority.NORMAL, weight=1)
    await g.acquire(priority=Priority.URGENT, weight=20)


async def test_when_a_wait_ends_urgent_requests_go_first() -> None:
    g = RateGovernor(max_wait_seconds=5)
    g.observe(429, {"Retry-After": "1"})
    order: list[str] = []

    async def send(name: str, priority: Priority) -> None:
        await g.acquire(priority=priority, weight=1)
        order.append(name)

    async with asyncio.timeout(5):
        await asyncio.gather(send("entry-1", Priority.NORMAL), send("entry-2", Priority.NORMAL),
                             send("exit", Priority.URGENT))
    assert order[0] == "exit"


def test_limits_are_learned_from_exchange_info() -> None:
    g = RateGovernor()
    g.learn_limits([{"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 2, "limit": 60},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 4, "limit": 20},
                    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1, "limit": 8}])
    assert g.limits == RateLimits(weight_per_window=60, weight_window_ms=2_000, orders_per_short_window=8,
                                  short_order_window_ms=1_000, orders_per_long_window=20,
                                  long_order_window_ms=4_000)


# ----------------------------------------------------------------------------- against the simulator

BAN = RateLimitConfig(weight_per_window=60, weight_window_ms=2_000, ban_base_seconds=2.0, ban_max_seconds=8.0)


async def _ban_the_ip(rig: Any) -> int:
    """Another client on the same IP ignores a 429: the venue bans the IP. Returns the ban end (ms)."""
    client = local_client(ccxt_async.binanceusdm, rig.sim)
    try:
        for _ in range(100):
            try:
                await client.fetch_balance()
            except ccxt_async.DDoSProtection:
                if rig.sim.rate_limiter.answered[418]:
                    break
    finally:
        await client.close()
    banned = rig.sim.rate_limiter._ips["127.0.0.1"].banned_until_ms
    assert banned > time.time() * 1000
    return banned


async def test_a_ban_stops_every_request_until_it_ends_then_exits_go_before_entries(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH), execution=EXEC, rate_limits=BAN)
        rig.sim.resume()
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.status is ExecutionStatus.EXECUTED
        await asyncio.sleep(BAN.weight_window_ms / 1000)  # let the balance refresh land
        ban_end = await _ban_the_ip(rig)
        with pytest.raises(RateLimitedError):  # the bot's next request meets the ban: 418
            await rig.adapter.fetch_balance()
        seen = len(rig.sim.rate_limiter.violations)
        assert rig.adapter.governor.banned_until_ms is not None
        entry_b, exit_a = await asyncio.gather(
            rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.ENTER_SHORT_SPREAD)),
            rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT)))
        # Nothing of the bot's reached the venue while the ban lasted, once it had seen the 418.
        assert rig.sim.rate_limiter.violations[seen:] == []
        assert {entry_b.status, exit_a.status} == {ExecutionStatus.EXECUTED}
        log = rig.sim.order_log()
        exits = [o for o in log if o["clientOrderId"].startswith(f"pb-{exit_a.signal_id}")]
        entries = [o for o in log if o["clientOrderId"].startswith(f"pb-{entry_b.signal_id}")]
        assert exits and entries
        assert max(o["orderId"] for o in exits) < min(o["orderId"] for o in entries)  # exits first
        assert time.time() * 1000 >= ban_end
        critical = rig.lines("CRITICAL")
        assert len([m for m in critical if "HTTP 418" in m]) == 1
        assert rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        assert_journal_matches_exchange(rig)


BURST = RateLimitConfig(weight_per_window=80, weight_window_ms=2_000, orders_per_short_window=8,
                        short_order_window_ms=1_000, orders_per_long_window=1_200, long_order_window_ms=60_000,
                        ban_base_seconds=2.0, ban_max_seconds=8.0)


async def test_a_burst_of_signals_with_lost_responses_never_earns_a_418(make_rig) -> None:
    """The issue's test. Three pairs (sharing legs), 25% of order responses lost (each costs
    resolver lookups), entries and exits fired all at once, three rounds, with the weight limit
    scaled to 80 per 2 s and 8 orders per second. Every answer the bot gets must keep it clear
    of a ban; the governor must have had to hold requests back (or the test proves nothing)."""
    async with asyncio.timeout(60):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH, DOT_ETH), execution=EXEC, rate_limits=BURST)
        rig.sim.resume()
        rig.sim.set_faults(seed=3, lost_response_probability=0.25)
        for _ in range(3):
            kinds = [(p, SignalType.ENTER_LONG_SPREAD if rig.engine.pair_state(p) is PairState.FLAT
                      else SignalType.EXIT) for p in rig.pairs]
            await asyncio.gather(*(rig.engine.execute_signal(rig.signal(p, k)) for p, k in kinds))
            await _settled(rig)
        rig.sim.set_faults(lost_response_probability=0.0)
        await asyncio.gather(*(rig.engine.execute_signal(rig.signal(p, SignalType.EXIT)) for p in rig.pairs
                               if rig.engine.pair_state(p) in (PairState.LONG_SPREAD, PairState.SHORT_SPREAD)))
        await _settled(rig)
        limiter = rig.sim.rate_limiter
        assert limiter.answered[418] == 0, limiter.stats()
        assert limiter.violations == [], limiter.violations  # every Retry-After honoured
        assert rig.sim.faults.injected["response_lost"] > 0
        assert rig.adapter.governor.counters.waits > 0  # the burst did press against the limits
        assert_journal_matches_exchange(rig)


async def _settled(rig: Any) -> None:
    """Until no pair is RESOLVING and no execution or resolution is in flight (bounded)."""
    async with asyncio.timeout(30):
        while rig.engine.resolving_pairs() or rig.engine.busy_pairs():
            await asyncio.sleep(0.05)


async def test_a_429_on_create_order_means_not_placed_and_the_resend_waits_for_retry_after(make_rig) -> None:
    """Binance refuses a request over the limit before the matching engine ("HTTP Return
    Codes": 4XX is the sender's side; only 5XX leaves the execution status unknown): the leg is
    resent under the same clientOrderId, with no lookup, and only after the Retry-After."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=EXEC)
        rig.sim.inject_http_errors(429, 1)  # the next request: the first entry leg to arrive
        started = time.monotonic()
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert result.status is ExecutionStatus.EXECUTED
        assert time.monotonic() - started >= 1.0  # Retry-After: 1
        c = rig.engine.counters
        assert (c.ghost_lookups, c.ghost_resends, c.orders_sent) == (0, 1, 3)
        statuses = sorted([s.value for s in history(rig, o.client_order_id)]
                          for o in rig.journal.orders_for_signal(result.signal_id))
        assert statuses == [["INTENT", "FILLED"], ["INTENT", "RESENDING", "FILLED"]]
        assert rig.adapter.governor.counters.answered_429 == 1
        assert_journal_matches_exchange(rig)


async def test_an_order_the_governor_never_sent_is_confirmed_none_not_unknown(make_rig) -> None:
    """During a ban longer than ``rate_limit_max_wait_seconds`` an entry is not sent at all:
    its orders end REJECTED (nothing placed), never UNKNOWN, and the pair stays FLAT."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(execution=EXEC, exchange=ExchangeConfig(enable_rate_limit=False, leverage=2,
                                                                      recv_window_ms=500,
                                                                      rate_limit_max_wait_seconds=0.2))
        rig.adapter.governor.observe(418, {"Retry-After": "5"})
        before = len(rig.sim.order_log())
        result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert result.status is ExecutionStatus.FAILED and rig.engine.pair_state("EOS_AXS") is PairState.FLAT
        assert len(rig.sim.order_log()) == before  # nothing reached the venue
        for order in rig.journal.orders_for_signal(result.signal_id):
            assert OrderStatus.UNKNOWN not in history(rig, order.client_order_id)
            assert order.status is OrderStatus.REJECTED
        assert rig.engine.counters.ghost_lookups == 0
