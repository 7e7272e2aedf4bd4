"""MarketDataHub against the in-process simulator, through real ccxt.pro (no ccxt mocks).

Every test binds the simulator to 127.0.0.1 port 0 and bounds itself with ``asyncio.timeout``.
Nothing here asserts on elapsed time: waits are "until a condition holds", with a deadline that
only turns a hang into a failure. The recorded market data are read once per module.

What each test pins down (docs/architecture.md, "Flow", signals/market_data.py):

* symbol forms resolve to the unified perpetual; an unknown one names its pair;
* one subscription carries 20 symbols; with a slow consumer, quotes are coalesced (never
  queued): each processed quote is its symbol's newest at that moment, and when the stream
  stops, every symbol's newest quote has been processed;
* a symbol used by two consumers reaches both;
* WebSocket drops (close frame, TCP reset, scheduled) end in a reconnect and quotes resume;
* bad frames are rejected by reason and never reach a consumer; a truncated JSON frame (which
  kills ccxt's receive loop silently) is recovered by the hub's watch timeout;
* the wall-clock watchdog marks paused symbols stale and recovered; a generator fed through
  the hub signals only while both legs are fresh in exchange time;
* warm-up history is paged past ccxt's 1000-row cap, contiguous, completed bars only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from loguru import logger

from core.config import ExchangeConfig, SignalParams
from core.errors import ConfigurationError
from core.types import Quote, TradingSignal
from signals.generator import SignalGenerator
from signals.market_data import MarketDataHub
from simulator.config import ReplayConfig, SimulatorConfig
from simulator.server import MarketData, SimulatorServer

BAR_MS = 300_000
# 20 symbols x 60 steps per 5-minute bar at speed 300: one batch of 20 frames every ~17 ms.
REPLAY = ReplayConfig(speed=300.0, steps_per_bar=60, warmup_bars=1000, seed=11)
STEP_KINDS = ("nan_price", "zero_price", "crossed_book", "missing_fields", "stale")


@pytest.fixture(scope="module")
def recorded() -> MarketData:
    """The bundled candles and exchangeInfo, read once for this module."""
    return MarketData.load(SimulatorConfig())


@asynccontextmanager
async def simulator(data: MarketData, *, replay: ReplayConfig = REPLAY, paused: bool = False,
                    symbols: tuple[str, ...] | None = None) -> AsyncIterator[SimulatorServer]:
    """An in-process simulator on 127.0.0.1:0; ``paused`` freezes it before any quote is sent."""
    config = SimulatorConfig(replay=replay, symbols=symbols, port=0)
    async with SimulatorServer(config, data=data) as sim:
        if paused:
            sim.pause()
        yield sim


def make_hub(sim: SimulatorServer, *, max_quote_age_ms: int = 5_000, **kwargs: Any) -> MarketDataHub:
    config = ExchangeConfig(id="binanceusdm", base_url=sim.base_url, enable_rate_limit=False,
                            request_timeout_ms=3_000)
    kwargs.setdefault("reconnect_base_ms", 20)
    kwargs.setdefault("reconnect_max_ms", 200)
    return MarketDataHub(exchange_config=config, max_quote_age_ms=max_quote_age_ms, seed=1, **kwargs)


@asynccontextmanager
async def streaming(hub: MarketDataHub) -> AsyncIterator[MarketDataHub]:
    try:
        await hub.start()
        yield hub
    finally:
        await hub.stop()


async def wait_until(predicate: Callable[[], bool], *, poll_s: float = 0.01) -> None:
    """Poll ``predicate`` until it holds; the caller's ``asyncio.timeout`` bounds the wait."""
    while not predicate():
        await asyncio.sleep(poll_s)


