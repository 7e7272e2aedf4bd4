"""The operator's hold on new entries: a global pause and per-pair disables (operator API).

Why a gate of its own and not a pair state: pausing stops *new entries only*. Exits, stops,
flattens, rollbacks and reconciliation repairs must go on, so nothing in the lifecycle table
changes; the engine asks the gate before it sizes an entry and refuses with a reason of its
own (``entries_paused``, ``operator_disabled``), counted like every refusal. Both are
persistent causes: the generator's re-fires while paused are re-checks, not new signals.
In memory for this run (the operator API journals every change); ``"enabled": false`` in
``pairs_config.json`` is the lasting way to keep a pair off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from execution.results import Reason


@dataclass(slots=True)
class EntryGate:
    """``refusal(pair_id)`` is None when an entry may go on, else the reason and a detail."""

    paused_reason: str | None = None
    disabled: dict[str, str] = field(default_factory=dict)  # pair -> why the operator disabled it

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None

    def pause(self, reason: str) -> bool:
        """Pause new entries on every pair; False if already paused."""
        was = self.paused
        self.paused_reason = reason or "paused by the operator"
        return not was

    def resume(self) -> bool:
        was = self.paused
        self.paused_reason = None
        return was

    def disable(self, pair_id: str, reason: str) -> bool:
        was = pair_id in self.disabled
        self.disabled[pair_id] = reason or "disabled by the operator"
        return not was

    def enable(self, pair_id: str) -> bool:
        return self.disabled.pop(pair_id, None) is not None

    def refusal(self, pair_id: str) -> tuple[Reason, str] | None:
        if self.paused_reason is not None:
            return Reason.ENTRIES_PAUSED, self.paused_reason
        if pair_id in self.disabled:
            return Reason.OPERATOR_DISABLED, self.disabled[pair_id]
        return None
