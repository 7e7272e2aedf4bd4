"""What an execution came to, with reasons as enums, and the per-pair specification it used."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from core.types import PairState, SignalType


class ExecutionStatus(str, Enum):
    EXECUTED = "EXECUTED"  # the signal's trade is done: both legs in (entry) or out (exit)
    REFUSED = "REFUSED"  # nothing was sent: a check said no
    FAILED = "FAILED"  # orders were sent but nothing is open because of them
    ROLLED_BACK = "ROLLED_BACK"  # one leg filled, the other failed; the filled leg was closed
    HALTED = "HALTED"  # something is open that could not be closed or hedged; the pair is halted
    RESOLVING = "RESOLVING"  # an order's outcome is unknown; the resolver finds out, the pair waits


class Reason(str, Enum):
    """Why a result is what it is. The value is what statistics count by."""

    OK = "ok"
    DUPLICATE_SIGNAL = "duplicate_signal"
    DUPLICATE_WINDOW = "duplicate_window"
    PAIR_UNKNOWN = "pair_unknown"
    PAIR_HALTED = "pair_halted"
    PAIR_BLOCKED = "pair_blocked"  # reconciliation could not explain the pair's book
    PAIR_RESOLVING = "pair_resolving"  # an order of the pair has an unknown outcome
    PAIR_DISABLED = "pair_disabled"  # a leg's symbol stopped trading (execution/markets_watch.py)
    PAIR_REMOVED = "pair_removed"  # removed from pairs_config.json by a hot reload: exits only
    ENTRIES_PAUSED = "entries_paused"  # the operator paused new entries (execution/entry_gate.py)
    OPERATOR_DISABLED = "operator_disabled"  # the operator disabled the pair's entries
    ALREADY_IN_POSITION = "already_in_position"
    NOT_IN_POSITION = "not_in_position"
    ENGINE_STOPPING = "engine_stopping"
    NO_PRICE = "no_price"
    # P4 precision and limits
    BELOW_ONE_STEP = "below_one_step"
    BELOW_MIN_QTY = "below_min_qty"
    BELOW_MIN_NOTIONAL = "below_min_notional"
    ABOVE_MAX_QTY = "above_max_qty"
    HEDGE_ERROR = "hedge_error"
    BAD_PRICE = "bad_price"
    # pre-trade risk
    MAX_OPEN_PAIRS = "max_open_pairs"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_DAILY_LOSS = "max_daily_loss"
    INSUFFICIENT_MARGIN = "insufficient_margin"
    # outcomes after sending
    BOTH_LEGS_FAILED = "both_legs_failed"
    ONE_LEG_FAILED = "one_leg_failed"
    ROLLBACK_FAILED = "rollback_failed"
    EXIT_INCOMPLETE = "exit_incomplete"
    SLIPPAGE_EXCEEDED = "slippage_exceeded"  # limit entry: prices left max_slippage_pct before completion
    JOURNAL_ERROR = "journal_error"
    OUTCOME_UNKNOWN = "outcome_unknown"  # an order's outcome is unknown: handed to the resolver

    @property
    def is_persistent(self) -> bool:
        """A refusal whose cause outlives the signal (the book, the day's loss, the margin): the
        generator re-fires the entry every cooldown, and every re-fire meets the same cause."""
        return self in _PERSISTENT


_PERSISTENT = frozenset({Reason.MAX_OPEN_PAIRS, Reason.MAX_GROSS_EXPOSURE, Reason.MAX_DAILY_LOSS,
                         Reason.INSUFFICIENT_MARGIN, Reason.PAIR_DISABLED, Reason.ENTRIES_PAUSED,
                         Reason.OPERATOR_DISABLED})


@dataclass(frozen=True, slots=True)
class PairSpec:
    """What the engine needs to know about a pair (resolved symbols, exact numbers)."""

    pair_id: str
    symbol_a: str
    symbol_b: str
    hedge_ratio: Decimal
    notional_usdt: Decimal
    price_transform: str
    # "rolling_ols": the entry is sized with the hedge ratio the signal carries (the window's beta
    # at that quote), not ``hedge_ratio``; exits close the position's quantities either way.
    hedge_ratio_mode: str = "static"


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """The engine's answer to one signal. ``executed`` is what the generator acts on."""

    signal_id: str
    pair_id: str
    signal_type: SignalType
    status: ExecutionStatus
    reason: Reason
    detail: str = ""
    filled_a: Decimal = Decimal(0)
    filled_b: Decimal = Decimal(0)
    state_after: PairState = PairState.FLAT
    ack_latency_ms: float | None = None
    fill_latency_ms: float | None = None

    @property
    def executed(self) -> bool:
        return self.status is ExecutionStatus.EXECUTED