async def settle(hub: MarketDataHub) -> None:
    """Wait (after pausing the feed) until no frame arrives and the hub stops processing.

    Deliberately does not call ``drain`` itself: whatever the hub's own loop leaves
    unprocessed once the stream goes quiet would be a quote it missed.
    """
    def progress() -> tuple[int, int, int]:
        c = hub.counters
        return hub.exchange.frames_received, c.quotes_processed, sum(hub.rejections.values())

    while True:
        before = progress()
        await asyncio.sleep(0.15)
        if progress() == before:
            return


def sane(quote: Quote) -> bool:
    return (math.isfinite(quote.bid) and math.isfinite(quote.ask) and 0 < quote.bid <= quote.ask
            and quote.ts_ms > 0)


class Recorder:
    """A consumer that keeps every quote it is given, per symbol, in arrival order."""

    def __init__(self) -> None:
        self.quotes: dict[str, list[Quote]] = {}

    def __call__(self, quote: Quote) -> None:
        self.quotes.setdefault(quote.symbol, []).append(quote)

    def count(self, symbol: str) -> int:
        return len(self.quotes.get(symbol, ()))

    def all(self) -> list[Quote]:
        return [q for qs in self.quotes.values() for q in qs]


# -- symbols ------------------------------------------------------------------------------------

async def test_symbol_forms_resolve_to_the_perpetual_and_unknown_names_the_pair(recorded) -> None:
    async with asyncio.timeout(10), simulator(recorded, paused=True) as sim:
        hub = make_hub(sim)
        try:
            await hub.connect()
            for raw in ("BTC/USDT", "BTCUSDT", "BTC/USDT:USDT", "btcusdt"):
                assert hub.resolve_symbol(raw, pair_id="BTC_ETH") == "BTC/USDT:USDT", raw
            with pytest.raises(ConfigurationError) as caught:
                hub.resolve_symbol("NOPE/USDT", pair_id="NOPE_ETH")
        finally:
            await hub.stop()
    message = str(caught.value)
    assert "NOPE_ETH" in message and "NOPE/USDT" in message
    assert caught.value.field == "pair NOPE_ETH"


# -- streaming, coalescing, fan-out -----------------------------------------------------------

async def test_twenty_symbols_on_one_subscription_coalesce_for_a_slow_consumer(recorded) -> None:
    """A consumer slower than the feed gets each symbol's newest quote, never a queue."""
    not_newest: list[tuple[Quote, Any]] = []
    last: dict[str, Quote] = {}
    async with asyncio.timeout(20), simulator(recorded) as sim:
        hub = make_hub(sim)
        await hub.connect()
        symbols = [hub.resolve_symbol(s, pair_id="all") for s in sim.replay.symbols]
        assert len(symbols) == 20

        armed, stopped = asyncio.Event(), asyncio.Event()

        async def slow(quote: Quote) -> None:
            # Before the first await: nothing can have arrived since the hub read the book.
            book = hub.exchange.bidsasks[quote.symbol]
            if (book["timestamp"], book["bid"], book["ask"]) != (quote.ts_ms, quote.bid, quote.ask):
                not_newest.append((quote, book))
            last[quote.symbol] = quote
            if quote.symbol == symbols[0] and armed.is_set() and not stopped.is_set():
                # Stop the feed right after one more frame of every symbol landed while this
                # pass is still running: symbols[0]'s newest frame now arrives after its turn.
                target = hub.exchange.frames_received + len(symbols)
                while hub.exchange.frames_received < target:
                    await asyncio.sleep(0.001)
                sim.pause()
                stopped.set()
            await asyncio.sleep(0.002)  # 20 symbols x 2 ms: a pass outlasts a feed step

        for symbol in symbols:
            hub.subscribe(symbol, slow)
        async with streaming(hub):
            await wait_until(lambda: hub.counters.quotes_coalesced > 20 and len(last) == 20)
            armed.set()
            await stopped.wait()
            await settle(hub)
            stats = hub.stats()
            newest = {s: hub.exchange.bidsasks[s]["timestamp"] for s in symbols}
            ws = sim.stats()["ws"]
    assert not not_newest, not_newest[:3]
    # Nothing missed: once the stream stops, every symbol's newest frame has been processed.
    assert {s: q.ts_ms for s, q in last.items()} == newest
    assert stats["quotes_received"] >= stats["quotes_processed"] > 0
    assert stats["quotes_coalesced"] > 0 and stats["quotes_rejected"] == {}
    assert stats["quotes_received"] == stats["quotes_processed"] + stats["quotes_coalesced"]
    assert stats["consumer_errors"] == 0
    assert ws["connections_opened"] == 1 and ws["subscribe_requests"] == 1  # one subscription


