"""The pair lifecycle: one transition table (state x event -> allowed next states), applied in one place.

Every change of a pair's state goes through ``PairLifecycle.apply``: it validates the change
against ``PAIR_TRANSITIONS`` first, then saves the position and records a ``pair_transition``
journal event, in one transaction. An illegal change raises ``IllegalPairTransition`` naming the
pair, the state and the event; nothing is ever skipped silently (docs/architecture.md, "Pair
lifecycle").

HALTED and BLOCKED are sticky: only ``OPERATOR_RESUME`` (``python main.py resume PAIR`` or
``run --resume-halted``) leaves HALTED, and BLOCKED is left by that or by ``UNBLOCK`` when the
exchange again matches what the journal explains.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from enum import Enum
from typing import Callable, Mapping

from loguru import logger

from core.errors import PairsBotError
from core.types import IN_POSITION, PairState
from execution.journal import Journal
from execution.journal_models import PairPosition

P = PairState
ZERO = Decimal(0)


class PairEvent(str, Enum):
    """What happened to a pair; the table says which states it may lead to."""

    ENTRY_SENT = "entry_sent"  # an entry's intents are committed and its orders leave
    EXIT_SENT = "exit_sent"  # an exit's orders leave
    ENTRY_FILLED = "entry_filled"  # both legs in: LONG_SPREAD or SHORT_SPREAD
    ENTRY_UNDONE = "entry_undone"  # nothing open after an entry (failed, rolled back, unwound)
    EXIT_DONE = "exit_done"  # both legs out
    OUTCOME_UNKNOWN = "outcome_unknown"  # an order's outcome is unknown: the resolver has it
    RESOLVED = "resolved"  # the resolver and reconciliation know the legs again
    RESTORED = "restored"  # reconciliation derived the legs from the journal (start, periodic)
    HALT = "halt"  # something is open that the bot could not close or hedge
    BLOCK = "block"  # the exchange holds what the journal cannot explain
    UNBLOCK = "unblock"  # the exchange matches the journal again
    OPERATOR_RESUME = "operator_resume"  # an operator cleared HALTED or BLOCKED


_HELD = IN_POSITION
_DERIVED = frozenset({P.FLAT, P.LONG_SPREAD, P.SHORT_SPREAD})  # what the journal's legs can say

#: (state, event) -> the states it may lead to. A pair state that is missing from a row for an
#: event cannot take that event. ENTERING and EXITING are the states of an execution in flight
#: as the journal last saw it (a crash can leave them); reconciliation restores them.
PAIR_TRANSITIONS: Mapping[tuple[PairState, PairEvent], frozenset[PairState]] = {
    (P.FLAT, PairEvent.ENTRY_FILLED): _HELD,
    (P.ENTERING, PairEvent.ENTRY_FILLED): _HELD,
    (P.FLAT, PairEvent.ENTRY_UNDONE): frozenset({P.FLAT}),
    (P.ENTERING, PairEvent.ENTRY_UNDONE): frozenset({P.FLAT}),
    (P.LONG_SPREAD, PairEvent.EXIT_DONE): frozenset({P.FLAT}),
    (P.SHORT_SPREAD, PairEvent.EXIT_DONE): frozenset({P.FLAT}),
    (P.EXITING, PairEvent.EXIT_DONE): frozenset({P.FLAT}),
    **{(s, PairEvent.OUTCOME_UNKNOWN): frozenset({P.RESOLVING})
       for s in (P.FLAT, P.ENTERING, P.LONG_SPREAD, P.SHORT_SPREAD, P.EXITING, P.RESOLVING)},
    (P.RESOLVING, PairEvent.RESOLVED): _DERIVED,
    **{(s, PairEvent.RESTORED): _DERIVED for s in (P.FLAT, P.ENTERING, P.LONG_SPREAD, P.SHORT_SPREAD, P.EXITING)},
    **{(s, PairEvent.HALT): frozenset({P.HALTED})
       for s in (P.FLAT, P.ENTERING, P.LONG_SPREAD, P.SHORT_SPREAD, P.EXITING, P.RESOLVING)},
    **{(s, PairEvent.BLOCK): frozenset({P.BLOCKED})
       for s in (P.FLAT, P.ENTERING, P.LONG_SPREAD, P.SHORT_SPREAD, P.EXITING, P.RESOLVING, P.BLOCKED)},
    # Leaving a sticky state always goes through RESOLVING: the next reconciliation pass looks
    # at the pair afresh (repairs a naked leg, restores a position) as after an unknown outcome.
    (P.BLOCKED, PairEvent.UNBLOCK): frozenset({P.RESOLVING}),
    (P.HALTED, PairEvent.OPERATOR_RESUME): frozenset({P.RESOLVING}),
    (P.BLOCKED, PairEvent.OPERATOR_RESUME): frozenset({P.RESOLVING}),
    (P.FLAT, PairEvent.ENTRY_SENT): frozenset({P.ENTERING}),
    (P.LONG_SPREAD, PairEvent.EXIT_SENT): frozenset({P.EXITING}),
    (P.SHORT_SPREAD, PairEvent.EXIT_SENT): frozenset({P.EXITING}),
}


class IllegalPairTransition(PairsBotError):
    """A pair was asked to change state in a way the lifecycle table does not allow. Action: a
    bug in the caller; the pair keeps its state."""

    def __init__(self, pair_id: str, state: PairState, event: PairEvent, target: PairState) -> None:
        self.pair_id, self.state, self.event, self.target = pair_id, state, event, target
        allowed = PAIR_TRANSITIONS.get((state, event))
        hint = f"allowed: {sorted(s.value for s in allowed)}" if allowed else "the event is not allowed in this state"
        super().__init__(f"pair {pair_id}: {state.value} --{event.value}--> {target.value} is illegal ({hint})")


def allowed(state: PairState, event: PairEvent, target: PairState) -> bool:
    """Pure: may a pair in ``state`` go to ``target`` on ``event``?

    >>> allowed(PairState.HALTED, PairEvent.RESTORED, PairState.LONG_SPREAD)
    False
    >>> allowed(PairState.HALTED, PairEvent.OPERATOR_RESUME, PairState.RESOLVING)
    True
    """
    return target in PAIR_TRANSITIONS.get((state, event), frozenset())


class PairLifecycle:
    """Holds every pair's position and is the only code that changes one.

    ``positions`` is read by everyone; ``apply`` is the one way to write. ``on_change`` is told
    of every transition (pair, old state, new position), e.g. to wake exits waiting on a pair.
    """

    def __init__(self, journal: Journal, positions: dict[str, PairPosition],
                 on_change: Callable[[str, PairState, PairPosition], None] | None = None) -> None:
        self._journal = journal
        self.positions = positions
        self._on_change = on_change

    def state(self, pair_id: str) -> PairState:
        position = self.positions.get(pair_id)
        return position.state if position else P.FLAT

    def apply(self, pair_id: str, event: PairEvent, target: PairState, *, qty_a: Decimal | None = None,
              qty_b: Decimal | None = None, reason: str | None = None, **fields: object) -> PairPosition:
        """Move ``pair_id`` to ``target`` on ``event``: validate, then save and journal it.

        ``qty_a``/``qty_b`` default to what is saved (FLAT: zero); ``reason`` is required for
        HALTED, BLOCKED and RESOLVING (it says what is open or unknown). Other ``fields``
        (entry_signal_id, entry_ts_ms, round_trip_id) replace the saved ones.
        """
        current = self.positions[pair_id]
        if not allowed(current.state, event, target):
            raise IllegalPairTransition(pair_id, current.state, event, target)
        if target is P.FLAT:
            qty_a, qty_b = ZERO, ZERO
            fields = {"entry_signal_id": None, "entry_ts_ms": None, "round_trip_id": None, **fields}
        sticky = target in (P.HALTED, P.BLOCKED, P.RESOLVING)
        if sticky and not reason:
            raise IllegalPairTransition(pair_id, current.state, event, target)
        new = replace(current, state=target, qty_a=current.qty_a if qty_a is None else qty_a,
                      qty_b=current.qty_b if qty_b is None else qty_b,
                      halted_reason=reason if sticky else None, **fields)  # type: ignore[arg-type]
        if new.state is current.state and _same(new, current):
            return current
        saved = self._journal.save_position_transition(new, event=event.value, from_state=current.state.value)
        self.positions[pair_id] = saved
        if current.state is not target:
            logger.debug("{}: {} --{}--> {}", pair_id, current.state.value, event.value, target.value)
        if self._on_change is not None:
            self._on_change(pair_id, current.state, saved)
        return saved


def _same(a: PairPosition, b: PairPosition) -> bool:
    return (a.qty_a, a.qty_b, a.entry_signal_id, a.entry_ts_ms, a.round_trip_id, a.halted_reason) == \
        (b.qty_a, b.qty_b, b.entry_signal_id, b.entry_ts_ms, b.round_trip_id, b.halted_reason)
