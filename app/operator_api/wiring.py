"""Builds the operator API component from an assembled pipeline (``app/assemble.py`` calls this)."""

from __future__ import annotations

from typing import Any

from core.config import AppConfig, PairConfig, Secrets

from app.operator_api.bearer import api_token
from app.operator_api.context import ApiContext
from app.operator_api.server import OperatorApi


def operator_api(pipeline: Any, *, config: AppConfig, pairs: list[PairConfig], mode: str,
                 secrets: Secrets, config_file: str = "config.json") -> OperatorApi:
    token = api_token(config, config_file=config_file)
    if token is None:
        raise ValueError("operator_api() called with api.enabled false")
    ctx = ApiContext(config=config, pairs=pairs, mode=mode, engine=pipeline.engine, journal=pipeline.journal,
                     router=pipeline.router, hub=pipeline.hub, events=pipeline.events, equity=pipeline.equity,
                     pipeline=pipeline, secrets_present=secrets.present)
    return OperatorApi(ctx=ctx, settings=config.api, token=token)
