"""``/ws``: the operator event stream pushed to a browser or a script.

Token as ``?token=`` (browsers cannot set headers on a WebSocket) or ``Authorization: Bearer``;
a wrong one is refused at the handshake with HTTP 401. Each client has its own bounded
``EventBus`` subscription, so a slow client loses its oldest events and never holds up an
order (core/events.py). Pushes ``Event.to_json()`` of signal, order, position, execution,
metric and alert events, starting with a ``hello`` carrying the bus's sequence number.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from core.events import Event

from app.operator_api.context import ApiContext
from app.operator_api.routes import bearer_matches

CLIENT_QUEUE_EVENTS = 1000


class WsHub:
    """The live ``/ws`` clients; ``close_all`` ends them at shutdown so the server stops at once."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()
        self.clients = 0
        self.served = 0
        self.sent = 0

    def close_all(self) -> None:
        self.closing.set()


def add_ws_route(app: FastAPI, ctx: ApiContext, *, token: str, hub: WsHub) -> None:
    @app.websocket("/ws")
    async def stream(websocket: WebSocket) -> None:
        given = websocket.query_params.get("token")
        ok = (given is not None and hmac.compare_digest(given.encode(), token.encode())) or \
            bearer_matches(websocket.headers.get("authorization"), token)
        if not ok:
            await websocket.send_denial_response(JSONResponse({"error": "missing or wrong token", "status": 401},
                                                              status_code=401))
            return
        subscription = ctx.events.subscribe(maxsize=CLIENT_QUEUE_EVENTS)  # every kind
        hub.clients += 1
        hub.served += 1
        try:
            await websocket.accept()
            await websocket.send_json({"type": "hello", "seq": ctx.events.published, "mode": ctx.mode,
                                       "pairs": sorted(ctx.engine.pairs)})
            await _pump(websocket, subscription, hub)
        except WebSocketDisconnect:
            pass
        finally:
            subscription.close()
            hub.clients -= 1
            if websocket.client_state is WebSocketState.CONNECTED:
                await websocket.close(code=1001)  # going away: the bot is stopping


async def _pump(websocket: WebSocket, subscription: Any, hub: WsHub) -> None:
    """Send events until the client leaves or the server closes; reads the client to see it leave."""
    reader = asyncio.create_task(_until_disconnect(websocket), name="api.ws.reader")
    closing = asyncio.create_task(hub.closing.wait(), name="api.ws.closing")
    try:
        while True:
            getter: asyncio.Task[Event] = asyncio.create_task(subscription.get(), name="api.ws.next")
            done, _ = await asyncio.wait({getter, reader, closing}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                await asyncio.gather(getter, return_exceptions=True)
                return
            await websocket.send_json(finite(getter.result().to_json()))
            hub.sent += 1
    finally:
        for task in (reader, closing):
            task.cancel()
        await asyncio.gather(reader, closing, return_exceptions=True)


def finite(value: Any) -> Any:
    """NaN and infinities as null: ``JSON.parse`` in a browser refuses Python's ``NaN``.

    >>> finite({"z": float("nan"), "pairs": [{"z": 1.5}, {"z": float("inf")}]})
    {'z': None, 'pairs': [{'z': 1.5}, {'z': None}]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


async def _until_disconnect(websocket: WebSocket) -> None:
    """Drain what the client sends (nothing is expected) until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
