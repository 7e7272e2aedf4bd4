"""MarketDataHub: one ccxt.pro bid/ask subscription feeding every pair's generator.

Why one subscription: ten pairs share legs, and one WebSocket with every symbol costs one
watch call per wake-up instead of one per pair (the notes measured the watch call, not the
frame, as ccxt's main cost).

Why read ``exchange.bidsasks`` instead of the watch call's return value: with ccxt's default
``newUpdates`` a call returns only the first frame's symbol, whatever else arrived meanwhile. After
every wake-up the hub compares each symbol's ticker object with the one it last processed (ccxt
builds a new dict per frame), so every symbol that changed is processed once, with its newest
quote. That is also the coalescing rule: when consumers fall behind, intermediate quotes of a
symbol are skipped, never queued, so lag stays bounded by one pass over the symbols.

This module and ``execution/exchange.py`` are the only ones that import ccxt.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, Iterable

import ccxt.pro as ccxtpro
from ccxt.base.errors import AuthenticationError as CcxtAuthenticationError
from ccxt.base.errors import BadSymbol, ExchangeError, NetworkError
from loguru import logger

from core.backoff import jittered_backoff_seconds
from core.config import KLINE_SECONDS, ExchangeConfig, Secrets
from core.errors import ConfigurationError, RetryableError
from core.types import Quote
from core.venue import ccxt_client_config, find_perpetual, point_at_local_exchange

QuoteConsumer = Callable[[Quote], Awaitable[Any] | Any]
StaleListener = Callable[[str, bool], Any]
FeedListener = Callable[[bool], Any]  # called with True when the whole feed is lost, False when it is back
OHLCV_PAGE_LIMIT = 1000  # ccxt caps binance klines requests at 1000 rows


class QuoteRejection(str, Enum):
    """Why a quote was dropped at the hub's door."""

    MISSING = "missing"  # bid or ask absent
    NOT_FINITE = "not_finite"  # NaN or inf
    NON_POSITIVE = "non_positive"  # zero or negative price
    CROSSED = "crossed"  # bid > ask
    NO_TIMESTAMP = "no_timestamp"  # no exchange event time
    OUT_OF_ORDER = "out_of_order"  # event time older than the last accepted one


@dataclass(slots=True)
class HubCounters:
    quotes_received: int = 0  # frames ccxt parsed (all symbols)
    quotes_processed: int = 0  # quotes handed to consumers
    quotes_coalesced: int = 0  # frames superseded by a newer one before processing
    reconnects: int = 0
    stale_periods: int = 0
    watch_timeouts: int = 0
    wakeups: int = 0
    consumer_errors: int = 0
    feed_restarts: int = 0  # the watch task died and was restarted
    feed_losses: int = 0  # no quote of any symbol for max_feed_outage_seconds


