"""OHLCV history into the local store (``research/store.py``): paged, resumable, validated.

What one symbol's download does, and why:

- **Only closed candles.** The cutoff is fixed once per run from the exchange's market clock:
  the newest open time requested is ``clock - interval``, so the candle still forming is never
  asked for, and a row past it is dropped anyway. A fixed cutoff also makes a resumed run end
  where an uninterrupted one would.
- **Resumable.** What the file holds is kept as text and extended: the tail forward from the
  last stored candle + one interval (pages of ``page_limit`` from ``startTime``), and, when the
  run asks for an earlier start than the file begins, the head backward from the first stored
  candle (windows of ``page_limit`` ending there). Either way the file stays one contiguous run
  of what the exchange has at every checkpoint, so an interruption anywhere leaves a file the
  next run simply extends. Holes the exchange itself has (maintenance) are reported, not filled.
- **Checkpoints.** The whole file is rewritten atomically (``store.write_rows``) at most every
  ``checkpoint_seconds`` and once more when the run ends, however it ends (error, Ctrl+C):
  nothing already fetched and validated is lost, and a kill leaves the previous checkpoint.
  The writes run on one worker thread, in order, so the event loop never waits on gzip.
- **Validated** before it is kept: ``store.check_rows`` (ordered, no duplicates, whole intervals,
  sane OHLCV) over every page joined to what it extends.
- **Rate limits** are the source's business (``CcxtExchange``: ccxt's throttle plus the rate
  governor, which honours 429/418 ``Retry-After``); a retryable failure is retried here with
  ``core.backoff`` jitter, ``max_retries`` times, then the symbol fails (what it got is kept).

Page size 1000: Binance weighs a klines request by its limit (1-99: 1, 100-499: 2, 500-1000: 5,
above: 10, up to 1500), so 1000 rows cost 0.005 weight each and 1500 rows 0.0067.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from loguru import logger

from core.backoff import jittered_backoff_seconds
from core.errors import PairsBotError, RetryableError
from research import store
from research.store import Gap, Row

PAGE_LIMIT = 1000
PageListener = Callable[["SymbolProgress"], Any]


class DownloadError(PairsBotError):
    """A symbol's download stopped for good (retries exhausted, bad data, the exchange refused).
    Action: one line, exit 1; what was fetched before is stored, and a re-run continues."""


class KlineSource(Protocol):
    """Where candles come from (``execution.exchange.CcxtExchange`` on a real or simulated venue)."""

    async def fetch_klines(self, symbol: str, timeframe: str, *, start_ms: int | None = None,
                           end_ms: int | None = None, limit: int = 1000) -> list[list[Any]]: ...


@dataclass(slots=True)
class SymbolProgress:
    """One symbol's download so far (what the progress bar shows)."""

    symbol: str  # exchange id, the file's name
    expected: int  # candles the ranges can hold at most (gaps make the real count lower)
    fetched: int = 0  # new candles kept
    requests: int = 0
    retries: int = 0


@dataclass(slots=True)
class SymbolResult:
    symbol: str
    path: Path
    stored: int  # candles in the file now
    fetched: int  # of which new in this run
    first_ms: int | None
    last_ms: int | None
    gaps: list[Gap] = field(default_factory=list)
    requests: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Target:
    symbol: str  # unified ccxt symbol, what the source is asked for
    market_id: str  # the exchange's id, what the file is named by


