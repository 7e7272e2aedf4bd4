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
