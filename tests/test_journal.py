"""The execution journal: durable, exact, versioned, and strict about order lifecycles."""

from __future__ import annotations

import itertools
import os
import select
import signal
import sqlite3
import subprocess
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

import execution.journal as journal_module
from core.errors import PairsBotError
from core.launch import RunMode
from core.types import PairState, SignalType, TradingSignal
from execution.journal import (
    MIGRATIONS, OPEN_STATUSES, SCHEMA_VERSION, TRANSITIONS, DuplicateOrderError, FillConflictError,
    IllegalTransitionError, InvalidRecordError, Journal, JournalClosedError, JournalError, JournalModeError,
    JournalOpenError, JournalStorageError, OrderPurpose, OrderRecord, OrderStatus, PairPosition, RoundTripStateError,
    SchemaVersionError, UnknownRecordError, migrate)
from tests.conftest import PROJECT_DIR, PYTHON, clean_env

D = Decimal
S = OrderStatus
PAIR = "ETHUSDT-BTCUSDT"


class Clock:
    """A deterministic ms clock that ticks once per reading."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal.open(tmp_path / "logs" / "journal-paper.sqlite", mode="paper", now_ms=Clock()) as j:
        yield j


def make_signal(signal_id: str = "sig-1", *, pair_id: str = PAIR, ts_ms: int = 1_000,
                signal_type: SignalType = SignalType.ENTER_LONG_SPREAD) -> TradingSignal:
    return TradingSignal(signal_id=signal_id, pair_id=pair_id, signal_type=signal_type, z=-2.1, spread=0.5,
                         mean=0.1, std=0.2, mid_a=3000.0, mid_b=60000.0, hedge_ratio=0.8, ts_ms=ts_ms)


def intent(journal: Journal, cid: str = "pb-sig-1-a-0", **overrides: object) -> OrderRecord:
    fields: dict[str, object] = dict(
        client_order_id=cid, signal_id="sig-1", pair_id=PAIR, leg="a", purpose=OrderPurpose.ENTRY, attempt=0,
        symbol="ETHUSDT", side="sell", order_type="market", qty=D("1"))
    fields.update(overrides)
    return journal.record_order_intent(**fields)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- schema and files


def test_open_creates_folders_schema_wal_full_sync_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "journal.sqlite"
    with Journal.open(path, mode="live") as j:
        assert j.schema_version == SCHEMA_VERSION == len(MIGRATIONS) >= 2
        assert j._db().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert j._db().execute("PRAGMA foreign_keys").fetchone()[0] == 1
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"meta", "signals", "orders", "order_events", "fills", "positions", "round_trips"} <= tables
        assert dict(raw.execute("SELECT key, value FROM meta")) == {"mode": "live",
                                                                    "schema_version": str(SCHEMA_VERSION)}
    finally:
        raw.close()


def _v1_file(path: Path, *, mode: str = "live") -> None:
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(raw, mode=mode, target_version=1) == 1
        raw.execute("INSERT INTO orders VALUES ('old-1', 'sig-0', ?, 'b', 'ENTRY', 0, 'BTCUSDT', 'buy', 'market',"
                    " '0.010', NULL, 0, 'ACKED', 'x-9', '0', NULL, '0', NULL, 5, 6)", (PAIR,))
        columns = {r[1] for r in raw.execute("PRAGMA table_info(orders)")}
        assert "round_trip_id" not in columns
    finally:
        raw.close()


def test_v1_file_is_migrated_to_latest_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _v1_file(path)
    with Journal.open(path, mode="live", now_ms=Clock()) as j:
        assert j.schema_version == SCHEMA_VERSION
        old = j.get_order("old-1")
        assert old is not None and old.qty == D("0.010") and old.status is S.ACKED and old.round_trip_id is None
        assert j.update_order("old-1", status=S.FILLED).filled_qty == D("0.010")
        indexes = {r[0] for r in j._db().execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"orders_by_signal", "fills_by_pair", "round_trips_one_open"} <= indexes
    with Journal.open(path, mode="live") as j:  # reopening a migrated file changes nothing
        assert j.schema_version == SCHEMA_VERSION


def test_failed_migration_rolls_back_to_the_old_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.sqlite"
    _v1_file(path)

    def broken_v2(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE orders ADD COLUMN round_trip_id INTEGER")
        raise RuntimeError("disk on fire halfway through v2")

    monkeypatch.setattr(journal_module, "MIGRATIONS", (MIGRATIONS[0], broken_v2))
    with pytest.raises(RuntimeError):
        Journal.open(path, mode="live")
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
        assert "round_trip_id" not in {r[1] for r in raw.execute("PRAGMA table_info(orders)")}
    finally:
        raw.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal.open(path, mode="paper").close()
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    raw.close()
    with pytest.raises(SchemaVersionError, match="newer") as info:
        Journal.open(path, mode="paper")
    assert isinstance(info.value, JournalError) and isinstance(info.value, PairsBotError)


@pytest.mark.parametrize(("created", "opened"), [("live", "paper"), ("paper", "live"), ("demo", "live"),
                                                 ("live", RunMode.PAPER)])
def test_a_file_of_another_mode_is_refused(tmp_path: Path, created: str, opened: object) -> None:
    path = tmp_path / "journal.sqlite"
    Journal.open(path, mode=created).close()
    with pytest.raises(JournalModeError, match=f"created for mode '{created}'"):
        Journal.open(path, mode=opened)  # type: ignore[arg-type]
    with Journal.open(path, mode=created.upper()) as j:  # the owner still opens it, case-insensitively
        assert j.mode.value == created


def test_run_mode_and_bad_mode(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.sqlite", mode=RunMode.DEMO) as j:
        assert j.mode.value == "demo"
    with pytest.raises(InvalidRecordError):
        Journal.open(tmp_path / "k.sqlite", mode="backtest")


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(JournalOpenError):
        Journal.open(path, mode="paper")


def test_a_locked_file_is_a_storage_error_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path, mode="paper", busy_timeout_ms=50) as j:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with pytest.raises(JournalStorageError, match="locked"):
                intent(j)
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert j.get_order("pb-sig-1-a-0") is None
        assert intent(j).status is S.INTENT  # and the journal still works afterwards


def test_use_after_close_raises(tmp_path: Path) -> None:
    j = Journal.open(tmp_path / "j.sqlite", mode="paper")
    j.close()
    j.close()
    with pytest.raises(JournalClosedError):
        j.get_order("x")


# ----------------------------------------------------------------------------- signals


def test_signals_are_recorded_once_even_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path, mode="paper") as j:
        assert j.record_signal(make_signal()) is True
        assert j.record_signal(make_signal()) is False
        j.set_signal_outcome("sig-1", "EXECUTED")
    with Journal.open(path, mode="paper") as j:
        assert j.record_signal(make_signal()) is False
        record = j.get_signal("sig-1")
        assert record is not None and record.signal == make_signal() and record.status == "EXECUTED"
        assert j.get_signal("nope") is None
        j.set_signal_outcome("sig-1", "REJECTED", "max open pairs")
        assert j.get_signal("sig-1").reason == "max open pairs"  # type: ignore[union-attr]
        with pytest.raises(UnknownRecordError):
            j.set_signal_outcome("nope", "EXECUTED")


def test_a_signal_with_nan_figures_is_refused(journal: Journal) -> None:
    nan_signal = TradingSignal(signal_id="nan", pair_id=PAIR, signal_type=SignalType.EXIT, z=float("nan"),
                               spread=0.0, mean=0.0, std=0.0, mid_a=1.0, mid_b=1.0, hedge_ratio=1.0, ts_ms=1)
    with pytest.raises(InvalidRecordError):
        journal.record_signal(nan_signal)
    assert journal.get_signal("nan") is None


def test_signals_for_pair_since(journal: Journal) -> None:
    for n, ts in enumerate((100, 200, 300)):
        journal.record_signal(make_signal(f"s{n}", ts_ms=ts))
    journal.record_signal(make_signal("other", pair_id="SOLUSDT-ADAUSDT", ts_ms=250))
    assert [r.signal.signal_id for r in journal.signals_for_pair_since(PAIR, 200)] == ["s1", "s2"]


# ----------------------------------------------------------------------------- order intents


def test_intent_is_committed_before_record_returns(journal: Journal) -> None:
    order = intent(journal, qty=D("0.010"), price=D("3000.50"), order_type="limit")
    assert order.status is S.INTENT and order.qty == D("0.010")
    other = sqlite3.connect(journal.path)  # a second connection sees it: it is committed
    try:
        row = other.execute("SELECT status, qty, price, filled_qty FROM orders WHERE client_order_id = ?",
                            (order.client_order_id,)).fetchone()
    finally:
        other.close()
    assert row == ("INTENT", "0.010", "3000.50", "0")


def test_decimals_round_trip_exactly(journal: Journal) -> None:
    intent(journal, qty=D("0.00000001"), price=D("12345.678901234567"), order_type="limit")
    journal.update_order("pb-sig-1-a-0", status=S.FILLED, avg_price=D("12345.678901234567"), fee=D("1E-12"))
    stored = journal.get_order("pb-sig-1-a-0")
    assert stored is not None
    assert (stored.qty, stored.price, stored.filled_qty, stored.fee) == (
        D("0.00000001"), D("12345.678901234567"), D("0.00000001"), D("0.000000000001"))
    assert all(isinstance(v, Decimal) for v in (stored.qty, stored.price, stored.avg_price, stored.fee))


@pytest.mark.parametrize(("overrides", "error"), [
    ({}, DuplicateOrderError),
    ({"cid": "x" * 37}, InvalidRecordError),
    ({"cid": "has space"}, InvalidRecordError),
    ({"cid": "ok-1", "qty": 0.1}, InvalidRecordError),
    ({"cid": "ok-1", "qty": D("0")}, InvalidRecordError),
    ({"cid": "ok-1", "qty": D("NaN")}, InvalidRecordError),
    ({"cid": "ok-1", "order_type": "limit"}, InvalidRecordError),
    ({"cid": "ok-1", "leg": "c"}, InvalidRecordError),
    ({"cid": "ok-1", "side": "short"}, InvalidRecordError),
    ({"cid": "ok-1", "attempt": -1}, InvalidRecordError),
    ({"cid": "ok-1", "round_trip_id": 99}, UnknownRecordError),
])
def test_bad_intents_are_refused(journal: Journal, overrides: dict[str, object], error: type[Exception]) -> None:
    intent(journal)
    with pytest.raises(error):
        intent(journal, **overrides)  # type: ignore[arg-type]
    assert len(journal.orders_for_pair(PAIR)) == 1


# ----------------------------------------------------------------------------- transitions

# How to bring a fresh order (qty 1) into each status by legal steps.
_PATHS: dict[OrderStatus, list[tuple[OrderStatus, Decimal | None]]] = {
    S.INTENT: [], S.SENT: [(S.SENT, None)], S.ACKED: [(S.ACKED, None)],
    S.PARTIALLY_FILLED: [(S.ACKED, None), (S.PARTIALLY_FILLED, D("0.4"))], S.FILLED: [(S.FILLED, None)],
    S.CANCELED: [(S.ACKED, None), (S.CANCELED, None)], S.EXPIRED: [(S.ACKED, None), (S.EXPIRED, None)],
    S.REJECTED: [(S.REJECTED, None)], S.UNKNOWN: [(S.SENT, None), (S.UNKNOWN, None)],
    S.NOT_FOUND: [(S.UNKNOWN, None), (S.NOT_FOUND, None)],
    S.RESENDING: [(S.UNKNOWN, None), (S.NOT_FOUND, None), (S.RESENDING, None)],
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)), ids=lambda s: s.value)
def test_every_transition_follows_the_table(journal: Journal, source: OrderStatus, target: OrderStatus) -> None:
    intent(journal)
    for status, filled in _PATHS[source]:
        journal.update_order("pb-sig-1-a-0", status=status, filled_qty=filled)
    before = journal.get_order("pb-sig-1-a-0")
    assert before is not None and before.status is source
    events_before = journal.order_events("pb-sig-1-a-0")
    filled = D("0.5") if target is S.PARTIALLY_FILLED else None
    if target in TRANSITIONS[source]:
        after = journal.update_order("pb-sig-1-a-0", status=target, filled_qty=filled, error="why")
        assert after.status is target and journal.get_order("pb-sig-1-a-0") == after
        assert journal.order_events("pb-sig-1-a-0")[-1].to_status is target
    else:
        with pytest.raises(IllegalTransitionError, match=f"{source.value} -> {target.value}"):
            journal.update_order("pb-sig-1-a-0", status=target, filled_qty=filled, error="why")
        assert journal.get_order("pb-sig-1-a-0") == before  # validated before anything was written
        assert journal.order_events("pb-sig-1-a-0") == events_before


def test_the_table_lists_the_real_world_oddities_and_forbids_the_nonsense() -> None:
    oddities = [(S.CANCELED, S.FILLED), (S.CANCELED, S.PARTIALLY_FILLED), (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
                (S.EXPIRED, S.EXPIRED), (S.NOT_FOUND, S.RESENDING), (S.RESENDING, S.UNKNOWN),
                (S.RESENDING, S.FILLED), (S.RESENDING, S.NOT_FOUND)]
    oddities += [(S.UNKNOWN, s) for s in S if s not in (S.INTENT, S.SENT)]
    assert all(b in TRANSITIONS[a] for a, b in oddities)
    # Confirmed none (not found after the horizon) is final for that request: nothing of the
    # exchange's can follow it, only our resend under the same id.
    nonsense = [(S.FILLED, S.CANCELED), (S.REJECTED, S.FILLED), (S.ACKED, S.SENT), (S.FILLED, S.PARTIALLY_FILLED),
                (S.EXPIRED, S.ACKED), (S.ACKED, S.NOT_FOUND), (S.NOT_FOUND, S.ACKED), (S.NOT_FOUND, S.FILLED),
                (S.NOT_FOUND, S.UNKNOWN), (S.NOT_FOUND, S.REJECTED)]
    assert not any(b in TRANSITIONS[a] for a, b in nonsense)
    assert all(s not in TRANSITIONS[a] for a in S for s in (S.INTENT,))
    assert OPEN_STATUSES == {S.INTENT, S.SENT, S.ACKED, S.PARTIALLY_FILLED, S.UNKNOWN, S.RESENDING}


@pytest.mark.parametrize(("steps", "match"), [
    ([(S.PARTIALLY_FILLED, D("0.6")), (S.PARTIALLY_FILLED, D("0.5"))], "go down"),
    ([(S.PARTIALLY_FILLED, D("1.5"))], "outside"),
    ([(S.FILLED, D("0.9"))], "FILLED with"),
    ([(S.PARTIALLY_FILLED, D("0"))], "needs 0 <"),
    ([(S.ACKED, D("0.1"))], "cannot carry a fill"),
    ([(S.PARTIALLY_FILLED, D("0.3")), (S.CANCELED, D("0.2"))], "go down"),
])
def test_quantity_rules(journal: Journal, steps: list[tuple[OrderStatus, Decimal]], match: str) -> None:
    intent(journal)
    *ok, (last_status, last_filled) = steps
    for status, filled in ok:
        journal.update_order("pb-sig-1-a-0", status=status, filled_qty=filled)
    with pytest.raises(IllegalTransitionError, match=match):
        journal.update_order("pb-sig-1-a-0", status=last_status, filled_qty=last_filled)


def test_expired_and_canceled_orders_keep_partial_fills_and_late_fills_land(journal: Journal) -> None:
    intent(journal, "c1")
    intent(journal, "c2")
    journal.update_order("c1", status=S.EXPIRED, filled_qty=D("0.3"))
    assert journal.update_order("c1", status=S.EXPIRED, filled_qty=D("0.4")).filled_qty == D("0.4")
    journal.update_order("c2", status=S.CANCELED)
    assert journal.update_order("c2", status=S.FILLED).filled_qty == D("1")  # the fill won the race


def test_exchange_order_id_never_changes(journal: Journal) -> None:
    intent(journal)
    journal.update_order("pb-sig-1-a-0", status=S.ACKED, exchange_order_id="111")
    assert journal.update_order("pb-sig-1-a-0", status=S.PARTIALLY_FILLED, filled_qty=D("0.1"),
                                exchange_order_id="111").exchange_order_id == "111"
    with pytest.raises(IllegalTransitionError, match="cannot become"):
        journal.update_order("pb-sig-1-a-0", status=S.FILLED, exchange_order_id="222")
    with pytest.raises(UnknownRecordError):
        journal.update_order("nope", status=S.SENT)


def test_every_state_change_is_an_event_with_its_time(journal: Journal) -> None:
    intent(journal)
    journal.update_order("pb-sig-1-a-0", status=S.SENT)
    journal.update_order("pb-sig-1-a-0", status=S.SENT)  # a repeat that changes nothing is not an event
    journal.update_order("pb-sig-1-a-0", status=S.ACKED, exchange_order_id="77")
    journal.update_order("pb-sig-1-a-0", status=S.PARTIALLY_FILLED, filled_qty=D("0.25"), avg_price=D("3000"))
    journal.update_order("pb-sig-1-a-0", status=S.FILLED, avg_price=D("3001"), fee=D("1.2"))
    events = journal.order_events("pb-sig-1-a-0")
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, S.INTENT), (S.INTENT, S.SENT), (S.SENT, S.ACKED), (S.ACKED, S.PARTIALLY_FILLED),
        (S.PARTIALLY_FILLED, S.FILLED)]
    assert [e.ts_ms for e in events] == sorted({e.ts_ms for e in events})
    assert (events[-1].filled_qty, events[-1].avg_price, events[-1].fee, events[-1].exchange_order_id) == (
        D("1"), D("3001"), D("1.2"), "77")


def test_order_queries(journal: Journal) -> None:
    intent(journal, "e-a")
    intent(journal, "e-b", leg="b", symbol="BTCUSDT", side="buy")
    intent(journal, "x-a", signal_id="sig-2", purpose="EXIT", reduce_only=True)
    intent(journal, "o-1", signal_id="sig-9", pair_id="SOL-ADA", symbol="SOLUSDT")
    journal.update_order("e-a", status=S.FILLED)
    journal.update_order("e-b", status=S.UNKNOWN, error="timeout")
    journal.update_order("o-1", status=S.REJECTED, error="-2019 margin is insufficient")
    assert [o.client_order_id for o in journal.orders_for_signal("sig-1")] == ["e-a", "e-b"]
    assert [o.client_order_id for o in journal.orders_for_pair(PAIR)] == ["e-a", "e-b", "x-a"]
    assert [o.client_order_id for o in journal.open_orders()] == ["e-b", "x-a"]
    assert journal.get_order("x-a").reduce_only is True  # type: ignore[union-attr]
    assert journal.get_order("missing") is None


# ----------------------------------------------------------------------------- fills


def test_fills_are_idempotent_by_trade_id_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal.open(path, mode="paper") as j:
        intent(j)
        assert j.record_fill("pb-sig-1-a-0", trade_id="t1", qty=D("0.4"), price=D("3000"), fee=D("0.48"), ts_ms=5)
        assert not j.record_fill("pb-sig-1-a-0", trade_id="t1", qty=D("0.40"), price=D("3000.0"), fee=D("0.48"),
                                 ts_ms=5)
    with Journal.open(path, mode="paper") as j:
        assert not j.record_fill("pb-sig-1-a-0", trade_id="t1", qty=D("0.4"), price=D("3000"), fee=D("0.48"),
                                 ts_ms=5)
        assert len(j.fills_for_order("pb-sig-1-a-0")) == 1


def test_conflicting_and_excess_fills_raise(journal: Journal) -> None:
    intent(journal)
    intent(journal, "b-1", leg="b", symbol="BTCUSDT", side="buy", qty=D("0.1"))
    journal.record_fill("pb-sig-1-a-0", trade_id="7", qty=D("0.6"), price=D("3000"), fee=D("0"), ts_ms=1)
    with pytest.raises(FillConflictError, match="other figures"):
        journal.record_fill("pb-sig-1-a-0", trade_id="7", qty=D("0.5"), price=D("3000"), fee=D("0"), ts_ms=1)
    with pytest.raises(FillConflictError, match="fills would reach"):
        journal.record_fill("pb-sig-1-a-0", trade_id="8", qty=D("0.5"), price=D("3000"), fee=D("0"), ts_ms=2)
    # Trade ids are unique per symbol only: trade 7 on BTCUSDT is another trade.
    assert journal.record_fill("b-1", trade_id="7", qty=D("0.1"), price=D("60000"), fee=D("0"), ts_ms=3)
    with pytest.raises(UnknownRecordError):
        journal.record_fill("nope", trade_id="9", qty=D("1"), price=D("1"), fee=D("0"), ts_ms=1)
    with pytest.raises(InvalidRecordError):
        journal.record_fill("b-1", trade_id="10", qty=0.1,  # type: ignore[arg-type]
                            price=D("1"), fee=D("0"), ts_ms=1)


def test_fills_for_pair_since(journal: Journal) -> None:
    intent(journal)
    intent(journal, "other", pair_id="SOL-ADA", symbol="SOLUSDT")
    for n, ts in enumerate((10, 20, 30)):
        journal.record_fill("pb-sig-1-a-0", trade_id=str(n), qty=D("0.1"), price=D("3000"), fee=D("0"), ts_ms=ts)
    journal.record_fill("other", trade_id="x", qty=D("1"), price=D("150"), fee=D("0"), ts_ms=25)
    assert [(f.trade_id, f.ts_ms, f.side.value) for f in journal.fills_for_pair_since(PAIR, 20)] == [
        ("1", 20, "sell"), ("2", 30, "sell")]


# ----------------------------------------------------------------------------- positions


def test_positions_survive_a_restart_and_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    held = PairPosition(pair_id=PAIR, state=PairState.LONG_SPREAD, qty_a=D("-8.0"), qty_b=D("0.5"),
                        symbol_a="ETHUSDT", symbol_b="BTCUSDT", entry_signal_id="sig-1", entry_ts_ms=1_000,
                        round_trip_id=None)
    with Journal.open(path, mode="live", now_ms=Clock()) as j:
        saved = j.save_position(held)
        assert saved.updated_ms > 0
        j.save_position(PairPosition(pair_id="SOL-ADA", state=PairState.FLAT, qty_a=D(0), qty_b=D(0),
                                     symbol_a="ADAUSDT", symbol_b="SOLUSDT"))
    with Journal.open(path, mode="live") as j:
        assert j.get_position(PAIR) == saved
        assert [p.pair_id for p in j.all_positions()] == [PAIR, "SOL-ADA"]
        assert j.get_position("none") is None
        halted = j.save_position(PairPosition(pair_id=PAIR, state=PairState.HALTED, qty_a=D("-8"), qty_b=D(0),
                                              symbol_a="ETHUSDT", symbol_b="BTCUSDT",
                                              halted_reason="rollback of ETHUSDT short failed"))
        assert j.get_position(PAIR) == halted
        for bad in (PairPosition(PAIR, PairState.FLAT, D("1"), D(0), "ETHUSDT", "BTCUSDT"),
                    PairPosition(PAIR, PairState.HALTED, D("1"), D(0), "ETHUSDT", "BTCUSDT"),
                    PairPosition(PAIR, PairState.SHORT_SPREAD, D(0), D(0), "ETHUSDT", "BTCUSDT"),
                    PairPosition(PAIR, PairState.SHORT_SPREAD, 1.5, D(-1), "ETHUSDT", "BTCUSDT")):  # type: ignore
            with pytest.raises(InvalidRecordError):
                j.save_position(bad)
        assert j.get_position(PAIR) == halted


# ----------------------------------------------------------------------------- round trips


def _filled(journal: Journal, cid: str, *, signal_id: str, side: str, symbol: str,
            fills: list[tuple[str, str, str]], **extra: object) -> None:
    """An order filled by ``fills`` of (qty, price, fee); its quantity is their sum."""
    qty = sum((D(q) for q, _, _ in fills), D(0))
    intent(journal, cid, signal_id=signal_id, side=side, symbol=symbol, leg="a" if symbol == "ETHUSDT" else "b",
           qty=qty, **extra)
    for n, (q, p, f) in enumerate(fills):
        journal.record_fill(cid, trade_id=f"{cid}-{n}", qty=D(q), price=D(p), fee=D(f), ts_ms=10 + n)
    journal.update_order(cid, status=S.FILLED)


def test_round_trip_pnl_on_a_hand_checked_example(journal: Journal) -> None:
    rt = journal.open_round_trip(PAIR, entry_signal_id="sig-1", opened_ts_ms=1_000)
    # Entry, long the spread: buy 0.5 BTC in two fills, sell 7.9 ETH; a repair sells 0.1 ETH more.
    _filled(journal, "e-b", signal_id="sig-1", side="buy", symbol="BTCUSDT",
            fills=[("0.2", "59990", "4.7992"), ("0.3", "60010", "7.2012")])  # -11998 - 18003
    _filled(journal, "e-a", signal_id="sig-1", side="sell", symbol="ETHUSDT", fills=[("7.9", "3000", "9.48")])
    _filled(journal, "r-a", signal_id="recon-1", side="sell", symbol="ETHUSDT",
            fills=[("0.1", "3001", "0.12004")], purpose="REPAIR", round_trip_id=rt)  # +300.1
    # Exit: sell the BTC, buy back 8 ETH.
    _filled(journal, "x-b", signal_id="sig-2", side="sell", symbol="BTCUSDT", fills=[("0.5", "61000", "12.2")])
    _filled(journal, "x-a", signal_id="sig-2", side="buy", symbol="ETHUSDT", fills=[("8", "2950", "9.44")])
    # Not part of it: another pair's order that reuses the signal id, and an unrelated signal.
    _filled(journal, "o-1", signal_id="sig-2", side="buy", symbol="ETHUSDT", fills=[("1", "1", "1")],
            pair_id="SOL-ADA")
    _filled(journal, "o-2", signal_id="sig-7", side="buy", symbol="ETHUSDT", fills=[("1", "1", "1")])

    closed = journal.close_round_trip(rt, exit_signal_id="sig-2", closed_ts_ms=9_000, exit_reason="EXIT")
    # gross = -30001 + 23700 + 300.1 + 30500 - 23600 = 899.1
    # fees  = 12.0004 + 9.48 + 0.12004 + 12.2 + 9.44 = 43.24044
    assert (closed.gross_pnl, closed.fees, closed.net_pnl) == (D("899.1"), D("43.24044"), D("855.85956"))
    assert abs(closed.net_pnl - D("855.85956")) < D("1e-8")  # type: ignore[operator]
    assert (closed.exit_signal_id, closed.closed_ts_ms, closed.exit_reason, closed.is_open) == (
        "sig-2", 9_000, "EXIT", False)
    assert {o.client_order_id for o in journal.orders_for_pair(PAIR) if o.round_trip_id == rt} == {
        "e-b", "e-a", "r-a", "x-b", "x-a"}
    assert journal.round_trips(PAIR) == [closed] == journal.round_trips()
    assert journal.get_round_trip(rt) == closed


def test_round_trip_open_and_close_are_checked(journal: Journal) -> None:
    rt = journal.open_round_trip(PAIR, entry_signal_id="sig-1", opened_ts_ms=1)
    with pytest.raises(RoundTripStateError):
        journal.open_round_trip(PAIR, entry_signal_id="sig-3", opened_ts_ms=2)
    empty = journal.close_round_trip(rt, exit_signal_id=None, closed_ts_ms=3, exit_reason="RECONCILED")
    assert (empty.gross_pnl, empty.fees, empty.net_pnl) == (D(0), D(0), D(0))
    with pytest.raises(RoundTripStateError):
        journal.close_round_trip(rt, exit_signal_id="sig-2", closed_ts_ms=4, exit_reason="EXIT")
    with pytest.raises(UnknownRecordError):
        journal.close_round_trip(999, exit_signal_id="sig-2", closed_ts_ms=4, exit_reason="EXIT")
    assert journal.open_round_trip(PAIR, entry_signal_id="sig-3", opened_ts_ms=5) != rt


def test_a_round_trip_left_with_inventory_is_logged(journal: Journal) -> None:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING", format="{message}")
    try:
        rt = journal.open_round_trip(PAIR, entry_signal_id="sig-1", opened_ts_ms=1)
        _filled(journal, "e-a", signal_id="sig-1", side="sell", symbol="ETHUSDT", fills=[("2", "3000", "1")])
        closed = journal.close_round_trip(rt, exit_signal_id="sig-2", closed_ts_ms=3, exit_reason="STOP_LOSS")
    finally:
        logger.remove(sink)
    assert closed.gross_pnl == D("6000")
    assert any("residual" in m and "ETHUSDT" in m for m in messages)


def test_realized_pnl_since_sums_closed_round_trips(journal: Journal) -> None:
    for n, (closed_ts, price) in enumerate([(1_000, "3010"), (5_000, "2990"), (6_000, "3005")]):
        rt = journal.open_round_trip(PAIR, entry_signal_id=f"in-{n}", opened_ts_ms=closed_ts - 10)
        _filled(journal, f"b-{n}", signal_id=f"in-{n}", side="buy", symbol="ETHUSDT", fills=[("1", "3000", "0.5")])
        _filled(journal, f"s-{n}", signal_id=f"out-{n}", side="sell", symbol="ETHUSDT", fills=[("1", price, "0.5")])
        journal.close_round_trip(rt, exit_signal_id=f"out-{n}", closed_ts_ms=closed_ts, exit_reason="EXIT")
    journal.open_round_trip(PAIR, entry_signal_id="still-open", opened_ts_ms=7_000)
    assert journal.realized_pnl_since(5_000) == D("-11") + D("4")
    assert journal.realized_pnl_since(0) == D("9") - D("11") + D("4")
    assert journal.realized_pnl_since(10_000) == D(0)


_qty = st.decimals(min_value=D("0.001"), max_value=D("1000"), places=3)
_price = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)
_fee = st.decimals(min_value=D("0"), max_value=D("50"), places=8)
_fill = st.tuples(st.sampled_from(["sig-in", "sig-out", "sig-other"]), st.sampled_from(["buy", "sell"]),
                  _qty, _price, _fee)


@settings(max_examples=40, deadline=None)
@given(fills=st.lists(_fill, max_size=10))
def test_round_trip_pnl_is_the_exact_sum_over_its_fills(
        fills: list[tuple[str, str, Decimal, Decimal, Decimal]]) -> None:
    with tempfile.TemporaryDirectory() as folder, Journal.open(Path(folder) / "j.sqlite", mode="paper") as j:
        rt = j.open_round_trip(PAIR, entry_signal_id="sig-in", opened_ts_ms=1)
        gross, fees = D(0), D(0)
        for n, (signal_id, side, qty, price, fee) in enumerate(fills):
            cid = f"o-{n}"
            intent(j, cid, signal_id=signal_id, side=side, qty=qty)
            j.record_fill(cid, trade_id=str(n), qty=qty, price=price, fee=fee, ts_ms=n)
            if signal_id != "sig-other":
                gross += qty * price if side == "sell" else -(qty * price)
                fees += fee
        closed = j.close_round_trip(rt, exit_signal_id="sig-out", closed_ts_ms=2, exit_reason="EXIT")
    assert (closed.gross_pnl, closed.fees, closed.net_pnl) == (gross, fees, gross - fees)
    assert abs(closed.net_pnl - (gross - fees)) <= D("1e-8")  # type: ignore[operator]


# ----------------------------------------------------------------------------- crash safety

_CHILD = """
import sys, time
from decimal import Decimal
from pathlib import Path
from execution.journal import Journal
journal = Journal.open(Path(sys.argv[1]), mode="live")
journal.record_order_intent(client_order_id="pb-sig-9-a-0", signal_id="sig-9", pair_id="ETH-BTC", leg="a",
                            purpose="ENTRY", attempt=0, symbol="ETHUSDT", side="sell", order_type="market",
                            qty=Decimal("1.25"))
