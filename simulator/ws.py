"""WebSocket streams: market data (bookTicker, miniTicker, ticker) and the user-data stream.

Paths accepted (every one ccxt's binanceusdm can build from a base ``ws://host:port/ws``):
``/ws``, ``/ws/<n | streamName | listenKey>``, ``/<category>/ws[/<n>]`` with category
``public``, ``market`` or ``private``, and ``?listenKey=K`` on any of them. Clients use
Binance's ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` protocol; replies are
``{"result": ..., "id": N}``.

Streams: ``<sym>@bookTicker`` and ``!bookTicker`` (every quote of the replay),
``<sym>@miniTicker`` / ``!miniTicker@arr`` and ``<sym>@ticker`` / ``!ticker@arr`` (once per
``ws_ticker_interval_ms`` of wall time for symbols that changed, like Binance's 1 s cadence).
Other stream names are acknowledged and stay silent.

Throughput: each quote is serialised once into a complete WebSocket frame (header + JSON), and
each client gets all its frames of a loop iteration in ONE ``transport.write`` (one syscall),
instead of one ``send_str`` coroutine per frame. Compression is never negotiated. A client
whose socket buffer is above ``ws_max_buffer_bytes`` does not get the batch (counted in
``stats()['frames_dropped_slow_client']``): like the real venue, the market does not wait.
In "as fast as possible" mode the server loop instead waits for buffers to drain
(``backlogged``).
"""

from __future__ import annotations

import asyncio
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from loguru import logger

from simulator.faults import FaultInjector
from simulator.replay import MarketReplay, QuoteTick

_TEXT = 0x81
_CHANNELS = {"bookticker": "bookTicker", "miniticker": "miniTicker", "ticker": "ticker"}
ListenKeyResolver = Callable[[str], str | None]


