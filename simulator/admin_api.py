"""Admin and inspection endpoints (``/sim/...``) for tests, demos and fault campaigns.

They are not part of Binance's API and need no key (the server only listens on 127.0.0.1).
Each one is a thin wrapper around the same method of ``SimulatorServer``, so a test can use
either the HTTP form (another process) or the Python form (in-process).

=======  ===========================  ======================================================
GET      /sim/health                  ``{"status": "ok", "replay_ms", "finished", ...}``
GET      /sim/orders                  the full order log, every account, with clientOrderIds
                                      (filters: ``?account=&symbol=&clientOrderId=``)
GET      /sim/positions               wallets, fees and non-zero positions per account
GET      /sim/markets                 served symbols with filters and their provenance
POST     /sim/markets/{symbol}        ``{"status": "SETTLING", "min_notional": "100", "min_qty", "max_qty",
                                      "market_max_qty"}``: change a symbol's status and filters
GET      /sim/stats                   frames sent/dropped, clients, injected faults, replay
GET      /sim/faults                  the current ``FaultConfig``
POST     /sim/faults                  JSON object of ``FaultConfig`` fields to change
                                      (``{"reset": true}`` first restores "no faults")
POST     /sim/faults/http-burst       ``{"status": 429, "count": 5}``: fail the next N requests
POST     /sim/ws/drop                 ``{"abrupt": false}``: disconnect every WebSocket now
POST     /sim/liquidate               ``{"symbol": "EOSUSDT", "account": "default", "adl": false}``:
                                      liquidate that position now (404 when flat)
POST     /sim/reset                   orders, positions, balances back to the start
                                      (``{"replay": true}`` also rewinds the market)
POST     /sim/replay                  ``{"speed": 10, "paused": false}``
POST     /sim/state/save              write the state file now (``{"path": "..."}`` optional)
=======  ===========================  ======================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from simulator.faults import FaultConfig
from simulator.rest_api import json_response

if TYPE_CHECKING:
    from simulator.server import SimulatorServer


class AdminApi:
    """``/sim/*`` routes bound to one simulator."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim

    def register(self, app: web.Application) -> None:
        app.router.add_get("/sim/health", self.health)
        app.router.add_get("/sim/orders", self.orders)
        app.router.add_get("/sim/positions", self.positions)
        app.router.add_get("/sim/markets", self.markets)
        app.router.add_post("/sim/markets/{symbol}", self.change_market)
        app.router.add_get("/sim/stats", self.stats)
        app.router.add_get("/sim/faults", self.get_faults)
        app.router.add_post("/sim/faults", self.set_faults)
        app.router.add_post("/sim/faults/http-burst", self.http_burst)
        app.router.add_post("/sim/ws/drop", self.drop_ws)
        app.router.add_post("/sim/liquidate", self.liquidate)
        app.router.add_post("/sim/reset", self.reset)
        app.router.add_post("/sim/replay", self.replay)
        app.router.add_post("/sim/state/save", self.save_state)

    async def health(self, request: web.Request) -> web.Response:
        replay = self.sim.replay
        return json_response({"status": "ok", "replay_ms": replay.now_ms,
                              "finished": replay.finished, "symbols": len(replay.symbols)})

    async def orders(self, request: web.Request) -> web.Response:
        q = request.query
        rows = [row for row in self.sim.order_log()
                if ("account" not in q or row["account"] == q["account"])
                and ("symbol" not in q or row["symbol"] == q["symbol"].upper())
                and ("clientOrderId" not in q or row["clientOrderId"] == q["clientOrderId"])]
        return json_response(rows)

    async def positions(self, request: web.Request) -> web.Response:
        return json_response(self.sim.positions())

    async def markets(self, request: web.Request) -> web.Response:
        return json_response(self.sim.markets())

    async def change_market(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        symbol = request.match_info["symbol"].upper()
        if symbol not in self.sim.engine.rules:
            return json_response({"error": f"unknown symbol {symbol!r}"}, status=400)
        status = body.pop("status", None)
        try:
            filters = self.sim.set_symbol_filters(symbol, **body) if body else None
        except (ValueError, ArithmeticError) as exc:
            return json_response({"error": str(exc)}, status=400)
        if status is not None:
            self.sim.set_symbol_status(symbol, str(status).upper())
        info = self.sim.engine.rules[symbol].info
        return json_response({"symbol": symbol, "status": info["status"],
                              "filters": filters or {f["filterType"]: f for f in info["filters"]}})

    async def stats(self, request: web.Request) -> web.Response:
        return json_response(self.sim.stats())

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.sim.faults.config.to_dict())

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        base = FaultConfig() if body.pop("reset", False) else self.sim.faults.config
        try:
            config = FaultConfig.from_mapping(body, base)
        except ValueError as exc:
            return json_response({"error": str(exc)}, status=400)
        self.sim.set_fault_config(config)
        return json_response(config.to_dict())

    async def http_burst(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self.sim.inject_http_errors(int(body.get("status", 429)), int(body.get("count", 1)))
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response({"queued": int(body.get("count", 1))})

    async def drop_ws(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return json_response({"dropped": await self.sim.drop_websockets(
            abrupt=bool(body.get("abrupt", False)))})

    async def liquidate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        symbol, account = str(body.get("symbol", "")).upper(), str(body.get("account", "default"))
        if symbol not in self.sim.engine.rules or account not in self.sim.engine.accounts:
            return json_response({"error": f"unknown symbol {symbol!r} or account {account!r}"}, status=400)
        order = self.sim.liquidate(symbol, account=account, adl=bool(body.get("adl", False)))
        if order is None:
            return json_response({"error": f"{account} holds no {symbol} position"}, status=404)
        return json_response(order)

    async def reset(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        self.sim.reset(replay=bool(body.get("replay", False)))
        return json_response({"reset": True, "replay_ms": self.sim.replay.now_ms})

    async def replay(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            if "speed" in body:
                self.sim.set_speed(float(body["speed"]))
            if body.get("paused") is True:
                self.sim.pause()
            elif body.get("paused") is False:
                self.sim.resume()
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response({"speed": self.sim.clock.speed, "paused": self.sim.clock.paused,
                              "replay_ms": self.sim.replay.now_ms})

    async def save_state(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        path = Path(body["path"]) if body.get("path") else None
        try:
            written = self.sim.save_state(path)
        except ValueError as exc:
            return json_response({"error": str(exc)}, status=400)
        return json_response({"path": str(written)})


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}',
                                 content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}',
                                 content_type="application/json")
    return data
