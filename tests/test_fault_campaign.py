"""The fault campaign (``bench/fault_campaign.py``) at 100 executions, and its audit's definitions.

The campaign is the acceptance test of the five protocols under faults: 100 signals through
the real engine, real ccxt and the in-process simulator with 20% partial fills, 5% leg rejects,
5% lost responses, WebSocket drops and HTTP 429 bursts, then an audit of the exchange against
the journal. The three numbers must be zero, and every protocol the faults make certain to be
needed must have acted.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest

from bench.fault_campaign import (CampaignOptions, PairLegs, audit_book, build_parser, main, run_campaign,
                                  within_one_step)
from core.types import PairState
from execution.journal_models import Leg, OrderPurpose, OrderRecord, OrderStatus, OrderType, PairPosition, Side


@pytest.mark.slow
async def test_campaign_of_100_executions_leaves_no_naked_leg_orphan_or_mismatch(tmp_path: Path) -> None:
    # The WebSocket drop and the 429 bursts come faster than the defaults (30 s, 5 s) so that a
    # run of a few seconds sees both; everything else is the campaign's default.
    options = CampaignOptions(executions=100, seed=7, ws_drop_seconds=2.0, burst_every_seconds=1.0,
                              workdir=tmp_path, progress=False)
    async with asyncio.timeout(240):
        report = await run_campaign(options)
    assert (report["naked_legs"], report["orphan_open_orders"], report["journal_mismatches"]) == (0, 0, 0), \
        json.dumps(report["problems"], indent=2)
    assert report["duplicate_client_order_ids"] == 0
    assert report["fill_record_gaps"] == 0
    assert report["executions"] == 100
    assert report["signals"]["entries"] > 0 and report["signals"]["exits"] > 0
    # Every protocol the injected faults make necessary acted (counters: engine.counters).
    protocols = report["protocols"]
    assert protocols["partial_fills_repaired"] > 0  # P2: 20% of fills are cut
    assert protocols["top_ups"] + protocols["trims"] > 0
    assert protocols["ghost_lookups"] > 0 and protocols["ghosts_adopted"] > 0  # P3: 5% of responses lost
    assert protocols["orders_rejected"] > 0  # 5% of orders refused for good
    assert protocols["rollbacks"] > 0  # P5: an entry leg refused while the other filled
    assert protocols["exit_retries"] > 0  # an exit leg cut or refused, retried
    assert protocols["reconciliations"] >= 3  # startup, periodic, final
    assert report["refused_by_reason"].get("duplicate_signal", 0) >= 1  # P1: a re-submitted signal id
    assert report["outcomes"].get("EXECUTED:ok", 0) > 50
    # The faults were really injected, and the market data lived through the WebSocket drops.
    injected = report["faults"]["injected"]
    assert injected.get("response_lost", 0) > 0 and injected.get("order_rejected", 0) > 0
    assert injected.get("http_429", 0) > 0
    assert report["faults"]["ws_connections_dropped"] > 0
    assert report["market_data"]["reconnects"] > 0
    # A second reconciliation after the final one finds nothing left to do.
    assert report["second_reconciliation"] == {}
    assert report["halted_pairs"] == [] and report["blocked_pairs"] == {}


def test_cli_help_and_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--executions", "--seed", "--crash-restarts", "--ws-drop-seconds", "--burst-every"):
        assert flag in text
    args = build_parser().parse_args(["--executions", "1000", "--seed", "1"])
    assert (args.executions, args.seed) == (1000, 1)


# -- the audit's definitions, on hand-made books --------------------------------------------------

PAIRS = [PairLegs("P1", "AAAUSDT", "BBBUSDT", Decimal("1"), Decimal("0.1")),
         PairLegs("P2", "CCCUSDT", "BBBUSDT", Decimal("1"), Decimal("0.1"))]


def _order(cid: str, pair: str, leg: str, side: str, qty: str, filled: str, status: OrderStatus,
           purpose: OrderPurpose = OrderPurpose.ENTRY, signal: str = "s1") -> OrderRecord:
    return OrderRecord(cid, signal, pair, Leg(leg), purpose, 0, "X/USDT:USDT", Side(side), OrderType.MARKET,
                       Decimal(qty), None, False, status, "1", Decimal(filled), None, Decimal(0), None, 0, 0)


def _sim(cid: str, symbol: str, side: str, qty: str, filled: str, status: str) -> dict[str, object]:
    return {"clientOrderId": cid, "symbol": symbol, "side": side.upper(), "origQty": qty, "executedQty": filled,
            "status": status, "account": "default"}


def _book(qa: str, qb: str, *, sim_b: str | None = None, status_b: str = "FILLED") -> dict[str, object]:
    orders = {"P1": [_order("pb-a", "P1", "a", "sell", "100", qa, OrderStatus.FILLED),
                     _order("pb-b", "P1", "b", "buy", "50", qb, OrderStatus(status_b) if qb != "0" else
                            OrderStatus.REJECTED)]}
    sim = [_sim("pb-a", "AAAUSDT", "sell", "100", qa, "FILLED")]
    if qb != "0":
        sim.append(_sim("pb-b", "BBBUSDT", "buy", "50", qb, "FILLED" if status_b == "FILLED" else "EXPIRED"))
    state = PairState.LONG_SPREAD if qb != "0" else PairState.HALTED
    positions = {"P1": PairPosition("P1", state, -Decimal(qa), Decimal(qb), "A", "B", halted_reason="x"),
                 "P2": None}
    return dict(pairs=PAIRS, journal_orders=orders, journal_positions=positions, sim_orders=sim,
                sim_positions={"AAAUSDT": -Decimal(qa), "BBBUSDT": Decimal(sim_b if sim_b is not None else qb)})


def test_audit_counts_a_hedged_pair_as_clean() -> None:
    result = audit_book(**_book("100", "50"))
    assert result.clean and result.counts()["duplicate_client_order_ids"] == 0, result.details()


def test_audit_finds_a_naked_leg_and_an_unexplained_symbol_position() -> None:
    naked = audit_book(**_book("100", "0"))
    assert any("naked" in line for line in naked.naked_legs)
    off = audit_book(**_book("100", "50", sim_b="52"))
    assert any("BBBUSDT" in line for line in off.naked_legs)
    assert any("BBBUSDT" in line for line in off.journal_mismatches)


def test_audit_finds_more_than_one_lot_step_of_hedge_imbalance() -> None:
    result = audit_book(**_book("100", "48", status_b="EXPIRED"))
    assert any("imbalance" in line for line in result.naked_legs), result.details()
    assert within_one_step(Decimal(100), Decimal("49.9"), (Decimal(100), Decimal(50)), Decimal(1), Decimal("0.1"))


def test_audit_finds_orphans_duplicates_and_journal_mismatches() -> None:
    book = _book("100", "50")
    book["sim_orders"] = [*book["sim_orders"], _sim("pb-a", "AAAUSDT", "sell", "100", "0", "NEW"),
                          _sim("pb-ghost", "CCCUSDT", "buy", "5", "5", "FILLED")]
    result = audit_book(**book)
    assert result.orphan_open_orders and result.duplicate_client_order_ids == ["pb-a x2"]
    assert any("pb-ghost" in line and "not in the journal" in line for line in result.journal_mismatches)
