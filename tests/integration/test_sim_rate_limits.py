"""The simulator's Binance rate limits, seen through real ccxt: weights in the headers, 429 with
Retry-After over the budget, 418 for a client that does not back off, bans that grow.

Windows are scaled down (``RateLimitConfig``) so that a test runs in seconds; the weights are
the documented ones (``simulator/rate_limits.py``), and so are the default limits.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import ccxt
import pytest

from execution.rate_limit import estimate_cost
from simulator.config import SimulatorConfig
from simulator.rate_limits import ENDPOINT_WEIGHTS, RateLimitConfig, RateLimiter, request_weight
from tests.sim_helpers import TEST_REPLAY

SMALL = RateLimitConfig(weight_per_window=30, weight_window_ms=2_000, orders_per_short_window=3,
                        short_order_window_ms=1_000, orders_per_long_window=1_000, long_order_window_ms=60_000,
                        ban_base_seconds=1.0, ban_growth=2.0, ban_max_seconds=8.0)


def _weight(client: Any) -> int:
    return int(client.last_response_headers["X-MBX-USED-WEIGHT-1M"])


async def _fresh_window(window_ms: int) -> None:
    """Sleep into the first 10% of a new fixed window, so a test's requests share one window."""
    now = time.time() * 1000
    await asyncio.sleep((window_ms - now % window_ms) / 1000 + 0.01)


async def test_every_response_carries_the_used_weight_with_the_documented_weights(rest, sim) -> None:
    """Defaults: 2,400 per minute. klines by limit, depth by limit, tickers with and without a
    symbol, account, positionRisk, userTrades, openOrders: each adds its documented weight."""
    steps = [
        (lambda: rest.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "5m", "limit": 99}), 1),
        (lambda: rest.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "5m", "limit": 1000}), 5),
        (lambda: rest.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "5m", "limit": 1500}), 10),
        (lambda: rest.fapiPublicGetDepth({"symbol": "BTCUSDT", "limit": 100}), 5),
        (lambda: rest.fapiPublicGetTicker24hr({"symbol": "BTCUSDT"}), 1),
        (lambda: rest.fapiPublicGetTicker24hr(), 40),
        (lambda: rest.fapiPublicGetTickerBookTicker({"symbol": "BTCUSDT"}), 2),
        (lambda: rest.fapiPublicGetTickerBookTicker(), 5),
        (lambda: rest.fapiPrivateV3GetAccount(), 5),
        (lambda: rest.fapiPrivateV3GetPositionRisk(), 5),
        (lambda: rest.fapiPrivateGetUserTrades({"symbol": "BTCUSDT"}), 5),
        (lambda: rest.fapiPrivateGetOpenOrders({"symbol": "BTCUSDT"}), 1),
        (lambda: rest.fapiPrivateGetOpenOrders(), 40),
    ]
    async with asyncio.timeout(10):
        if time.time() % 60 > 50:  # the differences must all fall in one minute
            await _fresh_window(60_000)
        await rest.fapiPublicGetPing()
        before = _weight(rest)
        for call, weight in steps:
            await call()
            after = _weight(rest)
            assert after - before == weight, (call, after - before)
            before = after
        # A new order: no IP weight, one on each order window, both counts in its headers.
        await rest.create_order("BTC/USDT:USDT", "market", "buy", 0.001)
        headers = rest.last_response_headers
        assert int(headers["X-MBX-USED-WEIGHT-1M"]) == before
        assert int(headers["X-MBX-ORDER-COUNT-10S"]) >= 1 and int(headers["X-MBX-ORDER-COUNT-1M"]) >= 1
    info = sim.rate_limiter.config.rate_limits_payload()
    assert {(r["rateLimitType"], r["interval"], r["intervalNum"], r["limit"]) for r in info} == {
        ("REQUEST_WEIGHT", "MINUTE", 1, 2400), ("ORDERS", "MINUTE", 1, 1200), ("ORDERS", "SECOND", 10, 300)}


def test_the_bots_weight_estimates_match_the_simulators_table() -> None:
    """The bot's estimate (execution/rate_limit.py) and the venue model must not drift apart."""
    for (method, path), _ in ENDPOINT_WEIGHTS.items():
        for params in ({}, {"symbol": "BTCUSDT"}, {"limit": "5"}, {"limit": "100"}, {"limit": "500"},
                       {"limit": "1000"}, {"limit": "1500"}):
            weight, orders = estimate_cost(method, path, params)
            assert weight == request_weight(method, path, params), (method, path, params)
            assert orders == (1 if (method, path) == ("POST", "/fapi/v1/order") else 0)


