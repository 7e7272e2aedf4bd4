"""Loading the bundled real market data the simulator replays.

Two kinds, both real Binance USD-M recordings (see ``data/README.md`` for provenance):

- candles: ``<dir>/<SYMBOL>-5m.csv.gz`` with ``timestamp_ms,open,high,low,close,volume``
  (timestamp = candle OPEN time, UTC ms);
- bookTicker captures: ``<dir>/hftbacktest_binance_usdm_<SYMBOL>_<YYYYMMDD>_bookTicker.csv.gz``
  with ``local_ts_ns,event_time_ms,transaction_time_ms,update_id,symbol,bid_price,bid_qty,
  ask_price,ask_qty``.

Numbers stay the recorded text until the replay converts them to integer ticks and lots, so
nothing is rounded through floats on the way in. A candle file is parsed from its bytes
(``candle_csv.py``: its decimals as exact digit integers, the text a lazy view of them, ~30x faster
than ``csv`` for a year of 1-minute bars); a file that parse does not take (quoted fields, odd
bytes, a malformed row) is read with ``csv`` as before (:func:`read_candle_text`, also the
reference the tests hold the fast path equal to). No pandas: the simulator does not need it.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from market_replay.candle_csv import ParsedCandles, parse_candle_bytes
from market_replay.markets import PriceHint

CANDLE_SUFFIX = "-5m.csv.gz"
_TICK_FILE = re.compile(r"hftbacktest_binance_usdm_([A-Z0-9]+)_(\d{8})_bookTicker\.csv\.gz$")


class DatasetError(ValueError):
    """The data directory or a file in it is not what the simulator can replay."""


@dataclass(frozen=True, slots=True)
class CandleSeries:
    """One symbol's contiguous candles; prices and volumes as recorded text.

    ``load_candles`` gives ``open_ms`` as a ``range`` (the file's open times, checked contiguous)
    and the five text columns as ``candle_csv.DecimalColumn`` (the text rebuilt when an item is
    read, the exact digits for ``CandleArrays``); a file read with ``csv`` gives tuples. Readers
    index, slice and iterate them as sequences of ``int`` / ``str`` either way.
    """

    symbol: str
    interval_ms: int
    open_ms: Sequence[int]
    open: Sequence[str]
    high: Sequence[str]
    low: Sequence[str]
    close: Sequence[str]
    volume: Sequence[str]
    price_decimals: int  # the finest decimal place any recorded price uses

    def __len__(self) -> int:
        return len(self.open_ms)

    def price_hint(self) -> PriceHint:
        return PriceHint(Decimal(self.close[0]), self.price_decimals)


@dataclass(frozen=True, slots=True)
class TickSeries:
    """One symbol's bookTicker messages in event-time order, values as recorded text."""

    symbol: str
    event_ms: tuple[int, ...]
    transaction_ms: tuple[int, ...]
    update_id: tuple[int, ...]
    bid: tuple[str, ...]
    bid_qty: tuple[str, ...]
    ask: tuple[str, ...]
    ask_qty: tuple[str, ...]
    price_decimals: int

    def __len__(self) -> int:
        return len(self.event_ms)

    def price_hint(self) -> PriceHint:
        mid = (Decimal(self.bid[0]) + Decimal(self.ask[0])) / 2
        return PriceHint(mid, self.price_decimals)


def candle_symbols(directory: Path, suffix: str = CANDLE_SUFFIX) -> list[str]:
    """Symbols that have a candle file in ``directory``, sorted."""
    return sorted(p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))


def load_candles(directory: Path, symbols: list[str] | None = None, *,
                 suffix: str = CANDLE_SUFFIX) -> dict[str, CandleSeries]:
    """Read candle files ``<SYMBOL><suffix>``; ``symbols`` None means every file in the directory.

    Raises ``DatasetError`` for a missing or unreadable file, a gap, or series of different bar sizes.
    """
    names = symbols if symbols is not None else candle_symbols(directory, suffix)
    if not names:
        raise DatasetError(f"{directory}: no *{suffix} candle files")
    result = {name: read_candle_file(directory / f"{name}{suffix}", name) for name in names}
    intervals = {s.interval_ms for s in result.values()}
    if len(intervals) != 1:
        raise DatasetError(f"{directory}: candle files use different bar sizes {sorted(intervals)}")
    return result


def tick_files(directory: Path) -> dict[str, list[tuple[str, Path]]]:
    """``{symbol: [(yyyymmdd, path), ...]}`` of the bookTicker captures in ``directory``."""
    found: dict[str, list[tuple[str, Path]]] = {}
    for path in sorted(directory.glob("*_bookTicker.csv.gz")):
        match = _TICK_FILE.search(path.name)
        if match:
            found.setdefault(match.group(1), []).append((match.group(2), path))
    return found


