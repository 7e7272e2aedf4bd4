"""Exposure at every moment of a campaign, not only at its end (STYLE.md habit 12).

The end audit of ``bench/fault_campaign.py`` runs after two reconciliations, which heal what an
execution left behind; a leg that stood naked for ten seconds in between leaves no trace there.
``ExposureMonitor`` samples the book while the campaign runs: after every engine result and on
a timer in between. Each sample is synchronous (no ``await``), so on the campaign's single event
loop it sees the journal, the engine and the simulator at one instant.

Definitions (per sample; "busy" is ``ExecutionEngine.busy_pairs()``, every pair during a
reconciliation pass; a symbol is busy when a pair trading it is):

* **naked**: a pair whose journal-derived legs (``reconcile.derived_legs``, what
  ``engine.reconciler.derived`` computes) fail ``hedge_problem``: one leg held and not the
  other, signs no spread position has, held with no entry on record, or neither leg within one
  lot step of the exact hedge of the other at its last planned entry (``within_one_step``).
  ``naked_seconds`` adds the interval between two consecutive samples when some pair was naked
  and not busy at *both* ends (per pair: that pair); so it is a lower bound, short of the truth
  by less than two sampling intervals per naked stretch.
* **belief mismatch**: a sample at which, for some symbol that is not busy, the exchange's true
  net position (the simulator's own account state, read in process: no HTTP, no positionRisk)
  differs from the engine's belief, the sum over pairs of their derived legs on the symbol plus
  ``engine.reconciler.external``.
* **unhedged notional**: for a pair that is not busy, the quantity its derived legs hold beyond
  the exact hedge of the other leg at its last planned entry (all of a naked leg; both legs when
  the signs are wrong or no entry is on record), times the simulator's mid. Computed from the
  derived legs, because with shared legs the exchange's per-symbol positions cannot be split
  into pairs; belief mismatches say when the two sources disagree.
* **double fill** (``double_fills``, from the simulator's order log at the end): a clientOrderId
  with two or more orders that filled something; or a one-shot logical order (ENTRY, TOP_UP,
  LIMIT_CHASE: one order per signal, leg and purpose) filled under two clientOrderIds, i.e.
  two orders of the same signal, leg and purpose with different attempt numbers that both
  filled. Close-out purposes (EXIT, TRIM, ROLLBACK, REPAIR) send successive attempts for what
  is still open, so several filled attempts are normal there; closing too much shows up as a
  naked leg or a belief mismatch instead.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

from execution.journal_models import OrderPurpose, OrderRecord
from execution.reconcile import PairVerdict, classify, derived_legs

ZERO = Decimal(0)
KEEP_DESCRIPTIONS = 20


# =============================================================================================
# The hedge rules (shared with the end audit, ``fault_campaign.audit_book``)
# =============================================================================================

@dataclass(frozen=True, slots=True)
class PairLegs:
    """A pair as the audit sees it: exchange symbols (``EOSUSDT``) and lot steps."""

    pair_id: str
    symbol_a: str
    symbol_b: str
    step_a: Decimal
    step_b: Decimal


def within_one_step(qa: Decimal, qb: Decimal, planned: tuple[Decimal, Decimal], step_a: Decimal,
                    step_b: Decimal) -> bool:
    """True if either leg is within one lot step of the exact hedge of the other at the planned
    ``want_a : want_b`` (exact rationals: no rounded ratio in between). Quantities are unsigned.

    Legs move in whole steps, so one of them can always be brought within a step of the other's
    exact hedge; P2 leaves at most that.

    >>> within_one_step(Decimal(259), Decimal("183.5"), (Decimal(427), Decimal("302.5")), Decimal(1),
    ...                 Decimal("0.1"))
    True
    >>> within_one_step(Decimal(259), Decimal("180"), (Decimal(427), Decimal("302.5")), Decimal(1),
    ...                 Decimal("0.1"))
    False
    """
    want_a, want_b = planned
    off_b = abs(qb * want_a - qa * want_b)  # = |qb - exact hedge of qa| * want_a
    return off_b <= step_b * want_a or off_b <= step_a * want_b


def planned_legs(orders: Iterable[OrderRecord]) -> tuple[Decimal, Decimal] | None:
    """The leg quantities of the pair's most recent entry that planned both legs."""
    by_signal: dict[str, dict[str, Decimal]] = {}
    for order in orders:
        if order.purpose is OrderPurpose.ENTRY:
            by_signal.setdefault(order.signal_id, {})[order.leg.value] = order.qty
    for legs in reversed(list(by_signal.values())):
        if legs.get("a") and legs.get("b"):
            return legs["a"], legs["b"]
    return None