async def test_a_symbol_shared_by_two_consumers_reaches_both(recorded) -> None:
    first, second, other = Recorder(), Recorder(), Recorder()
    async with asyncio.timeout(10), simulator(recorded) as sim:
        hub = make_hub(sim)
        await hub.connect()
        btc, eth = (hub.resolve_symbol(s, pair_id="p") for s in ("BTCUSDT", "ETHUSDT"))
        hub.subscribe(btc, first)
        hub.subscribe(btc, second)
        hub.subscribe(eth, other)
        async with streaming(hub):
            await wait_until(lambda: first.count(btc) >= 10 and other.count(eth) >= 10)
    assert first.quotes == second.quotes  # the same quotes, in the same order
    assert set(first.quotes) == {btc} and set(other.quotes) == {eth}


# -- connection trouble -----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["close-frame", "tcp-reset", "scheduled"])
async def test_websocket_drops_reconnect_and_quotes_resume(recorded, how: str) -> None:
    seen = Recorder()
    async with asyncio.timeout(15), simulator(recorded) as sim:
        hub = make_hub(sim)
        await hub.connect()
        symbols = [hub.resolve_symbol(s, pair_id="p") for s in ("BTCUSDT", "ETHUSDT")]
        for symbol in symbols:
            hub.subscribe(symbol, seen)
        async with streaming(hub):
            await wait_until(lambda: all(seen.count(s) >= 3 for s in symbols))
            drops = 2 if how == "scheduled" else 1
            if how == "scheduled":
                sim.set_faults(ws_disconnect_every_seconds=0.3)
            else:
                assert await sim.drop_websockets(abrupt=how == "tcp-reset") == 1
            await wait_until(lambda: hub.counters.reconnects >= drops)
            sim.set_faults(ws_disconnect_every_seconds=0.0)
            resumed_from = {s: seen.quotes[s][-1].ts_ms for s in symbols}
            await wait_until(lambda: all(seen.quotes[s][-1].ts_ms > resumed_from[s] for s in symbols))
            watching = [not t.done() for t in hub._tasks if t.get_name() == "market_data.watch"]
            stats = hub.stats()
            ws = sim.stats()["ws"]
    assert watching == [True]  # the watch loop survived every drop
    assert stats["reconnects"] >= drops and stats["watch_timeouts"] == 0
    assert ws["connections_dropped"] >= drops and ws["connections_opened"] >= drops + 1
    for symbol in symbols:  # in order across the reconnects: nothing older slipped through
        times = [q.ts_ms for q in seen.quotes[symbol]]
        assert times == sorted(times)


async def test_a_drop_while_no_watch_call_is_pending_is_counted_too(recorded) -> None:
    """The server closes the socket while the hub is busy in a consumer: ccxt then raises
    nothing and the next watch call silently dials a new connection. The hub still counts it."""
    seen = Recorder()
    dropped = asyncio.Event()
    async with asyncio.timeout(15), simulator(recorded) as sim:
        hub = make_hub(sim)
        await hub.connect()
        btc = hub.resolve_symbol("BTCUSDT", pair_id="p")

        async def drop_once(quote: Quote) -> None:
            seen(quote)
            if seen.count(btc) == 3:  # inside a drain: no watch call is pending now
                assert await sim.drop_websockets() == 1
                await wait_until(lambda: not hub.exchange.clients)  # ccxt saw the close frame
                dropped.set()

        hub.subscribe(btc, drop_once)
        async with streaming(hub):
            await dropped.wait()
            await wait_until(lambda: seen.count(btc) >= 8)
            stats = hub.stats()
            ws = sim.stats()["ws"]
    assert ws["connections_opened"] == 2 and ws["connections_dropped"] == 1
    assert stats["reconnects"] == 1 and stats["watch_timeouts"] == 0


