"""Paper mode, proven offline: market data from a standalone simulator, fills on paper only.

``python main.py --duration N`` runs as a user runs it (``dry_run: true``), with
``exchange.base_url`` pointing at a ``python -m simulator`` process instead of Binance
(fixture ``paper_bot_dir``). The settings make it trade within seconds. Then:

* the simulator's order log is EMPTY and its account holds nothing: not one order left the bot,
  although its market data (klines for the warm-up, the bid/ask stream) came from there;
* the paper journal has filled orders, and the saved statistics count trades executed;
* the paper account file (``paper-account.json``, the paper "exchange") and the paper journal
  agree order by order and position by position (the audit of ``bench/fault_campaign.py``);
* a second run restores the account from that file: its startup reconciliation finds nothing
  to explain, block or repair, and every pair comes back in the journal's state.
"""

from __future__ import annotations

import ast
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.fault_campaign import AuditResult, PairLegs, audit_journal, sim_account_positions
from execution.journal import Journal
from tests.conftest import SimulatorProcess, read_json, run_main, write_json

_RECONCILED = re.compile(r"reconciliation \(startup\): (\{.*\})")


def _trading_settings(bot_dir: Path) -> list[str]:
    """Thresholds the replayed z-scores cross every few seconds; positions held until the other
    side's entry level, so some are open when a run ends."""
    config = read_json(bot_dir / "config.json")
    # 30 bars reach |z| <= 29/sqrt(30) = 5.29 at most (the config refuses a stop beyond): the stop
    # sits just inside, so it all but never fires.
    config["signal"].update(lookback_bars=30, entry_threshold=0.8, exit_threshold=-0.8, stop_loss_threshold=5.25,
                            cooldown_seconds=0, stop_loss_cooldown_seconds=0, max_holding_bars=100_000)
    config["execution"].update(notional_per_pair_usdt=300, duplicate_window_seconds=0)
    config["risk"].update(max_open_pairs=10, max_gross_exposure_usdt=1e6, max_daily_loss_usdt=1e6)
    write_json(bot_dir / "config.json", config)
    pairs = read_json(bot_dir / "pairs_config.json")
    pairs["pairs"] = [{k: v for k, v in p.items() if k in ("pair_id", "leg_a", "leg_b", "hedge_ratio")}
                      for p in pairs["pairs"]]
    write_json(bot_dir / "pairs_config.json", pairs)
    return ["--config", str(bot_dir / "config.json"), "--pairs", str(bot_dir / "pairs_config.json")]


def _paper_audit(bot_dir: Path, sim: SimulatorProcess) -> tuple[AuditResult, dict[str, str]]:
    """The paper journal against the paper account file, as the campaign audits a venue."""
    account = read_json(bot_dir / "logs" / "paper-account.json")
    engine = account["engine"]
    orders = [{"clientOrderId": o["client_order_id"], "symbol": o["symbol"], "side": o["side"],
               "origQty": o["orig_qty"], "executedQty": o["executed_qty"], "status": o["status"],
               "account": o["account"]} for o in engine["orders"]]
    positions = {s: {"amount": p[0]} for s, p in engine["accounts"]["paper"]["positions"].items()}
    steps = {m["symbol"]: Decimal(m["stepSize"]) for m in sim.admin("/sim/markets")}
    legs = []
    for p in read_json(bot_dir / "pairs_config.json")["pairs"]:
        a, b = p["leg_a"].replace("/", ""), p["leg_b"].replace("/", "")
        legs.append(PairLegs(p["pair_id"], a, b, steps[a], steps[b]))
    with Journal.open(bot_dir / "logs" / "journal-paper.sqlite", mode="paper") as journal:
        audit = audit_journal(journal, legs, sim_orders=orders, account="paper",
                              sim_positions=sim_account_positions({"paper": {"positions": positions}}, "paper"))
        states = {p.pair_id: p.state.value for p in journal.all_positions()}
        audit.derived["_filled_orders"] = [str(sum(
            o.filled_qty > 0 for leg in legs for o in journal.orders_for_pair(leg.pair_id)))]
    return audit, states


def _startup_report(output: str) -> dict[str, Any]:
    match = _RECONCILED.search(output)
    assert match, output[-3000:]
    return ast.literal_eval(match.group(1))


@pytest.mark.slow
def test_paper_bot_trades_on_simulator_quotes_sends_nothing_and_restores_on_restart(
        paper_bot_dir: Path, simulator_process: SimulatorProcess) -> None:
    bot_dir = paper_bot_dir
    args = _trading_settings(bot_dir)

    first = run_main([*args, "--duration", "6"], cwd=bot_dir, timeout=90)
    output = first.stdout + first.stderr  # the console log is on stderr
    assert first.returncode == 0, output[-3000:]
    assert "mode PAPER" in output and simulator_process.base_url in output

    # Not one order reached the venue the market data came from.
    assert simulator_process.admin("/sim/orders") == []
    assert sim_account_positions(simulator_process.admin("/sim/positions")) == {}
    # ... yet the bot traded: on paper, in its paper journal, in its statistics.
    stats = read_json(sorted((bot_dir / "logs").glob("session-*.json"))[-1])
    assert stats["mode"] == "PAPER"
    assert stats["trades_executed"] > 0 and stats["signals_processed"] >= stats["trades_executed"]
    audit, states = _paper_audit(bot_dir, simulator_process)
    assert int(audit.derived.pop("_filled_orders")[0]) > 0
    assert audit.clean and not audit.duplicate_client_order_ids, audit.details()
    in_position = {p: s for p, s in states.items() if s in ("LONG_SPREAD", "SHORT_SPREAD")}
    assert in_position, states  # something to restore

    second = run_main([*args, "--duration", "2"], cwd=bot_dir, timeout=60)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert "paper: account restored from" in output
    report = _startup_report(output)
    assert not report.get("blocked") and not report.get("repaired") and not report.get("external"), report
    assert not report.get("orders_not_found") and not report.get("unresolved"), report
    # journal states, verified by the book; a pair that never traded has no journal row and restores FLAT
    assert set(states) <= set(report["restored"])
    assert report["restored"] == {**{p: "FLAT" for p in report["restored"]}, **states}
    for pair_id, state in in_position.items():
        assert f"{pair_id}: state restored to {state}" in output
    assert "kept out of trading" not in output
    assert simulator_process.admin("/sim/orders") == []
    audit, _ = _paper_audit(bot_dir, simulator_process)
    audit.derived.pop("_filled_orders")
    assert audit.clean, audit.details()