def hedge_problem(pair: PairLegs, qa: Decimal, qb: Decimal, planned: tuple[Decimal, Decimal] | None) -> str | None:
    """What is wrong with a pair's signed legs ``qa`` / ``qb``, or None when they are flat or a
    spread position within one lot step of the hedge of its last planned entry (P2's rule).

    >>> p = PairLegs("P", "A", "B", Decimal(1), Decimal("0.1"))
    >>> hedge_problem(p, Decimal(-100), Decimal(50), (Decimal(100), Decimal(50))) is None
    True
    >>> hedge_problem(p, Decimal(-100), Decimal(0), (Decimal(100), Decimal(50)))
    'P: naked, A -100 / B 0'
    """
    verdict = classify(qa, qb)
    if verdict is PairVerdict.FLAT:
        return None
    if verdict is PairVerdict.NAKED:
        return f"{pair.pair_id}: naked, {pair.symbol_a} {qa} / {pair.symbol_b} {qb}"
    if verdict is PairVerdict.INCONSISTENT:
        return f"{pair.pair_id}: legs {qa} / {qb} are no spread position"
    if planned is None:
        return f"{pair.pair_id}: in position {qa} / {qb} with no entry on record"
    if not within_one_step(abs(qa), abs(qb), planned, pair.step_a, pair.step_b):
        return (f"{pair.pair_id}: hedge imbalance {qa} / {qb} (planned {planned[0]}:{planned[1]}, more "
                "than one lot step off)")
    return None


def unhedged_qty(qa: Decimal, qb: Decimal, planned: tuple[Decimal, Decimal] | None) -> tuple[Decimal, Decimal]:
    """Unsigned quantities of leg a and leg b held beyond the exact hedge of the other leg.

    >>> unhedged_qty(Decimal(-100), Decimal("50.5"), (Decimal(100), Decimal(50)))
    (Decimal('0'), Decimal('0.5'))
    >>> unhedged_qty(Decimal(-100), Decimal(0), (Decimal(100), Decimal(50)))
    (Decimal('100'), Decimal('0'))
    """
    verdict = classify(qa, qb)
    ua, ub = abs(qa), abs(qb)
    if verdict is PairVerdict.FLAT:
        return ZERO, ZERO
    if verdict in (PairVerdict.NAKED, PairVerdict.INCONSISTENT) or planned is None:
        return ua, ub
    want_a, want_b = planned
    over = ub * want_a - ua * want_b  # > 0: b beyond the hedge of a, by over / want_a
    if over > 0:
        return ZERO, over / want_a
    return -over / want_b, ZERO


# =============================================================================================
# Double fills (from the simulator's order log, at the end)
# =============================================================================================

_CID = re.compile(r"^(?P<prefix>pb-)(?P<signal>.+)-(?P<leg>[ab])(?P<code>[A-Z])(?P<attempt>\d+)$")
_ONE_SHOT_CODES = frozenset({"E", "U", "L"})  # ENTRY, TOP_UP, LIMIT_CHASE (execution/orders.py)


def double_fills(sim_orders: Iterable[Mapping[str, Any]], *, account: str = "default",
                 prefix: str = "pb-") -> list[str]:
    """Logical orders that filled twice (definition in the module docstring), one line each.

    ``sim_orders``: the simulator's order log (``SimulatorServer.order_log()``). ClientOrderIds
    are ``pb-<signal_id>-<leg><purpose code><attempt>`` (``execution.orders.client_order_id``).
    """
    filled_by_cid: Counter[str] = Counter()
    qty_by_cid: dict[str, list[str]] = {}
    for row in sim_orders:
        cid = str(row["clientOrderId"])
        if row.get("account", account) != account or not cid.startswith(prefix):
            continue
        if Decimal(str(row["executedQty"])) > 0:
            filled_by_cid[cid] += 1
            qty_by_cid.setdefault(cid, []).append(str(row["executedQty"]))
    found = [f"{cid}: filled {n} times ({' + '.join(qty_by_cid[cid])})"
             for cid, n in sorted(filled_by_cid.items()) if n > 1]
    ids_by_intent: dict[tuple[str, str, str], list[str]] = {}
    for cid in filled_by_cid:
        match = _CID.match(cid)
        if match is None or match["code"] not in _ONE_SHOT_CODES:
            continue
        ids_by_intent.setdefault((match["signal"], match["leg"], match["code"]), []).append(cid)
    found += [f"signal {signal} leg {leg} purpose {code}: filled under {len(cids)} ids ({', '.join(sorted(cids))})"
              for (signal, leg, code), cids in sorted(ids_by_intent.items()) if len(cids) > 1]
    return found


