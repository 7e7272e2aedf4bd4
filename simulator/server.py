"""The simulator as a server: aiohttp app, market loop, and the in-process handle.

>>> async def demo():                                   # doctest: +SKIP
...     async with SimulatorServer(SimulatorConfig()) as sim:
...         print(sim.base_url, sim.ws_url)  # http://127.0.0.1:PORT  ws://127.0.0.1:PORT/ws
...         sim.set_faults(partial_fill_probability=0.5)
...         print(sim.order_log())

One owned task runs the market loop: advance the replay to the clock, fill resting orders
quote by quote, fan quotes out to WebSocket clients, send tickers once per interval, apply the
scheduled WebSocket drops and save the state file periodically. ``stop()`` cancels and awaits
it, closes every client and the listening socket, and saves the state.

Orders are matched by ``matching.engine.TradingEngine`` (the paper exchange's engine too);
this module owns what is around it: the replay, the faults, the REST and WebSocket layers.

The server binds 127.0.0.1 only; there is no option to listen elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from loguru import logger

from matching import errors
from matching.engine import TradingEngine
from matching.errors import BinanceError
from matching.fill_model import BookTop
from matching.rules import rules_from_info
from simulator.admin_api import AdminApi
from simulator.config import LOOPBACK_HOST, SimulatorConfig
from market_replay.datasets import CandleSeries, TickSeries, load_candles, load_ticks
from simulator.faults import FaultConfig, FaultInjector
from simulator.funding import FundingSchedule
from market_replay.markets import build_rules, load_exchange_info
from simulator.rate_limits import RateLimitConfig, RateLimiter
from simulator.replay import MarketReplay, QuoteTick, ReplayClock
from simulator.rest_api import ListenKeys, RestApi, json_response, wall_ms
from simulator.state import load_state, save_state
from simulator.ws import StreamHub

_GATEWAY_PAGES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One ``/fapi`` request as the venue saw it (tests count pages and check waits with it)."""

    wall_ms: int  # when it arrived
    method: str
    path: str
    query: dict[str, str]
    status: int  # what it was answered


REQUEST_LOG_SIZE = 100_000


@dataclass(frozen=True, slots=True)
class MarketData:
    """The recorded inputs of a run, loadable once and shared by several servers (tests)."""

    recorded_info: dict[str, Any]
    candles: dict[str, CandleSeries] | None
    ticks: dict[str, TickSeries] | None

    @classmethod
    def load(cls, config: SimulatorConfig) -> MarketData:
        symbols = list(config.symbols) if config.symbols else None
        info = load_exchange_info(config.exchange_info_file)
        if config.replay.source == "candles":
            return cls(info, load_candles(config.candles_dir, symbols), None)
        dates = list(config.replay.tick_dates) if config.replay.tick_dates else None
        return cls(info, None, load_ticks(config.ticks_dir, symbols, dates))