class MarketDataHub:
    """Resolves symbols, warms up history, streams quotes, and watches for staleness."""

    name = "market_data"

    def __init__(self, *, exchange_config: ExchangeConfig, secrets: Secrets | None = None,
                 max_quote_age_ms: int, reconnect_base_ms: int = 250, reconnect_max_ms: int = 10_000,
                 seed: int | None = None, watch_timeout_s: float | None = None,
                 max_feed_outage_s: float = 60.0) -> None:
        self._config = exchange_config
        self._secrets = secrets
        self._max_quote_age_ms = max_quote_age_ms
        self._reconnect_base_ms = reconnect_base_ms
        self._reconnect_max_ms = reconnect_max_ms
        self._rng = random.Random(seed)
        self.exchange: Any = None
        self.counters = HubCounters()
        self.rejections: Counter[str] = Counter()
        self._consumers: dict[str, list[QuoteConsumer]] = {}
        self._stale_listeners: list[StaleListener] = []
        self._feed_listeners: list[FeedListener] = []
        self._max_feed_outage_s = max_feed_outage_s
        self._feed_lost = False
        self._feed_started = 0.0
        self._last_seen: dict[str, Any] = {}
        self._last_ts: dict[str, int] = {}
        self._last_wall: dict[str, float] = {}
        self._stale: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._ws_clients: tuple[Any, ...] | None = None  # ccxt's WebSocket clients at the last wake-up
        # A live feed of many symbols never goes quiet this long; when it does, the socket is dead.
        # ``watch_timeout_s`` overrides it (tests use a short one to recover fast).
        if watch_timeout_s is not None and not watch_timeout_s > 0:
            raise ValueError(f"watch_timeout_s must be > 0 seconds, got {watch_timeout_s}")
        self._watch_timeout_s = watch_timeout_s or max(5.0, 2 * max_quote_age_ms / 1000)

    # -- setup --------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Create the ccxt.pro client (pointed at a local exchange if configured), load markets."""
        if self.exchange is not None:
            return
        klass = _counting_class(getattr(ccxtpro, self._config.id, None), self._config.id)
        key = self._secrets.api_key if self._secrets else None
        secret = self._secrets.api_secret if self._secrets else None
        self.exchange = klass(ccxt_client_config(api_key=key, secret=secret,
                                                 timeout_ms=self._config.request_timeout_ms,
                                                 enable_rate_limit=self._config.enable_rate_limit))
        if self._config.base_url:
            point_at_local_exchange(self.exchange, base_url=self._config.base_url, ws_url=self._config.ws_url)
        elif self._config.use_testnet:
            _enable_testnet(self.exchange, self._config.id)
        try:
            await self.exchange.load_markets()
        except NetworkError as exc:
            raise RetryableError(f"cannot load markets from {self._config.id}: {exc}") from exc
        except ExchangeError as exc:
            raise RetryableError(f"{self._config.id} refused load_markets: {exc}") from exc

    def resolve_symbol(self, raw: str, *, pair_id: str) -> str:
        """``BTC/USDT``, ``BTCUSDT`` or ``BTC/USDT:USDT`` -> the unified perpetual symbol.

        Raises ``ConfigurationError`` naming the pair when the market does not exist.
        """
        found = find_perpetual(self.exchange.markets or {}, raw)
        if found is not None:
            return found
        raise ConfigurationError(file="pairs_config.json", field=f"pair {pair_id}", value=raw,
                                 expected=f"a perpetual market listed by {self._config.id}")

    def subscribe(self, symbol: str, consumer: QuoteConsumer) -> None:
        """Deliver every accepted quote of ``symbol`` to ``consumer`` (sync or async).

        Also while streaming (a pair added by a hot reload): the watch loop's next call asks for
        the new symbol too, on the same subscription; its staleness clock starts now.
        """
        if symbol not in self._consumers and self._running:
            self._last_wall[symbol] = time.monotonic()
            logger.info("market data: {} added to the bid/ask subscription", symbol)
        self._consumers.setdefault(symbol, []).append(consumer)

    def set_limits(self, *, max_quote_age_ms: int, max_feed_outage_s: float) -> None:
        """New staleness limits (hot reload): the watchdog's next pass uses them."""
        self._max_quote_age_ms = max_quote_age_ms
        self._max_feed_outage_s = max_feed_outage_s

    def on_stale_change(self, listener: StaleListener) -> None:
        """``listener(symbol, is_stale)`` is called when a symbol goes stale or recovers."""
        self._stale_listeners.append(listener)

    def on_feed_change(self, listener: FeedListener) -> None:
        """``listener(lost)``: True when no symbol quoted for ``max_feed_outage_s``, False when back."""
        self._feed_listeners.append(listener)

    @property
    def feed_lost(self) -> bool:
        return self._feed_lost

    def quote_age_ms(self, symbol: str) -> int | None:
        """Wall-clock ms since the last accepted quote of ``symbol`` (None before the first).

        Wall clock on purpose: a dead feed stops exchange time too, so only the local clock
        shows it as stale.
        """
        last = self._last_wall.get(symbol)
        return None if last is None else int((time.monotonic() - last) * 1000)

    @property
    def symbols(self) -> list[str]:
        return sorted(self._consumers)

    def market(self, symbol: str) -> dict[str, Any]:
        return self.exchange.market(symbol)

    # -- warm-up ------------------------------------------------------------------------------
    async def fetch_history(self, symbols: Iterable[str], *, bar_seconds: int, bars: int) -> dict[str, list[list[float]]]:
        """The newest ``bars`` OHLCV rows of each symbol, fetched concurrently and paged past ccxt's cap.

        A row is dropped only if its candle is still open by the exchange's clock
        (:meth:`market_clock_ms`): the live bar sampler owns the current bucket. A closed candle
        is never dropped, so a warm-up or a backfill leaves no hole before the live bar.
        """
        timeframe = KLINE_SECONDS[bar_seconds]
        wanted = list(dict.fromkeys(symbols))
        now_ms = await self.market_clock_ms(wanted)
        results = await asyncio.gather(*(self._fetch_one(s, timeframe, bar_seconds, bars, now_ms) for s in wanted))
        return dict(zip(wanted, results))

    async def market_clock_ms(self, symbols: list[str]) -> int:
        """The exchange's clock for market data: the newest book-ticker event time of ``symbols``.

        Why not ``/fapi/v1/time``: on Binance both agree to the millisecond, but a replaying
        venue (the bundled simulator) runs its market on a replay clock while it signs on the
        wall clock; the book's own event time is the clock the klines follow on both. A symbol
        whose book is quiet only makes the clock older, which keeps a closed candle out at
        worst: the live gap check then backfills it.
        """
        try:
            tickers = await self.exchange.fetch_bids_asks(symbols)
        except NetworkError as exc:
            raise RetryableError(f"fetch_bids_asks (the exchange's clock) failed: {exc}") from exc
        except ExchangeError as exc:
            raise RetryableError(f"fetch_bids_asks (the exchange's clock) refused: {exc}") from exc
        stamps = [t.get("timestamp") for t in (tickers or {}).values() if t.get("timestamp")]
        if stamps:
            return int(max(stamps))
        try:
            return int(await self.exchange.fetch_time())
        except (NetworkError, ExchangeError) as exc:
            raise RetryableError(f"fetch_time failed: {exc}") from exc

    async def _fetch_one(self, symbol: str, timeframe: str, bar_seconds: int, bars: int,
                         now_ms: int) -> list[list[float]]:
        bar_ms = bar_seconds * 1000
        need = bars + 1
        try:
            latest = await self.exchange.fetch_ohlcv(symbol, timeframe, limit=min(need, OHLCV_PAGE_LIMIT))
            rows = list(latest)
            while len(rows) < need and rows:
                since = int(rows[0][0]) - min(need - len(rows), OHLCV_PAGE_LIMIT) * bar_ms
                page = await self.exchange.fetch_ohlcv(symbol, timeframe, since=since,
                                                       limit=min(need - len(rows), OHLCV_PAGE_LIMIT))
                older = [r for r in page if r[0] < rows[0][0]]
                if not older:
                    break
                rows = older + rows
        except NetworkError as exc:
            raise RetryableError(f"fetch_ohlcv {symbol} {timeframe} failed: {exc}") from exc
        except ExchangeError as exc:
            raise RetryableError(f"fetch_ohlcv {symbol} {timeframe} refused: {exc}") from exc
        closed = [list(map(float, r)) for r in rows if int(r[0]) + bar_ms <= now_ms]
        return closed[-bars:]

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.connect()
        if not self._consumers:
            logger.warning("market data: no symbols subscribed, nothing to stream")
            return
        self._running = True
        self._feed_started = time.monotonic()
        self._spawn(self._supervised_watch(), "watch")
        self._spawn(self._watchdog_loop(), "watchdog")
        logger.info("market data: streaming {} symbols over one bid/ask subscription", len(self._consumers))

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.exchange is not None:
            try:
                await self.exchange.close()
            except Exception as exc:  # closing must not hide the reason we stopped
                logger.warning("market data: error while closing the exchange client: {}", exc)
            self.exchange = None

    def _spawn(self, coro: Awaitable[None], label: str) -> None:
        task = asyncio.create_task(coro, name=f"market_data.{label}")  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("market data task {} died", task.get_name())

    # -- streaming ----------------------------------------------------------------------------
    async def _supervised_watch(self) -> None:
        """Run the watch loop; whatever kills it, restart it with backoff and jitter.

        Why everything: a watch loop that ends leaves open positions with no exit and no stop.
        A cause that persists (a symbol the venue stopped serving, revoked access) keeps
        failing here, and the watchdog's feed-loss check turns that into a CRITICAL line and
        ``on_feed_loss``.
        """
        failures = 0
        while self._running:
            try:
                await self._watch_loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.counters.feed_restarts += 1
                self._ws_clients = None
                delay = self._backoff_seconds(failures)
                logger.opt(exception=exc).debug("market data watch task failure detail")
                logger.error("market data: the watch task died ({}: {}); restart #{} in {:.2f}s",
                             type(exc).__name__, exc, self.counters.feed_restarts, delay)
                await self._close_ws_clients()
                await asyncio.sleep(delay)

    async def _watch_loop(self) -> None:
        symbols = self.symbols
        failures = 0
        while self._running:
            if len(symbols) != len(self._consumers):  # a symbol was subscribed while streaming
                symbols = self.symbols
            try:
                await asyncio.wait_for(self.exchange.watch_bids_asks(symbols), timeout=self._watch_timeout_s)
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                # ccxt.pro's receive loop can die silently on a truncated JSON frame, leaving the
                # socket open and every watch call hanging; only closing the clients recovers it.
                self.counters.watch_timeouts += 1
                self.counters.reconnects += 1
                self._ws_clients = None
                logger.warning("market data: no frame for {:.1f}s; closing the WebSocket and resubscribing",
                               self._watch_timeout_s)
                await self._close_ws_clients()
                continue
            except NetworkError as exc:
                failures += 1
                self.counters.reconnects += 1
                self._ws_clients = None
                delay = self._backoff_seconds(failures)
                logger.warning("market data: connection lost ({}); reconnect #{} in {:.2f}s",
                               type(exc).__name__, self.counters.reconnects, delay)
                await asyncio.sleep(delay)
                continue
            except (BadSymbol, CcxtAuthenticationError) as exc:
                raise ConfigurationError(file="config.json", field="exchange", value=self._config.id,
                                         expected=f"a venue that streams these symbols ({exc})") from exc
            failures = 0
            self.counters.wakeups += 1
            self._count_silent_reconnect()
            # A frame that lands while an async consumer runs resolves no pending watch call, so
            # it would wait for the next frame of any symbol: drain until a pass finds nothing.
            while await self.drain():
                pass

    def _count_silent_reconnect(self) -> None:
        """Count a reconnect that no watch call saw.

        When the server closes the socket while no watch call is pending (the hub is draining),
        ccxt drops the client and the next call dials a new one without raising anything.
        """
        clients = tuple((getattr(self.exchange, "clients", None) or {}).values())
        known = self._ws_clients
        if known is not None and any(all(c is not k for k in known) for c in clients):
            self.counters.reconnects += 1
            logger.warning("market data: the WebSocket was replaced between watch calls (reconnect #{})",
                           self.counters.reconnects)
        self._ws_clients = clients

    async def drain(self) -> int:
        """Process every symbol whose newest quote has not been processed yet; return how many."""
        book = self.exchange.bidsasks
        processed = 0
        for symbol, consumers in tuple(self._consumers.items()):  # a consumer may subscribe a symbol
            ticker = book.get(symbol)
            if ticker is None or ticker is self._last_seen.get(symbol):
                continue
            self._last_seen[symbol] = ticker
            quote = self._accept(symbol, ticker)
            if quote is None:
                continue
            processed += 1
            for consumer in consumers:
                try:
                    result = consumer(quote)
                    if asyncio.iscoroutine(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.counters.consumer_errors += 1
                    logger.exception("market data: consumer of {} failed on quote ts={}", symbol, quote.ts_ms)
        frames = getattr(self.exchange, "frames_received", None)
        if frames is None:
            self.counters.quotes_received += processed
        else:
            self.counters.quotes_received = frames
        self.counters.quotes_processed += processed
        self.counters.quotes_coalesced = max(0, self.counters.quotes_received - self.counters.quotes_processed
                                             - sum(self.rejections.values()))
        return processed

    def _accept(self, symbol: str, ticker: dict[str, Any]) -> Quote | None:
        bid, ask, ts = ticker.get("bid"), ticker.get("ask"), ticker.get("timestamp")
        reason: QuoteRejection | None = None
        if bid is None or ask is None:
            reason = QuoteRejection.MISSING
        elif not (math.isfinite(bid) and math.isfinite(ask)):
            reason = QuoteRejection.NOT_FINITE
        elif bid <= 0 or ask <= 0:
            reason = QuoteRejection.NON_POSITIVE
        elif bid > ask:
            reason = QuoteRejection.CROSSED
        elif ts is None:
            reason = QuoteRejection.NO_TIMESTAMP
        elif ts < self._last_ts.get(symbol, 0):
            reason = QuoteRejection.OUT_OF_ORDER
        if reason is not None:
            self.rejections[reason.value] += 1
            logger.debug("market data: rejected {} quote of {}: bid={} ask={} ts={}", reason.value, symbol, bid, ask, ts)
            return None
        self._last_ts[symbol] = ts
        self._last_wall[symbol] = time.monotonic()
        if self._feed_lost:
            self._set_feed_lost(False)
        if symbol in self._stale:
            self._set_stale(symbol, False)
        return Quote(symbol=symbol, bid=float(bid), ask=float(ask), ts_ms=int(ts),
                     bid_qty=float(ticker.get("bidVolume") or 0.0), ask_qty=float(ticker.get("askVolume") or 0.0))

    # -- staleness ----------------------------------------------------------------------------
    async def _watchdog_loop(self) -> None:
        """Mark a symbol stale when no quote arrived for ``max_quote_age_ms`` of wall time.

        Wall time on purpose: a dead feed stops exchange time too, so only the local clock can
        notice it. The generators separately refuse to trade on a leg whose last quote is old in
        exchange time.
        """
        period = max(0.05, self._max_quote_age_ms / 4000)
        started = time.monotonic()
        while self._running:
            await asyncio.sleep(period)
            now = time.monotonic()
            for symbol in self._consumers:
                last = self._last_wall.get(symbol, started)
                if symbol not in self._stale and (now - last) * 1000 > self._max_quote_age_ms:
                    self._set_stale(symbol, True)
            newest = max(self._last_wall.values(), default=self._feed_started or started)
            if not self._feed_lost and now - newest > self._max_feed_outage_s:
                self._set_feed_lost(True)

    def _set_feed_lost(self, lost: bool) -> None:
        self._feed_lost = lost
        if lost:
            self.counters.feed_losses += 1
            logger.critical("market data: FEED LOST: no quote of any of {} symbols for over {:.0f}s; every pair "
                            "is STALE (no entries) until quotes return", len(self._consumers), self._max_feed_outage_s)
        else:
            logger.warning("market data: feed is back after a loss")
        for listener in self._feed_listeners:
            try:
                listener(lost)
            except Exception:  # a listener's bug must not kill the watchdog that found the loss
                logger.exception("market data: feed listener {!r} failed", listener)

    def _set_stale(self, symbol: str, stale: bool) -> None:
        if stale:
            self._stale.add(symbol)
            self.counters.stale_periods += 1
            logger.warning("market data: {} is stale (no quote for over {} ms)", symbol, self._max_quote_age_ms)
        else:
            self._stale.discard(symbol)
            logger.info("market data: {} recovered", symbol)
        for listener in self._stale_listeners:
            listener(symbol, stale)

    def is_stale(self, symbol: str) -> bool:
        return symbol in self._stale

    async def _close_ws_clients(self) -> None:
        try:
            await self.exchange.close_ws_clients()
        except Exception as exc:  # the clients are being discarded anyway; say so and go on
            logger.debug("market data: closing WebSocket clients raised {}", exc)

    def _backoff_seconds(self, failures: int) -> float:
        """Exponential backoff with full jitter, capped."""
        return jittered_backoff_seconds(failures, self._rng, first_ms=self._reconnect_base_ms,
                                        max_ms=self._reconnect_max_ms)

    def stats(self) -> dict[str, Any]:
        c = self.counters
        return {
            "symbols": len(self._consumers),
            "quotes_received": c.quotes_received,
            "quotes_processed": c.quotes_processed,
            "quotes_coalesced": c.quotes_coalesced,
            "quotes_rejected": dict(self.rejections),
            "reconnects": c.reconnects,
            "watch_timeouts": c.watch_timeouts,
            "stale_periods": c.stale_periods,
            "stale_now": sorted(self._stale),
            "consumer_errors": c.consumer_errors,
            "feed_restarts": c.feed_restarts,
            "feed_losses": c.feed_losses,
            "feed_lost": self._feed_lost,
        }


def _counting_class(base: Any, exchange_id: str) -> Any:
    """A subclass of the ccxt.pro class that counts bid/ask frames as ccxt parses them.

    The count is what lets the hub report coalesced quotes honestly (frames received minus
    quotes processed); exchanges without ``handle_bids_asks`` fall back to counting processed.
    """
    if base is None:
        raise ConfigurationError(file="config.json", field="exchange.id", value=exchange_id,
                                 expected="a ccxt exchange id with WebSocket support (ccxt.pro)")
    if not hasattr(base, "handle_bids_asks"):
        return base

    class CountingExchange(base):  # type: ignore[misc, valid-type]
        frames_received = 0

        def handle_bids_asks(self, client: Any, message: Any) -> Any:
            self.frames_received += len(message) if isinstance(message, list) else 1
            return super().handle_bids_asks(client, message)

    CountingExchange.__name__ = f"Counting{base.__name__}"
    return CountingExchange


def _enable_testnet(exchange: Any, exchange_id: str) -> None:
    urls = getattr(exchange, "urls", {}) or {}
    if "test" not in urls:
        raise ConfigurationError(file="config.json", field="exchange.use_testnet", value=True,
                                 expected=f"false: ccxt has no test environment for {exchange_id}")
    exchange.set_sandbox_mode(True)