# =============================================================================================
# Where the engine's belief comes from
# =============================================================================================

@dataclass(frozen=True, slots=True)
class PairBelief:
    """A pair's legs as the journal derives them, its last planned entry, and how many of its
    orders the journal still has unresolved (for the descriptions only)."""

    qty_a: Decimal
    qty_b: Decimal
    planned: tuple[Decimal, Decimal] | None
    unresolved: int = 0

    @classmethod
    def of(cls, orders: list[OrderRecord]) -> PairBelief:
        return cls(derived_legs(orders, "a"), derived_legs(orders, "b"), planned_legs(orders),
                   sum(o.status.is_open for o in orders))


class BeliefSource(Protocol):
    """What the monitor asks about the engine (``JournalBelief``, or a stub in tests)."""

    def busy(self) -> frozenset[str]: ...

    def legs(self, pair_ids: Iterable[str]) -> Mapping[str, PairBelief]: ...

    def external(self) -> Mapping[str, Decimal]: ...  # by exchange symbol


class JournalBelief:
    """The real engine's belief: ``busy_pairs()``, legs derived from ``engine.journal``, and
    ``engine.reconciler.external``.

    Reading a pair's orders (``orders_for_pair``) costs milliseconds once the journal holds a few
    thousand, and grows with it, so each pair's orders are read once and then kept up to date
    order by order (``get_order``) as the journal logs their changes. Those are found with a
    read-only connection of our own to the journal file (in WAL mode a reader sees every
    committed write, and every ``Journal`` write has committed when it returns): ``order_events``
    gets a row for each order inserted or changed. If that query ever fails (a schema change),
    every pair is read in full at every sample: slow, never stale. ``verify`` compares the kept
    belief with the engine's uncached ``reconciler.derived`` / ``expected_positions``.
    """

    _CHANGED = ("SELECT e.client_order_id, o.pair_id, MAX(e.event_id) FROM order_events e JOIN orders o"
                " ON o.client_order_id = e.client_order_id WHERE e.event_id > ?"
                " GROUP BY e.client_order_id ORDER BY MIN(e.event_id)")

    def __init__(self, engine: Any, pairs: list[PairLegs]) -> None:
        self._engine = engine
        self._pairs = {p.pair_id: p for p in pairs}
        self._exchange_symbol: dict[str, str] = {}
        for pair in pairs:
            spec = engine.pairs[pair.pair_id]
            self._exchange_symbol[spec.symbol_a] = pair.symbol_a
            self._exchange_symbol[spec.symbol_b] = pair.symbol_b
        self._orders: dict[str, dict[str, OrderRecord]] = {}  # pair -> cid -> order, oldest first
        self._changed: dict[str, dict[str, None]] = {}  # pair -> cids changed since read, in order
        self._cache: dict[str, PairBelief] = {}
        self._last_event = 0
        self._conn: sqlite3.Connection | None = self._connect(Path(engine.journal.path))
        self.pair_reads = 0  # full reads of a pair's orders
        self.order_reads = 0  # single orders read again after a change
        self.feed_failures = 0

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection | None:
        try:
            return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def busy(self) -> frozenset[str]:
        return self._engine.busy_pairs()

    def legs(self, pair_ids: Iterable[str]) -> dict[str, PairBelief]:
        self._poll()
        journal = self._engine.journal
        out: dict[str, PairBelief] = {}
        for pair_id in pair_ids:
            orders = self._orders.get(pair_id)
            changed = self._changed.pop(pair_id, None)
            if orders is None:
                orders = self._orders[pair_id] = {o.client_order_id: o for o in journal.orders_for_pair(pair_id)}
                self.pair_reads += 1
            elif changed:
                for cid in changed:  # in the order of their first event: a new order goes last
                    record = journal.get_order(cid)
                    if record is not None:
                        orders[cid] = record
                    self.order_reads += 1
            elif pair_id in self._cache:
                out[pair_id] = self._cache[pair_id]
                continue
            out[pair_id] = self._cache[pair_id] = PairBelief.of(list(orders.values()))
        return out

    def external(self) -> dict[str, Decimal]:
        return {self._exchange_symbol.get(symbol, symbol): qty
                for symbol, qty in self._engine.reconciler.external.items() if qty}

    def _poll(self) -> None:
        if self._conn is None:
            self._orders.clear()  # no change feed: read every pair in full
            return
        try:
            rows = self._conn.execute(self._CHANGED, (self._last_event,)).fetchall()
        except sqlite3.Error:
            self.feed_failures += 1
            self.close()
            self._orders.clear()
            return
        for cid, pair_id, last in rows:
            if pair_id in self._orders:
                self._changed.setdefault(pair_id, {})[cid] = None
            self._last_event = max(self._last_event, int(last))

    def verify(self) -> list[str]:
        """Cached belief against the engine's own uncached answers, for the pairs and symbols
        that are not busy now (empty when they agree). Synchronous: one instant."""
        busy = self.busy()
        idle = [p for p in self._pairs if p not in busy]
        cached = self.legs(idle)
        problems = []
        for pair_id in idle:
            fresh = self._engine.reconciler.derived(pair_id)
            planned = planned_legs(self._engine.journal.orders_for_pair(pair_id))
            mine = cached[pair_id]
            if (mine.qty_a, mine.qty_b) != tuple(fresh) or mine.planned != planned:
                problems.append(f"{pair_id}: cached {mine.qty_a} / {mine.qty_b} planned {mine.planned}, "
                                f"journal {fresh[0]} / {fresh[1]} planned {planned}")
        busy_symbols = {s for p in busy for s in _symbols(self._engine.pairs[p])}
        expected = self._engine.reconciler.expected_positions()
        mine_by_symbol = belief_positions(self._pairs.values(), cached)
        for symbol, qty in expected.items():
            exchange_symbol = self._exchange_symbol.get(symbol, symbol)
            if symbol not in busy_symbols and mine_by_symbol.get(exchange_symbol, ZERO) != qty:
                problems.append(f"{symbol}: cached belief {mine_by_symbol.get(exchange_symbol, ZERO)}, "
                                f"reconciler.expected_positions {qty}")
        return problems