class SymbolDownload:
    """Downloads one symbol's candles into ``directory`` (see the module docstring)."""

    def __init__(self, source: KlineSource, target: Target, *, timeframe: str, directory: Path,
                 since_ms: int | None, clock_ms: int, writer: ThreadPoolExecutor,
                 page_limit: int = PAGE_LIMIT, checkpoint_seconds: float = 5.0, max_retries: int = 6,
                 on_page: PageListener | None = None, rng: random.Random | None = None) -> None:
        self.source, self.target, self.timeframe = source, target, timeframe
        self.interval = store.TIMEFRAME_MS[timeframe]
        self.directory = directory
        self.since_ms = since_ms
        self.end_open_ms = clock_ms - self.interval  # the newest candle that is surely closed
        self.page_limit, self.checkpoint_seconds, self.max_retries = page_limit, checkpoint_seconds, max_retries
        self._writer, self._on_page = writer, on_page
        self._rng = rng or random.Random()
        self.path = store.ohlcv_path(directory, target.market_id, timeframe)
        self.rows: list[Row] = []
        self._dirty = False
        self._last_write = time.monotonic()
        self._pending: list[Future[None]] = []
        self.progress = SymbolProgress(target.market_id, 0)

    async def run(self) -> SymbolResult:
        if self.path.exists():
            self.rows = store.read_rows(self.path)
            store.check_rows(self.rows, self.interval, where=str(self.path))
        head, tail = self._ranges()
        self.progress.expected = sum(max(0, (b - a) // self.interval + 1) for a, b in (head, tail) if a <= b)
        self._report()
        try:
            if head[0] <= head[1]:
                await self._backward(*head)
            if tail[0] <= tail[1]:
                await self._forward(*tail)
        except BaseException:  # an error, Ctrl+C: keep what was fetched, then let the cause go on
            self._final_write()
            try:
                self._settle(wait=True)  # blocks: a cancelled task may not get to await again
            except DownloadError as exc:
                logger.error("download {}: {}", self.target.market_id, exc)
            raise
        self._final_write()
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._pending), return_exceptions=True)
        self._settle(wait=True)
        gaps = store.check_rows(self.rows, self.interval, where=str(self.path))
        return SymbolResult(self.target.market_id, self.path, len(self.rows), self.progress.fetched,
                            int(self.rows[0][0]) if self.rows else None,
                            int(self.rows[-1][0]) if self.rows else None, gaps,
                            self.progress.requests, self.progress.retries)

    def _ranges(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(head, tail) open-time ranges to fetch, inclusive; an empty range has start > end."""
        none = (1, 0)
        if not self.rows:
            start = self.since_ms if self.since_ms is not None else self.end_open_ms
            return none, (start, self.end_open_ms)
        first, last = int(self.rows[0][0]), int(self.rows[-1][0])
        head = (self.since_ms, first - self.interval) if self.since_ms is not None else none
        return head, (last + self.interval, self.end_open_ms)

    async def _forward(self, start: int, end: int) -> None:
        while start <= end:
            page = self._closed(await self._fetch(start_ms=start, end_ms=end), start, end)
            if not page:
                return  # nothing more in [start, end]: the exchange has no newer candles
            self._keep(self.rows[-1:] + page, at_end=True, page=page)
            start = int(page[-1][0]) + self.interval

    async def _backward(self, since: int, end: int) -> None:
        while end >= since:
            start = max(since, end - (self.page_limit - 1) * self.interval)
            page = self._closed(await self._fetch(start_ms=start, end_ms=end), start, end)
            if not page:
                # An empty window: the symbol's listing, or a hole longer than a page. One probe
                # for any older candle decides (1 row, the lightest request).
                if start <= since or not await self._fetch(start_ms=since, end_ms=start - self.interval, limit=1):
                    return
                end = start - self.interval
                continue
            self._keep(page + self.rows[:1], at_end=False, page=page)
            end = int(page[0][0]) - self.interval

    def _closed(self, raw: Sequence[Sequence[Any]], start: int, end: int) -> list[Row]:
        rows = []
        for r in raw:
            ts = int(r[0])
            if start <= ts <= min(end, self.end_open_ms):
                rows.append((str(ts), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5])))
        return rows

    def _keep(self, joined: list[Row], *, at_end: bool, page: list[Row]) -> None:
        store.check_rows(joined, self.interval, where=f"{self.target.market_id} {self.timeframe} page")
        if at_end:
            self.rows.extend(page)  # checkpoints write copies, so growing in place is safe
        else:
            self.rows[:0] = page
        self.progress.fetched += len(page)
        self._dirty = True
        self._settle(wait=False)
        if time.monotonic() - self._last_write >= self.checkpoint_seconds:
            self._pending.append(self._writer.submit(self._write, list(self.rows)))  # in order on the one worker
            self._last_write = time.monotonic()
            self._dirty = False
        self._report()

    def _final_write(self) -> None:
        if self._dirty:  # queued behind any checkpoint still being written: the order is kept
            self._pending.append(self._writer.submit(self._write, list(self.rows)))
            self._dirty = False

    def _write(self, rows: list[Row]) -> None:
        store.write_rows(self.directory, self.target.market_id, self.timeframe, rows)

    def _settle(self, *, wait: bool) -> None:
        """Raise the first failed checkpoint (disk full, permissions) as a ``DownloadError``;
        ``wait``: for every one still queued first."""
        done = [f for f in self._pending if wait or f.done()]
        self._pending = [f for f in self._pending if f not in done]
        for future in done:
            try:
                future.result()
            except OSError as exc:
                raise DownloadError(f"{self.target.market_id} {self.timeframe}: cannot write {self.path}: "
                                    f"{exc}") from exc

    async def _fetch(self, *, start_ms: int, end_ms: int, limit: int | None = None) -> list[list[Any]]:
        failures = 0
        while True:
            self.progress.requests += 1
            try:
                return await self.source.fetch_klines(self.target.symbol, self.timeframe, start_ms=start_ms,
                                                      end_ms=end_ms, limit=limit or self.page_limit)
            except RetryableError as exc:
                failures += 1
                if failures > self.max_retries:
                    raise DownloadError(f"{self.target.market_id} {self.timeframe}: gave up after "
                                        f"{failures} failed requests: {exc}") from exc
                self.progress.retries += 1
                delay = jittered_backoff_seconds(failures, self._rng, first_ms=500, max_ms=10_000)
                logger.warning("download {} {}: {}; retry {} of {} in {:.1f} s", self.target.market_id,
                               self.timeframe, exc, failures, self.max_retries, delay)
                await asyncio.sleep(delay)

    def _report(self) -> None:
        if self._on_page is not None:
            self._on_page(self.progress)