print("INTENT WRITTEN", flush=True)
time.sleep(60)
"""


def test_an_intent_survives_sigkill_right_after_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "journal-live.sqlite"
    proc = subprocess.Popen([PYTHON, "-c", _CHILD, str(path)], cwd=PROJECT_DIR,
                            env=clean_env(PYTHONPATH=str(PROJECT_DIR)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "child did not write its intent within 20 s"
        assert proc.stdout.readline().strip() == "INTENT WRITTEN", proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert Path(f"{path}-wal").exists()  # never checkpointed or closed: recovered from the WAL
    with Journal.open(path, mode="live") as j:
        order = j.get_order("pb-sig-9-a-0")
        assert order is not None and order.status is S.INTENT and order.qty == D("1.25")
        assert [o.client_order_id for o in j.open_orders()] == ["pb-sig-9-a-0"]


def test_intents_of_both_legs_commit_together_or_not_at_all(journal: Journal, tmp_path: Path) -> None:
    legs = [dict(client_order_id=f"pb-sig-2-{leg}-0", signal_id="sig-1", pair_id=PAIR, leg=leg, purpose="ENTRY",
                 attempt=0, symbol=f"SYM{leg}", side="buy", order_type="market", qty=D("1")) for leg in ("a", "b")]
    records = journal.record_order_intents(legs)
    assert [r.client_order_id for r in records] == ["pb-sig-2-a-0", "pb-sig-2-b-0"]
    other = sqlite3.connect(journal.path)
    try:
        assert other.execute("SELECT COUNT(*) FROM orders WHERE client_order_id LIKE 'pb-sig-2-%'").fetchone()[0] == 2
    finally:
        other.close()
    clash = [dict(legs[0], client_order_id="pb-sig-3-a-0"), legs[1]]  # the second already exists
    with pytest.raises(DuplicateOrderError):
        journal.record_order_intents(clash)
    assert journal.get_order("pb-sig-3-a-0") is None  # rolled back with its partner
