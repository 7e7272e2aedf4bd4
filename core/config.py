"""Typed, frozen configuration: ``config.json`` and ``pairs_config.json``.

Why pydantic in strict mode: a trading bot must not guess. ``"lookback_bars": "60"`` or a typo'd
key is refused with one line naming the file, the field path, the value and what is expected,
instead of being coerced or silently ignored. No raw dict travels past ``load_app_config`` /
``load_pairs_config``; the rest of the bot reads these models or the per-pair ``SignalParams``.

The original design's keys (``binance_api_key``, ``trading_mode``, ``data.exchange``,
``data.use_testnet``, ``z_score_threshold``, ...) are all accepted, see docs/architecture.md, "Configuration".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import MISSING, ConfigurationError, Marker

# Timeframes Binance serves as klines, in seconds. Warm-up fetches bars of this size, so the
# signal bar must be one of them.
KLINE_SECONDS: dict[int, str] = {
    60: "1m",
    180: "3m",
    300: "5m",
    900: "15m",
    1800: "30m",
    3600: "1h",
    7200: "2h",
    14400: "4h",
    21600: "6h",
    28800: "8h",
    43200: "12h",
    86400: "1d",
}

# Seed-style exchange names mapped to the ccxt id of their USD-M perpetual venue.
EXCHANGE_ALIASES: dict[str, str] = {"binance": "binanceusdm", "binancefutures": "binanceusdm"}

_LEG_PATTERN = re.compile(r"^[A-Z0-9]{1,20}(/[A-Z0-9]{2,10}(:[A-Z0-9]{2,10})?)?$")
_PAIR_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


class _Strict(BaseModel):
    """Base for every config section: frozen, strict types, unknown keys refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ExchangeConfig(_Strict):
    """Which venue to talk to, and how.

    ``base_url`` points ccxt at a Binance-compatible server (the bundled simulator, e.g.
    ``http://127.0.0.1:8765``); empty means the real venue. ``ws_url`` defaults to the same host.
    """

    id: str = "binanceusdm"
    base_url: str | None = None
    ws_url: str | None = None
    use_testnet: bool = False
    leverage: int = Field(default=2, ge=1, le=125)
    margin_mode: Literal["isolated", "cross"] = "isolated"
    request_timeout_ms: int = Field(default=10_000, ge=100, le=120_000)
    # ccxt's client-side throttle, for market-data requests. The order client never uses it: it
    # spaces requests by their weight (an order costs ~200 ms), which would send the two legs of
    # a pair 200 ms apart. Orders are few; a 429/418 is retried with backoff instead.
    enable_rate_limit: bool = True
    # recvWindow of signed requests. It bounds how long an order whose outcome is unknown can
    # still land (docs/architecture.md, "Order outcomes"): a shorter window resolves a lost order sooner.
    recv_window_ms: int = Field(default=5_000, ge=100, le=60_000)
    # How often the offset between this machine's clock and the exchange's is measured again
    # (GET /fapi/v1/time) after the one at start; signed requests carry the exchange's time. A
    # -1021 (timestamp outside recvWindow) re-measures at once. 0: only at start and on -1021.
    clock_sync_interval_seconds: float = Field(default=300.0, ge=0, le=86_400)
    # Binance's rate limits, kept by the order client's governor (execution/rate_limit.py): above
    # this fraction of a window's weight or order budget only risk-reducing requests (reduce-only
    # orders, cancels) are sent; the others wait for the window to roll.
    rate_limit_soft_fraction: float = Field(default=0.8, gt=0, le=1)
    # How long a request that does not reduce risk may wait for the rate limit (or a 429's
    # Retry-After, or a ban) before it is given up as not sent. Risk-reducing ones always wait.
    rate_limit_max_wait_seconds: float = Field(default=10.0, ge=0, le=600)
    # How long a start may keep retrying a retryable failure (no network, DNS, exchange down,
    # 5xx) before it gives up with one line and exit code 1.
    startup_timeout_seconds: float = Field(default=60.0, gt=0, le=3_600)

    @field_validator("id")
    @classmethod
    def _known_shape(cls, value: str) -> str:
        value = EXCHANGE_ALIASES.get(value, value)
        if not re.fullmatch(r"[a-z0-9]{2,30}", value):
            raise ValueError("a ccxt exchange id such as 'binanceusdm'")
        return value

    @field_validator("base_url", "ws_url")
    @classmethod
    def _url_shape(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"(https?|wss?)://[A-Za-z0-9.\-\[\]]+(:\d{1,5})?(/[A-Za-z0-9._~\-/]*)?", value):
            raise ValueError("a URL such as 'http://127.0.0.1:8765' or 'ws://127.0.0.1:8765/ws'")
        return value.rstrip("/")


