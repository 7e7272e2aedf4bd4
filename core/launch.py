"""What this run is allowed to do (its credentials and its mode), and how hard it tries to start.

Live trading needs three independent yeses: ``dry_run: false`` in the file, ``--live`` on the
command line, and API keys. Requiring all three means no single slip (a copied config, a shell
history recall, keys left in the environment) can send real orders.

``retry_start`` retries a start that failed on a retryable error (no network, exchange down)
until a deadline; docs/architecture.md, "Errors, logs, exit codes", says what the user sees.
"""

from __future__ import annotations

import asyncio
import os
import random
from enum import Enum
from pathlib import Path
from typing import Awaitable, Callable, Mapping

from dotenv import dotenv_values

from core.backoff import jittered_backoff_seconds
from core.config import AppConfig, Secrets, check_notification_url, env_reference
from core.errors import ConfigurationError, RetryableError, StartupFailed, UsageError

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
    urls = notification_urls(config.notifications.urls, env, from_dotenv, config_file=config_file)
    return Secrets(api_key=key or None, api_secret=secret or None, source=source,
                   notification_urls=urls), warnings


def notification_urls(urls: list[str], env: Mapping[str, str], from_dotenv: Mapping[str, str | None], *,
                      config_file: str) -> tuple[str, ...]:
    """``notifications.urls`` with each ``env:NAME`` read from the environment, then ``.env``.

    An unset variable, or one that holds no URL apprise accepts, is a configuration error (exit
    2, before anything starts); the message names the variable, never its value.
    """
    resolved: list[str] = []
    for i, url in enumerate(urls):
        name = env_reference(url)
        if name is None:
            resolved.append(url)
            continue
        value = env.get(name) or from_dotenv.get(name)
        if not value:
            raise ConfigurationError(file=config_file, field=f"notifications.urls[{i}]", value=url,
                                     expected=f"the variable {name} set (environment or .env) to an apprise URL")
        check_notification_url(value, config_file, f"notifications.urls[{i}] (from {name})")
        resolved.append(value)
    return tuple(resolved)


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


# Backoff between start attempts: 1 s doubling to 10 s, each drawn in [delay / 2, delay].
STARTUP_RETRY_FIRST_MS = 1_000
STARTUP_RETRY_MAX_MS = 10_000
# The last wait is shortened so the last attempt still has this long before the deadline.
STARTUP_MIN_ATTEMPT_SECONDS = 1.0


def startup_backoff_seconds(failures: int, rng: random.Random) -> float:
    """The wait after the ``failures``-th failed attempt, in seconds: drawn in [c / 2, c] where
    c is 1 s, 2 s, 4 s, 8 s, then 10 s (exponential, capped, with jitter so that many bots
    restarted together do not retry in step)."""
    return jittered_backoff_seconds(failures, rng, first_ms=STARTUP_RETRY_FIRST_MS, max_ms=STARTUP_RETRY_MAX_MS)


async def retry_start(attempt: Callable[[], Awaitable[None]], *, cleanup: Callable[[], Awaitable[None]],
                      timeout_seconds: float, on_retry: Callable[[int, RetryableError, float, float], None],
                      rng: random.Random | None = None) -> int:
    """Run ``attempt`` until it returns; returns how many attempts it took.

    A ``RetryableError`` is followed by ``cleanup`` (which must close whatever the attempt
    opened), ``on_retry(attempt_number, error, wait_seconds, seconds_left)`` and a backoff wait,
    then a fresh attempt, until ``timeout_seconds`` have passed since the first one began. Every
    attempt runs under the deadline, so one that hangs (a server that accepts and never answers)
    is cut at it. Raises ``StartupFailed`` at the deadline, and any other error at once; the caller
    closes what the failing attempt left open.
    """
    rng = rng or random.Random()
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + timeout_seconds
    attempts = 0
    last_error: RetryableError | None = None
    while True:
        attempts += 1
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                await attempt()
            return attempts
        except RetryableError as exc:
            last_error = exc
        except TimeoutError:
            if not scope.expired():
                raise
            # Chained to the TimeoutError, whose traceback (in the log file) shows where it hung.
            raise StartupFailed(last_error=last_error, attempts=attempts, elapsed_seconds=loop.time() - began,
                                hung=True)
        await cleanup()
        left = deadline - loop.time()
        if left < STARTUP_MIN_ATTEMPT_SECONDS:
            raise StartupFailed(last_error=last_error, attempts=attempts, elapsed_seconds=loop.time() - began,
                                hung=False) from last_error
        wait = min(startup_backoff_seconds(attempts, rng), left - STARTUP_MIN_ATTEMPT_SECONDS)
        on_retry(attempts, last_error, wait, left)
        await asyncio.sleep(wait)
