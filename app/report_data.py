"""What the session report shows, read from the files a run leaves behind (no running bot needed).

Sources: the journal (round trips with their exact PnL, the entry and exit signals with their z
and spread), the session statistics file (``core/stats.py``: the equity curve in its
``performance`` section) and the session's series file (``app/series.py``: a spread/z sample per
bar per pair, the thresholds, the session's round trips). The journal is opened read-only, on
its own connection, so a report can be drawn while the bot still has it open.

Two scopes: one session (``load_session``), or every session of a mode from a date
(``load_since``), where the equity curve is the realized PnL summed over the closed round trips
(no stored curve spans sessions) and the spread/z samples come from the series files of that
mode, or, where none covers a pair, from the journal's signals.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from core.errors import UsageError
from core.types import SignalType
from execution.journal_models import RoundTrip, SignalRecord, round_trip_from_row, signal_from_row

ZERO = Decimal(0)
Sample = tuple[int, float, float, float, float]  # bar close ms, spread, z, mean, std
# The session's series file (app/series.py) beside its statistics: ``series-<stamp>.json`` for
# ``session-<stamp>.json`` (not ``session-*``, so a glob for the statistics files finds only them).
SIDECAR_PREFIX, SESSION_PREFIX = "series-", "session-"
ENTRIES = (SignalType.ENTER_LONG_SPREAD.value, SignalType.ENTER_SHORT_SPREAD.value)


class ReportInputError(UsageError):
    """The report cannot be drawn from what was given (a missing file, a bad date). Action: one
    line naming the input, exit 2, nothing written."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    entry_z: float
    exit_z: float
    stop_z: float


@dataclass(frozen=True, slots=True)
class Marker:
    """An executed entry or exit on a pair's charts (exchange time, the signal's z and spread)."""

    ts_ms: int
    z: float
    spread: float
    kind: str  # the signal type: ENTER_LONG_SPREAD, EXIT, STOP_LOSS, ...
    round_trip_id: int

    @property
    def is_entry(self) -> bool:
        return self.kind in ENTRIES


@dataclass(frozen=True, slots=True)
class PairSeries:
    pair_id: str
    legs: str
    thresholds: Thresholds | None
    samples: list[Sample]
    markers: list[Marker]
    samples_source: str  # "bars" (series file), "signals" (journal) or "none"


@dataclass(frozen=True, slots=True)
class PairPnl:
    """A pair's closed round trips: exact USDT, net = gross - fees + funding (the journal's)."""

    pair_id: str
    round_trips: int
    wins: int
    net_usdt: Decimal
    fees_usdt: Decimal
    funding_usdt: Decimal
    open_trips: int


@dataclass(frozen=True, slots=True)
class ReportData:
    title: str
    scope: str  # "session" or "since"
    mode: str
    session_ids: list[str]
    period: str
    journals: list[str]
    equity: list[tuple[int, Decimal]]  # (ms, USDT)
    equity_label: str
    pnl: list[PairPnl]
    pairs: list[PairSeries]
    equity_clock: str = "wall"  # the equity samples' clock: "wall", or "exchange" (a backtest's replay)

    @property
    def total_net_usdt(self) -> Decimal:
        return sum((p.net_usdt for p in self.pnl), ZERO)


@dataclass(frozen=True, slots=True)
class JournalView:
    trips: list[RoundTrip]
    signals: dict[str, SignalRecord]  # entry and exit signals of ``trips``
    since_signals: list[SignalRecord]  # every signal at or after the scope's start (``since`` only)


# ---------------------------------------------------------------------------------------- journal


