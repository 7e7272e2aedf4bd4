"""An independent audit of a session's figures, straight from the journal's raw rows.

Written apart from ``app/performance.py``, ``app/equity.py`` and ``app/report.py`` on purpose: it
reads the SQLite file with plain SQL and rebuilds round trips from the fills alone (per pair, per
symbol, from flat back to flat), so a figure the bot prints can be checked against something that
shares none of its code. Money is exact (Decimal); times are the signals' exchange times.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

D = Decimal
ZERO = D(0)


@dataclass
class AuditTrip:
    """A pair's fills from flat to flat (or to now, when still open)."""

    pair_id: str
    entry_signal: str
    exit_signal: str = ""
    first_fill_ms: int = 0
    last_fill_ms: int = 0
    cash: Decimal = ZERO  # + sells, - buys (qty x price)
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    qty: dict[str, Decimal] = field(default_factory=dict)  # symbol -> signed base quantity
    opened_ms: int = 0  # the entry signal's exchange time
    closed_ms: int | None = None  # the exit signal's exchange time

    @property
    def net(self) -> Decimal:
        return self.cash - self.fees + self.funding

    @property
    def flat(self) -> bool:
        return all(q == 0 for q in self.qty.values())


@dataclass
class Audit:
    closed: list[AuditTrip]  # in order of closing
    open: dict[str, AuditTrip]  # pair -> its trip still holding legs
    funding_total: Decimal  # every funding row of the journal
    funding_unplaced: list[tuple[str, str, Decimal, int]]  # rows no rebuilt trip held


def audit_journal(path: Path) -> Audit:
    """Rebuild every round trip from the fills and place each funding row in the trip of its pair
    that held the legs at its time (between its first and last fill)."""
    with sqlite3.connect(path) as db:
        signal_ts = dict(db.execute("SELECT signal_id, ts_ms FROM signals"))
        fills = db.execute(
            "SELECT f.pair_id, f.symbol, f.side, f.qty, f.price, f.fee, f.ts_ms, o.signal_id"
            " FROM fills f JOIN orders o ON o.client_order_id = f.client_order_id ORDER BY f.ts_ms, f.rowid").fetchall()
        funding = db.execute("SELECT pair_id, symbol, amount, ts_ms FROM funding ORDER BY ts_ms").fetchall()
    closed: list[AuditTrip] = []
    current: dict[str, AuditTrip] = {}
    for pair, symbol, side, qty, price, fee, ts, signal_id in fills:
        trip = current.get(pair)
        if trip is None:
            trip = current[pair] = AuditTrip(pair, signal_id, first_fill_ms=ts, opened_ms=signal_ts[signal_id])
        sign = D(1) if side == "buy" else D(-1)
        trip.qty[symbol] = trip.qty.get(symbol, ZERO) + sign * D(qty)
        trip.cash -= sign * D(qty) * D(price)
        trip.fees += D(fee)
        trip.last_fill_ms, trip.exit_signal = ts, signal_id
        if trip.flat:
            trip.closed_ms = signal_ts[signal_id]
            closed.append(current.pop(pair))
    unplaced = []
    everything = closed + list(current.values())
    for pair, symbol, amount, ts in funding:
        holders = [t for t in everything if t.pair_id == pair and t.first_fill_ms <= ts
                   and (t.closed_ms is None or ts <= t.last_fill_ms)]
        if len(holders) == 1:
            holders[0].funding += D(amount)
        else:
            unplaced.append((pair, symbol, D(amount), ts))
    closed.sort(key=lambda t: (t.closed_ms or 0, t.last_fill_ms))
    return Audit(closed, current, sum((D(row[2]) for row in funding), ZERO), unplaced)


def unrealized(trip: AuditTrip, mids: dict[str, Decimal]) -> Decimal:
    """The open legs marked at ``mids``: cash so far + quantity x mid, less the fees paid on them,
    plus the funding received on them."""
    return trip.cash + sum((q * mids[s] for s, q in trip.qty.items()), ZERO) - trip.fees + trip.funding


def max_fall(values: list[Decimal]) -> Decimal:
    """The largest fall of a series from its running maximum (the first value is the first peak)."""
    peak, worst = values[0], ZERO
    for v in values:
        peak = v if v > peak else peak
        worst = max(worst, peak - v)
    return worst
