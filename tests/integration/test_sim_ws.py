"""Real ccxt.pro against the simulator's WebSocket streams, including drops and bad frames."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import ccxt
import orjson
import pytest

from simulator.config import SimulatorConfig
from tests.sim_helpers import TEST_REPLAY

REPLAY_2023 = (1_688_000_000_000, 1_692_000_000_000)


@pytest.fixture
def sim_config() -> SimulatorConfig:
    # tickers every 100 ms of wall time so ticker tests need not wait a second
    return SimulatorConfig(replay=TEST_REPLAY, ws_ticker_interval_ms=100)


async def test_watch_bids_asks_delivers_all_twenty_symbols(pro) -> None:
    symbols = list(pro.markets)
    async with asyncio.timeout(10):
        while len(pro.bidsasks) < len(symbols):
            await pro.watch_bids_asks(symbols)
    assert sorted(pro.bidsasks) == sorted(symbols)
    for quote in pro.bidsasks.values():
        assert 0 < quote["bid"] < quote["ask"]
        assert REPLAY_2023[0] < quote["timestamp"] < REPLAY_2023[1]  # exchange (replay) time


async def test_quote_times_and_update_ids_increase(pro) -> None:
    seen: list[tuple[int, int]] = []
    async with asyncio.timeout(10):
        while len(seen) < 20:
            result = await pro.watch_bids_asks(["ETH/USDT:USDT"])
            quote = result["ETH/USDT:USDT"]
            seen.append((quote["timestamp"], quote["info"]["u"]))
    assert seen == sorted(seen)
    assert len({u for _, u in seen}) == len(seen)


async def test_watch_tickers_and_watch_ticker(pro) -> None:
    async with asyncio.timeout(10):
        tickers = await pro.watch_tickers(["BTC/USDT:USDT", "ETH/USDT:USDT"])  # miniTicker
        ticker = await pro.watch_ticker("DOGE/USDT:USDT", params={"name": "ticker"})
    some = next(iter(tickers.values()))
    assert some["last"] > 0 and some["high"] >= some["low"]
    assert ticker["symbol"] == "DOGE/USDT:USDT" and ticker["last"] > 0


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-frame", "tcp-drop"])
async def test_dropped_connection_fails_the_watch_and_the_next_call_reconnects(
        pro, sim, abrupt: bool) -> None:
    symbols = ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    async with asyncio.timeout(10):
        await pro.watch_bids_asks(symbols)
        pending = asyncio.ensure_future(_watch_forever(pro, symbols))
        await asyncio.sleep(0.05)
        assert await sim.drop_websockets(abrupt=abrupt) == 1
        with pytest.raises(ccxt.NetworkError):
            await pending
        result = await pro.watch_bids_asks(symbols)  # reconnects and re-subscribes by itself
    assert set(result) <= set(symbols)
    assert sim.stats()["ws"]["connections_opened"] == 2


async def test_scheduled_disconnects_recur(pro, sim) -> None:
    sim.set_faults(ws_disconnect_every_seconds=0.3)
    errors = 0
    async with asyncio.timeout(10):
        while errors < 2:
            try:
                await pro.watch_bids_asks(["BTC/USDT:USDT"])
            except ccxt.NetworkError:
                errors += 1
    assert sim.stats()["ws"]["connections_dropped"] >= 2


@pytest.mark.parametrize("kind", ["nan_price", "zero_price", "crossed_book", "missing_fields"])
async def test_bad_quote_values_pass_through_ccxt_unfiltered(pro, sim, kind: str) -> None:
    """ccxt does not validate bookTicker values: the market-data hub must."""
    sim.set_faults(malformed_frame_probability=0.5, malformed_kinds=(kind,), seed=1)
    bad = 0
    async with asyncio.timeout(10):
        while bad == 0:
            result = await pro.watch_bids_asks(["BTC/USDT:USDT", "ETH/USDT:USDT"])
            bad += sum(1 for q in result.values() if not _sane(q))
    assert sim.stats()["faults_injected"][f"frame_{kind}"] >= 1


async def test_stale_frames_overwrite_newer_quotes_in_ccxt(pro, sim) -> None:
    """ccxt keeps the LAST frame, even an older one: the hub must compare times / ids.

    The simulator re-sends an earlier frame of the same symbol as it was, old event time
    included, so a watch can hand back a quote older than one it already returned.
    """
    sim.set_faults(malformed_frame_probability=0.3, malformed_kinds=("stale",), seed=2)
    newest: dict[str, dict[str, Any]] = {}
    went_back: tuple[dict[str, Any], dict[str, Any]] | None = None
    async with asyncio.timeout(10):
        while went_back is None:
            result = await pro.watch_bids_asks(["BTC/USDT:USDT", "ETH/USDT:USDT"])
            for symbol, quote in result.items():
                seen = newest.get(symbol)
                if seen is not None and int(quote["info"]["u"]) < int(seen["info"]["u"]):
                    went_back = (seen, quote)
                    break
                newest[symbol] = quote
    newer, older = went_back
    assert older["symbol"] == newer["symbol"]
    assert older["timestamp"] < newer["timestamp"]  # the old event time came back with it
    assert _sane(older)  # a real earlier quote, not a broken one
    assert sim.stats()["faults_injected"]["frame_stale"] >= 1


NOT_JSON = "sim: this frame is not JSON"


async def test_non_json_text_frames_reach_the_client_and_ccxt_skips_them(pro, sim) -> None:
    """Plain text replaces about half of BTC's quote frames; ccxt hands such a frame to its
    handler, which finds no event in it. Every quote a watch resolves meanwhile is a real
    one, in order, and the stream keeps flowing (unlike truncated JSON, below).

    A raw socket on the same stream, read while ccxt watches, sees what ccxt was sent: the
    simulator builds each frame once and writes it to every subscriber.
    """
    symbols = ["BTC/USDT:USDT"]
    sim.set_faults(malformed_frame_probability=0.5, malformed_kinds=("not_json",), seed=3)

    async def raw_frames(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[str]:
        return [(await ws.receive()).data for _ in range(n)]

    async def ccxt_quotes(n: int) -> list[dict[str, Any]]:
        return [(await pro.watch_bids_asks(symbols))[symbols[0]] for _ in range(n)]

    async with asyncio.timeout(10), aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sim.ws_url}/btcusdt@bookTicker") as ws:
            texts, quotes = await asyncio.gather(raw_frames(ws, 40), ccxt_quotes(15))
    plain = [t for t in texts if t == NOT_JSON]
    frames = [orjson.loads(t) for t in texts if t != NOT_JSON]
    assert plain and frames  # both kinds arrive on the one stream
    assert {(f["e"], f["s"]) for f in frames} == {("bookTicker", "BTCUSDT")}
    assert all(_sane(q) for q in quotes), quotes
    ids = [int(q["info"]["u"]) for q in quotes]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert sim.stats()["faults_injected"]["frame_not_json"] >= len(plain)


async def test_truncated_json_stalls_ccxt_until_the_client_is_closed(pro, sim) -> None:
    """A frame starting with '{' that is not JSON kills ccxt's receive loop silently.

    The exception escapes into the event loop (``Exception in callback``), the socket stays
    open and no watch call ever resolves again. Only a watchdog helps: time out the watch,
    drop ccxt's WebSocket clients, watch again.
    """
    symbols = ["BTC/USDT:USDT"]
    async with asyncio.timeout(10):
        await pro.watch_bids_asks(symbols)
        sim.set_faults(malformed_frame_probability=1.0, malformed_kinds=("garbage_json",))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await _watch_forever(pro, symbols)
        sim.set_faults(malformed_frame_probability=0.0)
        with pytest.raises(TimeoutError):  # still stuck: the receive loop is gone
            async with asyncio.timeout(0.5):
                await pro.watch_bids_asks(symbols)
        await pro.close_ws_clients()
        result = await pro.watch_bids_asks(symbols)
    assert list(result) == symbols


async def test_subscription_protocol_on_a_raw_socket(sim) -> None:
    async with asyncio.timeout(10), aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{sim.ws_url}/0") as ws:
            await ws.send_str('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":7}')
            assert orjson.loads((await ws.receive()).data) == {"result": None, "id": 7}
            frame = orjson.loads((await ws.receive()).data)
            assert frame["e"] == "bookTicker" and frame["s"] == "BTCUSDT"
            assert frame["E"] == frame["T"] and int(frame["u"]) > 0
            await ws.send_str('{"method":"LIST_SUBSCRIPTIONS","id":8}')
            reply = await _next_reply(ws, 8)
            assert reply["result"] == ["btcusdt@bookTicker"]
            await ws.send_str("not json")
            reply = orjson.loads((await _next_matching(ws, lambda m: "error" in m)).data)
            assert reply["error"]["code"] == 3
        async with session.ws_connect(f"{sim.ws_url}/ethusdt@bookTicker") as ws:
            frame = orjson.loads((await ws.receive()).data)
            assert frame["s"] == "ETHUSDT"


async def test_user_stream_needs_a_valid_listen_key(sim, rest) -> None:
    async with asyncio.timeout(10), aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{sim.ws_url.removesuffix('/ws')}/private/ws?listenKey=bad")
        key = (await rest.fapiPrivatePostListenKey())["listenKey"]
        assert (await rest.fapiPrivatePostListenKey())["listenKey"] == key  # one per account
        base = sim.ws_url.removesuffix("/ws")
        async with session.ws_connect(f"{base}/private/ws?listenKey={key}") as ws:
            await rest.create_order("BTC/USDT:USDT", "market", "buy", 0.001)
            events = [orjson.loads((await ws.receive()).data) for _ in range(3)]
            await rest.fapiPrivatePutListenKey()
            await rest.fapiPrivateDeleteListenKey()
            closing = await ws.receive()
    assert [e["e"] for e in events] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE",
                                        "ACCOUNT_UPDATE"]
    assert [e["o"]["x"] for e in events[:2]] == ["NEW", "TRADE"]
    assert events[2]["a"]["P"][0]["pa"] == "0.001"
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def _watch_forever(pro: Any, symbols: list[str]) -> None:
    while True:
        await pro.watch_bids_asks(symbols)


async def _next_matching(ws: aiohttp.ClientWebSocketResponse, predicate: Any) -> aiohttp.WSMessage:
    while True:
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT and predicate(orjson.loads(message.data)):
            return message


async def _next_reply(ws: aiohttp.ClientWebSocketResponse, request_id: int) -> dict[str, Any]:
    message = await _next_matching(ws, lambda m: m.get("id") == request_id)
    return orjson.loads(message.data)


def _sane(quote: dict[str, Any]) -> bool:
    bid, ask = quote.get("bid"), quote.get("ask")
    return (bid is not None and ask is not None and not math.isnan(bid) and bid > 0
            and bid < ask)