class TestScaledLimits:
    """Against a simulator whose windows and bans are scaled down to seconds."""

    @pytest.fixture
    def sim_config(self) -> SimulatorConfig:
        return SimulatorConfig(replay=TEST_REPLAY, rate_limits=SMALL)

    async def test_over_the_budget_is_429_with_retry_after_and_not_backing_off_is_a_418_ban(self, rest, sim) -> None:
        async with asyncio.timeout(20):
            await _fresh_window(SMALL.weight_window_ms)
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                for _ in range(40):  # 5 each: the 7th goes over 30
                    await rest.fapiPrivateV3GetAccount()
            retry_after = int(rest.last_response_headers["Retry-After"])
            assert 1 <= retry_after <= 2 and int(rest.last_response_headers["X-MBX-USED-WEIGHT-1M"]) > 30
            assert sim.rate_limiter.answered[429] == 1 and sim.rate_limiter.violations == []
            # Ignoring the Retry-After: banned, for the base duration, and the arrival is recorded.
            with pytest.raises(ccxt.DDoSProtection, match="418"):
                await rest.fapiPublicGetTime()
            assert rest.last_response_headers["Retry-After"] == "1"
            with pytest.raises(ccxt.DDoSProtection, match="418"):  # still banned
                await rest.fapiPublicGetPing()
            kinds = [v.kind for v in sim.rate_limiter.violations]
            assert kinds == ["retry_after", "banned"]
            await _fresh_window(SMALL.weight_window_ms)  # the ban (1 s) is over, the window rolled
            await rest.fapiPublicGetTime()
            # A repeat offender's ban is longer: 2 s the second time.
            await _fresh_window(SMALL.weight_window_ms)
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                for _ in range(40):
                    await rest.fapiPrivateV3GetAccount()
            with pytest.raises(ccxt.DDoSProtection, match="418"):
                await rest.fapiPublicGetTime()
            assert rest.last_response_headers["Retry-After"] == "2"
        assert sim.rate_limiter.answered[418] >= 3 and sim.stats()["rate_limits"]["bans"] == {"127.0.0.1": 2}


    async def test_honouring_retry_after_is_never_a_violation(self, rest, sim) -> None:
        async with asyncio.timeout(20):
            await _fresh_window(SMALL.weight_window_ms)
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                for _ in range(40):
                    await rest.fapiPrivateV3GetAccount()
            await asyncio.sleep(int(rest.last_response_headers["Retry-After"]) + 0.01)
            await rest.fapiPrivateV3GetAccount()
        assert sim.rate_limiter.violations == [] and sim.rate_limiter.answered[418] == 0


    async def test_the_order_rate_limit_is_per_account_and_refuses_before_placing(self, rest, sim) -> None:
        async with asyncio.timeout(20):
            await _fresh_window(SMALL.short_order_window_ms)
            for n in range(1, 4):
                await rest.create_order("BTC/USDT:USDT", "market", "buy", 0.001)
                assert rest.last_response_headers["X-MBX-ORDER-COUNT-10S"] == str(n)
            placed = len(sim.order_log())
            with pytest.raises(ccxt.DDoSProtection, match="-1015"):
                await rest.create_order("BTC/USDT:USDT", "market", "buy", 0.001)
            assert len(sim.order_log()) == placed  # refused before the matching engine: no order
            assert rest.last_response_headers["Retry-After"] == "1"


def test_the_limiter_can_be_turned_off_and_counts_fixed_windows() -> None:
    now = [60_000]
    limiter = RateLimiter(replace(SMALL, weight_per_window=10, weight_window_ms=1_000), clock_ms=lambda: now[0])
    check = lambda: limiter.check(ip="1.2.3.4", account=None, method="GET", path="/fapi/v3/account", params={})  # noqa: E731
    assert [check().headers["X-MBX-USED-WEIGHT-1M"] for _ in range(2)] == ["5", "10"]
    now[0] += 999  # same fixed window
    assert check().error is not None
    now[0] += 1_001  # Retry-After (1 s) has passed and a new window began
    assert check().headers["X-MBX-USED-WEIGHT-1M"] == "5"
    limiter.update(replace(SMALL, enabled=False))
    assert check().headers == {} and check().error is None