class SimulatorServer:
    """A running simulator; use as ``async with SimulatorServer(config) as sim: ...``."""

    def __init__(self, config: SimulatorConfig | None = None, *, data: MarketData | None = None):
        self.config = config or SimulatorConfig()
        data = data or MarketData.load(self.config)
        series = data.candles if data.candles is not None else data.ticks
        if not series:
            raise ValueError("no market data to replay")
        if self.config.symbols:
            missing = sorted(set(self.config.symbols) - set(series))
            if missing:
                raise ValueError(f"no data for symbols {missing}")
            series = {s: series[s] for s in self.config.symbols}  # type: ignore[misc]
        self._recorded_info = data.recorded_info
        rules = build_rules(data.recorded_info, {s: v.price_hint() for s, v in series.items()})
        candles = series if self.config.replay.source == "candles" else None
        ticks = series if self.config.replay.source == "ticks" else None
        self.replay = MarketReplay(rules=rules, config=self.config.replay,
                                   candles=candles, ticks=ticks)  # type: ignore[arg-type]
        self.clock = ReplayClock(self.replay.start_ms, self.config.replay.speed)
        self.faults = FaultInjector(self.config.faults)
        self.funding = FundingSchedule(self.config.funding, self.replay.symbols, self.replay.now_ms)
        self.rate_limiter = RateLimiter(self.config.rate_limits)
        self.listen_keys = ListenKeys(self.config.replay.seed)
        self.engine = TradingEngine(rules=rules, market=self.replay, fills=self.config.fills,
                                    faults=self.faults, accounts=self.config.accounts,
                                    first_order_id=self.config.first_order_id,
                                    wall_clock=wall_ms)
        self.hub = StreamHub(replay=self.replay, faults=self.faults,
                             listen_keys=self.listen_keys.account_of,
                             max_buffer_bytes=self.config.ws_max_buffer_bytes)
        self.engine.sink = self.hub.send_user_event
        self._runner: web.AppRunner | None = None
        self._rest: RestApi | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._loop_iterations = 0
        self._finished_logged = False
        self.request_log: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Restore the state file if any, bind 127.0.0.1:port and start the market loop."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._restore()
        self.replay.advance_to(self.clock.target_ms() if self.clock.speed else self.replay.now_ms)
        self.funding.restart(self.replay.symbols, self.replay.now_ms)
        app = web.Application(middlewares=[self._middleware])
        self._rest = RestApi(engine=self.engine, replay=self.replay,
                             recorded_info=self._recorded_info, faults=self.faults,
                             listen_keys=self.listen_keys, funding=self.funding,
                             max_recv_window_ms=self.config.recv_window_max_ms,
                             on_listen_key_deleted=self._listen_key_deleted,
                             rate_limiter=self.rate_limiter)
        self._rest.register(app)
        AdminApi(self).register(app)
        for path in ("/ws", "/ws/{tail:.*}", "/{category:public|market|private|pm}/ws",
                     "/{category:public|market|private|pm}/ws/{tail:.*}"):
            app.router.add_get(path, self.hub.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK_HOST, self.config.port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._loop_task = asyncio.create_task(self._market_loop(), name="simulator-market-loop")
        logger.info("simulator listening on {} ({} symbols, {} replay from {}, speed {})",
                    self.base_url, len(self.replay.symbols), self.config.replay.source,
                    _iso(self.replay.now_ms), self.clock.speed)

    async def stop(self) -> None:
        """Stop the loop, disconnect clients, close the socket, save the state file."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._rest is not None:
            self._rest.cancel_late_orders()  # nothing lands in a stopped venue
        await self.hub.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.config.state_file is not None:
            self.save_state()
        logger.info("simulator stopped")

    # --- addresses and credentials ---------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK_HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("simulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the REST root (paths ``/fapi/v1/...`` below it)."""
        return f"http://{LOOPBACK_HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT/ws``: the base ccxt.pro derives its stream URLs from."""
        return f"ws://{LOOPBACK_HOST}:{self.port}/ws"

    @property
    def api_key(self) -> str:
        return self.config.accounts[0].api_key

    @property
    def api_secret(self) -> str:
        return self.config.accounts[0].secret

    # --- control (the Python twin of /sim/*) -------------------------------------------------

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Change fault knobs at run time, e.g. ``set_faults(reject_probability=0.2)``."""
        config = FaultConfig.from_mapping(changes, self.faults.config)
        self.set_fault_config(config)
        return config

    def set_fault_config(self, config: FaultConfig) -> None:
        self.faults.update(config)
        default = FaultConfig()
        changed = {f.name: getattr(config, f.name) for f in fields(config)
                   if getattr(config, f.name) != getattr(default, f.name)}
        logger.info("simulator faults: {}", changed or "none")

    def set_clock_skew(self, skew_ms: int) -> None:
        """Step the server's clock by ``skew_ms`` from the wall clock; other faults are untouched."""
        self.faults.set_clock_skew(skew_ms)
        logger.info("simulator clock skew: {} ms", skew_ms)

    def set_rate_limits(self, config: RateLimitConfig) -> None:
        """Change the enforced limits at run time (counts and bans so far are kept)."""
        self.rate_limiter.update(config)
        logger.info("simulator rate limits: {}", config)

    def inject_http_errors(self, status: int, count: int) -> None:
        """Fail the next ``count`` REST requests with ``status`` (429, 418, 500, 502-504)."""
        self.faults.inject_http_errors(status, count)

    def set_symbol_status(self, symbol: str, status: str) -> None:
        """Change a symbol's exchangeInfo ``status`` (e.g. ``SETTLING`` for a delisting), which
        ccxt reads as ``market['active']``; orders are not affected."""
        self.engine.rules[symbol].info["status"] = status

    def set_symbol_filters(self, symbol: str, **values: Any) -> dict[str, Any]:
        """Change a symbol's filters while running: ``min_notional`` (MIN_NOTIONAL), ``min_qty``
        and ``max_qty`` (LOT_SIZE), ``market_max_qty`` (MARKET_LOT_SIZE). Orders are checked
        against them at once and exchangeInfo serves them; tick and step sizes stay (the replay's
        price grid depends on them). Returns the symbol's new filters. ``ValueError`` for an
        unknown symbol or filter."""
        where = {"min_notional": ("MIN_NOTIONAL", "notional"), "min_qty": ("LOT_SIZE", "minQty"),
                 "max_qty": ("LOT_SIZE", "maxQty"), "market_max_qty": ("MARKET_LOT_SIZE", "maxQty")}
        current = self.engine.rules.get(symbol)
        unknown = sorted(set(values) - set(where))
        if current is None or unknown:
            raise ValueError(f"unknown symbol {symbol!r} or filter(s) {unknown}; filters: {sorted(where)}")
        info = dict(current.info, filters=[dict(f) for f in current.info["filters"]])
        for name, value in values.items():
            kind, key = where[name]
            found = next((f for f in info["filters"] if f["filterType"] == kind), None)
            if found is None:
                found = {"filterType": kind}
                info["filters"].append(found)
            found[key] = f"{Decimal(str(value)).normalize():f}"
        provenance = current.provenance if "changed" in current.provenance else f"{current.provenance}, changed"
        self.engine.rules[symbol] = rules_from_info(info, provenance)
        logger.info("simulator: {} filters changed: {}", symbol, values)
        return {f["filterType"]: f for f in info["filters"]}

    def liquidate(self, symbol: str, *, account: str = "default", adl: bool = False) -> dict[str, Any] | None:
        """Force the liquidation (``adl``: auto-deleveraging) of ``account``'s position on
        ``symbol`` now, at the mark price; the liquidation order's REST view, None when flat.
        Positions are also liquidated by themselves when the mark crosses their liquidation
        price (``TradingEngine.check_liquidations``, every market step)."""
        order = self.engine.liquidate(self.engine.accounts[account], symbol, adl=adl)
        if order is None:
            return None
        logger.info("simulator: {} {} liquidated ({}), {} {} at {}", account, symbol,
                    order.client_order_id, order.side, order.orig_qty, order.avg_price)
        return order.rest_payload()

    def refuse_subscriptions(self, count: int) -> None:
        """Answer the next ``count`` WebSocket SUBSCRIBE requests with an error."""
        self.faults.refuse_subscriptions(count)

    async def drop_websockets(self, *, abrupt: bool = False) -> int:
        """Disconnect every WebSocket client now; returns how many."""
        return await self.hub.drop_all(abrupt=abrupt)

    def pause(self) -> None:
        """Freeze the market (no quotes, replay time stands still)."""
        self.clock.pause(self.replay.now_ms)

    def resume(self) -> None:
        self.clock.resume()

    def set_speed(self, speed: float) -> None:
        self.clock.set_speed(speed, self.replay.now_ms)

    def reset(self, *, replay: bool = False) -> None:
        """Clear orders/positions/balances; with ``replay`` also rewind the market.

        Late orders (``lands_late`` fault) still in flight are dropped too: a reset venue starts
        clean.
        """
        if self._rest is not None:
            self._rest.cancel_late_orders()
        self.engine.reset()
        if replay:
            start = self.replay.start_ms
            self.replay.seek(start)
            self.clock.jump_to(start)
            self.funding.restart(self.replay.symbols, start)

    def order_log(self) -> list[dict[str, Any]]:
        """Every order the venue has seen (all accounts), oldest first."""
        return self.engine.order_log()

    def positions(self) -> dict[str, Any]:
        return self.engine.positions_report()

    def markets(self) -> list[dict[str, Any]]:
        return [{"symbol": r.symbol, "tickSize": str(r.tick_size), "stepSize": str(r.step_size),
                 "minQty": str(r.min_qty), "minNotional": str(r.min_notional),
                 "pricePrecision": r.price_precision, "quantityPrecision": r.quantity_precision,
                 "maxLeverage": r.max_leverage, "provenance": r.provenance}
                for r in self.engine.rules.values()]

    def stats(self) -> dict[str, Any]:
        return {
            "replay_ms": self.replay.now_ms,
            "replay_finished": self.replay.finished,
            "speed": self.clock.speed,
            "paused": self.clock.paused,
            "loop_iterations": self._loop_iterations,
            "orders": len(self.engine.orders),
            "faults_injected": dict(self.faults.injected),
            "rate_limits": self.rate_limiter.stats(),
            "ws": self.hub.stats(),
        }

    def save_state(self, path: Path | None = None) -> Path:
        target = path or self.config.state_file
        if target is None:
            raise ValueError("no state file configured")
        return save_state(target, replay_ms=self.replay.now_ms, engine=self.engine.to_state(),
                          listen_keys=dict(self.listen_keys.by_account))

    # --- internals -------------------------------------------------------------------------

    def _restore(self) -> None:
        if self.config.state_file is None:
            return
        state = load_state(self.config.state_file)
        if state is None:
            return
        self.engine.load_state(state["engine"])
        for account, key in state["listen_keys"].items():
            if account in self.engine.accounts:
                self.listen_keys.by_account[account] = key
                self.listen_keys.by_key[key] = account
        replay_ms = int(state["replay_ms"])
        self.replay.seek(replay_ms)
        self.clock.jump_to(replay_ms)
        logger.info("simulator state restored from {} (replay at {})", self.config.state_file,
                    _iso(replay_ms))

    async def _listen_key_deleted(self, account: str) -> None:
        await self.hub.drop_all(accounts={account})

    async def _market_loop(self) -> None:
        interval = self.config.loop_interval_ms / 1000.0
        ticker_every = self.config.ws_ticker_interval_ms / 1000.0
        next_ticker = time.monotonic()
        next_save = next_ticker + self.config.state_save_interval_seconds
        next_drop: float | None = None
        while True:
            self._loop_iterations += 1
            fast = self.clock.speed == 0 and not self.clock.paused
            if not (fast and self.hub.backlogged()):
                try:
                    events = self.replay.advance_to(self.clock.target_ms())
                    if events:
                        self._match_resting(events)
                        self.engine.check_liquidations()
                        self.hub.broadcast_quotes(events)
                    self.funding.settle_due(self.replay.now_ms, self.engine, self.replay.mark_price)
                except Exception:  # a bug must not freeze the market silently; keep serving
                    logger.exception("simulator market step failed")
                    await asyncio.sleep(0.1)
            jump = self.replay.gap_jump_target()
            if jump is not None and not self.clock.paused:
                self.clock.jump_to(jump)
            now = time.monotonic()
            if now >= next_ticker:
                self.hub.broadcast_tickers()
                next_ticker = now + ticker_every
            every = self.faults.config.ws_disconnect_every_seconds
            if every <= 0:
                next_drop = None
            elif next_drop is None:
                next_drop = now + every
            elif now >= next_drop:
                await self.hub.drop_all()
                next_drop = now + every
            if self.config.state_file is not None and now >= next_save:
                self.save_state()
                next_save = now + self.config.state_save_interval_seconds
            if self.replay.finished and not self._finished_logged:
                logger.info("simulator replay reached the end of its data at {}",
                            _iso(self.replay.now_ms))
                self._finished_logged = True
            await asyncio.sleep(0 if fast else interval)

    def _match_resting(self, events: list[QuoteTick]) -> None:
        """Let every quote of a symbol with open orders try to fill them, in time order."""
        engine = self.engine
        if not engine.symbols_with_open_orders:
            return
        symbols, rules = self.replay.symbols, self.replay.inst.rules
        for i, ts, bid, ask, bq, aq, _ in events:
            symbol = symbols[i]
            if engine.has_open_orders(symbol):
                r = rules[i]
                book = BookTop(bid * r.tick_size, ask * r.tick_size, bq * r.step_size,
                               aq * r.step_size)
                engine.on_quote(symbol, book, ts)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Binance error rendering, plus latency, HTTP error faults and rate limits (weights,
        order counts, 429/418 with Retry-After, ``simulator/rate_limits.py``) on ``/fapi``;
        every ``/fapi`` request is kept in ``request_log`` (the newest ``REQUEST_LOG_SIZE``)."""
        if not request.path.startswith("/fapi"):
            return await self._render_errors(request, handler)
        arrived = wall_ms()
        response = await self._fapi(request, handler)
        self.request_log.append(RequestRecord(arrived, request.method, request.path, dict(request.query),
                                              response.status))
        return response

    async def _fapi(self, request: web.Request, handler: Any) -> web.StreamResponse:
        delay = self.faults.latency_seconds()
        if delay:
            await asyncio.sleep(delay)
        status = self.faults.http_error()
        if status is not None:
            return _http_error(status)
        account = self.engine.account_by_key(request.headers.get("X-MBX-APIKEY", ""))
        verdict = self.rate_limiter.check(ip=request.remote or LOOPBACK_HOST,
                                          account=account.name if account else None,
                                          method=request.method, path=request.path,
                                          params=request.query)
        if verdict.error is not None:
            response: web.StreamResponse = json_response(verdict.error.payload(),
                                                         status=verdict.error.http_status)
        else:
            response = await self._render_errors(request, handler)
        if not response.prepared:
            response.headers.update(verdict.headers)
        return response

    async def _render_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except BinanceError as exc:
            return json_response(exc.payload(), status=exc.http_status)
        except web.HTTPNotFound:
            err = errors.path_not_found(request.path)
            return json_response(err.payload(), status=404)
        except web.HTTPMethodNotAllowed:
            return json_response({"code": -1000, "msg": f"Method {request.method} not allowed"},
                                 status=405)
        except web.HTTPException:
            raise
        except Exception:
            logger.exception("simulator handler failed: {} {}", request.method, request.path_qs)
            return json_response({"code": -1000, "msg": "An unknown error occured while "
                                  "processing the request."}, status=500)


def _http_error(status: int) -> web.Response:
    """What the venue (or the gateway in front of it) answers for an injected HTTP error."""
    if status in (418, 429):
        err = errors.ip_banned() if status == 418 else errors.too_many_requests()
        response = json_response(err.payload(), status=status)
        response.headers["Retry-After"] = "1"
        return response
    if status == 500:
        return json_response(errors.internal_error().payload(), status=500)
    page = _GATEWAY_PAGES[status]
    return web.Response(text=f"<html><head><title>{page}</title></head><body><center><h1>"
                             f"{page}</h1></center></body></html>", status=status,
                        content_type="text/html")


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
