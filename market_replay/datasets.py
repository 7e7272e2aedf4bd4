"""Loading the bundled real market data the simulator replays.

Two kinds, both real Binance USD-M recordings (see ``data/README.md`` for provenance):

- candles: ``<dir>/<SYMBOL>-5m.csv.gz`` with ``timestamp_ms,open,high,low,close,volume``
  (timestamp = candle OPEN time, UTC ms);
- bookTicker captures: ``<dir>/hftbacktest_binance_usdm_<SYMBOL>_<YYYYMMDD>_bookTicker.csv.gz``
  with ``local_ts_ns,event_time_ms,transaction_time_ms,update_id,symbol,bid_price,bid_qty,
  ask_price,ask_qty``.

Numbers stay the recorded text until the replay converts them to integer ticks and lots, so
nothing is rounded through floats on the way in. Plain ``csv`` + ``gzip``: the simulator does
not need pandas to start.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from market_replay.markets import PriceHint

CANDLE_SUFFIX = "-5m.csv.gz"
_TICK_FILE = re.compile(r"hftbacktest_binance_usdm_([A-Z0-9]+)_(\d{8})_bookTicker\.csv\.gz$")


class DatasetError(ValueError):
    """The data directory or a file in it is not what the simulator can replay."""


@dataclass(frozen=True, slots=True)
class CandleSeries:
    """One symbol's contiguous candles; prices and volumes as recorded text."""

    symbol: str
    interval_ms: int
    open_ms: tuple[int, ...]
    open: tuple[str, ...]
    high: tuple[str, ...]
    low: tuple[str, ...]
    close: tuple[str, ...]
    volume: tuple[str, ...]
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


def candle_symbols(directory: Path) -> list[str]:
    """Symbols that have a candle file in ``directory``, sorted."""
    return sorted(p.name[: -len(CANDLE_SUFFIX)] for p in directory.glob(f"*{CANDLE_SUFFIX}"))


def load_candles(directory: Path, symbols: list[str] | None = None) -> dict[str, CandleSeries]:
    """Read candle files; ``symbols`` None means every file in the directory.

    Raises ``DatasetError`` for a missing file, a gap, or series of different bar sizes.
    """
    names = symbols if symbols is not None else candle_symbols(directory)
    if not names:
        raise DatasetError(f"{directory}: no *{CANDLE_SUFFIX} candle files")
    result = {name: _read_candle_file(directory / f"{name}{CANDLE_SUFFIX}", name) for name in names}
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


def _read_candle_file(path: Path, symbol: str) -> CandleSeries:
    if not path.is_file():
        raise DatasetError(f"{path}: candle file for {symbol} not found")
    rows = _read_rows(path, expected_columns=6)
    if len(rows) < 2:
        raise DatasetError(f"{path}: fewer than two candles")
    opens = tuple(int(r[0]) for r in rows)
    interval = opens[1] - opens[0]
    for previous, current in zip(opens, opens[1:]):
        if current - previous != interval:
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


def _read_rows(path: Path, *, expected_columns: int) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or len(header) != expected_columns:
            raise DatasetError(f"{path}: expected a {expected_columns}-column header, got {header}")
        rows = [row for row in reader if row]
    for row in rows:
        if len(row) != expected_columns:
            raise DatasetError(f"{path}: malformed row {row}")
    return rows


def _decimals(text: str) -> int:
    _, _, fraction = text.partition(".")
    return len(fraction.rstrip("0"))
