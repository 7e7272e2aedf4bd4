"""The operator API as a bot component: uvicorn serving FastAPI inside the bot's own event loop.

Why in the loop and not a thread: the routes read the engine, the journal and the generators
directly, and an action (a close) is a coroutine of the engine's; one loop means no locks and
no copies. ``main.py`` owns SIGINT/SIGTERM, so uvicorn's own signal capture is switched off
(``_InLoopServer``); the bot stops the server like any component. Started after the engine
(last in the component list), so it is stopped first: no request meets a stopping engine.
The socket is bound in ``start`` (port 0 picks a free one), so a busy port fails the start
with a clear error instead of a ``sys.exit`` inside uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from typing import Any, Iterator

import uvicorn
from loguru import logger

from core.config import ApiConfig
from core.errors import ConfigurationError
from core.events import EventKind

from app.operator_api.actions import OperatorActions
from app.operator_api.context import ApiContext
from app.operator_api.metrics import BotMetrics
from app.operator_api.routes import create_app
from app.operator_api.ws import WsHub, add_ws_route

STOP_TIMEOUT_SECONDS = 2.0


class _ToLoguru(logging.Handler):
    """uvicorn logs through the standard library: hand its records to loguru, so they reach the log
    file and pass the same secret redaction as every other line."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname if record.levelname in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"
        logger.opt(exception=record.exc_info).log(level, "uvicorn: {}", record.getMessage())


def _route_uvicorn_logs() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        std = logging.getLogger(name)
        if not any(isinstance(h, _ToLoguru) for h in std.handlers):
            std.addHandler(_ToLoguru())
        std.propagate = False
        std.setLevel(logging.WARNING)  # its start and stop lines would only repeat ours


class _InLoopServer(uvicorn.Server):
    """uvicorn without its signal handlers: the bot's own handlers decide when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OperatorApi:
    """Component: ``start`` binds and serves, ``stop`` closes clients and the server (bounded)."""

    name = "operator_api"

    def __init__(self, *, ctx: ApiContext, settings: ApiConfig, token: str) -> None:
        if not token:
            raise ConfigurationError(file="config.json", field="api.token_env", value=settings.token_env,
                                     expected="a non-empty bearer token in that environment variable")
        self.ctx = ctx
        self.settings = settings
        self.ws = WsHub()
        self.metrics = BotMetrics(ctx, ws_clients=lambda: self.ws.clients)
        self.actions = OperatorActions(ctx)
        self.app = create_app(ctx, token=token, metrics=self.metrics, actions=self.actions)
        add_ws_route(self.app, ctx, token=token, hub=self.ws)
        self._server: _InLoopServer | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self.port: int | None = None
        self.ticks = 0

    @property
    def base_url(self) -> str:
        host = self.settings.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        _route_uvicorn_logs()
        self._socket = _bind(self.settings.host, self.settings.port)
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", ws="websockets-sansio",
                                http="h11", timeout_graceful_shutdown=1, ws_ping_interval=20.0)
        self._server = _InLoopServer(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="operator_api.serve")
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()  # re-raises why it could not serve
                raise RuntimeError("the operator API server stopped while starting")
            await asyncio.sleep(0.01)
        self._ticker = asyncio.create_task(self._tick(), name="operator_api.metric")
        logger.info("operator API on {} (dashboard at /, token from ${})", self.base_url, self.settings.token_env)
        if not _is_loopback(self._socket.getsockname()[0]):
            logger.warning("operator API listens on {} beyond this machine, in plain HTTP: put a TLS reverse proxy "
                           "in front, or set api.host to 127.0.0.1", self.settings.host)

    async def _tick(self) -> None:
        """The periodic ``metric`` event, and the quote rate behind ``pairs_bot_quotes_per_second``."""
        self.metrics.tick()
        while True:
            await asyncio.sleep(self.settings.metric_interval_seconds)
            self.metrics.tick()
            try:
                snapshot = self.metrics.snapshot()
            except Exception as exc:  # a journal read failed: say it, keep ticking (the API still serves)
                logger.warning("operator API metric snapshot failed: {}: {}", type(exc).__name__, exc)
                continue
            self.ctx.events.publish(EventKind.METRIC, snapshot)
            self.ticks += 1

    async def stop(self) -> None:
        self.ws.close_all()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._serve_task), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                self._server.force_exit = True
                self._serve_task.cancel()
                await asyncio.gather(self._serve_task, return_exceptions=True)
                logger.warning("operator API: server did not stop within {} s; cancelled", STOP_TIMEOUT_SECONDS)
            except Exception as exc:
                logger.warning("operator API server ended with {}: {}", type(exc).__name__, exc)
        self._server = self._serve_task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def stats(self) -> dict[str, Any]:
        return {"port": self.port, "ws_clients_served": self.ws.served, "ws_events_sent": self.ws.sent,
                "metric_events": self.ticks, "actions": dict(self.actions.counts)}


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6), or a ``ConfigurationError`` saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(file="config.json", field="api.host", value=host,
                                 expected=f"an address this machine can listen on ({exc})") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(file="config.json", field="api.port", value=port,
                                 expected=f"a free port on {host} ({exc.strerror})") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock
