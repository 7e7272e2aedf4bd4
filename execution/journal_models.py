"""Records, enums, errors and pure rules of the execution journal.

Everything here is free of I/O so that the rules that protect the book (which order status may
follow which, how realized PnL is summed) can be read and tested without a database. The
``Journal`` in ``execution/journal.py`` stores these records and calls these rules before it
writes anything: validate first, mutate after (STYLE.md habit 4).

Money is exact. Quantities, prices and fees are ``decimal.Decimal`` everywhere in this module;
floats are refused at the boundary because ``Decimal(0.1)`` silently carries binary noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from enum import Enum
from typing import Any, Iterable, Mapping, Protocol

from core.errors import PairsBotError
from core.types import IN_POSITION, PairState, SignalType, TradingSignal

# --------------------------------------------------------------------------------------------
# Errors: each docstring names what the caller should do.


class JournalError(PairsBotError):
    """Base of every journal error. Action: do not trade on a journal you cannot trust."""


class JournalClosedError(JournalError):
    """The journal was used after ``close()``. Action: a bug in the caller; fix the lifecycle."""


class JournalOpenError(JournalError):
    """The file cannot be opened as a journal (not SQLite, unreadable). Action: tell the operator."""


class JournalModeError(JournalError):
    """The file was created for another mode (paper/live/demo). Action: use that mode's own file;
    never override, so a paper run can never read or write a live journal."""


class SchemaVersionError(JournalError):
    """The file's schema is newer than this code knows. Action: run the newer bot version."""


class JournalStorageError(JournalError):
    """SQLite could not read or write the file (locked by another process, disk full, I/O
    error). Action: stop trading; an order whose intent was not committed must not be sent."""


class InvalidRecordError(JournalError):
    """A value to be stored breaks a rule (float money, negative qty, bad id). Action: fix the caller."""


class UnknownRecordError(JournalError):
    """The id (order, signal, round trip) is not in the journal. Action: look it up elsewhere
    or treat as never recorded; do not invent it."""


class DuplicateOrderError(JournalError):
    """A client order id was recorded twice. Action: derive a new id (next attempt); never reuse."""


class IllegalTransitionError(JournalError):
    """An order status change breaks the transition table or its quantity rules. Action: the
    caller's view of the order is wrong; look the order up on the exchange and reconcile."""


class FillConflictError(JournalError):
    """A fill contradicts what is recorded (same trade id with other values, or fills exceeding
    the order quantity). Action: stop trading the pair and reconcile with the exchange."""


class RoundTripStateError(JournalError):
    """A round trip was opened twice for a pair or closed twice. Action: a bug in the caller."""


# --------------------------------------------------------------------------------------------
# Enums. str-valued so they are stored and logged as their plain value.


class JournalMode(str, Enum):
    """Which kind of run owns a journal file; fixed when the file is created."""

    PAPER = "paper"
    LIVE = "live"
    DEMO = "demo"

    @classmethod
    def parse(cls, value: object) -> "JournalMode":
        """Accept ``JournalMode``, ``core.launch.RunMode`` or a string, in any case."""
        raw = value.value if isinstance(value, Enum) else value
        try:
            return cls(str(raw).lower())
        except ValueError:
            raise InvalidRecordError(f"journal mode {value!r}: expected one of paper, live, demo") from None


class Leg(str, Enum):
    A = "a"  # leg_a, the X symbol
    B = "b"  # leg_b, the Y symbol


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(str, Enum):
    MARKET = "market"
    LIMIT = "limit"


class OrderPurpose(str, Enum):
    """Why an order was sent; the engine's protocols each have their own."""

    ENTRY = "ENTRY"
    EXIT = "EXIT"
    TOP_UP = "TOP_UP"  # bring the short-filled leg up to the hedge quantity
    TRIM = "TRIM"  # reduce the over-filled leg to the hedge quantity
    ROLLBACK = "ROLLBACK"  # close a filled leg whose partner failed for good
    REPAIR = "REPAIR"  # reconciliation fixing what a crash left behind
    LIMIT_CHASE = "LIMIT_CHASE"  # a re-priced limit order
    VANISHED = "VANISHED"  # not an order: a leg that left the exchange with no order of ours (liquidation,
    #                        auto-deleveraging, a manual close), recorded so the derived legs match it


