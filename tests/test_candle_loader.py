"""The candle loader's byte parse (``market_replay/candle_csv.py``) against the ``csv`` reader it
replaced (``datasets.read_candle_text``, kept as the fallback and the reference).

On every bundled candle file (the 5m perps and the 1h spot set, whose volumes hold exponents) the
parse must give the same texts, open times and price decimals, and ``CandleArrays`` built from it
the same int64 arrays, bit for bit, as from the text (and as per-bar ``UnitFormatter.to_units``).
Odd spellings keep their text; files the parse does not take fall back to ``csv``; bad files raise
the same ``DatasetError`` either way.
"""

from __future__ import annotations

import gzip
import random
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from market_replay.candle_arrays import CandleArrays, text_to_units
from market_replay import kernels
from market_replay.candle_csv import EXOTIC, DecimalColumn, parse_candle_bytes
from market_replay.config import ReplayConfig, demo_replay_config
from market_replay.datasets import (CandleSeries, DatasetError, _read_rows, load_candles, parse_candle_file,
                                    read_candle_file, read_candle_text)
from market_replay.formats import UnitFormatter
from market_replay.markets import build_rules, load_exchange_info

DATA = Path(__file__).resolve().parent.parent / "data"
PERP_5M = DATA / "binance-usdm-perp-5m-2023-07"
SPOT_1H = DATA / "binance-spot-1h-2020-12_2021-07"
INFO = load_exchange_info(DATA / "exchange-info" / "binance_usdm_fapi_v1_exchangeInfo_2021-07-21.json")
CANDLE_FILES = sorted(PERP_5M.glob("*.csv.gz")) + sorted(SPOT_1H.glob("*.csv.gz"))
FIELDS = ("open", "high", "low", "close", "volume")
HEADER = "timestamp_ms,open,high,low,close,volume"


def _write(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode("ascii"), compresslevel=1, mtime=0))
    return path


def _rows(n: int, *, t0: int = 1_688_474_100_000, step: int = 60_000) -> list[str]:
    return [f"{t0 + k * step},10.5,11,10,10.75,{k}.25" for k in range(n)]


def _texts_equal(series: CandleSeries, other: CandleSeries) -> None:
    assert tuple(series.open_ms) == tuple(other.open_ms)
    for field in FIELDS:
        assert tuple(getattr(series, field)) == tuple(getattr(other, field)), field
    assert (series.symbol, series.interval_ms, series.price_decimals) == \
        (other.symbol, other.interval_ms, other.price_decimals)


def _text_series(path: Path, symbol: str) -> CandleSeries:
    """The csv reader's rows as a series, without the contiguity check (the 1h set has gaps)."""
    rows = _read_rows(path, expected_columns=6)
    opens = tuple(int(r[0]) for r in rows)
    decimals = max(len(r[k].partition(".")[2].rstrip("0")) for r in rows for k in (1, 2, 3, 4))
    return CandleSeries(symbol, opens[1] - opens[0], opens, *(tuple(r[k] for r in rows) for k in range(1, 6)),
                        price_decimals=decimals)


def _parsed_series(path: Path, symbol: str) -> CandleSeries:
    """The byte parse's columns as a series, without the contiguity check."""
    parsed = parse_candle_file(path)
    assert parsed is not None, f"{path.name}: the fast parse refused a bundled file"
    opens = tuple(parsed.open_ms.tolist())
    prices = (parsed.open, parsed.high, parsed.low, parsed.close)
    decimals = max(max(c.significant_decimals() for c in prices),
                   max((len(t.partition(".")[2].rstrip("0")) for c in prices for t in c.exotic.values()), default=0))
    return CandleSeries(symbol, opens[1] - opens[0], opens, *(getattr(parsed, f) for f in FIELDS),
                        price_decimals=decimals)


@pytest.mark.parametrize("path", CANDLE_FILES, ids=lambda p: p.name)
def test_every_bundled_file_parses_to_the_csv_readers_texts(path: Path) -> None:
    symbol = path.name.split("-")[0]
    fast, text = _parsed_series(path, symbol), _text_series(path, symbol)
    assert all(isinstance(getattr(fast, f), DecimalColumn) for f in FIELDS)
    _texts_equal(fast, text)


