"""What this run is allowed to do: its credentials and its mode (PAPER, LIVE or DEMO).

Live trading needs three independent yeses: ``dry_run: false`` in the file, ``--live`` on the
command line, and API keys. Requiring all three means no single slip (a copied config, a shell
history recall, keys left in the environment) can send real orders.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values

from core.config import AppConfig, Secrets
from core.errors import UsageError

ENV_KEY = "BINANCE_API_KEY"
ENV_SECRET = "BINANCE_API_SECRET"


class RunMode(str, Enum):
    PAPER = "PAPER"  # live market data, simulated fills, no order leaves the process
    LIVE = "LIVE"  # real orders
    DEMO = "DEMO"  # offline: bundled data, local simulator, real ccxt


def load_secrets(config: AppConfig, *, environ: Mapping[str, str] | None = None,
                 dotenv_path: Path | None = None, config_file: str = "config.json") -> tuple[Secrets, list[str]]:
    """Credentials from the environment, then ``.env``, then ``config.json`` (deprecated).

    Returns the secrets and the warnings to log. The process environment wins over ``.env``,
    and both win over ``config.json``; the values are never put in a warning.
    """
    env = dict(os.environ if environ is None else environ)
    dotenv_file = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
    from_dotenv = {k: v for k, v in dotenv_values(dotenv_file).items() if v} if dotenv_file.is_file() else {}
    warnings: list[str] = []
    key = env.get(ENV_KEY) or from_dotenv.get(ENV_KEY)
    secret = env.get(ENV_SECRET) or from_dotenv.get(ENV_SECRET)
    source = "environment" if (env.get(ENV_KEY) or env.get(ENV_SECRET)) else ".env" if (key or secret) else "none"
    in_file = bool(config.binance_api_key or config.binance_api_secret)
    if in_file:
        if key or secret:
            warnings.append(f"API keys in {config_file} are ignored: the environment/.env keys take precedence. "
                            f"Remove them from {config_file}; a committed or shared config file leaks them.")
        else:
            key, secret, source = config.binance_api_key, config.binance_api_secret, "config.json"
            warnings.append(f"API keys read from {config_file}: anyone who sees that file can trade your account. "
                            f"Move them to the environment or a .env file ({ENV_KEY}, {ENV_SECRET}).")
    return Secrets(api_key=key or None, api_secret=secret or None, source=source), warnings


def resolve_run_mode(config: AppConfig, *, live_flag: bool, secrets: Secrets, demo: bool,
                     config_file: str = "config.json") -> RunMode:
    """Decide the mode, or raise ``UsageError`` with the one line that explains the refusal;
    ``config_file`` is the file the user gave (``--config``), named in that line."""
    if demo:
        if live_flag:
            raise UsageError("refusing: --live cannot be combined with the offline demo")
        return RunMode.DEMO
    if config.dry_run:
        if live_flag:
            raise UsageError(f"refusing live trading: --live given but {config_file} has dry_run true "
                             "(set \"dry_run\": false to trade for real)")
        return RunMode.PAPER
    if not live_flag:
        raise UsageError(f"refusing to start: {config_file} has dry_run false but --live was not given "
                         "(add --live to trade for real, or set \"dry_run\": true for paper trading)")
    if not secrets.present:
        raise UsageError(f"refusing live trading: no API keys ({ENV_KEY} and {ENV_SECRET} in the "
                         "environment or .env)")
    return RunMode.LIVE