class OrderStatus(str, Enum):
    INTENT = "INTENT"  # written before the request leaves the process
    SENT = "SENT"  # request sent, no answer yet
    ACKED = "ACKED"  # open on the exchange
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"  # outcome unknown (response lost, 503, -1007); the resolver has it
    NOT_FOUND = "NOT_FOUND"  # confirmed none: not found by a lookup made after the order's horizon
    RESENDING = "RESENDING"  # confirmed none, and sent again under the same id; no answer yet

    @property
    def is_open(self) -> bool:
        """True while the order may still change on the exchange or is unresolved."""
        return self in OPEN_STATUSES


S = OrderStatus
#: Unresolved (UNKNOWN) and resending (RESENDING) orders are open: a restart resumes resolving them.
OPEN_STATUSES: frozenset[OrderStatus] = frozenset({S.INTENT, S.SENT, S.ACKED, S.PARTIALLY_FILLED, S.UNKNOWN,
                                                   S.RESENDING})

#: Which status may follow which. A self-loop means "same status, refined data" (more filled
#: quantity, a fee, an error text). Entries marked ODDITY are real-world races allowed on purpose.
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    S.INTENT: frozenset({S.SENT, S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED,
                         S.REJECTED, S.UNKNOWN, S.NOT_FOUND, S.RESENDING}),
    S.SENT: frozenset({S.SENT, S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED,
                       S.REJECTED, S.UNKNOWN, S.NOT_FOUND}),
    S.ACKED: frozenset({S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.UNKNOWN}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.UNKNOWN}),
    S.FILLED: frozenset({S.FILLED}),
    # ODDITY: a fill racing our cancel; the exchange reports the order (partly) filled after all.
    S.CANCELED: frozenset({S.CANCELED, S.PARTIALLY_FILLED, S.FILLED}),
    # An expired order may carry a partial fill; a self-loop may raise its filled quantity.
    S.EXPIRED: frozenset({S.EXPIRED}),
    S.REJECTED: frozenset({S.REJECTED}),
    # ODDITY: a lost response resolves to whatever the exchange reports (found), or to
    # NOT_FOUND once its horizon has passed; only our own pre-exchange states cannot follow.
    S.UNKNOWN: frozenset(set(S) - {S.INTENT, S.SENT}),
    # Confirmed none is final for that request: the only way on is a resend under the same id.
    S.NOT_FOUND: frozenset({S.NOT_FOUND, S.RESENDING}),
    # A resend ends like any request: answered, refused, or unknown again (then resolved anew).
    S.RESENDING: frozenset({S.RESENDING, S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED,
                            S.REJECTED, S.UNKNOWN, S.NOT_FOUND}),
}

# Statuses whose filled quantity must be zero, and the ones that demand a partial fill.
_NO_FILL = frozenset({S.INTENT, S.SENT, S.ACKED, S.REJECTED, S.NOT_FOUND, S.RESENDING})

# Binance: at most 36 characters of [.A-Z:/a-z0-9_-].
CLIENT_ORDER_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