class SeedDataConfig(_Strict):
    """The original design's ``data`` section: kept for compatibility, folded into ``exchange``."""

    exchange: str | None = None
    use_testnet: bool | None = None


class SignalConfig(_Strict):
    """Defaults for every pair's signal generator (docs/architecture.md, "Signals and sizing").

    Thresholds are in Z units. ``exit_threshold`` 0 exits when the spread crosses its mean.
    ``entry_max_z`` is the top of the entry band (entry <= |z| < entry_max_z); None means the
    stop threshold, so the bot never enters where its own stop would fire at once.
    ``max_holding_bars`` None means three half-lives of the pair (``half_life_candles``).
    ``time_stop_cooldown_seconds`` None means ``stop_loss_cooldown_seconds``: a time stop must
    not re-enter on the next bar, where z is still about where it was.
    """

    bar_seconds: int = 300
    lookback_bars: int = Field(default=60, ge=3, le=100_000)
    entry_threshold: float = Field(default=2.0, gt=0, le=50)
    exit_threshold: float = Field(default=0.0, ge=-50, le=50)
    stop_loss_threshold: float = Field(default=4.0, gt=0, le=100)
    entry_max_z: float | None = Field(default=None, gt=0, le=100)
    price_transform: Literal["log", "raw"] = "log"
    # "static": the pair's configured hedge_ratio; "rolling_ols": beta re-fitted by OLS over the
    # pair's lookback window on every update (signals/spread.py RollingOLSCalculator), the signal
    # carries it and the engine sizes the entry with it.
    hedge_ratio_mode: Literal["static", "rolling_ols"] = "static"
    min_std: float = Field(default=1e-9, ge=0)
    max_quote_age_ms: int = Field(default=5_000, ge=1, le=3_600_000)
    cooldown_seconds: float = Field(default=30.0, ge=0, le=86_400)
    stop_loss_cooldown_seconds: float = Field(default=1_800.0, ge=0, le=7 * 86_400)
    time_stop_cooldown_seconds: float | None = Field(default=None, ge=0, le=7 * 86_400)
    max_holding_bars: int | None = Field(default=None, ge=1)
    max_holding_half_lives: float = Field(default=3.0, gt=0, le=100)
    # The market-data feed as a whole: no quote of any symbol for this long (wall clock) is a
    # lost feed. Every pair shows STALE (no entries), a CRITICAL line is printed, and
    # ``on_feed_loss`` decides about open pairs: ``hold`` keeps them (their exits and stops wait
    # for the feed), ``flatten`` closes each at market through the engine's protocols.
    max_feed_outage_seconds: float = Field(default=60.0, gt=0, le=86_400)
    on_feed_loss: Literal["hold", "flatten"] = "hold"

    @field_validator("bar_seconds")
    @classmethod
    def _served_timeframe(cls, value: int) -> int:
        if value not in KLINE_SECONDS:
            raise ValueError(f"one of the exchange's kline sizes in seconds {sorted(KLINE_SECONDS)}")
        return value


