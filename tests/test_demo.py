"""``python main.py demo`` end to end: offline, real ccxt against the in-process simulator."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR, read_json, run_main


@pytest.fixture(scope="module")
def demo_8s(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One ``demo --duration 8`` run shared by the tests that read its output. At 1200x (32 bars of
    5m): the shipped pairs' windows are two half-lives (93 to 448 bars, README "Choosing pairs"), so
    at 600x 8 s need not close a round trip, and the final screen's realized figures need one."""
    tmp_path = tmp_path_factory.mktemp("demo8")
    shutil.copy(PROJECT_DIR / "config.json", tmp_path / "config.json")
    proc = run_main(["demo", "--config", str(tmp_path / "config.json"), "--duration", "8", "--speed", "1200"],
                    cwd=tmp_path, timeout=120)
    return proc, tmp_path


def test_demo_streams_warms_all_pairs_trades_and_exits_0(demo_8s) -> None:
    proc, tmp_path = demo_8s
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
    for line in ("FINAL STATISTICS", "Signals processed:", "Trades executed:", "Decisions:"):
        assert line in proc.stdout
    assert "Success rate" not in proc.stdout  # executed / signals is not a rate of success; JSON only
    assert "SIGNAL RECEIVED #1 |" in proc.stderr and "TRADE EXECUTED #1 | Pair: " in proc.stderr
    assert list((tmp_path / "logs").glob("journal-demo-*.sqlite"))


MONEY = re.compile(r"-?\d{1,3}(,\d{3})*\.\d{2}")


def _row(stdout: str, label: str) -> list[str]:
    """The cells of the performance table's row ``label`` (this session, all time)."""
    line = next(line for line in stdout.splitlines() if line.startswith(f"│ {label}"))
    return [cell.strip() for cell in line.strip("│").split("│")][1:]


def test_demo_final_screen_shows_performance_money_to_cents_and_what_is_left_open(demo_8s) -> None:
    """Issue 12 item 1 on a real 8 s demo: the figures, money right-aligned to 2 decimals and equal to
    the session file's exact figures, the positions left open, zero counters only in the file."""
    proc, tmp_path = demo_8s
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = read_json(next((tmp_path / "logs").glob("session-*.json")))
    perf = stats["sections"]["performance"]
    session = perf["session"]
    out = proc.stdout
    for label in ("Net PnL", "  realized", "  unrealized", "  fees paid", "  funding received", "Equity at start",
                  "Equity at end", "Return", "Round trips", "Win rate", "Profit factor", "Expectancy per round trip",
                  "Average holding time", "Max drawdown", "Sharpe", "Sortino", "Best pair", "Worst pair"):
        assert len(_row(out, label)) == 2, label
    cents = lambda key: f"{Decimal(session[key]).quantize(Decimal('0.01')):,.2f}"  # noqa: E731
    for label, key in (("Net PnL", "net_pnl_usdt"), ("  realized", "realized_usdt"),
                       ("  unrealized", "unrealized_usdt"), ("Equity at start", "equity_start_usdt"),
                       ("Equity at end", "equity_end_usdt")):
        cell = _row(out, label)[0]
        assert MONEY.fullmatch(cell) and cell == cents(key), (label, cell, session[key])
    line = next(line for line in out.splitlines() if line.startswith("│ Net PnL"))
    assert line.split("│")[2].endswith(" ")  and line.split("│")[2].startswith("  ")  # right-aligned
    # honest numbers: net = realized + unrealized, realized = the journal's closed trips of the run
    assert Decimal(session["net_pnl_usdt"]) == Decimal(session["realized_usdt"]) + Decimal(session["unrealized_usdt"])
    [journal] = (tmp_path / "logs").glob("journal-demo-*.sqlite")
    with sqlite3.connect(journal) as db:
        nets = [Decimal(r[0]) for r in db.execute("SELECT net_pnl FROM round_trips WHERE closed_ts_ms IS NOT NULL")]
    assert session["round_trips"] == len(nets) > 0 and Decimal(session["realized_usdt"]) == sum(nets)
    assert _row(out, "Round trips") == [str(len(nets)), str(len(nets))]  # a fresh demo journal: all time = run
    assert session["equity_samples"] >= 2 and len(perf["equity_curve"]) == session["equity_samples"]
    # positions open at stop: each listed with its unrealized PnL, and the "left open" line
    assert perf["open_positions"], "no position open at stop: the test did not exercise what it guards"
    assert f"{len(perf['open_positions'])} position(s) left open at shutdown" in out
    for p in perf["open_positions"]:
        row = next(line for line in out.splitlines() if line.startswith(f"│ {p['pair']} ") and p["qty_a"] in line)
        assert row.rstrip(" │").endswith(f"{Decimal(p['unrealized_usdt']).quantize(Decimal('0.01')):,.2f}")
    # protocol counters: zeros stay in the file, off the screen; non-zero ones on it
    protocols = stats["sections"]["execution"]["protocols"]
    zeros = [k for k, v in protocols.items() if v == 0]
    assert zeros and protocols["orders_sent"] > 0
    for name in zeros:
        assert f"protocols.{name} " not in out, name
    assert "protocols.orders_sent " in out


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
