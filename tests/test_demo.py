"""``python main.py demo`` end to end: offline, real ccxt against the in-process simulator."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import PROJECT_DIR, read_json, run_main


def test_demo_streams_warms_all_pairs_trades_and_exits_0(tmp_path: Path) -> None:
    shutil.copy(PROJECT_DIR / "config.json", tmp_path / "config.json")
    proc = run_main(["demo", "--config", str(tmp_path / "config.json"), "--duration", "8", "--speed", "600"],
                    cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sessions = list((tmp_path / "logs").glob("session-*.json"))
    assert len(sessions) == 1
    stats = read_json(sessions[0])
    sections = stats["sections"]
    assert stats["mode"] == "DEMO"
    assert sections["market_data"]["quotes_processed"] > 1000
    assert sections["signals"]["warm_pairs"] == 10
    assert stats["signals_processed"] > 0 and stats["trades_executed"] > 0
    execution = sections["execution"]
    assert execution["outcomes"].get("EXECUTED", 0) == stats["trades_executed"]
    assert execution["latency_ms"]["ack_p50"] is not None
    assert execution["halted_pairs"] == []
    pnl = sections["pnl"]
    assert len(pnl["rows"]) == 10
    assert {"round_trips", "wins", "realized_usdt", "unrealized_usdt", "fees_usdt"} <= pnl["total"].keys()
    for line in ("FINAL STATISTICS", "Signals processed:", "Trades executed:", "Success rate:"):
        assert line in proc.stdout
    assert "SIGNAL RECEIVED #1 |" in proc.stderr and "TRADE EXECUTED #1 | Pair: " in proc.stderr
    assert list((tmp_path / "logs").glob("journal-demo-*.sqlite"))


def test_demo_40s_never_enters_beyond_the_stop_and_says_each_refusal_once(tmp_path: Path) -> None:
    """Issue 10, defects 3 and 9, on the bundled data at --speed 600 for 40 s: no entry executes
    with |z| at or above its pair's stop, and a persistent refusal is one INFO line per pair and
    cause (its re-checks go to the debug log only)."""
    import re
    import sqlite3

    shutil.copy(PROJECT_DIR / "config.json", tmp_path / "config.json")
    proc = run_main(["demo", "--config", str(tmp_path / "config.json"), "--duration", "40", "--speed", "600"],
                    cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    config = read_json(tmp_path / "config.json")
    pairs = {p["pair_id"]: p for p in read_json(PROJECT_DIR / "pairs_config.json")["pairs"]}
    default_stop = config["signal"]["stop_loss_threshold"]
    [journal] = (tmp_path / "logs").glob("journal-demo-*.sqlite")
    with sqlite3.connect(journal) as db:
        entries = db.execute("SELECT pair_id, z, status FROM signals WHERE signal_type LIKE 'ENTER_%'").fetchall()
    executed = [(pair, z) for pair, z, status in entries if status == "EXECUTED"]
    assert len(executed) >= 3, entries
    for pair, z in executed:
        stop = pairs[pair].get("stop_loss_z") or default_stop
        assert abs(z) < stop, (pair, z, stop)
    log = (tmp_path / "logs" / "trading_bot.log").read_text()
    refusals = re.findall(r"\| (?:INFO|WARNING) +\| [^|]+\| (\S+) \S+ refused: (\w+)", log)
    counts: dict[tuple[str, str], int] = {}
    for pair, cause in refusals:
        counts[(pair, cause)] = counts.get((pair, cause), 0) + 1
    assert counts, "no refusal in 40 s: the test did not exercise what it guards"
    assert max(counts.values()) == 1, counts
    stats = read_json(next((tmp_path / "logs").glob("session-*.json")))
    assert stats["signals_rechecked"] > 0 and stats["signals_refused"]
