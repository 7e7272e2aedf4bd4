"""``python main.py download``: OHLCV history of USDT perpetuals into the local store.

The command line is checked whole before anything connects, and the symbols and the start
against the exchange before anything is written: bad input is one line and exit 2 with no file
touched. The work is ``research/download.py`` (paging, resume, checkpoints, validation) over
``CcxtExchange`` (ccxt's throttle plus the rate governor, which honours 429/418 Retry-After);
this module wires them, draws the progress bar (rich) and keeps ``provenance.json`` next to
the files. Exit: 0 all done, 1 a symbol failed (what it got is kept; a re-run continues),
2 bad input, 130 Ctrl+C (what was fetched is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from loguru import logger
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from core.config import ExchangeConfig, load_app_config
from core.errors import PairsBotError, UsageError
from core.files import write_json_atomically
from research import store
from research.download import DownloadError, SymbolDownload, SymbolProgress, SymbolResult, Target

if TYPE_CHECKING:
    from execution.exchange import CcxtExchange

DAY_MS = 86_400_000
DEFAULT_DAYS = 30.0  # a symbol with no file yet and neither --days nor --since
MAX_WAIT_SECONDS = 300.0  # a 429's Retry-After or a 418 ban this long is waited out; longer fails
PROVENANCE = "provenance.json"


@dataclass(frozen=True, slots=True)
class DownloadRequest:
    """The command line, checked (``parse_request``)."""

    symbols: tuple[str, ...] = ()
    top_volume: int | None = None
    timeframe: str = "5m"
    days: float | None = None
    since_ms: int | None = None
    out_dir: Path | None = None
    checkpoint_seconds: float = 5.0


def add_download_parser(sub: Any) -> None:
    """The ``download`` subcommand. Values are strings here and checked by ``parse_request``,
    so that every bad value is one line (argparse would add its usage)."""
    p = sub.add_parser("download", help="download OHLCV history of USDT perpetuals into data/")
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="PATH",
                   help="exchange settings (default: config.json next to main.py)")
    p.add_argument("--log-level", type=str.upper, default=argparse.SUPPRESS, metavar="LEVEL",
                   choices=("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"),
                   help="console log level (default WARNING)")
    p.add_argument("--symbols", nargs="+", metavar="SYMBOL", default=None,
                   help="BTCUSDT, BTC/USDT or BTC/USDT:USDT (commas also separate)")
    p.add_argument("--top-volume", metavar="N", default=None,
                   help="the N USDT perpetuals with the highest 24h quote volume")
    p.add_argument("--timeframe", metavar="TF", default="5m", help=f"one of {', '.join(store.TIMEFRAME_MS)} (default 5m)")
    p.add_argument("--days", metavar="N", default=None, help=f"from N days back (default {DEFAULT_DAYS:g} for a new file)")
    p.add_argument("--since", metavar="DATE", default=None, help="from this UTC time: 2023-07-01, 2023-07-01T12:00 or epoch ms")
    p.add_argument("--out", metavar="DIR", default=None, help="folder of the files (default data/<exchange>/<timeframe>)")
    p.add_argument("--checkpoint-seconds", metavar="S", default="5",
                   help="rewrite a file at most this often while it grows (default 5; 0 = every page)")


def parse_request(args: Mapping[str, Any], *, now_ms: int) -> DownloadRequest:
    """Raises ``UsageError`` (one line) for anything that cannot be done as asked."""
    symbols = tuple(s for arg in args.get("symbols") or () for s in arg.split(",") if s.strip())
    top = args.get("top_volume")
    if bool(symbols) == (top is not None):
        raise UsageError("download: give either --symbols or --top-volume N (one of them)")
    top_volume = None if top is None else _number(top, "--top-volume", int, minimum=1)
    timeframe = args.get("timeframe") or "5m"
    if timeframe not in store.TIMEFRAME_MS:
        raise UsageError(f"download: --timeframe {timeframe!r}: expected one of {', '.join(store.TIMEFRAME_MS)}")
    if args.get("days") is not None and args.get("since") is not None:
        raise UsageError("download: give --days or --since, not both")
    days = None if args.get("days") is None else _number(args["days"], "--days", float, minimum=0.0, above=True)
    since_ms = None if args.get("since") is None else parse_since(args["since"])
    if since_ms is not None and since_ms > now_ms:
        raise UsageError(f"download: --since {args['since']} ({_iso(since_ms)}) is in the future")
    checkpoint = _number(args.get("checkpoint_seconds") or "5", "--checkpoint-seconds", float, minimum=0.0)
    out = args.get("out")
    return DownloadRequest(symbols=symbols, top_volume=top_volume, timeframe=timeframe, days=days,
                           since_ms=since_ms, out_dir=Path(out) if out else None, checkpoint_seconds=checkpoint)


def parse_since(text: str) -> int:
    """UTC epoch ms of ``2023-07-01``, ``2023-07-01T12:00[:00][Z]`` or a number of epoch ms."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"download: --since {text!r}: expected a UTC date such as 2023-07-01, "
                         "2023-07-01T12:00 or epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def download_command(args: Mapping[str, Any], *, config_path: Path, console: Console) -> int:
    """The ``download`` command: returns the exit code (bad input raises ``UsageError``)."""
    request = parse_request(args, now_ms=int(time.time() * 1000))
    config = load_app_config(config_path)
    logger.remove()
    logger.add(sys.stderr, level=str(args.get("log_level") or "WARNING"), format="{time:HH:mm:ss} {level} {message}")
    root = config_path.resolve().parent / "data"
    try:
        results = asyncio.run(run_download(request, exchange=config.exchange, data_root=root, console=console))
    except UsageError:
        raise
    except PairsBotError as exc:  # the exchange unreachable, its markets unreadable: one line
        print(f"download failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("download interrupted: every candle fetched so far is stored; run the same command to continue",
              file=sys.stderr)
        return 130
    failed = [r for r in results if isinstance(r, str)]
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