def load_ticks(
    directory: Path, symbols: list[str] | None = None, dates: list[str] | None = None
) -> dict[str, TickSeries]:
    """Read bookTicker captures; ``dates`` (``YYYYMMDD``) None means all files, concatenated.

    Rows are sorted by event time per symbol (captures are in arrival order, which can differ).
    """
    available = tick_files(directory)
    names = symbols if symbols is not None else sorted(available)
    if not names:
        raise DatasetError(f"{directory}: no *_bookTicker.csv.gz captures")
    result: dict[str, TickSeries] = {}
    for name in names:
        files = [p for day, p in available.get(name, []) if dates is None or day in dates]
        if not files:
            raise DatasetError(f"{directory}: no bookTicker capture for {name} (dates {dates})")
        rows: list[list[str]] = []
        for path in files:
            rows.extend(_read_rows(path, expected_columns=9))
        rows.sort(key=lambda r: (int(r[1]), int(r[3])))
        result[name] = TickSeries(
            symbol=name,
            event_ms=tuple(int(r[1]) for r in rows),
            transaction_ms=tuple(int(r[2]) for r in rows),
            update_id=tuple(int(r[3]) for r in rows),
            bid=tuple(r[5] for r in rows),
            bid_qty=tuple(r[6] for r in rows),
            ask=tuple(r[7] for r in rows),
            ask_qty=tuple(r[8] for r in rows),
            price_decimals=max(_decimals(r[k]) for r in rows for k in (5, 7)),
        )
    return result


def read_candle_file(path: Path, symbol: str) -> CandleSeries:
    """One candle file: parsed from its bytes, or with ``csv`` (:func:`read_candle_text`) when
    the fast parse does not take it; both give the same texts, open times and decimals."""
    if not path.is_file():
        raise DatasetError(f"{path}: candle file for {symbol} not found")
    parsed = parse_candle_file(path)
    if parsed is None:
        return read_candle_text(path, symbol)
    opens = parsed.open_ms
    if opens.shape[0] < 2:
        raise DatasetError(f"{path}: fewer than two candles")
    interval = int(opens[1] - opens[0])
    wrong = (opens[1:] - opens[:-1] != interval) | (interval <= 0)
    if wrong.any():
        raise DatasetError(f"{path}: gap or disorder after open time {int(opens[int(wrong.argmax())])}")
    prices = (parsed.open, parsed.high, parsed.low, parsed.close)
    decimals = max(max(col.significant_decimals() for col in prices),
                   max((_decimals(t) for col in prices for t in col.exotic.values()), default=0))
    first = int(opens[0])
    return CandleSeries(symbol=symbol, interval_ms=interval,
                        open_ms=range(first, first + interval * opens.shape[0], interval),
                        open=parsed.open, high=parsed.high, low=parsed.low, close=parsed.close,
                        volume=parsed.volume, price_decimals=decimals)


def parse_candle_file(path: Path) -> ParsedCandles | None:
    """The file's rows parsed from its bytes (no check of their open times), or ``None`` when
    the fast parse does not take the file (then :func:`read_candle_text` reads it)."""
    data = _gunzip(path)
    return parse_candle_bytes(data) if data is not None else None


def _gunzip(path: Path) -> bytes | None:
    """The file's bytes decompressed, every gzip member; ``None`` for anything unusual (then
    ``gzip.open`` in :func:`read_candle_text` reads it, or says what is wrong with it)."""
    raw = path.read_bytes()
    parts: list[bytes] = []
    try:
        while raw:
            if raw[:2] != b"\x1f\x8b":
                return None
            inflate = zlib.decompressobj(31)
            parts.append(inflate.decompress(raw))
            if not inflate.eof:
                return None
            raw = inflate.unused_data
    except zlib.error:
        return None
    return b"".join(parts) if len(parts) != 1 else parts[0]


def read_candle_text(path: Path, symbol: str) -> CandleSeries:
    """One candle file through ``csv``, every field a ``str`` (the loader before the byte parse:
    the fallback for files it does not take, and the tests' reference)."""
    if not path.is_file():
        raise DatasetError(f"{path}: candle file for {symbol} not found")
    rows = _read_rows(path, expected_columns=6)
    if len(rows) < 2:
        raise DatasetError(f"{path}: fewer than two candles")
    try:
        opens = tuple(int(r[0]) for r in rows)
    except ValueError:
        row = next(n for n, r in enumerate(rows, start=1) if not _is_int(r[0]))
        raise DatasetError(f"{path}: candle {row}: open time {rows[row - 1][0]!r} is not an integer") from None
    interval = opens[1] - opens[0]
    for previous, current in zip(opens, opens[1:]):
        if current - previous != interval or interval <= 0:
            raise DatasetError(f"{path}: gap or disorder after open time {previous}")
    return CandleSeries(
        symbol=symbol,
        interval_ms=interval,
        open_ms=opens,
        open=tuple(r[1] for r in rows),
        high=tuple(r[2] for r in rows),
        low=tuple(r[3] for r in rows),
        close=tuple(r[4] for r in rows),
        volume=tuple(r[5] for r in rows),
        price_decimals=max(_decimals(r[k]) for r in rows for k in (1, 2, 3, 4)),
    )


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _read_rows(path: Path, *, expected_columns: int) -> list[list[str]]:
    try:
        with gzip.open(path, "rt", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or len(header) != expected_columns:
                raise DatasetError(f"{path}: expected a {expected_columns}-column header, got {header}")
            rows = [row for row in reader if row]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable gzip CSV file ({exc})") from None
    for row in rows:
        if len(row) != expected_columns:
            raise DatasetError(f"{path}: malformed row {row}")
    return rows


def _decimals(text: str) -> int:
    _, _, fraction = text.partition(".")
    return len(fraction.rstrip("0"))
