"""The execution engine's durable journal: signals, orders, fills, positions and round trips.

Why SQLite with WAL and ``synchronous=FULL``: an order's intent must survive a SIGKILL (or a
power cut) right after it is written, because on restart the engine looks every unresolved
client order id up on the exchange before it does anything else (docs/architecture.md, "Order outcomes",
protocol 3). FULL makes every commit durable, not only consistent.

Why the calls are synchronous although the engine is asyncio: each call is one small
transaction on a local file, well under a millisecond in WAL mode (an fsync per commit on
real disks may cost about a millisecond more), so blocking the loop for it is cheaper than a
thread hop. And the ordering is the point: ``record_order_intent`` must have *committed*
before the request leaves the process. An async write queue would return before the commit
and reopen the window in which a crash leaves an order on the exchange that the journal has
never heard of.

Money is exact: quantities, prices and fees are stored as TEXT decimal strings and returned
as ``Decimal``. The schema is versioned (``meta.schema_version``) and migrated in order, in
one transaction, on open. Each file belongs to one mode (paper/live/demo), fixed at creation.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator, Mapping, Sequence

from loguru import logger

from core.events import EventBus, EventKind
from core.types import PairState, TradingSignal
from execution.journal_models import (
    CLIENT_ORDER_ID_RE, OPEN_STATUSES, TRANSITIONS, DuplicateOrderError, FillConflictError, FillRecord,
    FundingRecord, funding_from_row,
    IllegalTransitionError, InvalidRecordError, JournalClosedError, JournalError, JournalMode,
    JournalModeError, JournalOpenError, JournalStorageError, Leg, OrderEvent, OrderPurpose, OrderRecord,
    OrderStatus, OrderType, PairPosition, RoundTrip, RoundTripStateError, SchemaVersionError, Side,
    SignalRecord, UnknownRecordError, event_from_row, fill_from_row, fill_gaps, net_qty_by_symbol,
    next_order_state, order_event_data, order_from_row, position_from_row, round_trip_from_row, round_trip_pnl, same_figures,
    signal_from_row, to_decimal, validate_position)

__all__ = [
    "Journal", "migrate", "MIGRATIONS", "SCHEMA_VERSION", "OPEN_STATUSES", "TRANSITIONS",
    "JournalError", "JournalClosedError", "JournalOpenError", "JournalModeError", "JournalStorageError",
    "SchemaVersionError",
    "InvalidRecordError", "UnknownRecordError", "DuplicateOrderError", "IllegalTransitionError",
    "FillConflictError", "RoundTripStateError", "JournalMode", "Leg", "Side", "OrderType",
    "OrderPurpose", "OrderStatus", "SignalRecord", "OrderRecord", "OrderEvent", "FillRecord", "FundingRecord",
    "PairPosition", "RoundTrip",
]

SIGNAL_RECEIVED = "RECEIVED"  # status of a signal until the engine sets its outcome

# --------------------------------------------------------------------------------------------
# Schema and migrations. A migration is a list of statements run inside the open transaction
# (never ``executescript``, which commits first). Append new ones; never edit an old one.

_V1 = [
    """CREATE TABLE signals (
        signal_id TEXT PRIMARY KEY, pair_id TEXT NOT NULL, signal_type TEXT NOT NULL,
        ts_ms INTEGER NOT NULL, z REAL NOT NULL, spread REAL NOT NULL, mean REAL NOT NULL,
        std REAL NOT NULL, mid_a REAL NOT NULL, mid_b REAL NOT NULL, hedge_ratio REAL NOT NULL,
        status TEXT NOT NULL, reason TEXT, recorded_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL)""",
    """CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY, signal_id TEXT NOT NULL, pair_id TEXT NOT NULL,
        leg TEXT NOT NULL CHECK (leg IN ('a', 'b')), purpose TEXT NOT NULL, attempt INTEGER NOT NULL,
        symbol TEXT NOT NULL, side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
        order_type TEXT NOT NULL, qty TEXT NOT NULL, price TEXT, reduce_only INTEGER NOT NULL,
        status TEXT NOT NULL, exchange_order_id TEXT, filled_qty TEXT NOT NULL, avg_price TEXT,
        fee TEXT NOT NULL, error TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL)""",
    """CREATE TABLE order_events (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
        ts_ms INTEGER NOT NULL, from_status TEXT, to_status TEXT NOT NULL, exchange_order_id TEXT,
        filled_qty TEXT NOT NULL, avg_price TEXT, fee TEXT NOT NULL, error TEXT)""",
    # Exchange trade ids are unique per symbol only (Binance), hence the composite key.
    """CREATE TABLE fills (
        symbol TEXT NOT NULL, trade_id TEXT NOT NULL,
        client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
        pair_id TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT NOT NULL,
        fee TEXT NOT NULL, ts_ms INTEGER NOT NULL, recorded_ms INTEGER NOT NULL,
        PRIMARY KEY (symbol, trade_id))""",
    """CREATE TABLE positions (
        pair_id TEXT PRIMARY KEY, state TEXT NOT NULL, qty_a TEXT NOT NULL, qty_b TEXT NOT NULL,
        symbol_a TEXT NOT NULL, symbol_b TEXT NOT NULL, entry_signal_id TEXT, entry_ts_ms INTEGER,
        round_trip_id INTEGER, halted_reason TEXT, updated_ms INTEGER NOT NULL)""",
    """CREATE TABLE round_trips (
        id INTEGER PRIMARY KEY AUTOINCREMENT, pair_id TEXT NOT NULL, entry_signal_id TEXT NOT NULL,
        exit_signal_id TEXT, opened_ts_ms INTEGER NOT NULL, closed_ts_ms INTEGER,
        gross_pnl TEXT, fees TEXT, net_pnl TEXT, exit_reason TEXT)""",
]

# v2: orders link to their round trip explicitly (repairs sent outside the entry/exit signals),
# and the lookups the engine does on every signal and every restart get indexes.
_V2 = [
    "ALTER TABLE orders ADD COLUMN round_trip_id INTEGER REFERENCES round_trips (id)",
    "CREATE INDEX orders_by_signal ON orders (signal_id)",
    "CREATE INDEX orders_by_pair ON orders (pair_id, created_ms)",
    "CREATE INDEX orders_by_status ON orders (status)",
    "CREATE INDEX orders_by_round_trip ON orders (round_trip_id)",
    "CREATE INDEX order_events_by_order ON order_events (client_order_id, event_id)",
    "CREATE INDEX fills_by_order ON fills (client_order_id)",
    "CREATE INDEX fills_by_pair ON fills (pair_id, ts_ms)",
    "CREATE INDEX signals_by_pair ON signals (pair_id, ts_ms)",
    "CREATE INDEX round_trips_by_closed ON round_trips (closed_ts_ms)",
    "CREATE UNIQUE INDEX round_trips_one_open ON round_trips (pair_id) WHERE closed_ts_ms IS NULL",
]

# v3: an order's resolution horizon (docs/architecture.md, "Order outcomes": "not found" is final only after it),
# and a table of journal events (a round trip repriced by late fills, an anomaly) so that what
# changed a stored figure after the fact is on record next to it.
_V3 = [
    "ALTER TABLE orders ADD COLUMN horizon_ms INTEGER",
    """CREATE TABLE journal_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,
        pair_id TEXT, detail TEXT NOT NULL)""",
    "CREATE INDEX journal_events_by_kind ON journal_events (kind, id)",
]

# v4 (issue 11): a fee charged in another asset keeps that asset and its amount next to the USDT
# fee that PnL uses; funding payments, tied to the round trip that held the symbol at the funding
# time, and each round trip's funding total (its net PnL includes it).
_V4 = [
    "ALTER TABLE fills ADD COLUMN fee_asset TEXT NOT NULL DEFAULT 'USDT'",
    "ALTER TABLE fills ADD COLUMN fee_native TEXT",
    "ALTER TABLE round_trips ADD COLUMN funding TEXT",
    """CREATE TABLE funding (
        symbol TEXT NOT NULL, payment_id TEXT NOT NULL, pair_id TEXT,
        round_trip_id INTEGER REFERENCES round_trips (id), amount TEXT NOT NULL, asset TEXT NOT NULL,
        ts_ms INTEGER NOT NULL, recorded_ms INTEGER NOT NULL, PRIMARY KEY (symbol, payment_id))""",
    "CREATE INDEX funding_by_round_trip ON funding (round_trip_id)",
    "CREATE INDEX funding_by_time ON funding (ts_ms)",
]

Migration = Callable[[sqlite3.Connection], None]


def _v5(conn: sqlite3.Connection) -> None:
    """v5: each symbol's net filled quantity kept in ``symbol_net``, updated in the transaction
    that changes an order's fill, so the reduce-only check on every close reads one row instead
    of summing every order ever placed on the symbol (a year of backtest or of trading is tens
    of thousands). Filled from the orders already recorded, exactly (Decimal)."""
    conn.execute("CREATE TABLE symbol_net (symbol TEXT PRIMARY KEY, net TEXT NOT NULL)")
    nets: dict[str, Decimal] = {}
    for symbol, side, filled in conn.execute("SELECT symbol, side, filled_qty FROM orders WHERE filled_qty != '0'"):
        nets[symbol] = nets.get(symbol, Decimal(0)) + (Decimal(filled) if side == "buy" else -Decimal(filled))
    conn.executemany("INSERT INTO symbol_net (symbol, net) VALUES (?, ?)",
                     [(symbol, format(net, "f")) for symbol, net in nets.items()])


def _statements(statements: Sequence[str]) -> Migration:
    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)
    return run


#: MIGRATIONS[i] takes a file from schema version i to i + 1.
MIGRATIONS: tuple[Migration, ...] = (_statements(_V1), _statements(_V2), _statements(_V3), _statements(_V4), _v5)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, *, mode: JournalMode | str,
            target_version: int = SCHEMA_VERSION) -> int:
    """Bring ``conn``'s file to ``target_version`` in one transaction; return the version.

    A fresh file gets ``mode`` recorded; an existing one must have been created for the same
    mode. ``conn`` must be in autocommit mode (``isolation_level=None``). ``target_version``
    below the latest exists for tests that build an old file.
    """
    wanted = JournalMode.parse(mode)
    if not 0 <= target_version <= SCHEMA_VERSION:
        raise InvalidRecordError(f"target_version {target_version}: expected 0..{SCHEMA_VERSION}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(f"journal schema version {version} is newer than this code knows "
                                     f"({SCHEMA_VERSION}); run a newer pairs-bot")
        stored = meta.get("mode")
        if stored is None:
            if version:
                raise JournalModeError(f"journal at schema version {version} has no mode recorded")
            conn.execute("INSERT INTO meta (key, value) VALUES ('mode', ?)", (wanted.value,))
        elif stored != wanted.value:
            raise JournalModeError(f"journal was created for mode {stored!r}; refusing to open it as "
                                   f"{wanted.value!r} (each mode must use its own file)")
        for step in range(version, max(version, target_version)):
            MIGRATIONS[step](conn)
            logger.debug("journal schema migrated to version {}", step + 1)
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                     (str(max(version, target_version)),))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return max(version, target_version)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _txt(value: Decimal) -> str:
    return format(value, "f")


def _txt_opt(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _enum(kind: type[Any], value: object, field: str) -> Any:
    try:
        return kind(value.value if isinstance(value, kind) else value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidRecordError(f"{field}={value!r}: expected one of {allowed}") from None


class Journal:
    """One open journal file. Use ``Journal.open``; not shared between threads.

    Every write method is one transaction that has committed when the method returns.
    """

    def __init__(self, conn: sqlite3.Connection, *, path: Path, mode: JournalMode,
                 now_ms: Callable[[], int]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._depth = 0  # > 0 while a transaction is open (nested writes join it)
        self.path = path
        self.mode = mode
        self._now_ms = now_ms
        #: Operator event stream (core/events.py): told of each order change and fill after it
        #: is written; None publishes nothing.
        self.event_bus: EventBus | None = None

    @classmethod
    def open(cls, path: Path, *, mode: JournalMode | str, now_ms: Callable[[], int] | None = None,
             busy_timeout_ms: int = 5_000, durable: bool = True) -> Journal:
        """Open (creating it and its folders if needed) and migrate the journal at ``path``.

        ``mode`` (paper/live/demo, or a ``RunMode``) must match the one the file was created
        with. ``now_ms`` is the clock for record times (default wall clock, ms since epoch).
        ``busy_timeout_ms`` is how long a write waits for another process's lock before
        ``JournalStorageError``. ``durable`` False (a backtest's throw-away journal only) skips the
        fsync of every commit (``synchronous = OFF``): nothing has to survive a crash there.
        """
        wanted = JournalMode.parse(mode)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
        try:
            conn.row_factory = sqlite3.Row
            (journal_mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(journal_mode).lower() != "wal":
                raise JournalOpenError(f"{path}: cannot switch to WAL mode (got {journal_mode!r})")
            conn.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = OFF")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, mode=wanted)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalOpenError(f"{path}: not a usable journal: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return cls(conn, path=path, mode=wanted, now_ms=now_ms or _now_ms)

    def close(self) -> None:
        """Close the file; idempotent. Every write has already committed."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalClosedError(f"journal {self.path} is closed")
        return self._conn

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        try:
            return self._db().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise JournalStorageError(f"journal {self.path}: read failed: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so validation reads
        and the writes that follow see the same state. SQLite failures (locked, disk full,
        I/O) become ``JournalStorageError``; nothing of the transaction is kept. Inside
        ``batch()`` it joins the open transaction instead (one commit for all)."""
        conn = self._db()
        if self._depth:
            self._depth += 1
            try:
                yield conn
            finally:
                self._depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield conn
            finally:
                self._depth = 0
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise JournalStorageError(f"journal {self.path}: write failed: {exc}") from exc
        except BaseException:
            self._rollback(conn)
            raise

    def batch(self) -> Any:
        """Several writes in ONE transaction (one fsync): all of them are kept, or none.

        Used where two records must not be split by a crash (a round trip and the position that
        names it) or where one commit must carry several (an entry's state and its intents)."""
        return self._tx()

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # ---------------------------------------------------------------------------- signals

    def record_signal(self, signal: TradingSignal) -> bool:
        """Record a signal; False if its ``signal_id`` is already known (refuse it as a duplicate)."""
        figures = (signal.z, signal.spread, signal.mean, signal.std, signal.mid_a, signal.mid_b, signal.hedge_ratio)
        if not all(math.isfinite(x) for x in figures):  # SQLite would store NaN as NULL
            raise InvalidRecordError(f"signal {signal.signal_id}: non-finite figures {figures}")
        now = self._now_ms()
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM signals WHERE signal_id = ?", (signal.signal_id,)).fetchone():
                return False
            conn.execute("INSERT INTO signals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                         (signal.signal_id, signal.pair_id, signal.signal_type.value, signal.ts_ms, *figures,
                          SIGNAL_RECEIVED, now, now))
        return True

    def set_signal_outcome(self, signal_id: str, status: str, reason: str | None = None) -> None:
        """Record what became of a signal (e.g. EXECUTED, REJECTED with why)."""
        if not status:
            raise InvalidRecordError(f"signal {signal_id}: empty outcome status")
        with self._tx() as conn:
            cursor = conn.execute("UPDATE signals SET status = ?, reason = ?, updated_ms = ? WHERE signal_id = ?",
                                  (status, reason, self._now_ms(), signal_id))
            if cursor.rowcount == 0:
                raise UnknownRecordError(f"signal {signal_id} is not in the journal")

    def get_signal(self, signal_id: str) -> SignalRecord | None:
        rows = self._read("SELECT * FROM signals WHERE signal_id = ?", (signal_id,))
        return signal_from_row(rows[0]) if rows else None

    def last_signal_ts(self, pair_id: str) -> int | None:
        """Exchange time of the pair's newest recorded signal (the duplicate window's anchor)."""
        # Reconciliation's repair signals (ids "R<pair>-<hex ms>", stamped with the wall clock) are
        # not the market's and do not count.
        rows = self._read("SELECT MAX(ts_ms) FROM signals WHERE pair_id = ? AND signal_id NOT GLOB 'R*'",
                          (pair_id,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    def signals_for_pair_since(self, pair_id: str, ts_ms: int) -> list[SignalRecord]:
        """Signals of a pair with ``ts_ms`` at or after the given time, oldest first; lets the
        engine apply its per-pair duplicate window across restarts."""
        rows = self._read("SELECT * FROM signals WHERE pair_id = ? AND ts_ms >= ? ORDER BY ts_ms, rowid",
                          (pair_id, ts_ms))
        return [signal_from_row(row) for row in rows]

    # ---------------------------------------------------------------------------- orders

    def record_order_intent(self, *, client_order_id: str, signal_id: str, pair_id: str, leg: Leg | str,
                            purpose: OrderPurpose | str, attempt: int, symbol: str, side: Side | str,
                            order_type: OrderType | str, qty: Decimal, price: Decimal | None = None,
                            reduce_only: bool = False, round_trip_id: int | None = None) -> OrderRecord:
        """Write an order in status INTENT and commit, before the request is sent.

        Raises ``DuplicateOrderError`` if the client id exists (a retry must use a new attempt),
        ``InvalidRecordError`` for a malformed order. ``round_trip_id`` links an order sent
        outside its round trip's entry and exit signals (a reconciliation repair, say).
        """
        return self.record_order_intents([dict(
            client_order_id=client_order_id, signal_id=signal_id, pair_id=pair_id, leg=leg, purpose=purpose,
            attempt=attempt, symbol=symbol, side=side, order_type=order_type, qty=qty, price=price,
            reduce_only=reduce_only, round_trip_id=round_trip_id)])[0]

    def record_order_intents(self, intents: Sequence[Mapping[str, Any]]) -> list[OrderRecord]:
        """Several intents (the legs of a pair) in ONE transaction: all or none, one fsync.

        Each mapping holds ``record_order_intent``'s keyword arguments. One commit instead of one
        per leg keeps the fsync cost out from between the two legs' requests.
        """
        orders = [self._build_intent(**intent) for intent in intents]
        with self._tx() as conn:
            for order in orders:
                self._insert_intent(conn, order)
        for order in orders:
            self._publish_order(order)
        return orders

    def _publish_order(self, order: OrderRecord, **extra: Any) -> None:
        if self.event_bus is not None:
            self.event_bus.publish(EventKind.ORDER, {**order_event_data(order), **extra}, pair_id=order.pair_id)

    def _build_intent(self, *, client_order_id: str, signal_id: str, pair_id: str, leg: Leg | str,
                      purpose: OrderPurpose | str, attempt: int, symbol: str, side: Side | str,
                      order_type: OrderType | str, qty: Decimal, price: Decimal | None = None,
                      reduce_only: bool = False, round_trip_id: int | None = None) -> OrderRecord:
        if not CLIENT_ORDER_ID_RE.match(client_order_id):
            raise InvalidRecordError(f"client order id {client_order_id!r}: at most 36 of [.A-Z:/a-z0-9_-]")
        if not (signal_id and pair_id and symbol):
            raise InvalidRecordError(f"order {client_order_id}: signal_id, pair_id and symbol must be non-empty")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise InvalidRecordError(f"order {client_order_id}: attempt {attempt!r} must be an int >= 0")
        kind = _enum(OrderType, order_type, "order_type")
        amount = to_decimal(qty, field="qty")
        limit = None if price is None else to_decimal(price, field="price")
        if amount <= 0 or (limit is not None and limit <= 0):
            raise InvalidRecordError(f"order {client_order_id}: qty {amount} and price {limit} must be > 0")
        if kind is OrderType.LIMIT and limit is None:
            raise InvalidRecordError(f"order {client_order_id}: a limit order needs a price")
        now = self._now_ms()
        return OrderRecord(
            client_order_id=client_order_id, signal_id=signal_id, pair_id=pair_id, leg=_enum(Leg, leg, "leg"),
            purpose=_enum(OrderPurpose, purpose, "purpose"), attempt=attempt, symbol=symbol,
            side=_enum(Side, side, "side"), order_type=kind, qty=amount, price=limit,
            reduce_only=bool(reduce_only), status=OrderStatus.INTENT, exchange_order_id=None,
            filled_qty=Decimal(0), avg_price=None, fee=Decimal(0), error=None, created_ms=now,
            updated_ms=now, round_trip_id=round_trip_id)

    def _insert_intent(self, conn: sqlite3.Connection, order: OrderRecord) -> None:
        cid = order.client_order_id
        if conn.execute("SELECT 1 FROM orders WHERE client_order_id = ?", (cid,)).fetchone():
            raise DuplicateOrderError(f"client order id {cid} is already in the journal")
        if order.round_trip_id is not None and self._round_trip_row(conn, order.round_trip_id) is None:
            raise UnknownRecordError(f"round trip {order.round_trip_id} is not in the journal")
        conn.execute(
            "INSERT INTO orders (client_order_id, signal_id, pair_id, leg, purpose, attempt, symbol, side,"
            " order_type, qty, price, reduce_only, status, exchange_order_id, filled_qty, avg_price, fee,"
            " error, created_ms, updated_ms, round_trip_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '0', NULL, '0', NULL, ?, ?, ?)",
            (cid, order.signal_id, order.pair_id, order.leg.value, order.purpose.value, order.attempt, order.symbol,
             order.side.value, order.order_type.value, _txt(order.qty), _txt_opt(order.price),
             int(order.reduce_only), OrderStatus.INTENT.value, order.created_ms, order.updated_ms,
             order.round_trip_id))
        self._append_event(conn, order, from_status=None)

    def update_order(self, client_order_id: str, *, status: OrderStatus | str, exchange_order_id: str | None = None,
                     filled_qty: Decimal | None = None, avg_price: Decimal | None = None,
                     fee: Decimal | None = None, error: str | None = None,
                     horizon_ms: int | None = None) -> OrderRecord:
        """Move an order to ``status`` and log the change in ``order_events``; return the new record.

        Validated against ``TRANSITIONS`` and the quantity rules of ``next_order_state`` before
        anything is written; an illegal change raises ``IllegalTransitionError`` and leaves the
        row as it was. ``filled_qty``, ``avg_price`` and ``fee`` (USDT) are cumulative order
        totals; None keeps the recorded value. An update that changes nothing writes nothing.
        ``horizon_ms`` (wall ms) is when a "not found" for the order's latest request becomes final.
        """
        target = _enum(OrderStatus, status, "status")
        filled = None if filled_qty is None else to_decimal(filled_qty, field="filled_qty")
        average = None if avg_price is None else to_decimal(avg_price, field="avg_price")
        total_fee = None if fee is None else to_decimal(fee, field="fee")
        with self._tx() as conn:
            current = self._order_row(conn, client_order_id)
            new = next_order_state(current, status=target, exchange_order_id=exchange_order_id, filled_qty=filled,
                                   avg_price=average, fee=total_fee, error=error, now_ms=self._now_ms())
            if horizon_ms is not None:
                new = replace(new, horizon_ms=int(horizon_ms))
            if new.status is current.status and same_figures(new, current) and new.horizon_ms == current.horizon_ms:
                return current
            conn.execute(
                "UPDATE orders SET status = ?, exchange_order_id = ?, filled_qty = ?, avg_price = ?, fee = ?,"
                " error = ?, updated_ms = ?, horizon_ms = ? WHERE client_order_id = ?",
                (new.status.value, new.exchange_order_id, _txt(new.filled_qty), _txt_opt(new.avg_price),
                 _txt(new.fee), new.error, new.updated_ms, new.horizon_ms, client_order_id))
            if new.filled_qty != current.filled_qty:
                delta = new.filled_qty - current.filled_qty
                self._add_net(conn, new.symbol, delta if new.side is Side.BUY else -delta)
            self._append_event(conn, new, from_status=current.status)
        self._publish_order(new)
        return new

    def get_order(self, client_order_id: str) -> OrderRecord | None:
        rows = self._read("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return order_from_row(rows[0]) if rows else None

    def orders_for_signal(self, signal_id: str) -> list[OrderRecord]:
        return self._orders("signal_id = ?", (signal_id,))

    def orders_for_pair(self, pair_id: str) -> list[OrderRecord]:
        return self._orders("pair_id = ?", (pair_id,))

    def open_orders(self, pair_id: str | None = None) -> list[OrderRecord]:
        """Orders that may still change or are unresolved: INTENT, SENT, ACKED, PARTIALLY_FILLED,
        UNKNOWN, RESENDING (all of them, or one pair's). Reconciliation looks each one up by
        client order id, through the resolver."""
        if pair_id is not None:
            return [o for o in self.orders_for_pair(pair_id) if o.status.is_open]
        statuses = sorted(status.value for status in OPEN_STATUSES)
        return self._orders(f"status IN ({', '.join('?' * len(statuses))})", statuses)

    def recent_orders(self, limit: int, pair_id: str | None = None) -> list[OrderRecord]:
        """The newest ``limit`` orders (of every pair, or one), newest first: the operator API's view."""
        where, params = ("pair_id = ?", [pair_id]) if pair_id is not None else ("1 = 1", [])
        rows = self._read(f"SELECT * FROM orders WHERE {where} ORDER BY created_ms DESC, rowid DESC LIMIT ?",
                          (*params, int(limit)))
        return [order_from_row(row) for row in rows]

    def order_status_counts(self) -> dict[str, int]:
        """Orders per status over the whole journal (the ``/metrics`` order counter)."""
        return {row[0]: int(row[1]) for row in self._read("SELECT status, COUNT(*) FROM orders GROUP BY status")}

    def net_filled(self, symbol: str) -> Decimal:
        """The signed quantity of ``symbol`` that every order in the journal filled, net (buys -
        sells): what the bot's account holds on it according to the journal. One row of
        ``symbol_net``, kept with every fill change (``update_order``)."""
        rows = self._read("SELECT net FROM symbol_net WHERE symbol = ?", (symbol,))
        return Decimal(rows[0][0]) if rows else Decimal(0)

    @staticmethod
    def _add_net(conn: sqlite3.Connection, symbol: str, change: Decimal) -> None:
        row = conn.execute("SELECT net FROM symbol_net WHERE symbol = ?", (symbol,)).fetchone()
        net = (Decimal(row[0]) if row else Decimal(0)) + change
        conn.execute("INSERT OR REPLACE INTO symbol_net (symbol, net) VALUES (?, ?)", (symbol, _txt(net)))

    def open_order_qty(self, symbol: str, side: str) -> Decimal:
        """What orders of ``symbol`` on ``side`` that are still open in the journal (sent,
        acknowledged, partly filled, of unknown outcome, being resent) may yet fill, beyond what
        ``net_filled`` already counts: unknown is not zero, it is up to this much."""
        placeholders = ",".join("?" * len(OPEN_STATUSES))
        rows = self._read(f"SELECT qty, filled_qty FROM orders WHERE symbol = ? AND side = ? AND status IN "
                          f"({placeholders})", (symbol, side, *(s.value for s in OPEN_STATUSES)))
        return sum((Decimal(q) - Decimal(f) for q, f in rows), Decimal(0))

    def order_events(self, client_order_id: str) -> list[OrderEvent]:
        rows = self._read("SELECT * FROM order_events WHERE client_order_id = ? ORDER BY event_id",
                          (client_order_id,))
        return [event_from_row(row) for row in rows]

    def _orders(self, where: str, params: Sequence[object]) -> list[OrderRecord]:
        rows = self._read(f"SELECT * FROM orders WHERE {where} ORDER BY created_ms, rowid", params)
        return [order_from_row(row) for row in rows]

    def _order_row(self, conn: sqlite3.Connection, client_order_id: str) -> OrderRecord:
        row = conn.execute("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        if row is None:
            raise UnknownRecordError(f"order {client_order_id} is not in the journal")
        return order_from_row(row)

    def _append_event(self, conn: sqlite3.Connection, order: OrderRecord, *,
                      from_status: OrderStatus | None) -> None:
        conn.execute(
            "INSERT INTO order_events (client_order_id, ts_ms, from_status, to_status, exchange_order_id,"
            " filled_qty, avg_price, fee, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (order.client_order_id, order.updated_ms, None if from_status is None else from_status.value,
             order.status.value, order.exchange_order_id, _txt(order.filled_qty), _txt_opt(order.avg_price),
             _txt(order.fee), order.error))

    # ---------------------------------------------------------------------------- fills

    def record_fill(self, client_order_id: str, *, trade_id: str, qty: Decimal, price: Decimal, fee: Decimal,
                    ts_ms: int, fee_asset: str = "USDT", fee_native: Decimal | None = None) -> bool:
        """Record one trade of an order; False if that trade was already recorded (idempotent).

        Trades are keyed by (symbol, trade_id), as exchange trade ids are unique per symbol.
        A repeat with other figures, or fills summing past the order quantity, raise
        ``FillConflictError``: the book can no longer be trusted for that pair. ``fee`` is USDT
        (what PnL uses); a fee charged in another asset passes that asset and the amount charged
        in it as ``fee_asset`` / ``fee_native``. A repeat is compared on the native fee, since the
        USDT value of a BNB fee depends on when it was converted.
        """
        amount = to_decimal(qty, field="qty")
        at = to_decimal(price, field="price")
        cost = to_decimal(fee, field="fee")
        asset = (fee_asset or "USDT").upper()
        native = None if fee_native is None or asset == "USDT" else to_decimal(fee_native, field="fee_native")
        if amount <= 0 or at <= 0:
            raise InvalidRecordError(f"fill {trade_id}: qty {amount} and price {at} must be > 0")
        with self._tx() as conn:
            order = self._order_row(conn, client_order_id)
            seen = conn.execute("SELECT * FROM fills WHERE symbol = ? AND trade_id = ?",
                                (order.symbol, str(trade_id))).fetchone()
            if seen is not None:
                seen_fee = Decimal(seen["fee_native"] if seen["fee_native"] is not None else seen["fee"])
                if (seen["client_order_id"], Decimal(seen["qty"]), Decimal(seen["price"]), seen["fee_asset"], seen_fee) \
                        != (client_order_id, amount, at, asset, cost if native is None else native):
                    raise FillConflictError(
                        f"trade {order.symbol}/{trade_id} already recorded with other figures "
                        f"(order {seen['client_order_id']}, qty {seen['qty']} @ {seen['price']} fee {seen['fee']})")
                return False
            done = sum((Decimal(r[0]) for r in conn.execute(
                "SELECT qty FROM fills WHERE client_order_id = ?", (client_order_id,))), Decimal(0))
            if done + amount > order.qty:
                raise FillConflictError(f"order {client_order_id}: fills would reach {done + amount} "
                                        f"of an order for {order.qty}")
            conn.execute("INSERT INTO fills (symbol, trade_id, client_order_id, pair_id, side, qty, price, fee, ts_ms,"
                         " recorded_ms, fee_asset, fee_native) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (order.symbol, str(trade_id), client_order_id, order.pair_id, order.side.value,
                          _txt(amount), _txt(at), _txt(cost), ts_ms, self._now_ms(), asset, _txt_opt(native)))
            repriced = self._reprice_if_closed(conn, order)
        self._publish_order(order, fill={"trade_id": str(trade_id), "qty": str(amount), "price": str(at),
                                         "fee": str(cost), "fee_asset": asset, "ts_ms": ts_ms})
        if repriced is not None:
            before, after = repriced
            logger.warning("round trip {} on {} repriced by a late fill of {} (trade {}): net PnL {} -> {} USDT",
                           after.id, after.pair_id, client_order_id, trade_id, before.net_pnl, after.net_pnl)
        return True

    def _reprice_if_closed(self, conn: sqlite3.Connection,
                           order: OrderRecord) -> tuple[RoundTrip, RoundTrip] | None:
        """A fill that arrives after its round trip was closed: recompute the trip's gross, fees and
        net from ALL its fills (inside the fill's own transaction) and record an event saying so.
        The daily-loss figure reads the stored net, so it follows. Returns (before, after)."""
        if order.round_trip_id is None:
            return None
        trip = self._round_trip_row(conn, order.round_trip_id)
        if trip is None or trip.is_open:
            return None
        return self._reprice_closed(conn, trip, {"order": order.client_order_id})

    # ---------------------------------------------------------------------------- funding

    def record_funding(self, *, symbol: str, payment_id: str, amount: Decimal, asset: str, ts_ms: int) -> bool:
        """Record one funding payment; False if that payment was already recorded (idempotent).

        Keyed by (symbol, the venue's payment id: Binance's tranId). The payment is tied to the
        round trip whose pair trades ``symbol`` and was open at ``ts_ms`` (the oldest, if two pairs
        share the symbol); none such: recorded unattributed and logged. A payment for a round
        trip already closed reprices it, as a late fill does. A repeat with another amount
        raises ``FillConflictError``.
        """
        value = to_decimal(amount, field="amount")
        if not payment_id or not symbol:
            raise InvalidRecordError("funding payment: symbol and payment id must be non-empty")
        with self._tx() as conn:
            seen = conn.execute("SELECT amount FROM funding WHERE symbol = ? AND payment_id = ?",
                                (symbol, str(payment_id))).fetchone()
            if seen is not None:
                if Decimal(seen[0]) != value:
                    raise FillConflictError(f"funding {symbol}/{payment_id} already recorded as {seen[0]}, not {value}")
                return False
            row = conn.execute(
                "SELECT rt.id, rt.pair_id FROM round_trips rt JOIN positions p ON p.pair_id = rt.pair_id"
                " WHERE (p.symbol_a = ? OR p.symbol_b = ?) AND rt.opened_ts_ms <= ?"
                " AND (rt.closed_ts_ms IS NULL OR rt.closed_ts_ms >= ?) ORDER BY rt.id LIMIT 1",
                (symbol, symbol, ts_ms, ts_ms)).fetchone()
            trip_id, pair_id = (row[0], row[1]) if row else (None, None)
            conn.execute("INSERT INTO funding (symbol, payment_id, pair_id, round_trip_id, amount, asset, ts_ms,"
                         " recorded_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (symbol, str(payment_id), pair_id, trip_id, _txt(value), asset, ts_ms, self._now_ms()))
            repriced = None
            if trip_id is not None:
                trip = self._round_trip_row(conn, trip_id)
                if trip is not None and not trip.is_open:
                    repriced = self._reprice_closed(conn, trip, {"funding": f"{symbol}/{payment_id}"})
        if trip_id is None:
            logger.warning("funding payment {} on {} ({} {}) at {} belongs to no round trip of the bot",
                           payment_id, symbol, value, asset, ts_ms)
        else:
            logger.info("funding {} {} on {} recorded for round trip {} of {}", value, asset, symbol, trip_id,
                        pair_id)
        if repriced is not None:
            before, after = repriced
            logger.warning("round trip {} on {} repriced by late funding on {}: net PnL {} -> {} USDT", after.id,
                           after.pair_id, symbol, before.net_pnl, after.net_pnl)
        return True

    def funding_for_round_trip(self, round_trip_id: int) -> list[FundingRecord]:
        rows = self._read("SELECT * FROM funding WHERE round_trip_id = ? ORDER BY ts_ms, rowid", (round_trip_id,))
        return [funding_from_row(row) for row in rows]

    def funding_since(self, ts_ms: int) -> list[FundingRecord]:
        """Every funding payment at or after ``ts_ms``, oldest first."""
        rows = self._read("SELECT * FROM funding WHERE ts_ms >= ? ORDER BY ts_ms, rowid", (ts_ms,))
        return [funding_from_row(row) for row in rows]

    def last_funding_ms(self, symbol: str) -> int | None:
        rows = self._read("SELECT MAX(ts_ms) FROM funding WHERE symbol = ?", (symbol,))
        return rows[0][0] if rows and rows[0][0] is not None else None

    def _funding_total(self, conn: sqlite3.Connection, round_trip_id: int) -> Decimal:
        rows = conn.execute("SELECT amount FROM funding WHERE round_trip_id = ?", (round_trip_id,)).fetchall()
        return sum((Decimal(r[0]) for r in rows), Decimal(0))

    def _reprice_closed(self, conn: sqlite3.Connection, trip: RoundTrip,
                        cause: dict[str, str]) -> tuple[RoundTrip, RoundTrip]:
        """Recompute a closed trip's gross, fees, funding and net from everything recorded for it,
        and journal a ``round_trip_repriced`` event with ``cause`` (a late fill's order, or a
        funding payment) and the figures before and after. Returns (before, after)."""
        fills = self._fills("client_order_id IN (SELECT client_order_id FROM orders WHERE round_trip_id = ?)",
                            (trip.id,), conn)
        gross, fees, net = round_trip_pnl(fills)
        funding = self._funding_total(conn, trip.id)
        net += funding
        conn.execute("UPDATE round_trips SET gross_pnl = ?, fees = ?, net_pnl = ?, funding = ? WHERE id = ?",
                     (_txt(gross), _txt(fees), _txt(net), _txt(funding), trip.id))
        self._insert_event(conn, "round_trip_repriced", trip.pair_id, {
            "round_trip_id": trip.id, **cause, "net_before": _txt_opt(trip.net_pnl), "net_after": _txt(net),
            "fees_before": _txt_opt(trip.fees), "fees_after": _txt(fees),
            "funding_before": _txt_opt(trip.funding), "funding_after": _txt(funding)})
        return trip, replace(trip, gross_pnl=gross, fees=fees, net_pnl=net, funding=funding)

    # ---------------------------------------------------------------------------- events

    def record_event(self, kind: str, pair_id: str | None, detail: Mapping[str, Any]) -> None:
        """Store one journal event (an anomaly, an operator action, a repricing)."""
        if not kind:
            raise InvalidRecordError("event kind must be non-empty")
        with self._tx() as conn:
            self._insert_event(conn, kind, pair_id, detail)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Journal events, oldest first, as dicts with ``detail`` decoded."""
        if kind is None:
            rows = self._read("SELECT * FROM journal_events ORDER BY id")
        else:
            rows = self._read("SELECT * FROM journal_events WHERE kind = ? ORDER BY id", (kind,))
        return [{"id": r["id"], "ts_ms": r["ts_ms"], "kind": r["kind"], "pair_id": r["pair_id"],
                 "detail": json.loads(r["detail"])} for r in rows]

    def _insert_event(self, conn: sqlite3.Connection, kind: str, pair_id: str | None,
                      detail: Mapping[str, Any]) -> None:
        conn.execute("INSERT INTO journal_events (ts_ms, kind, pair_id, detail) VALUES (?, ?, ?, ?)",
                     (self._now_ms(), kind, pair_id, json.dumps(dict(detail), sort_keys=True, default=str)))

    def fills_for_order(self, client_order_id: str) -> list[FillRecord]:
        return self._fills("client_order_id = ?", (client_order_id,))

    def fills_for_pair_since(self, pair_id: str, ts_ms: int) -> list[FillRecord]:
        """Fills of a pair's orders at or after ``ts_ms``, oldest first."""
        return self._fills("pair_id = ? AND ts_ms >= ?", (pair_id, ts_ms))

    def _fills(self, where: str, params: Sequence[object],
               conn: sqlite3.Connection | None = None) -> list[FillRecord]:
        sql = f"SELECT * FROM fills WHERE {where} ORDER BY ts_ms, rowid"
        rows = self._read(sql, params) if conn is None else conn.execute(sql, params).fetchall()
        return [fill_from_row(row) for row in rows]

    # ---------------------------------------------------------------------------- positions

    def get_position(self, pair_id: str) -> PairPosition | None:
        rows = self._read("SELECT * FROM positions WHERE pair_id = ?", (pair_id,))
        return position_from_row(rows[0]) if rows else None

    def save_position(self, position: PairPosition) -> PairPosition:
        """Insert or replace a pair's position; returns it with ``updated_ms`` stamped."""
        state = _enum(PairState, position.state, "state")
        saved = PairPosition(
            pair_id=position.pair_id, state=state, qty_a=to_decimal(position.qty_a, field="qty_a"),
            qty_b=to_decimal(position.qty_b, field="qty_b"), symbol_a=position.symbol_a, symbol_b=position.symbol_b,
            entry_signal_id=position.entry_signal_id, entry_ts_ms=position.entry_ts_ms,
            round_trip_id=position.round_trip_id, halted_reason=position.halted_reason, updated_ms=self._now_ms())
        validate_position(saved)
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (saved.pair_id, state.value, _txt(saved.qty_a), _txt(saved.qty_b), saved.symbol_a,
                          saved.symbol_b, saved.entry_signal_id, saved.entry_ts_ms, saved.round_trip_id,
                          saved.halted_reason, saved.updated_ms))
        return saved

    def save_position_transition(self, position: PairPosition, *, event: str, from_state: str) -> PairPosition:
        """Save a pair's position and a ``pair_transition`` event saying why, in one transaction."""
        with self._tx() as conn:
            saved = self.save_position(position)
            self._insert_event(conn, "pair_transition", position.pair_id, {
                "from": from_state, "to": saved.state.value, "event": event, "qty_a": _txt(saved.qty_a),
                "qty_b": _txt(saved.qty_b), "reason": saved.halted_reason})
        return saved

    def all_positions(self) -> list[PairPosition]:
        return [position_from_row(row) for row in self._read("SELECT * FROM positions ORDER BY pair_id")]

    # ---------------------------------------------------------------------------- round trips

    def open_round_trip(self, pair_id: str, *, entry_signal_id: str, opened_ts_ms: int) -> int:
        """Start a round trip on a pair and return its id; a pair has at most one open."""
        with self._tx() as conn:
            if conn.execute("SELECT id FROM round_trips WHERE pair_id = ? AND closed_ts_ms IS NULL",
                            (pair_id,)).fetchone():
                raise RoundTripStateError(f"pair {pair_id} already has an open round trip")
            cursor = conn.execute(
                "INSERT INTO round_trips (pair_id, entry_signal_id, opened_ts_ms) VALUES (?, ?, ?)",
                (pair_id, entry_signal_id, opened_ts_ms))
        return int(cursor.lastrowid or 0)

    def close_round_trip(self, round_trip_id: int, *, exit_signal_id: str | None, closed_ts_ms: int,
                         exit_reason: str) -> RoundTrip:
        """Close a round trip and store its realized PnL, computed from fills (USDT).

        The trip's orders are those of its pair whose ``round_trip_id`` is this trip, plus the
        unlinked ones sent for its entry or exit signal (their top-ups, trims and rollbacks
        carry the same signal id); they are stamped with this trip's id. Over their fills:
        gross = sum(+qty*price for sells, -qty*price for buys), fees = sum(fee), net = gross -
        fees + funding (the trip's funding payments, ``record_funding``), all exact Decimal. A
        symbol whose fills do not net to zero is logged as a warning.
        """
        with self._tx() as conn:
            trip = self._round_trip_row(conn, round_trip_id)
            if trip is None:
                raise UnknownRecordError(f"round trip {round_trip_id} is not in the journal")
            if not trip.is_open:
                raise RoundTripStateError(f"round trip {round_trip_id} was already closed")
            # The two signals' orders by orders_by_signal (the planner's own pick scans every order of the pair)
            conn.execute("UPDATE orders INDEXED BY orders_by_signal SET round_trip_id = ? WHERE pair_id = ?"
                         " AND round_trip_id IS NULL"
                         " AND signal_id IN (?, ?)", (round_trip_id, trip.pair_id, trip.entry_signal_id,
                                                      exit_signal_id or trip.entry_signal_id))
            orders = [order_from_row(row) for row in conn.execute(
                "SELECT * FROM orders WHERE round_trip_id = ? ORDER BY created_ms, rowid", (round_trip_id,))]
            fills = self._fills("client_order_id IN (SELECT client_order_id FROM orders WHERE round_trip_id = ?)",
                                (round_trip_id,), conn)
            gross, fees, net = round_trip_pnl(fills)
            funding = self._funding_total(conn, round_trip_id)
            net += funding
            conn.execute("UPDATE round_trips SET exit_signal_id = ?, closed_ts_ms = ?, gross_pnl = ?, fees = ?,"
                         " net_pnl = ?, exit_reason = ?, funding = ? WHERE id = ?",
                         (exit_signal_id, closed_ts_ms, _txt(gross), _txt(fees), _txt(net), exit_reason,
                          _txt(funding), round_trip_id))
        _warn_if_incomplete(trip, orders, fills)
        return replace(trip, exit_signal_id=exit_signal_id, closed_ts_ms=closed_ts_ms, gross_pnl=gross, fees=fees,
                       net_pnl=net, exit_reason=exit_reason, funding=funding)

    def get_round_trip(self, round_trip_id: int) -> RoundTrip | None:
        rows = self._read("SELECT * FROM round_trips WHERE id = ?", (round_trip_id,))
        return round_trip_from_row(rows[0]) if rows else None

    def round_trips(self, pair_id: str | None = None) -> list[RoundTrip]:
        """All round trips (or one pair's), oldest first, open ones included."""
        if pair_id is None:
            rows = self._read("SELECT * FROM round_trips ORDER BY id")
        else:
            rows = self._read("SELECT * FROM round_trips WHERE pair_id = ? ORDER BY id", (pair_id,))
        return [round_trip_from_row(row) for row in rows]

    def realized_pnl_since(self, ts_ms: int) -> Decimal:
        """Realized PnL (USDT) since ``ts_ms``, for the daily-loss check: the net PnL (funding
        included) of round trips closed at or after ``ts_ms``, plus funding paid or received
        since then that no closed trip has counted yet (open round trips, unattributed payments).
        Fees paid in open round trips are not included."""
        rows = self._read("SELECT net_pnl FROM round_trips WHERE closed_ts_ms >= ?", (ts_ms,))
        closed = sum((Decimal(row[0]) for row in rows), Decimal(0))
        open_funding = self._read(
            "SELECT f.amount FROM funding f LEFT JOIN round_trips rt ON rt.id = f.round_trip_id"
            " WHERE f.ts_ms >= ? AND (f.round_trip_id IS NULL OR rt.closed_ts_ms IS NULL)", (ts_ms,))
        return closed + sum((Decimal(row[0]) for row in open_funding), Decimal(0))

    def _round_trip_row(self, conn: sqlite3.Connection, round_trip_id: int) -> RoundTrip | None:
        row = conn.execute("SELECT * FROM round_trips WHERE id = ?", (round_trip_id,)).fetchone()
        return None if row is None else round_trip_from_row(row)


def _warn_if_incomplete(trip: RoundTrip, orders: list[OrderRecord], fills: list[FillRecord]) -> None:
    """Say so when the PnL just stored may be wrong: an order whose recorded fills do not add
    up to its filled quantity (a fill never recorded), or a symbol left with inventory."""
    gaps = fill_gaps(orders, fills)
    if gaps:
        logger.warning("round trip {} on {}: filled qty vs recorded fills differ for {}; PnL may be incomplete",
                       trip.id, trip.pair_id, gaps)
    residual = {symbol: qty for symbol, qty in net_qty_by_symbol(fills).items() if qty != 0}
    if residual:
        logger.warning("round trip {} on {} closed with residual quantities {} over orders {}",
                       trip.id, trip.pair_id, residual, [o.client_order_id for o in orders])
