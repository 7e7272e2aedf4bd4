"""Operator views that must fit a terminal: the status table in 100 columns, check-config in 80."""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

import main as bot_main
from app.report import status_table
from core.types import PairState
from execution.journal_models import PairPosition, Side
from signals.generator import GeneratorSnapshot
from tests.conftest import PROJECT_DIR


class _Generator:
    """A generator as the status table reads it: two symbols and a snapshot."""

    def __init__(self, pair_id: str, *, z: float, entry_ts_ms: int | None, warming: bool = False) -> None:
        self.symbol_a, self.symbol_b = f"{pair_id}:A", f"{pair_id}:B"
        self._snapshot = GeneratorSnapshot(
            pair_id=pair_id, state=PairState.SHORT_SPREAD if entry_ts_ms else PairState.FLAT, z=z, spread=0.0,
            mean=0.0, std=1.0, bars_in_window=59, lookback_bars=60, window_full=not warming,
            last_ts_ms=90_061_000, quote_age_a_ms=1, quote_age_b_ms=1, entry_ts_ms=entry_ts_ms,
            stop_cooldown_until_ms=None, in_flight_signal_id=None, halt_reason=None, quotes_accepted=10)

    def snapshot(self) -> GeneratorSnapshot:
        return self._snapshot


class _Hub:
    feed_lost = False

    def __init__(self, age_ms: int) -> None:
        self.age_ms = age_ms

    def quote_age_ms(self, symbol: str) -> int:
        return self.age_ms

    def is_stale(self, symbol: str) -> bool:
        return self.age_ms > 60_000


class _Journal:
    """The reads the table makes: the open trip, its fills (bought qty_a at 1.50, fee 0.50; sold 45.13
    of b at 1.60, no fee), no funding, and the entry signal's z."""

    def get_round_trip(self, trip_id: int) -> SimpleNamespace:
        return SimpleNamespace(id=trip_id, opened_ts_ms=1, is_open=True)

    def fills_for_pair_since(self, pair_id: str, ts_ms: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(symbol=f"{pair_id}:A", qty=D("1746.7"), price=D("1.5"), side=Side.BUY, fee=D("0.5")),
                SimpleNamespace(symbol=f"{pair_id}:B", qty=D("45.13"), price=D("1.6"), side=Side.SELL, fee=D("0"))]

    def funding_for_round_trip(self, trip_id: int) -> list[SimpleNamespace]:
        return []

    def get_signal(self, signal_id: str) -> SimpleNamespace:
        return SimpleNamespace(signal=SimpleNamespace(z=2.6234))


def _ten_pairs(*, age_ms: int, qty_a: str = "1746.7", qty_b: str = "-45.13") -> tuple[dict, _Hub, SimpleNamespace]:
    gens, positions = {}, {}
    for i in range(10):
        pair = f"CRV_WAVES{i}"
        held = i % 2 == 0
        gens[pair] = _Generator(pair, z=-2.345, entry_ts_ms=1_000 if held else None, warming=i == 2)
        positions[pair] = (PairPosition(pair, PairState.SHORT_SPREAD, D(qty_a), D(qty_b), f"{pair}:A", f"{pair}:B",
                                        entry_signal_id="s1", entry_ts_ms=1_000, round_trip_id=1) if held
                           else PairPosition(pair, PairState.FLAT, D(0), D(0), f"{pair}:A", f"{pair}:B"))
    return gens, _Hub(age_ms), SimpleNamespace(positions=positions, refusals_by_pair={p: 123 for p in gens})


def test_status_table_fits_100_columns_with_every_cell_whole() -> None:
    """At its default width, the one StatusReporter logs with."""
    gens, hub, engine = _ten_pairs(age_ms=65_000)  # a dead feed: STALE, five-digit ages
    text = status_table(gens, hub=hub, engine=engine, journal=_Journal(), mids=lambda s: D("1.49"))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    header = next(line for line in lines if line.startswith("pair"))
    assert header.split() == ["pair", "state", "z", "pos_a", "pos_b", "entry_z", "held", "upnl", "age_ms", "refused"]
    # held: 90_061_000 - 1_000 ms = 1 d 01:01:00 of exchange time; upnl: the fill's cash (bought 1746.7
    # at 1.50, sold 45.13 at 1.60) + both legs marked at 1.49 - the 0.50 fee
    rows = {line.split()[0]: line for line in lines if line.startswith("CRV_WAVES")}
    assert len(rows) == 10  # one line per pair: nothing wrapped
    held = rows["CRV_WAVES0"].split()
    assert held[:8] == ["CRV_WAVES0", "STALE", "SHORT", "-2.35", "+1746.7", "-45.13", "+2.62", "1d01h"]
    upnl = D("1746.7") * (D("1.49") - D("1.5")) + D("45.13") * (D("1.6") - D("1.49")) - D("0.5")
    assert held[8:] == [f"{upnl:,.2f}", "65000/65000", "123"]
    assert rows["CRV_WAVES2"].split()[1:4] == ["STALE", "SHORT*", "-2.35"]  # * = warming
    flat = rows["CRV_WAVES1"].split()
    assert flat == ["CRV_WAVES1", "STALE", "FLAT", "-2.35", "65000/65000", "123"]  # no position: empty cells
    assert "…" not in text


def test_status_table_folds_rather_than_cuts_an_oversized_cell() -> None:
    gens, hub, engine = _ten_pairs(age_ms=1_234_567, qty_a="123456789.123", qty_b="-987654321.987")
    text = status_table(gens, hub=hub, engine=engine, journal=_Journal(), mids=lambda s: D("1.49"))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text  # rich's mark of a cut cell
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("pair"))
    start, end = header.index(" z ") + 2, header.index("pos_a") + len("pos_a")  # pos_a: right-justified
    first = next(i for i, line in enumerate(lines) if line.startswith("CRV_WAVES0"))
    second = next(i for i, line in enumerate(lines) if line.startswith("CRV_WAVES1"))
    cell = "".join(line[start:end].strip() for line in lines[first:second])
    assert cell == "+123456789.123", lines[first:second]  # folded onto more lines, whole


def test_check_config_reads_at_80_columns(tmp_path: Path) -> None:
    console = Console(width=80, record=True, file=open(tmp_path / "out.txt", "w"), color_system=None)
    options = bot_main.parse_options(["check-config", "--config", str(PROJECT_DIR / "config.json"),
                                      "--pairs", str(PROJECT_DIR / "pairs_config.json")])
    assert bot_main.check_config(options, console) == 0
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text
    shipped = json.loads((PROJECT_DIR / "pairs_config.json").read_text())["pairs"]
    for pair in shipped:  # each pair's id, both legs and its enabled flag, whole, on its two lines
        i = next(n for n, line in enumerate(lines) if line.startswith(pair["pair_id"] + " "))
        first, second = lines[i].split(), lines[i + 1].split()
        assert first[1] == pair["leg_a"] and second == [pair["leg_b"]]
        assert first[-2] == ("yes" if pair.get("enabled", True) else "no")
        assert first[-1] == ("-" if "scan" not in pair else "pass" if pair["scan"]["passed"] else "fail")
        assert first[2] == f"{pair['hedge_ratio']:g}"