@pytest.mark.parametrize("kind", STEP_KINDS)
async def test_bad_frames_are_rejected_by_reason_and_never_delivered(recorded, kind: str) -> None:
    seen = Recorder()
    async with asyncio.timeout(10), simulator(recorded) as sim:
        hub = make_hub(sim)
        await hub.connect()
        symbols = [hub.resolve_symbol(s, pair_id="p") for s in ("BTCUSDT", "ETHUSDT", "DOGEUSDT")]
        for symbol in symbols:
            hub.subscribe(symbol, seen)
        # not_json frames ride along: ccxt drops them before the hub ever sees them.
        sim.set_faults(malformed_frame_probability=0.3, malformed_kinds=(kind, "not_json"), seed=5)
        async with streaming(hub):
            await wait_until(lambda: sum(hub.rejections.values()) >= 5
                             and all(seen.count(s) >= 3 for s in symbols))
            sim.pause()
            await settle(hub)
            stats = hub.stats()
            injected = sim.stats()["faults_injected"]
    expected = {"nan_price": {"not_finite"}, "crossed_book": {"crossed"},
                "missing_fields": {"missing"}, "stale": {"out_of_order"},
                # ccxt turns a "0" price into None, so a zero price arrives as a missing one
                "zero_price": {"missing", "non_positive"}}[kind]
    rejected = stats["quotes_rejected"]
    assert set(rejected) <= expected and sum(rejected.values()) >= 5, rejected
    assert injected[f"frame_{kind}"] >= sum(rejected.values())
    delivered = seen.all()
    assert delivered and all(sane(q) for q in delivered)
    for symbol in symbols:
        times = [q.ts_ms for q in seen.quotes[symbol]]
        assert times == sorted(times)
    assert stats["quotes_received"] == (stats["quotes_processed"] + stats["quotes_coalesced"]
                                        + sum(rejected.values()))


async def test_truncated_json_frame_is_recovered_by_the_watch_timeout(recorded) -> None:
    """A frame that starts like JSON but is cut kills ccxt's receive loop without an error
    in the watch call; only the hub's timeout (close the clients, resubscribe) revives it."""
    seen = Recorder()
    async with asyncio.timeout(15), simulator(recorded) as sim:
        hub = make_hub(sim, watch_timeout_s=0.3)
        await hub.connect()
        btc = hub.resolve_symbol("BTCUSDT", pair_id="p")
        hub.subscribe(btc, seen)
        async with streaming(hub):
            await wait_until(lambda: seen.count(btc) >= 3)
            sim.set_faults(malformed_frame_probability=1.0, malformed_kinds=("garbage_json",))
            await wait_until(lambda: sim.faults.injected["frame_garbage_json"] >= 1)
            sim.set_faults(malformed_frame_probability=0.0)
            stuck_at = seen.count(btc)
            await wait_until(lambda: hub.counters.watch_timeouts >= 1)
            await wait_until(lambda: seen.count(btc) >= stuck_at + 5)
            stats = hub.stats()
            ws = sim.stats()["ws"]
    assert stats["watch_timeouts"] >= 1 and stats["reconnects"] >= 1
    assert ws["connections_opened"] >= 2
    assert all(sane(q) for q in seen.all())


# -- staleness --------------------------------------------------------------------------------