# --------------------------------------------------------------------------------------------
# Records. Frozen so a record read from the journal cannot drift from what is stored.


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """A recorded signal and what became of it (``status`` is the engine's word, e.g. EXECUTED)."""

    signal: TradingSignal
    status: str
    reason: str | None
    recorded_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One order as the journal knows it. Quantities in base units, prices and fee in USDT."""

    client_order_id: str
    signal_id: str
    pair_id: str
    leg: Leg
    purpose: OrderPurpose
    attempt: int
    symbol: str
    side: Side
    order_type: OrderType
    qty: Decimal
    price: Decimal | None
    reduce_only: bool
    status: OrderStatus
    exchange_order_id: str | None
    filled_qty: Decimal
    avg_price: Decimal | None
    fee: Decimal
    error: str | None
    created_ms: int
    updated_ms: int
    round_trip_id: int | None = None
    #: Wall ms after which a lookup's "not found" is final: the latest request's timestamp +
    #: recvWindow + the clock-error margin (None until a request's outcome was unknown).
    horizon_ms: int | None = None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One state change of an order, with the order's figures right after it."""

    event_id: int
    client_order_id: str
    ts_ms: int
    from_status: OrderStatus | None  # None for the INTENT row written at creation
    to_status: OrderStatus
    exchange_order_id: str | None
    filled_qty: Decimal
    avg_price: Decimal | None
    fee: Decimal
    error: str | None


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One trade (execution) of an order; ``side`` is the order's side, ``fee`` in USDT.

    ``fee`` is what PnL uses. A fee the venue charged in another asset (BNB) keeps that asset
    and the amount charged in it in ``fee_asset`` / ``fee_native``; ``fee`` is then its USDT
    value at the asset's price when the fill was read.
    """

    trade_id: str
    client_order_id: str
    pair_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    ts_ms: int
    recorded_ms: int
    fee_asset: str = "USDT"
    fee_native: Decimal | None = None


@dataclass(frozen=True, slots=True)
class FundingRecord:
    """One funding payment (signed USDT: + received, - paid), keyed by (symbol, payment id).

    ``round_trip_id`` is the round trip that held the symbol at the funding time (None: no
    round trip of the bot did, e.g. an external position)."""

    symbol: str
    payment_id: str
    pair_id: str | None
    round_trip_id: int | None
    amount: Decimal
    asset: str
    ts_ms: int
    recorded_ms: int


@dataclass(frozen=True, slots=True)
class PairPosition:
    """What the bot holds on one pair. Quantities are signed: + long, - short.

    ``updated_ms`` is stamped by the journal on save; the value passed in is ignored.
    """

    pair_id: str
    state: PairState
    qty_a: Decimal
    qty_b: Decimal
    symbol_a: str
    symbol_b: str
    entry_signal_id: str | None = None
    entry_ts_ms: int | None = None
    round_trip_id: int | None = None
    halted_reason: str | None = None
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """An entry and its exit on one pair; the PnL fields are None until it is closed (USDT)."""

    id: int
    pair_id: str
    entry_signal_id: str
    exit_signal_id: str | None
    opened_ts_ms: int
    closed_ts_ms: int | None
    gross_pnl: Decimal | None
    fees: Decimal | None
    net_pnl: Decimal | None  # gross - fees + funding
    exit_reason: str | None
    funding: Decimal | None = None  # net funding received (+) or paid (-) while it was open

    @property
    def is_open(self) -> bool:
        return self.closed_ts_ms is None


# --------------------------------------------------------------------------------------------
# Pure rules.


def to_decimal(value: object, *, field: str) -> Decimal:
    """A finite Decimal from Decimal, int or str; floats are refused (binary noise in money)."""
    if isinstance(value, (bool, float)):
        raise InvalidRecordError(f"{field}={value!r}: pass a Decimal or a decimal string, never a float")
    result: Decimal | None = None
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, str)):
        try:
            result = Decimal(str(value).strip())
        except ArithmeticError:
            result = None
    if result is None or not result.is_finite():
        raise InvalidRecordError(f"{field}={value!r}: expected a finite decimal number")
    return result


def next_order_state(order: OrderRecord, *, status: OrderStatus, exchange_order_id: str | None,
                     filled_qty: Decimal | None, avg_price: Decimal | None, fee: Decimal | None,
                     error: str | None, now_ms: int) -> OrderRecord:
    """The order after an update, or raise ``IllegalTransitionError`` and change nothing.

    Rules beyond the table: filled quantity never decreases and never exceeds the order
    quantity; FILLED means filled == qty (taken as qty when not given); PARTIALLY_FILLED means
    0 < filled < qty; INTENT/SENT/ACKED/REJECTED/NOT_FOUND/RESENDING carry no fill; the exchange order
    id, once known, never changes. Fields passed as None keep their recorded value.
    """
    where = f"order {order.client_order_id}"
    if status not in TRANSITIONS[order.status]:
        raise IllegalTransitionError(f"{where}: {order.status.value} -> {status.value} is not allowed")
    if status is S.FILLED and filled_qty is None:
        filled_qty = order.qty
    filled = order.filled_qty if filled_qty is None else filled_qty
    if filled < order.filled_qty:
        raise IllegalTransitionError(f"{where}: filled qty would go down from {order.filled_qty} to {filled}")
    if filled < 0 or filled > order.qty:
        raise IllegalTransitionError(f"{where}: filled qty {filled} outside 0..{order.qty}")
    if status is S.FILLED and filled != order.qty:
        raise IllegalTransitionError(f"{where}: FILLED with {filled} of {order.qty}")
    if status is S.PARTIALLY_FILLED and not 0 < filled < order.qty:
        raise IllegalTransitionError(f"{where}: PARTIALLY_FILLED needs 0 < filled < {order.qty}, got {filled}")
    if status in _NO_FILL and filled != 0:
        raise IllegalTransitionError(f"{where}: {status.value} cannot carry a fill ({filled})")
    if (exchange_order_id is not None and order.exchange_order_id is not None
            and exchange_order_id != order.exchange_order_id):
        raise IllegalTransitionError(
            f"{where}: exchange order id {order.exchange_order_id} cannot become {exchange_order_id}")
    return replace(
        order, status=status, filled_qty=filled,
        exchange_order_id=order.exchange_order_id if exchange_order_id is None else exchange_order_id,
        avg_price=order.avg_price if avg_price is None else avg_price,
        fee=order.fee if fee is None else fee,
        error=order.error if error is None else error,
        updated_ms=now_ms)


def validate_position(position: PairPosition) -> None:
    """Refuse positions that contradict their state; a wrong saved state survives restarts."""
    where = f"position {position.pair_id}"
    if position.state is PairState.FLAT and (position.qty_a != 0 or position.qty_b != 0):
        raise InvalidRecordError(f"{where}: FLAT with qty_a={position.qty_a} qty_b={position.qty_b}")
    if position.state in (PairState.HALTED, PairState.BLOCKED, PairState.RESOLVING) and not position.halted_reason:
        raise InvalidRecordError(f"{where}: {position.state.value} needs a reason saying what is open or unknown")
    if position.state in IN_POSITION and position.qty_a == 0 == position.qty_b:
        raise InvalidRecordError(f"{where}: {position.state.value} with nothing held")


def round_trip_pnl(fills: Iterable[FillRecord]) -> tuple[Decimal, Decimal, Decimal]:
    """``(gross, fees, net)`` in USDT from the fills of a round trip, exact.

    gross = sum(+qty*price for sells, -qty*price for buys); fees = sum(fee); net = gross - fees.
    Computed at 60 significant digits so no product or sum is rounded in practice.

    >>> f = FillRecord("1", "c", "p", "BTCUSDT", Side.SELL, Decimal("2"), Decimal("10.5"),
    ...                Decimal("0.01"), 0, 0)
    >>> round_trip_pnl([f])
    (Decimal('21.0'), Decimal('0.01'), Decimal('20.99'))
    """
    with localcontext() as ctx:
        ctx.prec = 60
        gross = Decimal(0)
        fees = Decimal(0)
        for fill in fills:
            notional = fill.qty * fill.price
            gross += notional if fill.side is Side.SELL else -notional
            fees += fill.fee
        return gross, fees, gross - fees


def net_qty_by_symbol(fills: Iterable[FillRecord]) -> dict[str, Decimal]:
    """Signed quantity left per symbol after the fills; all zero for a cleanly closed trip."""
    held: dict[str, Decimal] = {}
    for fill in fills:
        held[fill.symbol] = held.get(fill.symbol, Decimal(0)) + (fill.qty if fill.side is Side.BUY else -fill.qty)
    return held


def fill_gaps(orders: Iterable[OrderRecord], fills: Iterable[FillRecord]) -> dict[str, tuple[Decimal, Decimal]]:
    """``{client_order_id: (filled_qty, sum of recorded fill qty)}`` where the two differ."""
    recorded: dict[str, Decimal] = {}
    for fill in fills:
        recorded[fill.client_order_id] = recorded.get(fill.client_order_id, Decimal(0)) + fill.qty
    return {o.client_order_id: (o.filled_qty, recorded.get(o.client_order_id, Decimal(0))) for o in orders
            if o.filled_qty != recorded.get(o.client_order_id, Decimal(0))}


def same_figures(a: OrderRecord, b: OrderRecord) -> bool:
    """True if an update would change none of an order's figures (then nothing is written)."""
    return (a.exchange_order_id, a.filled_qty, a.avg_price, a.fee, a.error) == \
        (b.exchange_order_id, b.filled_qty, b.avg_price, b.fee, b.error)