class ExecutionConfig(_Strict):
    """How the engine sizes and places orders (docs/architecture.md, "Signals and sizing" and "Order outcomes").

    ``max_slippage_pct`` is a fraction (0.001 = 0.1 %), as in the original design.
    ``max_hedge_error`` is the largest relative distance, after rounding to lot steps, between
    the achieved and the configured hedge ratio.
    """

    notional_per_pair_usdt: float = Field(default=1000.0, gt=0, le=10_000_000)
    use_limit_orders: bool = False
    max_slippage_pct: float = Field(default=0.001, ge=0, le=0.1)
    order_timeout_seconds: float = Field(default=30.0, gt=0, le=3_600)
    max_order_retries: int = Field(default=3, ge=0, le=20)
    retry_backoff_ms: int = Field(default=200, ge=0, le=60_000)
    max_hedge_error: float = Field(default=0.05, gt=0, lt=1)
    reconcile_interval_seconds: float = Field(default=30.0, gt=0, le=3_600)
    # How often funding payments are read while a round trip is open (also at every
    # reconciliation and every exit); see execution/funding.py.
    funding_poll_seconds: float = Field(default=60.0, gt=0, le=3_600)
    duplicate_window_seconds: float = Field(default=1.0, ge=0, le=3_600)
    # Order outcomes (docs/architecture.md): "not found" is final only after the request's
    # timestamp + recvWindow + this margin for the difference between our clock and the venue's.
    clock_error_margin_ms: int = Field(default=1_000, ge=0, le=60_000)
    # How long the resolver keeps looking an unknown order up past its horizon while lookups fail.
    resolve_extra_seconds: float = Field(default=5.0, ge=0, le=600)
    # How long an exit waits for its pair's unresolved orders before a CRITICAL line and a refusal.
    resolving_wait_seconds: float = Field(default=30.0, ge=0, le=3_600)
    # How long a filled order's trades may lag behind it before reconciliation is left to fetch them.
    fill_wait_seconds: float = Field(default=2.0, ge=0, le=60)
    # How long a stop waits for executions in flight (rollbacks included) before it journals
    # their pairs RESOLVING for the next start.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=600)
    # A leg that vanished from the exchange with no order of ours (liquidation, ADL, a manual
    # close): "close" the surviving leg of every pair on it, or "alert" (HALT, touch nothing).
    on_leg_vanished: Literal["close", "alert"] = "close"
    # How often exchangeInfo is read again (filters, symbol status); also soon after an order is
    # refused by a filter (execution/markets_watch.py).
    markets_refresh_seconds: float = Field(default=3600.0, gt=0, le=86_400)


class RiskConfig(_Strict):
    """Pre-trade checks; any one failing refuses an entry and says which."""

    max_open_pairs: int = Field(default=5, ge=1, le=1_000)
    max_gross_exposure_usdt: float = Field(default=6_000.0, gt=0)
    max_daily_loss_usdt: float = Field(default=100.0, gt=0)
    min_free_margin_usdt: float = Field(default=0.0, ge=0)


class PaperConfig(_Strict):
    """The paper exchange's fill model (dry_run). Fees are fractions of notional."""

    starting_balance_usdt: float = Field(default=10_000.0, gt=0)
    # Binance USD-M VIP 0: maker 0.02 %, taker 0.05 %.
    taker_fee_rate: float = Field(default=0.0005, ge=0, le=0.01)
    maker_fee_rate: float = Field(default=0.0002, ge=-0.01, le=0.01)
    slippage_bps: float = Field(default=1.0, ge=0, le=1_000)
    partial_fill_probability: float = Field(default=0.0, ge=0, le=1)
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    seed: int = 7


class DemoConfig(_Strict):
    """The offline demo's simulator. The bundled data carry no funding history, so the demo's
    venue charges this constant rate (a fraction per interval; 0 = no funding) every
    ``funding_interval_hours`` of replay time (Binance: 8 h, some symbols 4 h)."""

    funding_rate: float = Field(default=0.0001, ge=-0.03, le=0.03)
    funding_interval_hours: float = Field(default=8.0, gt=0, le=24)


class LoggingConfig(_Strict):
    """Where logs go. Sizes in megabytes, the console level one of loguru's."""

    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    dir: str = "logs"
    rotation_mb: float = Field(default=20.0, gt=0, le=10_000)
    retention_files: int = Field(default=10, ge=1, le=1_000)
    compression: Literal["gz", "zip", "bz2", "xz", "none"] = "gz"
    status_interval_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # The most the session report may add to a shutdown (README, "Session report"); 0: no report
    # at stop (the series file is still written, ``python main.py report`` draws it later).
    report_timeout_seconds: float = Field(default=15.0, ge=0, le=600)


class StorageConfig(_Strict):
    """The journal. Paper and live trading never share a file."""

    dir: str = "logs"
    journal_live: str = "journal-live.sqlite"
    journal_paper: str = "journal-paper.sqlite"


#: What ``notifications.events`` may name (app/notify_format.py ``topic_of`` maps events to these).
NOTIFY_TOPICS = ("entry", "exit", "stop_loss", "time_stop", "flatten", "execution_problem", "halted", "blocked",
                 "feed_lost", "feed_back", "daily_loss_stop", "start", "stop")
NotifyTopic = Literal["entry", "exit", "stop_loss", "time_stop", "flatten", "execution_problem", "halted",
                      "blocked", "feed_lost", "feed_back", "daily_loss_stop", "start", "stop"]
_ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]{0,127})$")