async def run_download(request: DownloadRequest, *, exchange: ExchangeConfig, data_root: Path, console: Console,
                       on_page: Callable[[SymbolProgress], Any] | None = None) -> list[SymbolResult | str]:
    """Check the symbols and the start against the exchange, then download each symbol in turn.
    One entry per symbol: its result, or the one line saying why it failed."""
    from execution.exchange import CcxtExchange  # ccxt: imported when a download runs, not to parse a command line
    from execution.rate_limit import RateGovernor

    if exchange.id != "binanceusdm":  # the klines and tickers are read from Binance USD-M's own endpoints
        raise UsageError(f"download: exchange.id {exchange.id!r} in config.json: only binanceusdm is supported")

    governor = RateGovernor(soft_fraction=exchange.rate_limit_soft_fraction, max_wait_seconds=MAX_WAIT_SECONDS,
                            name=f"{exchange.id} download")
    adapter = CcxtExchange(exchange, None, governor=governor, client_throttle=exchange.enable_rate_limit)
    try:
        await adapter.load_markets()
        targets = await _targets(adapter, request)
        clock_ms = await adapter.market_clock_ms([t.symbol for t in targets])
        interval = store.TIMEFRAME_MS[request.timeframe]
        if request.since_ms is not None and request.since_ms > clock_ms - interval:
            raise UsageError(f"download: --since {_iso(request.since_ms)} is after the exchange's newest closed "
                             f"{request.timeframe} candle ({_iso(clock_ms - interval)})")
        since = request.since_ms
        if request.days is not None:
            since = clock_ms - int(request.days * DAY_MS)
        directory = request.out_dir or data_root / exchange.id / request.timeframe
        _check_same_venue(directory, exchange)
        return await _download_all(adapter, targets, request, directory=directory, since_ms=since,
                                   clock_ms=clock_ms, console=console, on_page=on_page, exchange=exchange)
    finally:
        await adapter.close()


async def _targets(adapter: CcxtExchange, request: DownloadRequest) -> list[Target]:
    perpetuals = adapter.usdt_perpetuals()
    if request.top_volume is not None:
        volumes = await adapter.fetch_quote_volumes()
        ranked = sorted(volumes, key=lambda s: (-volumes[s], s))[: request.top_volume]
        if not ranked:
            raise DownloadError("download: the exchange reports no 24h volume for any USDT perpetual")
        return [Target(s, perpetuals[s]) for s in ranked]
    targets, unknown = [], []
    for raw in request.symbols:
        try:
            symbol = adapter.resolve_symbol(raw.strip())
        except PairsBotError:
            symbol = None
        if symbol is None or symbol not in perpetuals:
            unknown.append(raw)
        elif all(t.symbol != symbol for t in targets):
            targets.append(Target(symbol, perpetuals[symbol]))
    if unknown:
        raise UsageError(f"download: unknown symbol(s) {', '.join(unknown)}: expected USDT perpetuals the "
                         "exchange trades (e.g. BTCUSDT)")
    return targets


