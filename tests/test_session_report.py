"""Issue 12 items 3 and 8: the session report (HTML + PNGs) and the stamped trades.jsonl, on a real
20 s demo (real ccxt against the in-process simulator) and on a paper journal written by the engine
against the simulator (``report --since``)."""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import re
import shutil
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from PIL import Image

from core.types import SignalType
from execution.journal import Journal
from execution.results import ExecutionStatus
from tests.conftest import PROJECT_DIR, read_json, run_main, write_json
from tests.engine_rig import BTC_ETH, EOS_AXS, TEST_TIMEOUT_S

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTS = ("equity", "drawdown", "pnl-per-pair")
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
ISO_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One ``demo --duration 20`` shared by this module's tests (its report is written at stop)."""
    tmp_path = tmp_path_factory.mktemp("demo20")
    config = read_json(PROJECT_DIR / "config.json")
    config["logging"]["report_timeout_seconds"] = 120  # this test is about the report, not the bound (below)
    write_json(tmp_path / "config.json", config)
    proc = run_main(["demo", "--config", str(tmp_path / "config.json"), "--duration", "20", "--speed", "600"],
                    cwd=tmp_path, timeout=150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, tmp_path


def _session(tmp_path: Path) -> Path:
    [session] = (tmp_path / "logs").glob("session-*.json")
    return session


def _pair_nets(page: str) -> dict[str, Decimal]:
    return {html.unescape(pair): Decimal(net) for pair, net in re.findall(r'<tr data-pair="([^"]+)" data-net-usdt="([^"]+)"',
                                                                        page)}


def _journal_nets(journal: Path, trip_ids: list[int] | None = None) -> dict[str, list[Decimal]]:
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT id, pair_id, net_pnl FROM round_trips WHERE closed_ts_ms IS NOT NULL").fetchall()
    out: dict[str, list[Decimal]] = {}
    for trip_id, pair, net in rows:
        if trip_ids is None or trip_id in trip_ids:
            out.setdefault(pair, []).append(Decimal(net))
    return out


def _assert_report(report_dir: Path, pair_ids: list[str]) -> str:
    """Every chart and pair section, self-contained, each image a valid PNG equal to its file."""
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page and "<link" not in page
    for chart in CHARTS:
        assert f'<section id="{chart}">' in page, chart
    sections = re.findall(r'<section class="pair" id="pair-[^"]+" data-pair="([^"]+)">', page)
    assert sections == sorted(pair_ids)
    images = re.findall(r'<img alt="[^"]*" data-file="([^"]+)" src="([^"]+)">', page)
    assert len(images) == len(CHARTS) + len(pair_ids)
    for name, src in images:
        assert src.startswith("data:image/png;base64,"), name
        embedded = base64.b64decode(src.split(",", 1)[1])
        on_disk = (report_dir / name).read_bytes()
        assert embedded == on_disk and on_disk.startswith(PNG_SIGNATURE), name
        with Image.open(io.BytesIO(on_disk)) as image:
            image.verify()  # a truncated or corrupt PNG raises here
        assert b"http" not in on_disk, name
    return page


# --------------------------------------------------------------------------------------------- at stop


def test_report_written_at_stop_has_every_chart_and_pair_and_matches_the_journal(demo_run) -> None:
    proc, tmp_path = demo_run
    session = _session(tmp_path)
    report_dir = tmp_path / "logs" / "reports" / session.stem
    assert f"session report written to {report_dir / 'report.html'}" in proc.stderr
    pair_ids = [p["pair_id"] for p in read_json(PROJECT_DIR / "pairs_config.json")["pairs"] if p.get("enabled", True)]
    page = _assert_report(report_dir, pair_ids)
    stats = read_json(session)
    assert stats["session_id"] and stats["session_id"] in page
    series = read_json(session.with_name(session.name.replace("session-", "series-")))
    assert series["session_id"] == stats["session_id"]
    # the per-pair PnL in the report is the journal's, exactly, and there was PnL to show
    journal_nets = _journal_nets(Path(series["journal"]))
    assert sum(len(v) for v in journal_nets.values()) > 0, "no round trip closed: the test guards nothing"
    nets = _pair_nets(page)
    for pair in pair_ids:
        assert nets[pair] == sum(journal_nets.get(pair, []), Decimal(0)), pair
    assert nets["TOTAL"] == sum((sum(v) for v in journal_nets.values()), Decimal(0))
    # one entry marker per round trip of the pair, and bar samples were recorded live
    with sqlite3.connect(series["journal"]) as db:
        trips = dict(db.execute("SELECT pair_id, COUNT(*) FROM round_trips GROUP BY pair_id").fetchall())
    for pair in pair_ids:
        section = page.split(f'data-pair="{pair}">', 1)[1].split("</section>", 1)[0]
        assert re.search(rf"\b{trips.get(pair, 0)} entries,", section), (pair, section[:300])
        samples = series["pairs"][pair]["samples"]
        assert samples and all(b[0] > a[0] for a, b in zip(samples, samples[1:])), pair  # one per bar, in order
        bar_ms = series["pairs"][pair]["bar_seconds"] * 1000
        assert all(s[0] % bar_ms == 0 for s in samples), pair  # at bar closes


def test_trades_jsonl_lines_carry_time_mode_and_the_session_id(demo_run) -> None:
    _, tmp_path = demo_run
    stats = read_json(_session(tmp_path))
    lines = (tmp_path / "logs" / "trades.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) > 10
    started = datetime.fromisoformat(stats["started_at_utc"])
    stopped = datetime.fromisoformat(stats["stopped_at_utc"]) + timedelta(seconds=1)
    for line in lines:
        event = json.loads(line)
        assert list(event)[:5] == ["ts", "ts_ms", "mode", "session_id", "event"], line
        assert ISO_MS_UTC.fullmatch(event["ts"]), line
        moment = datetime.strptime(event["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert int(moment.timestamp() * 1000 + 0.5) == event["ts_ms"], line
        assert started - timedelta(seconds=1) <= moment <= stopped, line
        assert event["mode"] == "demo" and event["session_id"] == stats["session_id"], line


# --------------------------------------------------------------------------------------------- the CLI


def test_report_command_rebuilds_a_session_report_from_its_files(demo_run) -> None:
    _, tmp_path = demo_run
    session = _session(tmp_path)
    report_dir = tmp_path / "logs" / "reports" / session.stem
    before = _pair_nets((report_dir / "report.html").read_text(encoding="utf-8"))
    shutil.rmtree(report_dir)
    proc = run_main(["report", "--session", str(session), "--config", str(tmp_path / "config.json")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [str(report_dir / "report.html")]
    pair_ids = [p["pair_id"] for p in read_json(PROJECT_DIR / "pairs_config.json")["pairs"] if p.get("enabled", True)]
    page = _assert_report(report_dir, pair_ids)
    assert _pair_nets(page) == before


@pytest.mark.parametrize("args, needle", [
    (["--session", "no-such-session.json"], "no-such-session.json: no such file"),
    (["--since", "2026-13-45"], "--since '2026-13-45': expected an ISO date"),
    (["--since", "yesterday"], "--since 'yesterday': expected an ISO date"),
    (["--since", "2026-01-01"], "journal-paper.sqlite: no such file"),  # no paper run yet in this folder
])
def test_report_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args: list[str], needle: str) -> None:
    shutil.copy(PROJECT_DIR / "config.json", tmp_path / "config.json")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = run_main(["report", *args, "--config", str(tmp_path / "config.json")], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


class PaperJournal(Journal):
    """The engine's real journal, created for the paper mode (the rig opens demo journals)."""

    @classmethod
    def open(cls, path: Path, *, mode: Any, **kwargs: Any) -> Journal:  # type: ignore[override]
        return super().open(path, mode="paper", **kwargs)


async def test_report_since_covers_the_configured_modes_journal_from_that_date(make_rig, tmp_path: Path) -> None:
    """``report --since DATE``: a paper journal written by the engine against the simulator (two
    pairs, an entry and an exit each); the report's PnL per pair is the journal's, and a date after
    the trips leaves them out."""
    state = tmp_path / "state"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH), journal_cls=PaperJournal,
                             journal_path=state / "journal-paper.sqlite")
        for pair in ("EOS_AXS", "BTC_ETH"):
            for kind in (SignalType.ENTER_LONG_SPREAD, SignalType.EXIT):
                result = await rig.engine.execute_signal(rig.signal(pair, kind))
                assert result.status is ExecutionStatus.EXECUTED, result
    config = read_json(PROJECT_DIR / "config.json")
    config["storage"]["dir"], config["logging"]["dir"] = "state", "logs"
    write_json(tmp_path / "config.json", config)
    trips = rig.journal.round_trips()
    assert len(trips) == 2 and all(not t.is_open for t in trips)
    day = datetime.fromtimestamp(min(t.opened_ts_ms for t in trips) / 1000, tz=timezone.utc).date()
    pair_ids = sorted({*(p["pair_id"] for p in read_json(PROJECT_DIR / "pairs_config.json")["pairs"]), "EOS_AXS", "BTC_ETH"})

    def report(since: str) -> tuple[subprocess.CompletedProcess[str], str]:
        proc = run_main(["report", "--since", since, "--config", str(tmp_path / "config.json")], cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc, Path(proc.stdout.strip()).read_text(encoding="utf-8")

    proc, page = await asyncio.to_thread(report, day.isoformat())
    assert Path(proc.stdout.strip()) == tmp_path / "logs" / "reports" / f"since-{day}-paper" / "report.html"
    _assert_report(Path(proc.stdout.strip()).parent, pair_ids)
    nets = _pair_nets(page)
    journal = _journal_nets(state / "journal-paper.sqlite")
    assert {p: nets[p] for p in journal} == {p: sum(v, Decimal(0)) for p, v in journal.items()}
    assert nets["TOTAL"] == sum(t.net_pnl for t in trips) != 0
    section = page.split('data-pair="BTC_ETH">', 1)[1].split("</section>", 1)[0]
    assert "1 entries, 1 exits" in section and "thresholds unknown" in section  # not in pairs_config.json
    later = (day + timedelta(days=1)).isoformat()
    _, page = await asyncio.to_thread(report, later)
    assert _pair_nets(page)["TOTAL"] == 0 and "1 entries" not in page


# --------------------------------------------------------------------------------------------- at stop, failing


def _recorder(tmp_path: Path) -> tuple[Any, Journal]:
    from app.series import SeriesRecorder
    from core.config import load_app_config, load_pairs_config, signal_params
    from signals.generator import SignalGenerator

    config = load_app_config(PROJECT_DIR / "config.json")
    pairs = load_pairs_config(PROJECT_DIR / "pairs_config.json", config.signal, risk=config.risk)[:2]
    journal = Journal.open(tmp_path / "journal.sqlite", mode="paper")
    gens = {p.pair_id: SignalGenerator(signal_params(config.signal, p)) for p in pairs}
    return SeriesRecorder(gens, journal=journal), journal


async def test_a_report_that_cannot_be_written_is_one_error_line_and_the_statistics_stay(tmp_path: Path) -> None:
    from app.session_report import report_at_stop

    series, journal = _recorder(tmp_path)
    logs = tmp_path / "logs"
    stats = SessionStatsFile.write(logs)
    (logs / "reports").write_text("a file where the reports folder should be")
    records: list[Any] = []
    sink = logger.add(lambda m: records.append(m.record), level="DEBUG")
    try:
        path = await report_at_stop(series=series, session_json=stats, logs_dir=logs, session_id="s1", mode="paper")
    finally:
        logger.remove(sink)
        journal.close()
    assert path is None
    errors = [r["message"] for r in records if r["level"].name == "ERROR"]
    assert len(errors) == 1 and "session report not written:" in errors[0] and "reports" in errors[0], errors
    assert read_json(stats)["session_id"] == "s1"  # the statistics are untouched


async def test_a_report_slower_than_its_bound_is_abandoned_with_an_error_line(tmp_path: Path) -> None:
    from app.session_report import report_at_stop

    series, journal = _recorder(tmp_path)
    logs = tmp_path / "logs"
    stats = SessionStatsFile.write(logs)
    records: list[Any] = []
    sink = logger.add(lambda m: records.append(m.record), level="DEBUG")
    try:
        path = await report_at_stop(series=series, session_json=stats, logs_dir=logs, session_id="s1", mode="paper",
                                    timeout_seconds=0.001)
    finally:
        logger.remove(sink)
    assert path is None
    errors = [r["message"] for r in records if r["level"].name == "ERROR"]
    assert len(errors) == 1 and "drawing took longer than 0.001s" in errors[0], errors
    assert f"report --session {stats}" in errors[0]
    journal.close()


class SessionStatsFile:
    @staticmethod
    def write(logs: Path) -> Path:
        from core.stats import SessionStats

        stats = SessionStats(mode="PAPER", session_id="s1")
        stats.mark_stopped("test")
        return stats.write_json(logs)


async def test_a_zero_bound_writes_only_the_series_file(tmp_path: Path) -> None:
    from app.session_report import report_at_stop

    series, journal = _recorder(tmp_path)
    logs = tmp_path / "logs"
    stats = SessionStatsFile.write(logs)
    try:
        path = await report_at_stop(series=series, session_json=stats, logs_dir=logs, session_id="s1", mode="paper",
                                    timeout_seconds=0)
    finally:
        journal.close()
    assert path is None and not (logs / "reports").exists()
    sidecar = read_json(logs / stats.name.replace("session-", "series-"))
    assert sidecar["session_id"] == "s1" and set(sidecar["pairs"]) == set(series.samples)