@pytest.mark.parametrize("path", sorted(PERP_5M.glob("*.csv.gz")), ids=lambda p: p.name)
def test_read_candle_file_equals_the_csv_reader(path: Path) -> None:
    symbol = path.name.split("-")[0]
    fast = read_candle_file(path, symbol)
    assert isinstance(fast.close, DecimalColumn) and isinstance(fast.open_ms, range)
    _texts_equal(fast, read_candle_text(path, symbol))
    assert fast.price_hint() == read_candle_text(path, symbol).price_hint()


def _reference_arrays(series: list[CandleSeries], rules, cfg: ReplayConfig) -> dict[str, list[int]]:
    """Per-bar ``to_units`` (the definition the arrays are held to)."""
    out: dict[str, list[int]] = {"o": [], "h": [], "lo": [], "c": [], "base_lots": []}
    for s, r in zip(series, rules):
        pf, qf = UnitFormatter(r.tick_size), UnitFormatter(r.step_size)
        for key, field in zip(("o", "h", "lo", "c"), FIELDS):
            out[key].extend(pf.to_units(t) for t in getattr(s, field))
        out["base_lots"].extend(max(1, int(qf.to_units(v) * cfg.top_qty_volume_fraction)) for v in s.volume)
    return out


@pytest.mark.parametrize("folder", [PERP_5M, SPOT_1H], ids=["perp-5m", "spot-1h"])
def test_arrays_from_the_byte_parse_equal_the_texts_bit_for_bit(folder: Path) -> None:
    paths = sorted(folder.glob("*.csv.gz"))
    symbols = [p.name.split("-")[0] for p in paths]
    fast = [_parsed_series(p, s) for p, s in zip(paths, symbols)]
    text = [_text_series(p, s) for p, s in zip(paths, symbols)]
    hints = {s: f.price_hint() for s, f in zip(symbols, fast)}
    assert hints == {s: t.price_hint() for s, t in zip(symbols, text)}
    rules = build_rules(INFO, hints)
    price_fmt = [UnitFormatter(rules[s].tick_size) for s in symbols]
    qty_fmt = [UnitFormatter(rules[s].step_size) for s in symbols]
    for cfg in (ReplayConfig(), demo_replay_config()):
        a = CandleArrays.build(symbols, fast, price_fmt, qty_fmt, [0] * len(symbols), cfg)
        b = CandleArrays.build(symbols, text, price_fmt, qty_fmt, [0] * len(symbols), cfg)
        for name in ("start", "n_bars", "offset", "o", "h", "lo", "c", "base_lots", "spread", "keys"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    if folder == PERP_5M:  # and as the definition says (the 1h set's 820k to_units take seconds more)
        reference = _reference_arrays(text, [rules[s] for s in symbols], demo_replay_config())
        for name, values in reference.items():
            assert getattr(a, name).tolist() == values, name


ODD = ["0", "0.000", "12", "12.50", "0.00012", "31029.0", "999999999999999999", "1000000000000000000",
       "0.123456789012345678", "1.34e+10", "3E2", "-2.5", "0012", ".5", "5.", "+7", "1.2.3", "0.05", "0.075",
       "123456789012345.6789"]


def test_odd_spellings_keep_their_text_and_convert_as_to_units(tmp_path: Path) -> None:
    lines = [f"{1_000 + 60_000 * k},{v},{v},{v},{v},{v}" for k, v in enumerate(ODD)]
    path = _write(tmp_path / "X-1m.csv.gz", "\r\n".join([HEADER, *lines]) + "\r\n\r\n")
    fast, text = read_candle_file(path, "X"), read_candle_text(path, "X")
    assert isinstance(fast.close, DecimalColumn)
    assert set(fast.close.exotic.values()) == {"1000000000000000000", "123456789012345.6789", "1.34e+10", "3E2",
                                               "-2.5", "0012", ".5", "5.", "+7", "1.2.3"}
    _texts_equal(fast, text)
    for unit in ("1", "0.01", "0.05", "0.5", "0.00000001", "0.1"):
        fmt = UnitFormatter(Decimal(unit))
        for j, spelled in enumerate(ODD):
            if spelled == "1.2.3":
                continue
            want = fmt.to_units(spelled)
            if not -(1 << 63) <= want < 1 << 63:
                with pytest.raises(ValueError, match="beyond the replay's 64-bit integers"):
                    text_to_units(fast.volume[j:j + 1], fmt)
                continue
            assert text_to_units(fast.volume[j:j + 1], fmt).tolist() == [want], (unit, spelled)
            assert text_to_units((spelled,), fmt).tolist() == [want], (unit, spelled)
    canonical = [j for j, w in enumerate(fast.volume.places.tolist()) if w != EXOTIC]
    column = fast.volume
    digits = DecimalColumn(column.mantissa[canonical], column.places[canonical], {})
    raw = np.frombuffer("\n".join(ODD[j] for j in canonical).encode(), dtype=np.uint8)
    for decimals in range(0, 10):  # the same refusals and values as the text parse, field by field
        got = np.empty(len(canonical), np.int64), np.empty(len(canonical), np.bool_)
        want = np.empty(len(canonical), np.int64), np.empty(len(canonical), np.bool_)
        digits.scaled(decimals, *got)
        kernels.parse_scaled(raw, decimals, *want)
        assert got[1].tolist() == want[1].tolist() and got[0].tolist() == want[0].tolist(), decimals


def test_price_decimals_ignore_trailing_zeros(tmp_path: Path) -> None:
    path = _write(tmp_path / "Z-1m.csv.gz", "\n".join([HEADER, "1000,10.50,11.0,10,10.5,1.250", "61000,10,11,10,10,2"]))
    fast, text = read_candle_file(path, "Z"), read_candle_text(path, "Z")
    assert fast.price_decimals == text.price_decimals == 1


def test_a_file_the_parse_does_not_take_is_read_with_csv(tmp_path: Path) -> None:
    quoted = _write(tmp_path / "Q-1m.csv.gz", "\n".join([HEADER, '1000,"1.5",2,1,1.5,3', "61000,1.5,2,1,1.5,3"]))
    spaced = _write(tmp_path / "S-1m.csv.gz", "\n".join([HEADER, "1000,1.5,2,1,1.5, 3", "61000,1.5,2,1,1.5,3"]))
    for path in (quoted, spaced):
        assert parse_candle_file(path) is None
        series = read_candle_file(path, "Q")
        assert isinstance(series.close, tuple)
        _texts_equal(series, read_candle_text(path, "Q"))


def test_several_gzip_members_are_one_file(tmp_path: Path) -> None:
    rows = _rows(6)
    text = "\n".join([HEADER, *rows]) + "\n"
    cut = text.index(rows[3])
    path = tmp_path / "M-1m.csv.gz"
    path.write_bytes(gzip.compress(text[:cut].encode()) + gzip.compress(text[cut:].encode()))
    series = read_candle_file(path, "M")
    assert isinstance(series.close, DecimalColumn) and len(series) == 6
    _texts_equal(series, read_candle_text(path, "M"))


BAD_FILES = [
    pytest.param(HEADER + "\n" + _rows(1)[0] + "\n", "fewer than two candles", id="one-candle"),
    pytest.param("\n".join([HEADER, *_rows(3), _rows(5)[4]]), "gap or disorder after open time 1688474220000",
                 id="gap"),
    pytest.param("\n".join([HEADER, *reversed(_rows(3))]), "gap or disorder after open time 1688474220000",
                 id="descending"),
    pytest.param("\n".join([HEADER, _rows(1)[0], _rows(1)[0]]), "gap or disorder after open time 1688474100000",
                 id="duplicate"),
    pytest.param("\n".join(["timestamp_ms,open,high,low,close", *_rows(3)]), "expected a 6-column header",
                 id="header"),
    pytest.param("\n".join([HEADER, *_rows(2), "1688474220000,1,1,1,1,1,7"]), "malformed row", id="seven-fields"),
    pytest.param("\n".join([HEADER, *_rows(2), "1688474220000,1,1,1"]), "malformed row", id="four-fields"),
    pytest.param("\n".join([HEADER, *_rows(2), "soon,1,1,1,1,1"]), r"candle 3: open time 'soon' is not an integer",
                 id="open-time"),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_a_bad_file_is_one_dataset_error_naming_it(tmp_path: Path, content: str, message: str) -> None:
    path = _write(tmp_path / "BAD-1m.csv.gz", content)
    with pytest.raises(DatasetError, match=message) as fast:
        read_candle_file(path, "BAD")
    with pytest.raises(DatasetError) as text:
        read_candle_text(path, "BAD")
    assert str(fast.value) == str(text.value)
    assert str(fast.value).startswith(f"{path}: ") and "\n" not in str(fast.value)


def test_missing_and_unreadable_files_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="candle file for NONE not found"):
        read_candle_file(tmp_path / "NONE-1m.csv.gz", "NONE")
    broken = tmp_path / "BROKEN-1m.csv.gz"
    broken.write_bytes(gzip.compress(("\n".join([HEADER, *_rows(50)])).encode())[:-30])  # truncated
    with pytest.raises(DatasetError, match=f"{broken}: not a readable gzip CSV file"):
        read_candle_file(broken, "BROKEN")
    (tmp_path / "PLAIN-1m.csv.gz").write_text("\n".join([HEADER, *_rows(3)]))
    with pytest.raises(DatasetError, match="not a readable gzip CSV file"):
        load_candles(tmp_path, ["PLAIN"], suffix="-1m.csv.gz")


def test_a_big_synthetic_file_round_trips(tmp_path: Path) -> None:
    """100,000 rows of random decimals (0-8 places, trailing zeros kept, up to 18 digits)."""
    rng = random.Random(5)
    n = 100_000
    t0, step = 1_600_000_000_000, 60_000
    mantissas = [[rng.choice((0, rng.randrange(1, 10**rng.randrange(1, 19)))) for _ in range(n)] for _ in FIELDS]
    places = [[rng.randrange(0, 9) for _ in range(n)] for _ in FIELDS]

    def spell(m: int, w: int) -> str:
        digits = str(m).rjust(w + 1, "0")
        return f"{digits[:-w]}.{digits[-w:]}" if w else digits

    texts = [[spell(m, w) for m, w in zip(ms, ws)] for ms, ws in zip(mantissas, places)]
    body = "\n".join(",".join((str(t0 + k * step), *(col[k] for col in texts))) for k in range(n))
    _write(tmp_path / "BIG-1m.csv.gz", f"{HEADER}\n{body}\n")
    series = load_candles(tmp_path, suffix="-1m.csv.gz")["BIG"]
    assert series.open_ms == range(t0, t0 + n * step, step) and series.interval_ms == step
    for field, col, ms, ws in zip(FIELDS, texts, mantissas, places):
        column = getattr(series, field)
        assert isinstance(column, DecimalColumn) and column.exotic == {}
        assert list(column) == col and column[n - 1] == col[-1]
        assert column.mantissa.tolist() == ms and column.places.tolist() == ws
        values, bad = np.empty(n, np.int64), np.empty(n, np.bool_)
        column.scaled(8, values, bad)  # parse_scaled's bound: fewer than 18 digits in 10**-8
        exact = [m * 10 ** (8 - w) for m, w in zip(ms, ws)]
        assert bad.tolist() == [v >= 10**17 for v in exact]
        assert [v for v, b in zip(values.tolist(), bad.tolist()) if not b] == [v for v in exact if v < 10**17]
    expected = max(len(t.partition(".")[2].rstrip("0")) for col in texts[:4] for t in col)
    assert series.price_decimals == expected


def test_decimal_column_reads_as_a_sequence_of_texts() -> None:
    parsed = parse_candle_bytes(f"{HEADER}\n1,1.50,2,1,1.5,3e2\n2,1.25,2,1,1.5,4\n3,0.5,2,0,1,5\n".encode())
    assert parsed is not None
    col, volume = parsed.open, parsed.volume
    assert list(col) == ["1.50", "1.25", "0.5"] and col[-1] == "0.5" and len(col) == 3
    assert isinstance(col[1:], DecimalColumn) and list(col[1:]) == ["1.25", "0.5"]
    assert col[::2] == ("1.50", "0.5") and col == ("1.50", "1.25", "0.5") and col != ("1.50",)
    assert col[:1] + ("9",) + col[2:] == ("1.50", "9", "0.5") and ("9",) + col[2:] == ("9", "0.5")
    assert list(volume[1:]) == ["4", "5"] and volume[:1] == ("3e2",) and col.index("1.25") == 1
    with pytest.raises(IndexError):
        col[3]
    series = CandleSeries("X", 1, range(1, 4), *(getattr(parsed, f) for f in FIELDS), price_decimals=2)
    cut = replace(series, open_ms=series.open_ms[:2], **{f: getattr(series, f)[:2] for f in FIELDS})
    assert len(cut) == 2 and cut.volume == ("3e2", "4") and cut.price_hint().reference_price == Decimal("1.5")