def read_journal(path: Path, *, trip_ids: Iterable[int] | None = None, since_ms: int | None = None) -> JournalView:
    """The round trips of the scope and their signals, read-only (a missing file is an input error)."""
    if not path.is_file():
        raise ReportInputError(f"journal {path}: no such file")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ReportInputError(f"journal {path}: cannot open read-only: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        trips = [round_trip_from_row(row) for row in conn.execute("SELECT * FROM round_trips ORDER BY id")]
        if trip_ids is not None:
            wanted = set(trip_ids)
            trips = [t for t in trips if t.id in wanted]
        if since_ms is not None:
            trips = [t for t in trips if t.opened_ts_ms >= since_ms or (t.closed_ts_ms or 0) >= since_ms]
        ids = sorted({sid for t in trips for sid in (t.entry_signal_id, t.exit_signal_id) if sid})
        signals = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            rows = conn.execute(f"SELECT * FROM signals WHERE signal_id IN ({','.join('?' * len(part))})", part)
            signals.update({row["signal_id"]: signal_from_row(row) for row in rows})
        since_signals = [] if since_ms is None else [signal_from_row(row) for row in conn.execute(
            "SELECT * FROM signals WHERE ts_ms >= ? ORDER BY ts_ms, rowid", (since_ms,))]
    except sqlite3.DatabaseError as exc:
        raise ReportInputError(f"journal {path}: not a readable journal: {exc}") from exc
    finally:
        conn.close()
    return JournalView(trips, signals, since_signals)


def pnl_by_pair(trips: Iterable[RoundTrip], pair_ids: Iterable[str] = ()) -> list[PairPnl]:
    """Per pair: closed round trips, wins (net > 0), net PnL, fees and funding, exact."""
    rows: dict[str, dict[str, Any]] = {p: _empty_pnl() for p in pair_ids}
    for trip in trips:
        row = rows.setdefault(trip.pair_id, _empty_pnl())
        if trip.is_open or trip.net_pnl is None:
            row["open_trips"] += 1
            continue
        row["round_trips"] += 1
        row["wins"] += trip.net_pnl > 0
        row["net_usdt"] += trip.net_pnl
        row["fees_usdt"] += trip.fees or ZERO
        row["funding_usdt"] += trip.funding or ZERO
    return [PairPnl(pair_id=pair_id, **row) for pair_id, row in sorted(rows.items())]


def _empty_pnl() -> dict[str, Any]:
    return {"round_trips": 0, "wins": 0, "net_usdt": ZERO, "fees_usdt": ZERO, "funding_usdt": ZERO, "open_trips": 0}


def markers_of(view: JournalView) -> dict[str, list[Marker]]:
    """The executed entries and exits of the round trips, per pair, oldest first."""
    out: dict[str, list[Marker]] = {}
    for trip in view.trips:
        for signal_id in (trip.entry_signal_id, trip.exit_signal_id):
            record = view.signals.get(signal_id) if signal_id else None
            if record is None:  # a rollback closes without an exit signal
                continue
            s = record.signal
            out.setdefault(trip.pair_id, []).append(Marker(s.ts_ms, s.z, s.spread, s.signal_type.value, trip.id))
    for markers in out.values():
        markers.sort(key=lambda m: m.ts_ms)
    return out


def realized_curve(trips: Iterable[RoundTrip], start_ms: int | None = None) -> list[tuple[int, Decimal]]:
    """Cumulative net PnL of the closed round trips at their close times, from 0."""
    closed = sorted((t for t in trips if not t.is_open and t.net_pnl is not None), key=lambda t: t.closed_ts_ms or 0)
    total, curve = ZERO, []
    if closed or start_ms is not None:
        curve.append((start_ms if start_ms is not None else closed[0].opened_ts_ms, ZERO))
    for trip in closed:
        total += trip.net_pnl or ZERO
        curve.append((trip.closed_ts_ms or 0, total))
    return curve


# ---------------------------------------------------------------------------------------- scopes


def load_session(session_json: Path) -> ReportData:
    """One session: its statistics file, its series file beside it, and the journal that file names."""
    stats = _read_json(session_json, "session statistics")
    series_file = sidecar_path(session_json)
    series = _read_json(series_file, "session series file (written at stop by this version)")
    journal = Path(series["journal"])
    if not journal.is_file() and (session_json.parent / journal.name).is_file():  # the logs folder was moved
        journal = session_json.parent / journal.name
    view = read_journal(journal, trip_ids=series.get("round_trip_ids") or [])
    pairs_meta = series.get("pairs") or {}
    markers = markers_of(view)
    equity = _equity_curve(stats)
    # A backtest's statistics say "clock": "exchange": its equity samples and its period are the
    # replay's exchange time (research/backtest.py), a session's are the wall clock.
    clock = "exchange" if stats.get("clock") == "exchange" else "wall"
    label = f"equity (USDT, marked to market; {'exchange time of the replay' if clock == 'exchange' else 'wall-clock time'})"
    if not equity:
        equity, label = realized_curve(view.trips), "cumulative realized PnL (USDT; no equity sample was taken)"
        # (the round trips' close times: the journal's clock, the same as the samples' would be)
    session_id = stats.get("session_id") or series.get("session_id") or "?"
    if stats.get("clock") == "exchange":
        period = (f"{stats.get('replay_from_utc')} to {stats.get('replay_to_utc')} (UTC, replayed exchange time; "
                  f"run at {stats.get('started_at_utc')})")
    else:
        period = f"{stats.get('started_at_utc')} to {stats.get('stopped_at_utc')} (UTC)"
    mode = str(stats.get("mode", "?")).lower()
    return ReportData(
        title=f"pairs-bot {'backtest' if mode == 'backtest' else 'session'} {session_id}", scope="session", mode=mode,
        session_ids=[session_id], period=period, equity_clock=clock,
        journals=[str(journal)], equity=equity, equity_label=label,
        pnl=pnl_by_pair(view.trips, pairs_meta), pairs=[
            PairSeries(pair_id=pid, legs=f"{meta.get('leg_a')} / {meta.get('leg_b')}",
                       thresholds=Thresholds(meta["entry_z"], meta["exit_z"], meta["stop_z"]),
                       samples=[tuple(s) for s in meta.get("samples", [])], markers=markers.get(pid, []),
                       samples_source="bars" if meta.get("samples") else "none")
            for pid, meta in sorted(pairs_meta.items())])


def load_since(*, since: str, mode: str, journal: Path, logs_dir: Path,
               thresholds: dict[str, tuple[str, Thresholds]]) -> ReportData:
    """Every session of ``mode`` from ``since`` (an ISO date, UTC midnight): the mode's journal,
    its series files in ``logs_dir``; ``thresholds`` (pair -> legs, thresholds) from the config."""
    since_ms = parse_since(since)
    view = read_journal(journal, since_ms=since_ms)
    bars, session_ids = _series_since(logs_dir, mode=mode, since_ms=since_ms)
    markers = markers_of(view)
    by_signal: dict[str, list[Sample]] = {}
    for record in view.since_signals:
        s = record.signal
        by_signal.setdefault(s.pair_id, []).append((s.ts_ms, s.spread, s.z, s.mean, s.std))
    pair_ids = sorted(set(thresholds) | set(markers) | set(bars))
    pairs = []
    for pid in pair_ids:
        legs, limits = thresholds.get(pid, ("?", None))
        samples, source = (bars[pid], "bars") if bars.get(pid) else (by_signal.get(pid, []), "signals")
        pairs.append(PairSeries(pid, legs, limits, samples, markers.get(pid, []), source if samples else "none"))
    return ReportData(
        title=f"pairs-bot {mode} report since {since}", scope="since", mode=mode, session_ids=session_ids,
        period=f"from {since} 00:00 UTC to {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        journals=[str(journal)], equity=realized_curve(view.trips, since_ms),
        equity_label="cumulative realized PnL since the date (USDT, net of fees and funding)",
        pnl=pnl_by_pair([t for t in view.trips if (t.closed_ts_ms or since_ms) >= since_ms], thresholds),
        pairs=pairs)


def sidecar_path(session_json: Path) -> Path:
    """The series file that belongs to a session statistics file.

    >>> sidecar_path(Path("logs/session-20261202T032327Z.json")).name
    'series-20261202T032327Z.json'
    """
    stem = session_json.stem.removeprefix(SESSION_PREFIX)
    return session_json.with_name(f"{SIDECAR_PREFIX}{stem}.json")


def parse_since(text: str) -> int:
    """An ISO date (``2026-12-01``) as epoch ms of its UTC midnight; anything else is an input error."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ReportInputError(f"--since {text!r}: expected an ISO date such as 2026-12-01") from None
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)


def _series_since(logs_dir: Path, *, mode: str, since_ms: int) -> tuple[dict[str, list[Sample]], list[str]]:
    """Bar samples at or after ``since_ms`` from this mode's series files, oldest file first."""
    bars: dict[str, list[Sample]] = {}
    ids = []
    for path in sorted(logs_dir.glob(f"{SIDECAR_PREFIX}*.json")):
        try:
            series = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a file of another version or a partial copy: the journal still has the figures
        if str(series.get("mode", "")).lower() != mode:
            continue
        taken = False
        for pid, meta in (series.get("pairs") or {}).items():
            kept = [tuple(s) for s in meta.get("samples", []) if s[0] >= since_ms]
            bars.setdefault(pid, []).extend(kept)  # type: ignore[arg-type]
            taken = taken or bool(kept)
        if taken:
            ids.append(series.get("session_id", path.name))
    for samples in bars.values():
        samples.sort(key=lambda s: s[0])
    return bars, ids


def _equity_curve(stats: dict[str, Any]) -> list[tuple[int, Decimal]]:
    perf = (stats.get("sections") or {}).get("performance") or {}
    return [(int(ts), Decimal(str(value))) for ts, value in perf.get("equity_curve") or []]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ReportInputError(f"{what} {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"{what} {path}: not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportInputError(f"{what} {path}: expected a JSON object")
    return data