async def test_watchdog_marks_paused_symbols_stale_and_recovered(recorded) -> None:
    seen = Recorder()
    changes: list[tuple[str, bool]] = []
    async with asyncio.timeout(15), simulator(recorded) as sim:
        hub = make_hub(sim, max_quote_age_ms=400)
        await hub.connect()
        symbols = [hub.resolve_symbol(s, pair_id="p") for s in ("BTCUSDT", "ETHUSDT")]
        for symbol in symbols:
            hub.subscribe(symbol, seen)
        hub.on_stale_change(lambda symbol, stale: changes.append((symbol, stale)))
        async with streaming(hub):
            await wait_until(lambda: all(seen.count(s) >= 3 for s in symbols))
            sim.pause()
            await wait_until(lambda: all(hub.is_stale(s) for s in symbols))
            paused_stats = hub.stats()
            sim.resume()
            await wait_until(lambda: not any(hub.is_stale(s) for s in symbols))
            stats = hub.stats()
    assert paused_stats["stale_periods"] >= 2 and sorted(paused_stats["stale_now"]) == sorted(symbols)
    assert stats["stale_now"] == []
    for symbol in symbols:  # stale and recovered, alternating, ending recovered
        mine = [stale for s, stale in changes if s == symbol]
        assert mine and mine == [True, False] * (len(mine) // 2), (symbol, mine)


async def test_generator_through_the_hub_signals_only_while_both_legs_are_fresh(recorded) -> None:
    """ETH's market stops quoting (its data end) while AAVE's goes on.

    An entry threshold of ~0 makes nearly every quote with a full window a signal; the
    callback reports "not executed", so the pair stays FLAT and keeps trying. Once ETH's last
    quote is older than ``max_quote_age_ms`` of exchange time, the generator's own check gates
    every AAVE quote, and the hub's wall-clock watchdog marks ETH (only) stale.
    """
    eth_bars = REPLAY.warmup_bars + 4  # ETH quotes for 4 bars of the replay, then nothing
    eth = recorded.candles["ETHUSDT"]  # type: ignore[index]
    cut = dataclasses.replace(eth, **{f: getattr(eth, f)[:eth_bars] for f in
                                      ("open_ms", "open", "high", "low", "close", "volume")})
    data = replace(recorded, candles={"AAVEUSDT": recorded.candles["AAVEUSDT"], "ETHUSDT": cut})  # type: ignore[index]
    max_age_ms = 12_000  # exchange time: about two steps of 5 s
    params = SignalParams(pair_id="AAVE_ETH", leg_a="AAVE/USDT", leg_b="ETH/USDT", hedge_ratio=0.05,
                          bar_seconds=300, lookback_bars=30, entry_z=1e-6, exit_z=0.0, stop_z=50.0,
                          price_transform="log", min_std=1e-12, max_quote_age_ms=max_age_ms,
                          cooldown_seconds=0.0, stop_loss_cooldown_seconds=0.0, max_holding_bars=None)
    signals: list[tuple[TradingSignal, int | None]] = []
    eth_quotes = Recorder()
    changes: list[tuple[str, bool]] = []
    # speed 3000: a 5-minute bar lasts 100 ms of wall time, so ETH's data end within ~0.4 s
    replay = replace(REPLAY, speed=3_000.0)
    async with asyncio.timeout(15), simulator(data, replay=replay, paused=True,
                                              symbols=("AAVEUSDT", "ETHUSDT")) as sim:
        hub = make_hub(sim, max_quote_age_ms=1_000)  # wall time; AAVE quotes every ~2 ms
        await hub.connect()
        sym_a = hub.resolve_symbol(params.leg_a, pair_id=params.pair_id)
        sym_b = hub.resolve_symbol(params.leg_b, pair_id=params.pair_id)
        generator = SignalGenerator(params, symbol_a=sym_a, symbol_b=sym_b)

        async def not_executed(signal: TradingSignal) -> bool:
            signals.append((signal, generator.snapshot().quote_age_b_ms))
            return False

        generator.register_signal_callback(not_executed)
        history = await hub.fetch_history([sym_a, sym_b], bar_seconds=300, bars=params.lookback_bars)
        generator.warm_up(history[sym_a], history[sym_b])
        assert generator.snapshot().window_full
        hub.subscribe(sym_a, generator.on_quote)
        hub.subscribe(sym_b, generator.on_quote)
        hub.subscribe(sym_b, eth_quotes)
        hub.on_stale_change(lambda symbol, stale: changes.append((symbol, stale)))
        async with streaming(hub):
            sim.resume()
            await wait_until(lambda: generator.snapshot().gated["stale_leg"] >= 20
                             and (sym_b, True) in changes)
            snap = generator.snapshot()
    last_eth_ts = eth_quotes.all()[-1].ts_ms
    assert last_eth_ts < cut.open_ms[-1] + BAR_MS  # ETH really stopped at the end of its data
    assert signals, "no signal while both legs were fresh"
    for signal, age_b in signals:  # every signal had a fresh ETH quote behind it
        assert signal.ts_ms - last_eth_ts <= max_age_ms and age_b is not None and age_b <= max_age_ms
    assert snap.last_ts_ms is not None and snap.last_ts_ms - last_eth_ts > max_age_ms
    assert snap.gated["stale_leg"] >= 20 and snap.state.value == "FLAT"
    assert (sym_b, True) in changes and (sym_a, True) not in changes


# -- warm-up ----------------------------------------------------------------------------------

async def test_fetch_history_pages_past_the_cap_and_returns_completed_bars_only(recorded) -> None:
    bars = 1_200  # ccxt caps one klines request at 1000 rows: two pages per symbol
    replay = replace(REPLAY, warmup_bars=1_500)
    async with asyncio.timeout(10), simulator(recorded, replay=replay) as sim:
        hub = make_hub(sim)
        try:
            await hub.connect()
            symbols = [hub.resolve_symbol(s, pair_id="p") for s in ("BTCUSDT", "ETHUSDT")]
            await asyncio.sleep(0.05)  # let the replay move into the middle of a bar
            sim.pause()  # replay time stands still while we compare
            history = await hub.fetch_history(symbols, bar_seconds=300, bars=bars)
            replay_ms = sim.replay.now_ms
            tick = {s: hub.market(s)["precision"]["price"] for s in symbols}
        finally:
            await hub.stop()
    assert list(history) == symbols
    for symbol, raw in zip(symbols, ("BTCUSDT", "ETHUSDT")):
        rows = history[symbol]
        opens = [int(r[0]) for r in rows]
        assert len(rows) == bars
        assert all(b - a == BAR_MS for a, b in zip(opens, opens[1:]))  # oldest first, no gap
        assert opens[-1] + BAR_MS <= replay_ms < opens[-1] + 2 * BAR_MS  # newest completed bar
        series = recorded.candles[raw]  # type: ignore[index]
        first = series.open_ms.index(opens[0])
        half_tick = Decimal(str(tick[symbol])) / 2  # klines are at the mid: bid = path, ask one tick up
        assert [r[4] for r in rows] == [float(Decimal(c) + half_tick) for c in series.close[first:first + bars]]


async def test_warm_up_keeps_the_newest_candle_when_the_exchange_clock_says_it_is_closed(recorded) -> None:
    """ETH's data end (a symbol that stopped trading) while AAVE's replay goes on: ETH's newest
    kline is closed by the exchange's clock, so it is history and must be kept; dropping "the
    last row" blindly would lose it. AAVE's newest kline is still open and is dropped."""
    eth_bars = REPLAY.warmup_bars + 2
    eth = recorded.candles["ETHUSDT"]  # type: ignore[index]
    cut = dataclasses.replace(eth, **{f: getattr(eth, f)[:eth_bars] for f in
                                      ("open_ms", "open", "high", "low", "close", "volume")})
    data = replace(recorded, candles={"AAVEUSDT": recorded.candles["AAVEUSDT"], "ETHUSDT": cut})  # type: ignore[index]
    replay = replace(REPLAY, speed=3_000.0)  # a 5-minute bar per 100 ms of wall time
    async with asyncio.timeout(15), simulator(data, replay=replay, symbols=("AAVEUSDT", "ETHUSDT")) as sim:
        hub = make_hub(sim)
        try:
            await hub.connect()
            symbols = [hub.resolve_symbol(s, pair_id="p") for s in ("AAVEUSDT", "ETHUSDT")]
            await wait_until(lambda: sim.replay.now_ms > cut.open_ms[-1] + 2 * BAR_MS)
            sim.pause()
            clock = await hub.market_clock_ms(symbols)
            history = await hub.fetch_history(symbols, bar_seconds=300, bars=5)
        finally:
            await hub.stop()
    aave, eth_rows = history[symbols[0]], history[symbols[1]]
    assert cut.open_ms[-1] + BAR_MS < clock <= sim.replay.now_ms  # ETH's last candle is closed by this clock
    assert eth_rows[-1][0] == cut.open_ms[-1]  # the last candle ETH ever had, closed: kept
    assert aave[-1][0] + BAR_MS <= clock < aave[-1][0] + 2 * BAR_MS  # the open candle dropped


# -- supervision ------------------------------------------------------------------------------

async def test_a_watch_loop_killed_by_an_exchange_error_is_restarted(recorded) -> None:
    """The venue refuses the first two subscriptions (ccxt raises an ExchangeError, not a
    NetworkError, to the watch call): the supervisor restarts the loop and quotes flow."""
    async with asyncio.timeout(15), simulator(recorded, symbols=("BTCUSDT", "ETHUSDT")) as sim:
        sim.refuse_subscriptions(2)
        hub = make_hub(sim)
        await hub.connect()
        btc = Recorder()
        hub.subscribe(hub.resolve_symbol("BTC/USDT", pair_id="p"), btc)
        async with streaming(hub):
            await wait_until(lambda: len(btc.all()) >= 5)
            restarts = hub.counters.feed_restarts
            assert restarts == 2 and sim.faults.injected["subscription_refused"] == 2
            assert not hub.feed_lost and hub.quote_age_ms(btc.all()[-1].symbol) is not None


async def test_a_pair_with_an_unlisted_or_inactive_leg_is_dropped_and_the_rest_start(recorded) -> None:
    from app.assemble import tradable_pairs
    from core.config import PairConfig

    def pair(pair_id: str, a: str, b: str) -> PairConfig:
        return PairConfig(pair_id=pair_id, leg_a=a, leg_b=b, hedge_ratio=1.0)

    async with asyncio.timeout(10), simulator(recorded, symbols=("BTCUSDT", "ETHUSDT", "AAVEUSDT")) as sim:
        sim.set_symbol_status("AAVEUSDT", "SETTLING")  # being delisted: ccxt says active False
        hub = make_hub(sim)
        records: list[str] = []
        sink = logger.add(lambda m: records.append(m.record["message"]), level="WARNING")
        try:
            await hub.connect()
            good, unlisted, inactive = (pair("BTC_ETH", "BTC/USDT", "ETH/USDT"), pair("FOO_ETH", "FOO/USDT", "ETH/USDT"),
                                        pair("AAVE_ETH", "AAVE/USDT", "ETH/USDT"))
            kept = tradable_pairs(hub, [good, unlisted, inactive], pairs_file="my-pairs.json", venue="binanceusdm")
            assert [(p.pair_id, a, b) for p, a, b in kept] == [("BTC_ETH", "BTC/USDT:USDT", "ETH/USDT:USDT")]
            assert any(r.startswith("FOO_ETH: dropped") and "FOO/USDT" in r for r in records)
            assert any(r.startswith("AAVE_ETH: dropped") and "inactive" in r for r in records)
            with pytest.raises(ConfigurationError) as caught:
                tradable_pairs(hub, [unlisted, inactive], pairs_file="my-pairs.json", venue="binanceusdm")
            assert "my-pairs.json" in str(caught.value)
        finally:
            logger.remove(sink)
            await hub.stop()