async def _download_all(adapter: CcxtExchange, targets: list[Target], request: DownloadRequest, *,
                        directory: Path, since_ms: int | None, clock_ms: int, console: Console,
                        on_page: Callable[[SymbolProgress], Any] | None,
                        exchange: ExchangeConfig) -> list[SymbolResult | str]:
    results: list[SymbolResult | str] = []
    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[requests]} req"), TimeElapsedColumn())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer") as writer, \
            Progress(*columns, console=console) as bar:
        for target in targets:
            task = bar.add_task(f"{target.market_id} {request.timeframe}", total=None, requests=0)
            path = store.ohlcv_path(directory, target.market_id, request.timeframe)
            since = since_ms if since_ms is not None or path.exists() else clock_ms - int(DEFAULT_DAYS * DAY_MS)
            job = SymbolDownload(adapter, target, timeframe=request.timeframe, directory=directory, since_ms=since,
                                 clock_ms=clock_ms, writer=writer, checkpoint_seconds=request.checkpoint_seconds,
                                 on_page=_progress_listener(bar, task, on_page))
            try:
                result = await job.run()
            except (PairsBotError, store.StoreError, OSError) as exc:
                results.append(f"download {target.market_id} {request.timeframe} failed: {exc} "
                               f"({job.progress.fetched} new candles kept in {path})")
                continue
            bar.update(task, total=max(result.fetched, 1), completed=max(result.fetched, 1))
            results.append(result)
            _note_provenance(directory, exchange, request.timeframe, result)
    for r in results:
        if isinstance(r, SymbolResult):
            console.print(_summary(r, request.timeframe), highlight=False)
    return results


def _progress_listener(bar: Progress, task: TaskID,
                       also: Callable[[SymbolProgress], Any] | None) -> Callable[[SymbolProgress], None]:
    def listener(progress: SymbolProgress) -> None:
        bar.update(task, total=max(progress.expected, 1), completed=progress.fetched, requests=progress.requests)
        if also is not None:
            also(progress)
    return listener


def _summary(r: SymbolResult, timeframe: str) -> str:
    span = f"{_iso(r.first_ms)} -> {_iso(r.last_ms)}" if r.first_ms is not None else "empty"
    gaps = "no gaps" if not r.gaps else (f"{len(r.gaps)} gap(s), {sum(g.missing for g in r.gaps)} candles missing, "
                                         f"first after {_iso(r.gaps[0].after_ms)}")
    return (f"{r.symbol} {timeframe}: {r.stored} candles ({r.fetched} new, {r.requests} requests), {span}, "
            f"{gaps} -> {r.path}")


def _venue(exchange: ExchangeConfig) -> str:
    return exchange.base_url or ("testnet" if exchange.use_testnet else "production")


def _check_same_venue(directory: Path, exchange: ExchangeConfig) -> None:
    """A folder holds one venue's candles: a simulator's must never extend Binance's."""
    path = directory / PROVENANCE
    if not path.exists():
        return
    try:
        venue = json.loads(path.read_text(encoding="utf-8")).get("venue")
    except (ValueError, AttributeError):
        raise UsageError(f"download: {path} is not readable JSON; move it away or use another --out") from None
    if venue is not None and venue != _venue(exchange):
        raise UsageError(f"download: {directory} holds candles from {venue}, not {_venue(exchange)}; "
                         "use another --out")


def _note_provenance(directory: Path, exchange: ExchangeConfig, timeframe: str, r: SymbolResult) -> None:
    """``provenance.json``: where the files came from and what each holds (data/README.md)."""
    path = directory / PROVENANCE
    try:
        current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError:
        current = {}
    symbols = dict(current.get("symbols") or {})
    symbols[r.symbol] = {"candles": r.stored, "first_open_ms": r.first_ms, "last_open_ms": r.last_ms,
                         "gaps": [[g.after_ms, g.before_ms, g.missing] for g in r.gaps[:100]],
                         "gap_count": len(r.gaps), "updated_utc": _iso(int(time.time() * 1000))}
    write_json_atomically(path, {
        "written_by": "python main.py download", "exchange": exchange.id,
        "venue": _venue(exchange),
        "timeframe": timeframe, "format": f"{store.HEADER} (gzip CSV, open time in UTC ms, the exchange's own text; "
                                          "closed candles only)",
        "symbols": dict(sorted(symbols.items()))}, indent=1)


def _number(text: Any, name: str, kind: type, *, minimum: float, above: bool = False) -> Any:
    what = f"a {'whole ' if kind is int else ''}number {'above' if above else 'of at least'} {minimum:g}"
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise UsageError(f"download: {name} {text!r}: expected {what}") from None
    if not (value > minimum if above else value >= minimum) or value == float("inf"):
        raise UsageError(f"download: {name} {text!r}: expected {what}")
    return value


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))