class NotificationsConfig(_Strict):
    """Push notifications through apprise (app/notifications.py); off while ``urls`` is empty.

    Each URL is an apprise URL (``discord://``, ``tgram://``, ``slack://``, ``json://`` ...) or
    ``env:NAME``, read from the environment or ``.env`` at start: webhook URLs carry tokens, so
    they belong there rather than in a committed file. ``max_per_minute`` caps what is sent (the
    rest is counted and summarised in one line); ``timeout_seconds`` bounds one send,
    ``stop_timeout_seconds`` what the stop (queued notices and the stop summary) may take.
    """

    urls: list[str] = Field(default_factory=list, repr=False, max_length=20)
    events: list[NotifyTopic] = Field(default_factory=lambda: list(NOTIFY_TOPICS))
    min_severity: Literal["info", "warning", "critical"] = "info"
    max_per_minute: int = Field(default=20, ge=1, le=600)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    stop_timeout_seconds: float = Field(default=2.0, gt=0, le=30)


def env_reference(url: str) -> str | None:
    """The variable named by an ``env:NAME`` entry, else None.

    >>> env_reference("env:PAIRS_BOT_DISCORD_URL")
    'PAIRS_BOT_DISCORD_URL'
    """
    match = _ENV_REF.match(url)
    return match.group(1) if match else None


def redacted_url(url: str) -> str:
    """What a message may show of a notification URL: its scheme only (the rest can be a token).

    >>> redacted_url("tgram://123:SECRET/42")
    'tgram://...'
    """
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://..." if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,31}", scheme) else "<not a URL>"


def apprise_accepts(url: str) -> bool:
    """True if apprise knows the URL's scheme and can parse the URL (imported only when used)."""
    import apprise

    return apprise.Apprise.instantiate(url, suppress_exceptions=True) is not None


class ReloadConfig(_Strict):
    """Hot reload (app/hot_reload.py): SIGHUP always re-reads the files; ``watch_files`` also
    reloads them when they change (polled every ``poll_seconds``: mtime, size and content hash)."""

    watch_files: bool = True
    poll_seconds: float = Field(default=1.0, ge=0.1, le=60)


