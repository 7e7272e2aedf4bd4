"""Journal schema v4: fees charged in another asset and funding payments (issue 11 items 4, 5).

Pure journal rules on a real SQLite file; the end-to-end path through ccxt and the simulator is
in tests/test_fees_funding.py.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest

from core.types import PairState
from execution.journal import SCHEMA_VERSION, FillConflictError, Journal, PairPosition, migrate

D = Decimal
PAIR = "EOS_AXS"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "journal.sqlite", mode="demo", now_ms=Clock()) as j:
        yield j


def _trip(j: Journal, *, opened_ms: int = 1_000) -> int:
    trip = j.open_round_trip(PAIR, entry_signal_id="sig-1", opened_ts_ms=opened_ms)
    j.save_position(PairPosition(PAIR, PairState.LONG_SPREAD, D("-10"), D("2"), "EOSUSDT", "AXSUSDT",
                                 entry_signal_id="sig-1", entry_ts_ms=opened_ms, round_trip_id=trip))
    return trip


def _filled_order(j: Journal, cid: str, side: str, symbol: str, qty: str, signal_id: str = "sig-1") -> None:
    j.record_order_intent(client_order_id=cid, signal_id=signal_id, pair_id=PAIR, leg="a" if symbol == "EOSUSDT" else "b",
                          purpose="ENTRY", attempt=0, symbol=symbol, side=side, order_type="market", qty=D(qty))
    j.update_order(cid, status="FILLED")


def test_a_v3_file_migrates_to_v4_and_its_fills_are_usdt_fees(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(raw, mode="demo", target_version=3) == 3
        raw.execute("INSERT INTO orders (client_order_id, signal_id, pair_id, leg, purpose, attempt, symbol, side,"
                    " order_type, qty, reduce_only, status, filled_qty, fee, created_ms, updated_ms)"
                    " VALUES ('c1', 's', 'P', 'a', 'ENTRY', 0, 'EOSUSDT', 'buy', 'market', '1', 0, 'FILLED', '1',"
                    " '0.01', 1, 1)")
        raw.execute("INSERT INTO fills VALUES ('EOSUSDT', 't1', 'c1', 'P', 'buy', '1', '0.7', '0.01', 1, 1)")
    finally:
        raw.close()
    with Journal.open(path, mode="demo") as j:
        assert j.schema_version == SCHEMA_VERSION == 5
        assert j.net_filled("EOSUSDT") == D("1")  # v5 counted the order filled before it
        (fill,) = j.fills_for_order("c1")
        assert (fill.fee, fill.fee_asset, fill.fee_native) == (D("0.01"), "USDT", None)
        assert j.funding_since(0) == []


def test_a_bnb_fee_keeps_its_asset_and_amount_and_a_repeat_is_compared_on_the_bnb(journal: Journal) -> None:
    _filled_order(journal, "c1", "buy", "AXSUSDT", "2")
    assert journal.record_fill("c1", trade_id="7", qty=D("2"), price=D("5"), fee=D("0.0045"), ts_ms=5,
                               fee_asset="BNB", fee_native=D("0.00001846"))
    (fill,) = journal.fills_for_order("c1")
    assert (fill.fee, fill.fee_asset, fill.fee_native) == (D("0.0045"), "BNB", D("0.00001846"))
    # the same trade read again later, converted at another BNB price: the same fill, not a conflict
    assert not journal.record_fill("c1", trade_id="7", qty=D("2"), price=D("5"), fee=D("0.0046"), ts_ms=5,
                                   fee_asset="BNB", fee_native=D("0.00001846"))
    with pytest.raises(FillConflictError):
        journal.record_fill("c1", trade_id="7", qty=D("2"), price=D("5"), fee=D("0.0046"), ts_ms=5,
                            fee_asset="BNB", fee_native=D("0.00002"))


def test_funding_is_idempotent_by_payment_id_and_tied_to_the_round_trip_open_at_its_time(journal: Journal) -> None:
    trip = _trip(journal, opened_ms=1_000)
    assert journal.record_funding(symbol="AXSUSDT", payment_id="11", amount=D("-0.5"), asset="USDT", ts_ms=2_000)
    assert not journal.record_funding(symbol="AXSUSDT", payment_id="11", amount=D("-0.5"), asset="USDT", ts_ms=2_000)
    with pytest.raises(FillConflictError):
        journal.record_funding(symbol="AXSUSDT", payment_id="11", amount=D("-0.6"), asset="USDT", ts_ms=2_000)
    assert journal.record_funding(symbol="BTCUSDT", payment_id="12", amount=D("-1"), asset="USDT", ts_ms=2_000)
    assert journal.record_funding(symbol="EOSUSDT", payment_id="13", amount=D("0.1"), asset="USDT", ts_ms=500)
    by_id = {f.payment_id: f for f in journal.funding_since(0)}
    assert by_id["11"].round_trip_id == trip and by_id["11"].pair_id == PAIR
    assert by_id["12"].round_trip_id is None  # not a symbol of any pair
    assert by_id["13"].round_trip_id is None  # before the trip opened
    # the daily-loss figure counts funding of open trips and unattributed funding at once
    assert journal.realized_pnl_since(0) == D("-1.4")
    assert journal.realized_pnl_since(1_500) == D("-1.5")


def test_a_round_trip_net_includes_its_funding_and_late_funding_reprices_it(journal: Journal) -> None:
    trip = _trip(journal, opened_ms=1_000)
    _filled_order(journal, "a-in", "sell", "EOSUSDT", "10")
    _filled_order(journal, "a-out", "buy", "EOSUSDT", "10")
    journal.record_fill("a-in", trade_id="1", qty=D("10"), price=D("0.8"), fee=D("0.004"), ts_ms=1_001)
    journal.record_fill("a-out", trade_id="2", qty=D("10"), price=D("0.7"), fee=D("0.0035"), ts_ms=3_000)
    journal.record_funding(symbol="EOSUSDT", payment_id="21", amount=D("-0.25"), asset="USDT", ts_ms=2_000)
    closed = journal.close_round_trip(trip, exit_signal_id=None, closed_ts_ms=3_000, exit_reason="EXIT")
    assert (closed.gross_pnl, closed.fees, closed.funding) == (D("1.0"), D("0.0075"), D("-0.25"))
    assert closed.net_pnl == D("0.7425") == journal.get_round_trip(trip).net_pnl
    assert journal.realized_pnl_since(0) == D("0.7425")  # counted once: in the closed trip
    # a payment of the trip's time read after it closed
    journal.record_funding(symbol="AXSUSDT", payment_id="22", amount=D("-0.1"), asset="USDT", ts_ms=2_500)
    after = journal.get_round_trip(trip)
    assert (after.funding, after.net_pnl) == (D("-0.35"), D("0.6425"))
    assert journal.realized_pnl_since(0) == D("0.6425")
    assert journal.events("round_trip_repriced")[-1]["detail"]["funding_after"] == "-0.35"
