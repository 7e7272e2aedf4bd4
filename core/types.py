"""Value types shared by market data, signals and execution.

They live in ``core`` so that ``signals`` and ``execution`` can both speak them without
importing each other: the flow stays market data -> signals -> execution -> exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class PairState(str, Enum):
    """Position state of one pair, as the signal generator and the engine both see it."""

    FLAT = "FLAT"
    LONG_SPREAD = "LONG_SPREAD"  # long Y (leg_b), short X (leg_a)
    SHORT_SPREAD = "SHORT_SPREAD"  # short Y (leg_b), long X (leg_a)
    HALTED = "HALTED"  # something is open that the bot could not close; no new entries
    RESOLVING = "RESOLVING"  # an order of the pair has an unknown outcome; no new entries until resolved
    # The engine's own lifecycle states (execution/lifecycle.py); a generator never holds them.
    ENTERING = "ENTERING"  # an entry's orders are in flight
    EXITING = "EXITING"  # an exit's orders are in flight
    BLOCKED = "BLOCKED"  # the exchange holds what the journal cannot explain; no trading


#: The states that hold a spread position (both legs open, hedged).
IN_POSITION = frozenset({PairState.LONG_SPREAD, PairState.SHORT_SPREAD})


class SignalType(str, Enum):
    """What a signal asks the engine to do.

    Entries open a position; EXIT, STOP_LOSS, TIME_STOP and FLATTEN all close what is held and
    differ only in why (a stop loss or a time stop also starts a re-entry cooldown). FLATTEN is
    not a z rule: the feed was lost with ``on_feed_loss: flatten``, or an operator asked.
    """

    ENTER_LONG_SPREAD = "ENTER_LONG_SPREAD"  # z <= -entry: buy Y, sell X
    ENTER_SHORT_SPREAD = "ENTER_SHORT_SPREAD"  # z >= +entry: sell Y, buy X
    EXIT = "EXIT"
    STOP_LOSS = "STOP_LOSS"
    TIME_STOP = "TIME_STOP"
    FLATTEN = "FLATTEN"

    @property
    def is_entry(self) -> bool:
        return self in (SignalType.ENTER_LONG_SPREAD, SignalType.ENTER_SHORT_SPREAD)

    @property
    def side_label(self) -> str:
        """Short word for the console line ``SIGNAL RECEIVED #n | <side> <pair> | Z=<z>``."""
        return {
            SignalType.ENTER_LONG_SPREAD: "LONG",
            SignalType.ENTER_SHORT_SPREAD: "SHORT",
            SignalType.EXIT: "EXIT",
            SignalType.STOP_LOSS: "STOP",
            SignalType.TIME_STOP: "TIMESTOP",
            SignalType.FLATTEN: "FLATTEN",
        }[self]


@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid/ask of one symbol at one exchange event time (milliseconds since epoch)."""

    symbol: str
    bid: float
    ask: float
    ts_ms: int
    bid_qty: float = 0.0
    ask_qty: float = 0.0

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0


@dataclass(frozen=True, slots=True)
class TradingSignal:
    """One decision of a pair's generator, with everything needed to audit it later.

    ``signal_id`` is unique and stable: the engine derives clientOrderIds from it and the
    journal keys on it, so a replayed signal is recognised as the same one.
    """

    signal_id: str
    pair_id: str
    signal_type: SignalType
    z: float
    spread: float
    mean: float
    std: float
    mid_a: float
    mid_b: float
    hedge_ratio: float
    ts_ms: int