def ws_frame(payload: bytes) -> bytes:
    """A complete unmasked server-to-client text frame (RFC 6455) carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT, n)) + payload
    if n < 65_536:
        return struct.pack("!BBH", _TEXT, 126, n) + payload
    return struct.pack("!BBQ", _TEXT, 127, n) + payload


class WsClient:
    """One connected socket: its subscriptions and, for a user stream, its account."""

    __slots__ = ("ws", "transport", "book", "mini", "full", "mini_arr", "full_arr", "other",
                 "account", "listen_key", "path")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None,
                 n_symbols: int, path: str) -> None:
        self.ws = ws
        self.transport = transport
        self.book = [False] * n_symbols
        self.mini = [False] * n_symbols
        self.full = [False] * n_symbols
        self.mini_arr = False
        self.full_arr = False
        self.other: set[str] = set()
        self.account: str | None = None
        self.listen_key: str | None = None
        self.path = path

    def subscriptions(self, symbols: list[str]) -> list[str]:
        names = [f"{s.lower()}@bookTicker" for s, on in zip(symbols, self.book) if on]
        names += [f"{s.lower()}@miniTicker" for s, on in zip(symbols, self.mini) if on]
        names += [f"{s.lower()}@ticker" for s, on in zip(symbols, self.full) if on]
        names += ["!miniTicker@arr"] * self.mini_arr + ["!ticker@arr"] * self.full_arr
        return names + sorted(self.other)


class StreamHub:
    """Every WebSocket client, the subscription protocol, and fan-out of frames."""

    def __init__(self, *, replay: MarketReplay, faults: FaultInjector,
                 listen_keys: ListenKeyResolver, max_buffer_bytes: int) -> None:
        self.replay = replay
        self.faults = faults
        self._resolve_listen_key = listen_keys
        self._max_buffer = max_buffer_bytes
        self.clients: set[WsClient] = set()
        self.counters: Counter[str] = Counter()
        self._stale: list[bytes | None] = [None] * len(replay.symbols)
        self._ticker_dirty = [False] * len(replay.symbols)
        self._closing_tasks: set[asyncio.Task[None]] = set()

    # --- connections ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for every WebSocket path (see the module docstring)."""
        tail = request.match_info.get("tail", "")
        listen_key = request.query.get("listenKey") or None
        initial_streams: list[str] = []
        if tail and not tail.isdigit():
            if "@" in tail or tail.startswith("!"):
                initial_streams = tail.split("/")
            else:
                listen_key = tail
        account = None
        if listen_key is not None:
            account = self._resolve_listen_key(listen_key)
            if account is None:
                return web.json_response({"code": -1125, "msg": "This listenKey does not exist."},
                                         status=400)
        ws = web.WebSocketResponse(autoping=True, compress=False, timeout=1.0,
                                   max_msg_size=1 << 20)
        await ws.prepare(request)
        client = WsClient(ws, request.transport, len(self.replay.symbols), request.path)
        client.account, client.listen_key = account, listen_key
        if initial_streams:
            self._subscribe(client, initial_streams)
        self.clients.add(client)
        self.counters["connections_opened"] += 1
        logger.debug("ws client connected: {} account={}", request.path, account)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_text(client, message.data)
                elif message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self.clients.discard(client)
            self.counters["connections_closed"] += 1
        return ws

    async def drop_all(self, *, abrupt: bool = False, accounts: set[str] | None = None) -> int:
        """Disconnect clients (all, or the user streams of ``accounts``). Returns how many.

        ``abrupt`` closes the TCP connection without a close frame (a network drop);
        otherwise a close frame with code 1001 (going away) is sent, as Binance does.
        """
        victims = [c for c in list(self.clients)
                   if accounts is None or c.account in accounts]
        for client in victims:
            self.clients.discard(client)
            if abrupt and client.transport is not None:
                client.transport.abort()
            else:
                task = asyncio.ensure_future(self._close(client))
                self._closing_tasks.add(task)
                task.add_done_callback(self._closing_tasks.discard)
        self.counters["connections_dropped"] += len(victims)
        return len(victims)

    async def shutdown(self) -> None:
        await self.drop_all()
        for task in list(self._closing_tasks):
            task.cancel()
        await asyncio.gather(*self._closing_tasks, return_exceptions=True)

    def backlogged(self) -> bool:
        """True if some subscribed client still has more than half its budget unsent."""
        limit = self._max_buffer // 2
        return any(c.transport is not None and not c.transport.is_closing()
                   and c.transport.get_write_buffer_size() > limit for c in self.clients)

    # --- market data fan-out ---------------------------------------------------------------

    def broadcast_quotes(self, events: list[QuoteTick]) -> None:
        """Send every quote in ``events`` to the clients subscribed to its symbol."""
        if not events:
            return
        for i, *_ in events:
            self._ticker_dirty[i] = True
        listeners = [c for c in self.clients if True in c.book]
        if not listeners:
            return
        symbols = self.replay.symbols
        pfmt, qfmt = self.replay.inst.price_fmt, self.replay.inst.qty_fmt
        frames: list[tuple[int, bytes]] = []
        malformed = self.faults.config.malformed_frame_probability > 0
        for i, ts, bid, ask, bq, aq, uid in events:
            text = (f'{{"e":"bookTicker","u":{uid},"s":"{symbols[i]}","b":"{pfmt[i](bid)}",'
                    f'"B":"{qfmt[i](bq)}","a":"{pfmt[i](ask)}","A":"{qfmt[i](aq)}",'
                    f'"T":{ts},"E":{ts}}}').encode()
            if malformed:
                text = self._maybe_malformed(i, ts, bid, ask, bq, aq, uid, text)
            frames.append((i, ws_frame(text)))
        everything = b"".join(f for _, f in frames)
        for client in listeners:
            if all(client.book):
                self._write(client, everything, len(frames))
            else:
                mask = client.book
                mine = [f for i, f in frames if mask[i]]
                if mine:
                    self._write(client, b"".join(mine), len(mine))

    def broadcast_tickers(self) -> None:
        """miniTicker / ticker frames for symbols that changed since the last call."""
        dirty = [i for i, d in enumerate(self._ticker_dirty) if d]
        self._ticker_dirty = [False] * len(self._ticker_dirty)
        wants = [c for c in self.clients
                 if c.mini_arr or c.full_arr or True in c.mini or True in c.full]
        if not dirty or not wants:
            return
        now = self.replay.now_ms
        stats = {i: self.replay.ticker_24h(self.replay.symbols[i]) for i in dirty}
        mini = {i: _mini_ticker(s, now) for i, s in stats.items()}
        full = {i: _full_ticker(s, now) for i, s in stats.items()}
        mini_arr = ws_frame(orjson.dumps(list(mini.values())))
        full_arr = ws_frame(orjson.dumps(list(full.values())))
        for client in wants:
            parts = [ws_frame(orjson.dumps(mini[i])) for i in dirty if client.mini[i]]
            parts += [ws_frame(orjson.dumps(full[i])) for i in dirty if client.full[i]]
            if client.mini_arr:
                parts.append(mini_arr)
            if client.full_arr:
                parts.append(full_arr)
            if parts:
                self._write(client, b"".join(parts), len(parts))

    def send_user_event(self, account: str, event: dict[str, Any]) -> None:
        """Engine sink: deliver a user-data event to the account's user-stream clients."""
        frame = None
        for client in self.clients:
            if client.account == account:
                frame = frame or ws_frame(orjson.dumps(event))
                self._write(client, frame, 1)
        self.counters["user_events"] += 1

    def stats(self) -> dict[str, Any]:
        return {"clients": len(self.clients), **self.counters}

    # --- internals -----------------------------------------------------------------------

    def _write(self, client: WsClient, data: bytes, n_frames: int) -> None:
        transport = client.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self._max_buffer:
            self.counters["frames_dropped_slow_client"] += n_frames
            return
        transport.write(data)
        self.counters["frames_sent"] += n_frames

    async def _on_text(self, client: WsClient, data: str) -> None:
        try:
            request = orjson.loads(data)
            method = request["method"]
            request_id = request.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await client.ws.send_str('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}')
            return
        params = request.get("params") or []
        if method == "SUBSCRIBE" and self.faults.refuse_subscription():
            reply: dict[str, Any] = {"error": {"code": 2, "msg": "Invalid request: stream not available"},
                                     "id": request_id}
        elif method == "SUBSCRIBE":
            self._subscribe(client, [str(p) for p in params])
            reply = {"result": None, "id": request_id}
        elif method == "UNSUBSCRIBE":
            self._subscribe(client, [str(p) for p in params], on=False)
            reply = {"result": None, "id": request_id}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": client.subscriptions(self.replay.symbols), "id": request_id}
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            reply = {"result": False if method == "GET_PROPERTY" else None, "id": request_id}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                     "id": request_id}
        await client.ws.send_str(orjson.dumps(reply).decode())

    def _subscribe(self, client: WsClient, streams: list[str], on: bool = True) -> None:
        index = self.replay.index
        for stream in streams:
            lowered = stream.lower()
            if lowered == "!bookticker":
                client.book = [on] * len(client.book)
                continue
            if lowered == "!miniticker@arr":
                client.mini_arr = on
                continue
            if lowered == "!ticker@arr":
                client.full_arr = on
                continue
            symbol, _, channel = stream.partition("@")
            i = index.get(symbol.upper())
            kind = _CHANNELS.get(channel.lower())
            if i is None or kind is None:
                (client.other.add if on else client.other.discard)(stream)
                continue
            flags = {"bookTicker": client.book, "miniTicker": client.mini, "ticker": client.full}
            flags[kind][i] = on
        self.counters["subscribe_requests"] += 1

    def _maybe_malformed(self, i: int, ts: int, bid: int, ask: int, bq: int, aq: int, uid: int,
                         text: bytes) -> bytes:
        if uid % 64 == 0 or self._stale[i] is None:
            self._stale[i] = text
        kind = self.faults.malformed_kind()
        if kind is None:
            return text
        sym = self.replay.symbols[i]
        pfmt, qfmt = self.replay.inst.price_fmt[i], self.replay.inst.qty_fmt[i]
        if kind == "nan_price":
            return text.replace(f'"b":"{pfmt(bid)}"'.encode(), b'"b":"NaN"')
        if kind == "zero_price":
            return text.replace(f'"b":"{pfmt(bid)}"'.encode(), b'"b":"0"')
        if kind == "crossed_book":
            return text.replace(f'"b":"{pfmt(bid)}"'.encode(), f'"b":"{pfmt(ask + 5)}"'.encode())
        if kind == "missing_fields":
            return (f'{{"e":"bookTicker","u":{uid},"s":"{sym}","a":"{pfmt(ask)}",'
                    f'"A":"{qfmt(aq)}","T":{ts},"E":{ts}}}').encode()
        if kind == "garbage_json":
            return text[: max(8, len(text) // 2)]
        if kind == "not_json":
            return b"sim: this frame is not JSON"
        stale = self._stale[i]
        return stale if stale is not None and stale != text else text

    async def _close(self, client: WsClient) -> None:
        try:
            await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"simulator disconnect")
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("ws close failed: {}", exc)


def _mini_ticker(stats: dict[str, Any], now_ms: int) -> dict[str, Any]:
    return {"e": "24hrMiniTicker", "E": now_ms, "s": stats["symbol"], "c": stats["lastPrice"],
            "o": stats["openPrice"], "h": stats["highPrice"], "l": stats["lowPrice"],
            "v": stats["volume"], "q": stats["quoteVolume"]}


def _full_ticker(stats: dict[str, Any], now_ms: int) -> dict[str, Any]:
    return {"e": "24hrTicker", "E": now_ms, "s": stats["symbol"], "p": stats["priceChange"],
            "P": stats["priceChangePercent"], "w": stats["weightedAvgPrice"],
            "c": stats["lastPrice"], "Q": "0", "o": stats["openPrice"], "h": stats["highPrice"],
            "l": stats["lowPrice"], "v": stats["volume"], "q": stats["quoteVolume"],
            "O": stats["openTime"], "C": now_ms, "F": 0, "L": 0, "n": 0}
