"""Symbol lifecycle: pairs whose legs stop trading are exited and disabled, and filters stay fresh.

Binance changes a symbol's exchangeInfo ``status`` when it is delisted or settled (TRADING ->
SETTLING / CLOSE, ...; ccxt reads anything but TRADING as ``market['active'] == False``) and
changes filters (MIN_NOTIONAL, LOT_SIZE, ...) from time to time without notice. The engine
re-reads the markets every ``execution.markets_refresh_seconds`` and soon after an order is
refused by a filter (``is_filter_rejection``), then asks ``DisabledPairs`` what to do.

A pair with a leg that does not trade is **disabled**: an engine-level set, not a pair state, so
the lifecycle table is untouched. It takes no entry (refusal ``pair_disabled``); a held position
is closed through the engine's close path (the router's FLATTEN when wired, else the engine's own
FLATTEN signal), retried on every check while it is held. Each change is a journal event
(``pair_disabled`` / ``pair_enabled``) and one WARNING line, and the set is rebuilt from those
events at start. It is sticky: a pair comes back only when its symbols trade again AND an
operator resumes it (``python main.py resume PAIR``, ``run --resume-halted`` or
``ExecutionEngine.resume``); a resume while a leg still does not trade is refused.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from loguru import logger

#: Binance codes of an order refused by a symbol filter: -1013 (LOT_SIZE, MARKET_LOT_SIZE,
#: PRICE_FILTER ... "Filter failure"), -1111 (precision over the maximum), -4164 (notional
#: below MIN_NOTIONAL), -4003/-4013/-4014 (quantity, price bounds, tick).
FILTER_REJECTION_CODES = frozenset({-1013, -1111, -4164, -4003, -4013, -4014})
_CODE = re.compile(r"(?<![\d.])(-\d{4})(?!\d)")


def is_filter_rejection(message: str) -> bool:
    """Pure: does an order rejection's text carry one of Binance's filter codes?

    >>> is_filter_rejection('create_order EOS/USDT:USDT: InvalidOrder: binanceusdm {"code":-4164,"msg":"..."}')
    True
    >>> is_filter_rejection('create_order: InsufficientFunds: {"code":-2019,"msg":"Margin is insufficient."}')
    False
    """
    return any(int(code) in FILTER_REJECTION_CODES for code in _CODE.findall(message))


def disabled_from_events(events: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Pure: pair -> reason of the pairs disabled by the journal's events (the latest event of
    each pair wins).

    >>> disabled_from_events([{"kind": "pair_disabled", "pair_id": "A", "detail": {"reason": "x"}},
    ...                       {"kind": "pair_disabled", "pair_id": "B", "detail": {"reason": "y"}},
    ...                       {"kind": "pair_enabled", "pair_id": "A", "detail": {}}])
    {'B': 'y'}
    """
    disabled: dict[str, str] = {}
    for event in sorted(events, key=lambda e: e.get("id", 0)):
        if event["kind"] == "pair_disabled":
            disabled[event["pair_id"]] = str(event["detail"].get("reason", "disabled"))
        elif event["kind"] == "pair_enabled":
            disabled.pop(event["pair_id"], None)
    return disabled


class DisabledPairs:
    """The engine's set of disabled pairs, journaled (see the module docstring)."""

    def __init__(self, journal: Any) -> None:
        self._journal = journal
        self.reasons: dict[str, str] = {}

    def restore(self) -> None:
        events = self._journal.events("pair_disabled") + self._journal.events("pair_enabled")
        self.reasons = disabled_from_events(events)

    def __contains__(self, pair_id: object) -> bool:
        return pair_id in self.reasons

    def disable(self, pair_id: str, symbols: list[str]) -> bool:
        """Disable ``pair_id`` because ``symbols`` do not trade; False if it already was."""
        if pair_id in self.reasons:
            return False
        reason = f"{', '.join(symbols)} not trading (exchangeInfo status is not TRADING)"
        self._journal.record_event("pair_disabled", pair_id, {"symbols": symbols, "reason": reason})
        self.reasons[pair_id] = reason
        logger.warning("{} DISABLED | {} | held legs are closed, no new entries until the symbol trades again "
                       "and an operator resumes the pair", pair_id, reason)
        return True

    def enable(self, pair_id: str, by: str) -> bool:
        if pair_id not in self.reasons:
            return False
        reason = self.reasons.pop(pair_id)
        self._journal.record_event("pair_enabled", pair_id, {"by": by, "was": reason})
        logger.warning("{} enabled again by {} (was: {})", pair_id, by, reason)
        return True