# --------------------------------------------------------------------------------------------
# Row mapping: the journal's storage format (decimal TEXT, enum values) back to records.


class Row(Protocol):
    """A result row readable by column name, as ``sqlite3.Row`` is."""

    def __getitem__(self, key: str) -> Any: ...


def _dec_opt(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def signal_from_row(row: Row) -> SignalRecord:
    signal = TradingSignal(signal_id=row["signal_id"], pair_id=row["pair_id"],
                           signal_type=SignalType(row["signal_type"]), z=row["z"], spread=row["spread"],
                           mean=row["mean"], std=row["std"], mid_a=row["mid_a"], mid_b=row["mid_b"],
                           hedge_ratio=row["hedge_ratio"], ts_ms=row["ts_ms"])
    return SignalRecord(signal, row["status"], row["reason"], row["recorded_ms"], row["updated_ms"])


def order_from_row(row: Row) -> OrderRecord:
    return OrderRecord(
        client_order_id=row["client_order_id"], signal_id=row["signal_id"], pair_id=row["pair_id"],
        leg=Leg(row["leg"]), purpose=OrderPurpose(row["purpose"]), attempt=row["attempt"], symbol=row["symbol"],
        side=Side(row["side"]), order_type=OrderType(row["order_type"]), qty=Decimal(row["qty"]),
        price=_dec_opt(row["price"]), reduce_only=bool(row["reduce_only"]), status=OrderStatus(row["status"]),
        exchange_order_id=row["exchange_order_id"], filled_qty=Decimal(row["filled_qty"]),
        avg_price=_dec_opt(row["avg_price"]), fee=Decimal(row["fee"]), error=row["error"],
        created_ms=row["created_ms"], updated_ms=row["updated_ms"], round_trip_id=row["round_trip_id"],
        horizon_ms=row["horizon_ms"])


def event_from_row(row: Row) -> OrderEvent:
    return OrderEvent(
        event_id=row["event_id"], client_order_id=row["client_order_id"], ts_ms=row["ts_ms"],
        from_status=None if row["from_status"] is None else OrderStatus(row["from_status"]),
        to_status=OrderStatus(row["to_status"]), exchange_order_id=row["exchange_order_id"],
        filled_qty=Decimal(row["filled_qty"]), avg_price=_dec_opt(row["avg_price"]), fee=Decimal(row["fee"]),
        error=row["error"])


def fill_from_row(row: Row) -> FillRecord:
    return FillRecord(
        trade_id=row["trade_id"], client_order_id=row["client_order_id"], pair_id=row["pair_id"],
        symbol=row["symbol"], side=Side(row["side"]), qty=Decimal(row["qty"]), price=Decimal(row["price"]),
        fee=Decimal(row["fee"]), ts_ms=row["ts_ms"], recorded_ms=row["recorded_ms"], fee_asset=row["fee_asset"],
        fee_native=_dec_opt(row["fee_native"]))


def funding_from_row(row: Row) -> FundingRecord:
    return FundingRecord(symbol=row["symbol"], payment_id=row["payment_id"], pair_id=row["pair_id"],
                         round_trip_id=row["round_trip_id"], amount=Decimal(row["amount"]), asset=row["asset"],
                         ts_ms=row["ts_ms"], recorded_ms=row["recorded_ms"])


def position_from_row(row: Row) -> PairPosition:
    return PairPosition(
        pair_id=row["pair_id"], state=PairState(row["state"]), qty_a=Decimal(row["qty_a"]),
        qty_b=Decimal(row["qty_b"]), symbol_a=row["symbol_a"], symbol_b=row["symbol_b"],
        entry_signal_id=row["entry_signal_id"], entry_ts_ms=row["entry_ts_ms"],
        round_trip_id=row["round_trip_id"], halted_reason=row["halted_reason"], updated_ms=row["updated_ms"])


def round_trip_from_row(row: Row) -> RoundTrip:
    return RoundTrip(
        id=row["id"], pair_id=row["pair_id"], entry_signal_id=row["entry_signal_id"],
        exit_signal_id=row["exit_signal_id"], opened_ts_ms=row["opened_ts_ms"],
        closed_ts_ms=row["closed_ts_ms"], gross_pnl=_dec_opt(row["gross_pnl"]), fees=_dec_opt(row["fees"]),
        net_pnl=_dec_opt(row["net_pnl"]), exit_reason=row["exit_reason"], funding=_dec_opt(row["funding"]))


def order_event_data(order: OrderRecord) -> dict[str, Any]:
    """An order as the operator event stream and API show it: JSON-ready, exact decimals as text."""
    return {"client_order_id": order.client_order_id, "signal_id": order.signal_id, "pair_id": order.pair_id,
            "leg": order.leg.value, "purpose": order.purpose.value, "attempt": order.attempt,
            "symbol": order.symbol, "side": order.side.value, "type": order.order_type.value,
            "qty": str(order.qty), "price": None if order.price is None else str(order.price),
            "reduce_only": order.reduce_only, "status": order.status.value,
            "exchange_order_id": order.exchange_order_id, "filled_qty": str(order.filled_qty),
            "avg_price": None if order.avg_price is None else str(order.avg_price), "fee": str(order.fee),
            "error": order.error, "created_ms": order.created_ms, "updated_ms": order.updated_ms}


def position_event_data(position: PairPosition) -> dict[str, Any]:
    """A pair's position as the operator event stream and API show it."""
    return {"pair_id": position.pair_id, "state": position.state.value, "qty_a": str(position.qty_a),
            "qty_b": str(position.qty_b), "symbol_a": position.symbol_a, "symbol_b": position.symbol_b,
            "entry_signal_id": position.entry_signal_id, "entry_ts_ms": position.entry_ts_ms,
            "round_trip_id": position.round_trip_id, "halted_reason": position.halted_reason,
            "updated_ms": position.updated_ms}
