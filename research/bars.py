"""Read a folder of candle CSVs into aligned arrays for the scanner.

The format is the bundled one (``data/README.md``): ``<SYMBOL>-<timeframe>.csv.gz`` with
``timestamp_ms,open,high,low,close,volume``, volume in base units. Files are found anywhere
under the folder given, so ``--data data`` sees every bundled set; a symbol present twice for
the same timeframe (two folders) is refused rather than guessed between. Symbols are aligned
on their common candle open times (an inner join): a pair is tested only where both legs
traded, and a bar missing in one file (an exchange maintenance hour) drops out of all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import KLINE_SECONDS, compact_symbol
from core.errors import UsageError

TIMEFRAME_SECONDS = {timeframe: seconds for seconds, timeframe in KLINE_SECONDS.items()}


@dataclass(frozen=True, slots=True)
class Bars:
    """Aligned candles: ``log_close`` and ``quote_volume`` are symbols x bars (C order)."""

    symbols: tuple[str, ...]        # compact, e.g. "BTCUSDT"
    timeframe: str
    timestamps_ms: np.ndarray       # int64, candle open times common to every symbol
    log_close: np.ndarray           # float64
    quote_volume: np.ndarray        # float64, base volume x close: USDT per bar
    files: tuple[Path, ...]

    @property
    def n_bars(self) -> int:
        return int(self.timestamps_ms.shape[0])

    def median_daily_quote_volume(self) -> np.ndarray:
        """Per symbol, the median over bars of quote volume, scaled to a day (USDT/day)."""
        per_day = 86_400 / TIMEFRAME_SECONDS[self.timeframe]
        return np.median(self.quote_volume, axis=1) * per_day


def normalise_symbol(text: str) -> str:
    """``BTC``, ``BTC/USDT``, ``btcusdt`` and ``BTC/USDT:USDT`` all name ``BTCUSDT``."""
    compact = compact_symbol(text).strip()
    return compact if compact.endswith("USDT") else compact + "USDT"


def find_files(data_dir: Path, timeframe: str) -> dict[str, Path]:
    """``{symbol: file}`` of every ``<SYMBOL>-<timeframe>.csv.gz`` under ``data_dir``."""
    if timeframe not in TIMEFRAME_SECONDS:
        raise UsageError(f"--timeframe {timeframe!r}: expected one of {', '.join(TIMEFRAME_SECONDS)}")
    if not data_dir.is_dir():
        raise UsageError(f"--data {data_dir}: no such folder")
    found: dict[str, Path] = {}
    for path in sorted(data_dir.rglob(f"*-{timeframe}.csv.gz")):
        symbol = path.name[: -len(f"-{timeframe}.csv.gz")].upper()
        if symbol in found:
            raise UsageError(f"--data {data_dir}: {symbol} {timeframe} is in both {found[symbol].parent} and "
                             f"{path.parent}; point --data at one of them")
        found[symbol] = path
    if not found:
        raise UsageError(f"--data {data_dir}: no *-{timeframe}.csv.gz candle files under it")
    return found


def load_bars(data_dir: Path, timeframe: str, symbols: list[str] | None = None) -> Bars:
    """Read and align the candles of ``symbols`` (default: every symbol of the timeframe).

    Raises ``UsageError`` (one line, exit 2) for a missing folder, an unknown symbol, fewer
    than two symbols, or a file without the expected columns.
    """
    files = find_files(data_dir, timeframe)
    if symbols:
        wanted = list(dict.fromkeys(normalise_symbol(s) for s in symbols))
        unknown = [s for s in wanted if s not in files]
        if unknown:
            raise UsageError(f"--symbols: no {timeframe} data for {', '.join(unknown)} under {data_dir} "
                             f"(there is: {' '.join(sorted(files))})")
    else:
        wanted = sorted(files)
    if len(wanted) < 2:
        raise UsageError(f"--symbols: a pair needs two symbols, got {len(wanted)}")
    frames = []
    for symbol in wanted:
        try:
            frame = pd.read_csv(files[symbol], usecols=["timestamp_ms", "close", "volume"])
        except (ValueError, OSError, EOFError) as exc:
            raise UsageError(f"{files[symbol]}: not a candle file with timestamp_ms, close, volume ({exc})") from exc
        frames.append(frame.set_index("timestamp_ms"))
    common = frames[0].index
    for frame in frames[1:]:
        common = common.intersection(frame.index)
    common = common.sort_values()
    close = np.vstack([f.loc[common, "close"].to_numpy(dtype=np.float64) for f in frames])
    volume = np.vstack([f.loc[common, "volume"].to_numpy(dtype=np.float64) for f in frames])
    if not (np.isfinite(close).all() and (close > 0).all()):
        raise UsageError(f"--data {data_dir}: a close is missing, zero or negative in the {timeframe} files")
    return Bars(symbols=tuple(wanted), timeframe=timeframe, timestamps_ms=common.to_numpy(dtype=np.int64),
                log_close=np.ascontiguousarray(np.log(close)), quote_volume=np.ascontiguousarray(volume * close),
                files=tuple(files[s] for s in wanted))
