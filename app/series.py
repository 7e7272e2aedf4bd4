"""Per-pair spread and z, one sample per bar, for the session report (``app/session_report.py``).

A quote observer of the router (``SignalRouter`` calls it before the generators see the quote):
when a quote opens a new bar, the calculator still holds the closing values of the bar before,
so one O(1) read per pair of the quote's symbol takes the bar's closing spread, z, mean and std.
Nothing is computed, no I/O, and each pair keeps at most ``max_bars`` samples (a ring), so the
quote loop never waits and memory stays bounded. At stop ``sidecar`` writes them, with the
pair's thresholds and this session's round trips, next to the session statistics so that
``python main.py report --session FILE`` can draw the report again later.
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.report_data import sidecar_path
from core.files import write_json_atomically
from core.types import Quote

if TYPE_CHECKING:  # the report reads the sidecar without loading the signal kernels
    from execution.journal import Journal
    from signals.generator import SignalGenerator

#: Bars kept per pair: 5,000 is 3.5 days of 1-minute bars, about 1 MB per pair when full
#: (bench/bench_series.py).
MAX_BARS_PER_PAIR = 5_000
SIDECAR_SCHEMA = 1
__all__ = ["SeriesRecorder", "sidecar_path"]


class SeriesRecorder:
    """Samples each pair's spread and z at every bar close, bounded; see the module docstring."""

    def __init__(self, generators: dict[str, SignalGenerator], *, journal: Journal,
                 max_bars: int = MAX_BARS_PER_PAIR) -> None:
        if max_bars < 1:
            raise ValueError(f"max_bars must be at least 1, got {max_bars}")
        self._generators = generators
        self._by_symbol: dict[str, list[SignalGenerator]] = {}
        for gen in generators.values():
            for symbol in (gen.symbol_a, gen.symbol_b):
                self._by_symbol.setdefault(symbol, []).append(gen)
        self.samples: dict[str, deque[tuple[int, float, float, float, float]]] = {
            pair_id: deque(maxlen=max_bars) for pair_id in generators}
        self._last_bucket = dict.fromkeys(generators, -1)
        # Per symbol, the finest bar of its pairs and the bucket of its last quote: most quotes
        # fall in the same bar as the one before and cost one division and one dict read here.
        # (Exchange timeframes divide one another, so a coarser bar closes on a finer bar's close.)
        self._symbol_bar_ms = {s: min(g.calculator.bar_ms for g in gens) for s, gens in self._by_symbol.items()}
        self._symbol_bucket = dict.fromkeys(self._by_symbol, -1)
        self._journal = journal
        # Round trips closed before this run are not this session's (a trip still open is).
        self._closed_before = {t.id for t in journal.round_trips() if not t.is_open}

    def on_quote(self, quote: Quote) -> None:
        """Router observer, before the generators update: a quote in a later bar closes the open one."""
        bar_ms = self._symbol_bar_ms.get(quote.symbol)
        if bar_ms is None:
            return
        symbol_bucket = quote.ts_ms // bar_ms
        if symbol_bucket == self._symbol_bucket[quote.symbol]:
            return
        self._symbol_bucket[quote.symbol] = symbol_bucket
        for gen in self._by_symbol[quote.symbol]:
            calc = gen.calculator
            bucket = calc.open_bucket
            pair_id = gen.pair_id
            if bucket < 0 or bucket == self._last_bucket[pair_id] or quote.ts_ms // calc.bar_ms <= bucket:
                continue
            self._last_bucket[pair_id] = bucket
            sample = ((bucket + 1) * calc.bar_ms, calc.spread, calc.z, calc.mean, calc.std)
            if all(math.isfinite(v) for v in sample):  # z is NaN while the window fills
                self.samples[pair_id].append(sample)

    # -- the backtest's replay kernel samples in bulk (research/fast_replay.py) ------------------

    def symbol_bar_ms(self, symbol: str) -> int:
        """The bar ``on_quote`` buckets ``symbol``'s quotes by (the finest of its pairs')."""
        return self._symbol_bar_ms[symbol]

    def last_sampled_bucket(self, pair_id: str) -> int:
        """The bar the pair's last sample closed (-1: none yet)."""
        return self._last_bucket[pair_id]

    def add_replayed(self, pair_id: str, rows: list[tuple[int, float, float, float, float]], last_bucket: int) -> None:
        """Samples the replay kernel took as ``on_quote`` would have, and the bar it took last."""
        self.samples[pair_id].extend(rows)
        self._last_bucket[pair_id] = last_bucket

    def session_round_trip_ids(self) -> list[int]:
        """Ids of the round trips this session opened or closed (the report's PnL and markers)."""
        return [t.id for t in self._journal.round_trips() if t.id not in self._closed_before]

    def sidecar(self, *, session_id: str, mode: str) -> dict[str, Any]:
        """Everything the report needs besides the journal and the statistics file."""
        pairs = {}
        for pair_id, gen in self._generators.items():
            p = gen.params
            pairs[pair_id] = {"leg_a": gen.symbol_a, "leg_b": gen.symbol_b, "hedge_ratio": p.hedge_ratio,
                              "entry_z": float(p.entry_z), "exit_z": float(p.exit_z), "stop_z": float(p.stop_z),
                              "bar_seconds": p.bar_seconds, "samples": [list(s) for s in self.samples[pair_id]]}
        return {"schema": SIDECAR_SCHEMA, "session_id": session_id, "mode": mode,
                "journal": str(Path(self._journal.path).resolve()),
                "round_trip_ids": self.session_round_trip_ids(),
                "sample_columns": ["bar_close_ts_ms", "spread", "z", "mean", "std"], "pairs": pairs}

    def write_sidecar(self, session_json: Path, *, session_id: str, mode: str) -> Path:
        """``series-<stamp>.json`` beside ``session-<stamp>.json``."""
        path = sidecar_path(session_json)
        return write_json_atomically(path, self.sidecar(session_id=session_id, mode=mode))
