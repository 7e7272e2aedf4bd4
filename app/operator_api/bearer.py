"""The operator API's bearer token: from the environment (or ``.env``), never from a file.

Checked by ``main.py`` with the rest of the configuration, before anything starts: the API
enabled with its token variable empty is a configuration error (one line, exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values

from core.config import AppConfig
from core.errors import ConfigurationError

#: Shorter than this is refused: a guessable token on an API that can flatten positions is none.
MIN_TOKEN_CHARS = 16


def api_token(config: AppConfig, *, config_file: str = "config.json", environ: Mapping[str, str] | None = None,
              dotenv_path: Path | None = None) -> str | None:
    """The token when ``api.enabled``, else None; raises ``ConfigurationError`` when it is unset or short."""
    api = config.api
    if not api.enabled:
        return None
    env = os.environ if environ is None else environ
    token = env.get(api.token_env, "")
    if not token:
        dotenv_file = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
        if dotenv_file.is_file():
            token = dotenv_values(dotenv_file).get(api.token_env) or ""
    token = token.strip()
    if not token:
        raise ConfigurationError(file=config_file, field="api.enabled", value=True,
                                 expected=f"the environment variable {api.token_env} (api.token_env) set to the "
                                          "API's bearer token, or api.enabled false")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigurationError(file=config_file, field="api.token_env", value=api.token_env,
                                 expected=f"a token of at least {MIN_TOKEN_CHARS} characters in {api.token_env} "
                                          f"(it has {len(token)})")
    return token