class ApiConfig(_Strict):
    """The operator API and dashboard (app/operator_api/): off by default, loopback by default.

    The bearer token is read from the environment variable named by ``token_env`` (or ``.env``),
    never from this file; enabled with that variable empty is a configuration error at start.
    ``port`` 0 takes any free port (tests). ``metric_interval_seconds`` paces the ``metric``
    event pushed to ``/ws`` and the quotes/s rate.
    """

    enabled: bool = False
    host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    port: int = Field(default=8321, ge=0, le=65_535)
    token_env: str = Field(default="PAIRS_BOT_API_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    metric_interval_seconds: float = Field(default=5.0, gt=0, le=3_600)


class AppConfig(_Strict):
    """Everything in ``config.json``.

    ``dry_run`` true (the default) is paper trading. ``trading_mode`` is the original design's
    alias: ``"paper"`` or ``"live"``; if it and ``dry_run`` are both given they must agree.
    API keys are accepted here only for compatibility; ``load_secrets`` prefers the environment.
    """

    binance_api_key: str | None = Field(default=None, repr=False)
    binance_api_secret: str | None = Field(default=None, repr=False)
    trading_mode: Literal["paper", "live"] | None = None
    dry_run: bool = True
    exchange: ExchangeConfig = ExchangeConfig()
    data: SeedDataConfig | None = None
    signal: SignalConfig = SignalConfig()
    execution: ExecutionConfig = ExecutionConfig()
    risk: RiskConfig = RiskConfig()
    paper: PaperConfig = PaperConfig()
    demo: DemoConfig = DemoConfig()
    logging: LoggingConfig = LoggingConfig()
    storage: StorageConfig = StorageConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    reload: ReloadConfig = ReloadConfig()
    api: ApiConfig = ApiConfig()


class ScanMark(_Strict):
    """What ``python main.py scan`` found for a pair it proposed (``research/scan.py``): shown by
    ``check-config``; the bot does not act on it. ``half_life`` is in bars of ``timeframe`` (the
    scanned one), ``failed`` lists the checks not passed (README, "Choosing pairs")."""

    passed: bool
    p_adj: float | None = Field(default=None, ge=0, le=1)
    correction: Literal["bh", "bonferroni"] = "bh"
    oos_p: float | None = Field(default=None, ge=0, le=1)
    beta_drift: float | None = Field(default=None, ge=0)
    half_life: float | None = Field(default=None, ge=0)
    timeframe: str | None = None
    failed: list[str] = Field(default_factory=list)


class PairConfig(_Strict):
    """One pair of ``pairs_config.json``. Optional fields override ``config.json``'s defaults.

    ``leg_a`` is X, ``leg_b`` is Y; the spread is ``f(Y) - hedge_ratio * f(X)``.
    ``half_life_candles`` is in bars of ``signal.bar_seconds``.
    """

    pair_id: str
    leg_a: str
    leg_b: str
    hedge_ratio: float = Field(gt=0, le=1e9)
    z_score_threshold: float | None = Field(default=None, gt=0, le=50)
    exit_threshold: float | None = Field(default=None, ge=-50, le=50)
    stop_loss_z: float | None = Field(default=None, gt=0, le=100)
    entry_max_z: float | None = Field(default=None, gt=0, le=100)
    half_life_candles: float | None = Field(default=None, gt=0, le=1e6)
    lookback_bars: int | None = Field(default=None, ge=3, le=100_000)
    max_holding_bars: int | None = Field(default=None, ge=1)
    notional_usdt: float | None = Field(default=None, gt=0, le=10_000_000)
    price_transform: Literal["log", "raw"] | None = None
    hedge_ratio_mode: Literal["static", "rolling_ols"] | None = None
    enabled: bool = True
    scan: ScanMark | None = None

    @field_validator("pair_id")
    @classmethod
    def _pair_id_shape(cls, value: str) -> str:
        if not _PAIR_ID_PATTERN.fullmatch(value):
            raise ValueError("1 to 40 characters of letters, digits, '_', '.' or '-'")
        return value

    @field_validator("leg_a", "leg_b")
    @classmethod
    def _leg_shape(cls, value: str) -> str:
        if not _LEG_PATTERN.fullmatch(value):
            raise ValueError("a symbol such as 'BTC/USDT', 'BTCUSDT' or 'BTC/USDT:USDT'")
        return value


class PairsFile(_Strict):
    """The whole ``pairs_config.json``."""

    pairs: list[PairConfig] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class SignalParams:
    """Effective signal settings of one pair: ``config.json`` defaults with the pair's overrides.

    This is what a ``SignalGenerator`` is built from, so the signal layer never sees raw config.
    """

    pair_id: str
    leg_a: str
    leg_b: str
    hedge_ratio: float
    bar_seconds: int
    lookback_bars: int
    entry_z: float
    exit_z: float
    stop_z: float
    price_transform: str
    min_std: float
    max_quote_age_ms: int
    cooldown_seconds: float
    stop_loss_cooldown_seconds: float
    max_holding_bars: int | None
    # Defaults keep older call sites (tests, bench) valid: None means the stop threshold / the
    # stop-loss cooldown, resolved by the generator.
    entry_max_z: float | None = None
    time_stop_cooldown_seconds: float | None = None
    hedge_ratio_mode: str = "static"  # or "rolling_ols": ``hedge_ratio`` is then only the start value

    @property
    def entry_max(self) -> float:
        """Top of the entry band: |z| at or above it never enters."""
        return self.stop_z if self.entry_max_z is None else self.entry_max_z

    @property
    def time_stop_cooldown(self) -> float:
        """Seconds after a time stop before the next entry."""
        return self.stop_loss_cooldown_seconds if self.time_stop_cooldown_seconds is None \
            else self.time_stop_cooldown_seconds


def reachable_z(lookback_bars: int) -> float:
    """The largest |z| a window of N can show: (N-1)/sqrt(N).

    The current value is one of the N values its mean and sample std are taken over, so it can
    never sit further out than this; a threshold at or above it never fires.
    """
    n = float(lookback_bars)
    return (n - 1.0) / math.sqrt(n)


@dataclass(frozen=True, slots=True)
class Secrets:
    """API credentials. ``repr`` never shows them, so a logged object cannot leak them."""

    api_key: str | None
    api_secret: str | None
    source: str  # "environment", "config.json" or "none"
    #: ``notifications.urls`` with every ``env:NAME`` resolved (core/launch.py): webhook tokens.
    notification_urls: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return bool(self.api_key) and bool(self.api_secret)

    def values(self) -> list[str]:
        """Every secret string, for the log redaction filter."""
        return [v for v in (self.api_key, self.api_secret, *self.notification_urls) if v]

    def __repr__(self) -> str:
        return f"Secrets(present={self.present}, source={self.source!r})"

    __str__ = __repr__


def compact_symbol(symbol: str) -> str:
    """``'BTC/USDT:USDT'``, ``'BTC/USDT'`` and ``'BTCUSDT'`` all become ``'BTCUSDT'``.

    Used to tell whether two legs name the same market before any exchange is loaded.

    >>> compact_symbol("BTC/USDT:USDT")
    'BTCUSDT'
    """
    return symbol.split(":", 1)[0].replace("/", "").upper()


def signal_params(signal: SignalConfig, pair: PairConfig) -> SignalParams:
    """Merge one pair's overrides onto the defaults (pure; no validation beyond the merge)."""
    max_hold = pair.max_holding_bars or signal.max_holding_bars
    if max_hold is None and pair.half_life_candles is not None:
        max_hold = max(1, math.ceil(signal.max_holding_half_lives * pair.half_life_candles))
    return SignalParams(
        pair_id=pair.pair_id,
        leg_a=pair.leg_a,
        leg_b=pair.leg_b,
        hedge_ratio=pair.hedge_ratio,
        bar_seconds=signal.bar_seconds,
        lookback_bars=pair.lookback_bars or signal.lookback_bars,
        entry_z=pair.z_score_threshold if pair.z_score_threshold is not None else signal.entry_threshold,
        exit_z=pair.exit_threshold if pair.exit_threshold is not None else signal.exit_threshold,
        stop_z=pair.stop_loss_z if pair.stop_loss_z is not None else signal.stop_loss_threshold,
        price_transform=pair.price_transform or signal.price_transform,
        min_std=signal.min_std,
        max_quote_age_ms=signal.max_quote_age_ms,
        cooldown_seconds=signal.cooldown_seconds,
        stop_loss_cooldown_seconds=signal.stop_loss_cooldown_seconds,
        max_holding_bars=max_hold,
        entry_max_z=pair.entry_max_z if pair.entry_max_z is not None else signal.entry_max_z,
        time_stop_cooldown_seconds=signal.time_stop_cooldown_seconds,
        hedge_ratio_mode=pair.hedge_ratio_mode or signal.hedge_ratio_mode,
    )


# ---------------------------------------------------------------------------------------------
# Loading: file -> JSON -> model -> cross-field rules, each failure one ConfigurationError.
# ---------------------------------------------------------------------------------------------


def load_app_config(path: str | Path) -> AppConfig:
    """Read and validate ``config.json``; raise ``ConfigurationError`` on the first problem."""
    file = str(path)
    raw = _read_json_object(path)
    config = _validate(AppConfig, raw, file)
    validate_app_rules(config, file)
    return _fold_seed_sections(config)


def load_pairs_config(path: str | Path, signal: SignalConfig, *,
                      risk: RiskConfig | None = None) -> list[PairConfig]:
    """Read and validate ``pairs_config.json`` against the signal defaults it overrides (and,
    given ``risk``, check every pair's notional fits the gross-exposure limit)."""
    file = str(path)
    raw = _read_json_object(path)
    parsed = _validate(PairsFile, raw, file)
    validate_pair_rules(parsed.pairs, signal, file, risk=risk)
    return list(parsed.pairs)


def validate_app_rules(config: AppConfig, file: str) -> None:
    """Cross-field rules of ``config.json`` that one field's type cannot express."""
    sig = config.signal
    _check_thresholds(file, "signal", sig.entry_threshold, sig.exit_threshold, sig.stop_loss_threshold,
                      sig.entry_max_z, entry_key="entry_threshold", exit_key="exit_threshold",
                      stop_key="stop_loss_threshold", entry_max_key="entry_max_z")
    _check_reachable(file, "signal", sig.lookback_bars, sig.entry_threshold, sig.stop_loss_threshold,
                     entry_key="entry_threshold", stop_key="stop_loss_threshold")
    gross, notional = config.risk.max_gross_exposure_usdt, config.execution.notional_per_pair_usdt
    if gross < notional:
        raise ConfigurationError(file=file, field="risk.max_gross_exposure_usdt", value=gross,
                                 expected=f"at least one pair's notional (execution.notional_per_pair_usdt "
                                          f"= {notional:g}), or no entry can ever pass the exposure check")
    if config.trading_mode is not None and "dry_run" in config.model_fields_set:
        if (config.trading_mode == "paper") != config.dry_run:
            raise ConfigurationError(
                file=file, field="trading_mode", value=config.trading_mode,
                expected=f"agreement with dry_run={str(config.dry_run).lower()} ('paper' means dry_run true)",
            )
    if config.data is not None and config.data.exchange is not None:
        seed_id = EXCHANGE_ALIASES.get(config.data.exchange, config.data.exchange)
        if "exchange" in config.model_fields_set and "id" in config.exchange.model_fields_set \
                and seed_id != config.exchange.id:
            raise ConfigurationError(
                file=file, field="data.exchange", value=config.data.exchange,
                expected=f"the same venue as exchange.id ({config.exchange.id!r}), or only one of them",
            )
        if not re.fullmatch(r"[a-z0-9]{2,30}", seed_id):
            raise ConfigurationError(file=file, field="data.exchange", value=config.data.exchange,
                                     expected="a ccxt exchange id such as 'binance' or 'binanceusdm'")
    if config.exchange.ws_url and not config.exchange.base_url:
        raise ConfigurationError(file=file, field="exchange.ws_url", value=config.exchange.ws_url,
                                 expected="exchange.base_url set as well (both point at one local exchange)")
    if config.exchange.base_url and config.exchange.use_testnet:
        raise ConfigurationError(file=file, field="exchange.use_testnet", value=True,
                                 expected="false when exchange.base_url points at a custom server")
    check_notification_urls(config.notifications.urls, file)


def check_notification_urls(urls: list[str], file: str) -> None:
    """Each entry an ``env:NAME`` reference or a URL apprise accepts (``check_notification_url``)."""
    for i, url in enumerate(urls):
        if env_reference(url) is not None:
            continue
        if url.startswith("env:"):
            raise ConfigurationError(file=file, field=f"notifications.urls[{i}]", value=url,
                                     expected="env:NAME with NAME a variable name (letters, digits, _)")
        check_notification_url(url, file, f"notifications.urls[{i}]")


def check_notification_url(url: str, file: str, field: str) -> None:
    """A URL apprise accepts, else one line that shows no more of it than its scheme."""
    if not apprise_accepts(url):
        raise ConfigurationError(file=file, field=field, value=Marker(redacted_url(url)),
                                 expected="an apprise URL (discord://, tgram://, slack://, json://host/path, "
                                          "form://, ... as apprise documents them) or env:NAME")


def validate_pair_rules(pairs: list[PairConfig], signal: SignalConfig, file: str, *,
                        risk: RiskConfig | None = None) -> None:
    """Rules across pairs and between a pair and the defaults it overrides."""
    seen: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        where = f"pairs[{index}]"
        if pair.pair_id in seen:
            raise ConfigurationError(file=file, field=f"{where}.pair_id", value=pair.pair_id,
                                     expected=f"a unique pair_id (already used by pairs[{seen[pair.pair_id]}])")
        seen[pair.pair_id] = index
        if compact_symbol(pair.leg_a) == compact_symbol(pair.leg_b):
            raise ConfigurationError(file=file, field=f"{where}.leg_b", value=pair.leg_b,
                                     expected=f"a different market from leg_a ({pair.leg_a!r})")
        params = signal_params(signal, pair)
        _check_thresholds(file, where, params.entry_z, params.exit_z, params.stop_z, params.entry_max_z,
                          entry_key="z_score_threshold" if pair.z_score_threshold is not None else "entry_threshold",
                          exit_key="exit_threshold", stop_key="stop_loss_z", entry_max_key="entry_max_z")
        # A threshold the pair inherits was checked against the default lookback; if it became
        # unreachable here, the pair's own lookback_bars is what made it so.
        _check_reachable(file, where, params.lookback_bars, params.entry_z, params.stop_z,
                         entry_key="z_score_threshold" if pair.z_score_threshold is not None else None,
                         stop_key="stop_loss_z" if pair.stop_loss_z is not None else None)
        if risk is not None and pair.notional_usdt is not None \
                and pair.notional_usdt > risk.max_gross_exposure_usdt:
            raise ConfigurationError(file=file, field=f"{where}.notional_usdt", value=pair.notional_usdt,
                                     expected=f"at most risk.max_gross_exposure_usdt "
                                              f"({risk.max_gross_exposure_usdt:g}), or no entry of this "
                                              "pair can ever pass the exposure check")


def _check_thresholds(file: str, where: str, entry: float, exit_: float, stop: float, entry_max: float | None,
                      *, entry_key: str, exit_key: str, stop_key: str, entry_max_key: str) -> None:
    """exit < entry < entry_max <= stop (entry_max None is the stop itself)."""
    if exit_ >= entry:
        raise ConfigurationError(file=file, field=f"{where}.{exit_key}", value=exit_,
                                 expected=f"a value below the entry threshold ({entry})")
    if stop <= entry:
        raise ConfigurationError(file=file, field=f"{where}.{stop_key}", value=stop,
                                 expected=f"a value above the entry threshold ({entry})")
    if entry_max is not None and not entry < entry_max <= stop:
        raise ConfigurationError(file=file, field=f"{where}.{entry_max_key}", value=entry_max,
                                 expected=f"a value above the entry threshold ({entry}) and at most the "
                                          f"stop-loss threshold ({stop})")


def _check_reachable(file: str, where: str, lookback: int, entry: float, stop: float, *,
                     entry_key: str | None, stop_key: str | None) -> None:
    """Entry and stop below (N-1)/sqrt(N); a key None means the value is inherited, and the
    lookback is named instead."""
    bound = reachable_z(lookback)
    for key, value, what in ((entry_key, entry, "entry"), (stop_key, stop, "stop-loss")):
        if value < bound:
            continue
        if key is None:
            raise ConfigurationError(
                file=file, field=f"{where}.lookback_bars", value=lookback,
                expected=f"a window in which the {what} threshold {value:g} is reachable: |z| <= (N-1)/sqrt(N) "
                         f"= {bound:.4f} for N = {lookback}")
        raise ConfigurationError(
            file=file, field=f"{where}.{key}", value=value,
            expected=f"a value below (N-1)/sqrt(N) = {bound:.4f}, the largest |z| a window of "
                     f"lookback_bars N = {lookback} can reach")


def _fold_seed_sections(config: AppConfig) -> AppConfig:
    """Apply the original design's ``data`` and ``trading_mode`` onto the canonical fields."""
    update: dict[str, Any] = {}
    exchange_update: dict[str, Any] = {}
    if config.data is not None:
        if config.data.exchange is not None:
            exchange_update["id"] = EXCHANGE_ALIASES.get(config.data.exchange, config.data.exchange)
        if config.data.use_testnet is not None:
            exchange_update["use_testnet"] = config.data.use_testnet
    if exchange_update:
        update["exchange"] = config.exchange.model_copy(update=exchange_update)
    if config.trading_mode is not None and "dry_run" not in config.model_fields_set:
        update["dry_run"] = config.trading_mode == "paper"
    return config.model_copy(update=update) if update else config


def _read_json_object(path: str | Path) -> dict[str, Any]:
    file = str(path)
    p = Path(path)
    if not p.exists():
        raise ConfigurationError(file=file, field="", value=MISSING, expected="an existing JSON file")
    if not p.is_file():
        raise ConfigurationError(file=file, field="", value=Marker("<not a file>"), expected="a JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(file=file, field="", value=type(exc).__name__,
                                 expected="a readable UTF-8 JSON file") from exc
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(file=file, field=f"line {exc.lineno} column {exc.colno}",
                                 value=exc.msg, expected="valid JSON") from exc
    except ValueError as exc:
        raise ConfigurationError(file=file, field="", value=str(exc),
                                 expected="finite numbers only (no NaN or Infinity)") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(file=file, field="", value=type(raw).__name__, expected="a JSON object at the top")
    return raw


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _validate(model: type[_Strict], raw: dict[str, Any], file: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, model, file) from None


def _first_error(exc: ValidationError, model: type[BaseModel], file: str) -> ConfigurationError:
    error = exc.errors(include_url=False)[0]
    loc = error["loc"]
    path = format_loc(loc)
    if error["type"] == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        expected = "a known key" + (f" (one of: {', '.join(known)})" if known else "")
    elif error["type"] == "missing":
        return ConfigurationError(file=file, field=path, value=MISSING, expected="this required field")
    else:
        expected = _expected_text(error)
    return ConfigurationError(file=file, field=path, value=error.get("input"), expected=expected)


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('pairs', 3, 'hedge_ratio')`` -> ``'pairs[3].hedge_ratio'``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _expected_text(error: dict[str, Any]) -> str:
    msg: str = error["msg"]
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error":
        return str(ctx.get("error", msg.removeprefix("Value error, ")))
    if error["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return msg.removeprefix("Input should be ").replace("greater than", "a number greater than") \
            .replace("less than", "a number less than")
    if error["type"] == "literal_error":
        return "one of " + str(ctx.get("expected", msg))
    return msg.removeprefix("Input should be ").removesuffix(".")


def _known_keys(model: type[BaseModel], parent: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in parent:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if field is None:
            return []
        current = _model_of(field.annotation)
        if current is None:
            return []
    return sorted(current.model_fields) if hasattr(current, "model_fields") else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None