def _symbols(spec: Any) -> tuple[str, str]:
    return spec.symbol_a, spec.symbol_b


def belief_positions(pairs: Iterable[PairLegs], legs: Mapping[str, PairBelief]) -> dict[str, Decimal]:
    """Per exchange symbol, the sum of the derived legs of the pairs in ``legs``."""
    total: dict[str, Decimal] = {}
    for pair in pairs:
        belief = legs.get(pair.pair_id)
        if belief is None:
            continue
        total[pair.symbol_a] = total.get(pair.symbol_a, ZERO) + belief.qty_a
        total[pair.symbol_b] = total.get(pair.symbol_b, ZERO) + belief.qty_b
    return total


def simulator_positions(sim: Any, account: str = "default") -> Callable[[], dict[str, Decimal]]:
    """The simulator's true net position per exchange symbol, read from its own account state
    (``sim.engine.accounts``), so a lagging or faulty positionRisk cannot hide anything."""

    def read() -> dict[str, Decimal]:
        positions = sim.engine.accounts[account].positions
        return {symbol: p.amount for symbol, p in positions.items() if p.amount}

    return read


# =============================================================================================
# The monitor
# =============================================================================================

class ExposureMonitor:
    """Samples naked pairs, belief mismatches and unhedged notional (module docstring).

    ``sample(cause)`` is synchronous; call it after every engine result, and run ``run(interval)``
    as a task for the samples in between. ``exchange_positions()``: true net position per
    exchange symbol; ``mid(symbol)``: a mid price per exchange symbol, None if unknown.
    """

    def __init__(self, pairs: list[PairLegs], belief: BeliefSource,
                 exchange_positions: Callable[[], Mapping[str, Decimal]],
                 mid: Callable[[str], Decimal | None], *, clock: Callable[[], float] = time.monotonic,
                 keep: int = KEEP_DESCRIPTIONS) -> None:
        self._pairs = list(pairs)
        self._belief = belief
        self._exchange = exchange_positions
        self._mid = mid
        self._clock = clock
        self._keep = keep
        self._symbol_pairs: dict[str, set[str]] = {}
        for pair in self._pairs:
            for symbol in (pair.symbol_a, pair.symbol_b):
                self._symbol_pairs.setdefault(symbol, set()).add(pair.pair_id)
        self._started: float | None = None
        self._previous: tuple[float, frozenset[str]] | None = None
        self.samples: Counter[str] = Counter()
        self.naked_seconds = 0.0
        self.naked_seconds_by_pair: dict[str, float] = {}
        self.naked_samples = 0
        self.naked: list[str] = []
        self.belief_mismatches = 0
        self.mismatches: list[str] = []
        self.max_unhedged_notional = ZERO
        self.max_unhedged_at: str | None = None
        self.max_gap_seconds = 0.0
        self.busy_samples = 0
        self.sampler_seconds = 0.0

    def sample(self, cause: str = "timer") -> None:
        """One look at the book, now."""
        began = time.perf_counter()
        now = self._clock()
        if self._started is None:
            self._started = now
        busy = self._belief.busy()
        idle = [p for p in self._pairs if p.pair_id not in busy]
        legs = self._belief.legs(p.pair_id for p in idle)
        naked_now = self._naked_and_unhedged(idle, legs, now)
        self._mismatch(busy, legs, now)
        if self._previous is not None:
            then, naked_then = self._previous
            gap = now - then
            self.max_gap_seconds = max(self.max_gap_seconds, gap)
            both = naked_now & naked_then  # naked, and not busy, at both ends
            for pair_id in both:
                self.naked_seconds_by_pair[pair_id] = self.naked_seconds_by_pair.get(pair_id, 0.0) + gap
            if both:
                self.naked_seconds += gap
        self._previous = (now, naked_now)
        self.samples[cause] += 1
        self.busy_samples += bool(busy)
        self.sampler_seconds += time.perf_counter() - began

    def _naked_and_unhedged(self, idle: list[PairLegs], legs: Mapping[str, PairBelief], now: float) -> frozenset[str]:
        naked: set[str] = set()
        was_naked = self._previous[1] if self._previous is not None else frozenset()
        for pair in idle:
            belief = legs[pair.pair_id]
            problem = hedge_problem(pair, belief.qty_a, belief.qty_b, belief.planned)
            if problem is not None:
                naked.add(pair.pair_id)
                self.naked_samples += 1
                if pair.pair_id not in was_naked and len(self.naked) < self._keep:
                    self.naked.append(f"t={self._t(now)}s {problem}{_unresolved(belief)}")
            ua, ub = unhedged_qty(belief.qty_a, belief.qty_b, belief.planned)
            if ua or ub:
                notional = ua * (self._mid(pair.symbol_a) or ZERO) + ub * (self._mid(pair.symbol_b) or ZERO)
                if notional > self.max_unhedged_notional:
                    self.max_unhedged_notional = notional
                    self.max_unhedged_at = (f"t={self._t(now)}s {pair.pair_id}: legs {belief.qty_a} / {belief.qty_b}, "
                                            f"beyond the hedge {pair.symbol_a} {_short(ua)} / {pair.symbol_b} "
                                            f"{_short(ub)}, {_short(notional)} USDT")
        return frozenset(naked)

    def _mismatch(self, busy: frozenset[str], legs: Mapping[str, PairBelief], now: float) -> None:
        true = self._exchange()
        external = self._belief.external()
        believed = belief_positions(self._pairs, legs)
        found = []
        for symbol in sorted(self._symbol_pairs.keys() | true.keys()):
            if self._symbol_pairs.get(symbol, set()) & busy:
                continue  # an execution or a resolution on it is in flight
            expected = believed.get(symbol, ZERO) + external.get(symbol, ZERO)
            held = true.get(symbol, ZERO)
            if held != expected:
                unresolved = sum(legs[p].unresolved for p in self._symbol_pairs.get(symbol, ()) if p in legs)
                found.append(f"{symbol}: exchange {held}, engine believes {expected}"
                             + (f" ({unresolved} order(s) unresolved in the journal)" if unresolved else ""))
        if found:
            self.belief_mismatches += 1
            if len(self.mismatches) < self._keep:
                self.mismatches.append(f"t={self._t(now)}s " + "; ".join(found))

    def _t(self, now: float) -> str:
        return f"{now - (self._started or now):.3f}"

    async def run(self, interval_seconds: float) -> None:
        """Sample every ``interval_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            self.sample("timer")

    def report(self) -> dict[str, Any]:
        return {
            "naked_seconds": round(self.naked_seconds, 3),
            "belief_mismatches": self.belief_mismatches,
            "max_unhedged_notional_usdt": float(round(self.max_unhedged_notional, 4)),
            "details": {
                "naked_seconds_by_pair": {p: round(s, 3) for p, s in sorted(self.naked_seconds_by_pair.items())},
                "naked_samples": self.naked_samples,
                "naked_first": self.naked,
                "belief_mismatches_first": self.mismatches,
                "max_unhedged_at": self.max_unhedged_at,
                "unhedged_source": "journal-derived legs x simulator mid",
                "samples": dict(self.samples),
                "samples_with_a_busy_pair": self.busy_samples,
                "max_seconds_between_samples": round(self.max_gap_seconds, 3),
                "sampler_seconds": round(self.sampler_seconds, 3),  # spent inside sample(): the loop's cost
            },
        }


def _unresolved(belief: PairBelief) -> str:
    return f" ({belief.unresolved} order(s) unresolved in the journal)" if belief.unresolved else ""


def _short(value: Decimal) -> str:
    return format(value.quantize(Decimal("1E-6")).normalize(), "f")
