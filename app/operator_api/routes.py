"""The FastAPI application: routes, the bearer check, JSON error bodies, the dashboard's files.

Why FastAPI: request and response validation and an OpenAPI schema (``/docs`` is off; the
schema is at ``/openapi.json`` behind the token) come from the type hints, where aiohttp would
need every check written by hand; freqtrade's REST API makes the same choice.
Every route but ``/health`` and the dashboard's static page needs ``Authorization: Bearer``.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from app.operator_api import views
from app.operator_api.actions import ApiError, Caller, OperatorActions
from app.operator_api.context import ApiContext
from app.operator_api.metrics import CONTENT_TYPE_LATEST, BotMetrics

DASHBOARD_DIR = FilePath(__file__).resolve().parent / "dashboard"
PAIR_ID = Path(pattern=r"^[A-Za-z0-9_.-]{1,40}$", description="a pair_id of pairs_config.json")
_OPERATOR_NAME = re.compile(r"[^A-Za-z0-9_.@-]")


class ActionBody(BaseModel):
    """Optional body of a POST action: why (journaled with the action)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(default="", max_length=200)


def bearer_matches(header: str | None, token: str) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def caller(request: Request) -> Caller:
    name = _OPERATOR_NAME.sub("", request.headers.get("x-operator", ""))[:40] or "api"
    client = request.client
    return Caller(name, f"{client.host}:{client.port}" if client else "?")


def create_app(ctx: ApiContext, *, token: str, metrics: BotMetrics, actions: OperatorActions) -> FastAPI:
    app = FastAPI(title="pairs-bot operator API", docs_url=None, redoc_url=None, openapi_url=None)

    async def require_token(request: Request) -> None:
        if not bearer_matches(request.headers.get("authorization"), token):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    _error_handlers(app)
    _security_headers(app)
    api = APIRouter(dependencies=[Depends(require_token)])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"ok": True}

    @api.get("/status")
    async def status() -> dict[str, Any]:
        return views.status(ctx)

    @api.get("/pairs")
    async def pairs() -> dict[str, Any]:
        return {"pairs": views.pair_rows(ctx)}

    @api.get("/pairs/{pair_id}")
    async def pair(pair_id: str = PAIR_ID) -> dict[str, Any]:
        row = next((r for r in views.pair_rows(ctx) if r["pair_id"] == pair_id), None)
        if row is None:
            raise ApiError(404, f"unknown pair {pair_id!r}")
        return row

    @api.get("/positions")
    async def positions() -> dict[str, Any]:
        return {"positions": views.positions(ctx), "pnl": views.pnl(ctx)}

    @api.get("/trades")
    async def trades(limit: int = Query(100, ge=1, le=1000), pair: str | None = Query(None, max_length=40)
                     ) -> dict[str, Any]:
        return {"trades": views.trades(ctx, limit=limit, pair_id=_known(ctx, pair))}

    @api.get("/orders")
    async def orders(limit: int = Query(100, ge=1, le=1000), pair: str | None = Query(None, max_length=40),
                     open: bool = Query(False, description="only orders still open or unresolved")
                     ) -> dict[str, Any]:
        return {"orders": views.orders(ctx, limit=limit, pair_id=_known(ctx, pair), open_only=open)}

    @api.get("/equity")
    async def equity() -> dict[str, Any]:
        return views.equity(ctx)

    @api.get("/config")
    async def config() -> dict[str, Any]:
        return views.config(ctx)

    @api.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @api.post("/pause")
    async def pause(request: Request, body: ActionBody | None = None) -> JSONResponse:
        return _answer(actions.pause(caller(request), body.reason if body else ""))

    @api.post("/resume")
    async def resume(request: Request) -> JSONResponse:
        return _answer(actions.resume_entries(caller(request)))

    @api.post("/pairs/{pair_id}/enable")
    async def enable(request: Request, pair_id: str = PAIR_ID) -> JSONResponse:
        return _answer(actions.enable(caller(request), pair_id))

    @api.post("/pairs/{pair_id}/disable")
    async def disable(request: Request, pair_id: str = PAIR_ID, body: ActionBody | None = None) -> JSONResponse:
        return _answer(actions.disable(caller(request), pair_id, body.reason if body else ""))

    @api.post("/pairs/{pair_id}/close")
    async def close(request: Request, pair_id: str = PAIR_ID, body: ActionBody | None = None) -> JSONResponse:
        return _answer(await actions.close(caller(request), pair_id, body.reason if body else ""))

    @api.post("/pairs/{pair_id}/resume")
    async def resume_pair(request: Request, pair_id: str = PAIR_ID) -> JSONResponse:
        return _answer(actions.resume_pair(caller(request), pair_id))

    @api.post("/config/reload")
    async def reload(request: Request) -> JSONResponse:
        return _answer(await actions.reload(caller(request)))

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="static")
    return app


def _known(ctx: ApiContext, pair_id: str | None) -> str | None:
    if pair_id is not None and not ctx.known_pair(pair_id):
        raise ApiError(404, f"unknown pair {pair_id!r}")
    return pair_id


def _answer(result: dict[str, Any]) -> JSONResponse:
    return JSONResponse(jsonable_encoder(result), status_code=int(result.get("status_code", 200)))


def _error_handlers(app: FastAPI) -> None:
    """Every error is a JSON body ``{"error": ..., "status": ...}`` (validation adds ``detail``)."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "status": exc.status}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "status": exc.status_code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse({"error": f"invalid request: {where}: {first['msg']}", "status": 422,
                             "detail": jsonable_encoder(detail)}, status_code=422)


def _security_headers(app: FastAPI) -> None:
    """The dashboard loads nothing but its own files and talks only to this server."""

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        host = request.headers.get("host", "")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' ws://{host} wss://{host}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response
