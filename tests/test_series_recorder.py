"""The session report's bar samples (``app/series.py``): on real Binance bookTicker quotes, each
sample is exactly the pair's closing spread, z, mean and std of its bar, one per bar, bounded."""

from __future__ import annotations

from pathlib import Path

from app.series import SeriesRecorder
from core.config import SignalParams
from execution.journal import Journal
from signals.generator import SignalGenerator
from tests.signal_data import merged_quotes

SYMBOLS = ("ETHUSDT", "BTCUSDT")


def _params(pair_id: str, beta: float) -> SignalParams:
    return SignalParams(pair_id=pair_id, leg_a=SYMBOLS[0], leg_b=SYMBOLS[1], hedge_ratio=beta, bar_seconds=1,
                        lookback_bars=20, entry_z=2.0, exit_z=0.0, stop_z=3.5, price_transform="log", min_std=1e-12,
                        max_quote_age_ms=5_000, cooldown_seconds=30.0, stop_loss_cooldown_seconds=300.0,
                        max_holding_bars=120)


def test_each_sample_is_the_bars_closing_values_once_per_bar_and_the_ring_is_bounded(tmp_path: Path) -> None:
    quotes = merged_quotes(SYMBOLS, "20240719")[:30_000]
    gens = {pid: SignalGenerator(_params(pid, beta)) for pid, beta in (("A", 0.7), ("B", 1.3))}
    twins = {pid: SignalGenerator(_params(pid, beta)) for pid, beta in (("A", 0.7), ("B", 1.3))}  # the reference
    with Journal.open(tmp_path / "journal.sqlite", mode="paper") as journal:
        recorder = SeriesRecorder(gens, journal=journal, max_bars=50)
        closing: dict[str, dict[int, tuple[float, ...]]] = {pid: {} for pid in gens}
        for quote in quotes:  # as the router does: the observer first, then every generator
            recorder.on_quote(quote)
            for pid in gens:
                gens[pid].update(quote)
                twin = twins[pid]
                twin.update(quote)
                calc = twin.calculator
                if calc.open_bucket >= 0:  # the last values seen in a bucket are its closing ones
                    closing[pid][(calc.open_bucket + 1) * calc.bar_ms] = (calc.spread, calc.z, calc.mean, calc.std)
            for pid, ring in recorder.samples.items():  # checked as it runs, not only at the end
                assert len(ring) <= 50
                if ring:
                    ts, *values = ring[-1]
                    assert tuple(values) == closing[pid][ts], (pid, ts)
        for pid, ring in recorder.samples.items():
            times = [s[0] for s in ring]
            assert len(ring) == 50 and times == sorted(set(times)), pid  # full, one per bar, in order
            finite_closed = [t for t, v in closing[pid].items() if t <= times[-1] and v[1] == v[1]]
            assert times == finite_closed[-50:], pid  # no bar skipped
