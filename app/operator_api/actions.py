"""What an operator may do to the running bot; every call is journaled and published.

Each action goes through the engine: a close is a FLATTEN signal through every protocol
(``SignalRouter.flatten_task``, or ``ExecutionEngine.flatten`` when the pair's generator does
not hold the position), a resume is ``ExecutionEngine.resume`` (as ``python main.py resume``
does with the bot stopped), a pause or disable only gates new entries
(``execution/entry_gate.py``). Every mutating call records a journal event
``operator_<action>`` with who asked, what, and the result, and publishes an ``alert`` event.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from loguru import logger

from core.events import EventKind, Severity
from core.types import IN_POSITION, PairState
from execution.journal_models import JournalError, position_event_data

from app.operator_api.context import ApiContext

#: How long ``close`` waits for the FLATTEN's execution before it answers "still in flight".
CLOSE_WAIT_SECONDS = 30.0


class ApiError(Exception):
    """An action refused or failed: the HTTP status and the one-line reason (a JSON error body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asked: the operator's name (``X-Operator`` header, else "api") and the client address."""

    name: str
    address: str

    def __str__(self) -> str:
        return f"{self.name}@{self.address}"


class OperatorActions:
    def __init__(self, ctx: ApiContext, *, close_wait_seconds: float = CLOSE_WAIT_SECONDS) -> None:
        self._ctx = ctx
        self._close_wait = close_wait_seconds
        self.counts: dict[str, int] = {}

    # -- entries ----------------------------------------------------------------------------------
    def pause(self, caller: Caller, reason: str) -> dict[str, Any]:
        changed = self._ctx.engine.entry_gate.pause(reason or f"paused by {caller.name}")
        return self._done("pause", caller, None, {"paused": True, "changed": changed, "reason": reason})

    def resume_entries(self, caller: Caller) -> dict[str, Any]:
        changed = self._ctx.engine.entry_gate.resume()
        return self._done("resume", caller, None, {"paused": False, "changed": changed})

    def disable(self, caller: Caller, pair_id: str, reason: str) -> dict[str, Any]:
        self._pair(pair_id)
        changed = self._ctx.engine.entry_gate.disable(pair_id, reason or f"disabled by {caller.name}")
        return self._done("disable", caller, pair_id, {"entries_enabled": False, "changed": changed})

    def enable(self, caller: Caller, pair_id: str) -> dict[str, Any]:
        self._pair(pair_id)
        changed = self._ctx.engine.entry_gate.enable(pair_id)
        return self._done("enable", caller, pair_id, {"entries_enabled": not self._ctx.engine.entry_gate.paused,
                                                      "changed": changed})

    # -- a pair's position ---------------------------------------------------------------------
    def resume_pair(self, caller: Caller, pair_id: str) -> dict[str, Any]:
        """Clear HALTED or BLOCKED (or a symbol disable): the pair is reconciled afresh at once."""
        self._pair(pair_id)
        engine = self._ctx.engine
        before = engine.pair_state(pair_id).value
        was_disabled = pair_id in engine.disabled
        if not engine.resume(pair_id):
            detail = ("stays disabled: a leg still does not trade" if pair_id in engine.disabled
                      else f"{before}: nothing to resume (only HALTED, BLOCKED or a disabled pair)")
            self._journal("resume_pair", caller, pair_id, {"refused": detail, "state": before})
            raise ApiError(409, f"{pair_id}: {detail}")
        return self._done("resume_pair", caller, pair_id, {"state_before": before, "was_disabled": was_disabled,
                                                           "state": engine.pair_state(pair_id).value})

    async def close(self, caller: Caller, pair_id: str, reason: str) -> dict[str, Any]:
        """Flatten one pair at market through the engine; waits (bounded) for what it came to."""
        self._pair(pair_id)
        ctx, engine = self._ctx, self._ctx.engine
        state = engine.pair_state(pair_id)
        why = reason or f"operator close by {caller.name}"
        if state is PairState.FLAT:
            position = engine.positions.get(pair_id)
            if position is None or (position.qty_a == 0 and position.qty_b == 0):
                return self._done("close", caller, pair_id, {"result": "already_flat", "state": state.value})
        if state not in IN_POSITION:
            self._journal("close", caller, pair_id, {"refused": f"pair is {state.value}", "state": state.value})
            raise ApiError(409, f"{pair_id} is {state.value}: a close needs a pair in position (HALTED/BLOCKED: "
                                "resume it first; ENTERING/EXITING/RESOLVING: wait)")
        if pair_id in engine.busy_pairs():
            self._journal("close", caller, pair_id, {"refused": "an execution of the pair is in flight"})
            raise ApiError(409, f"{pair_id}: an execution of the pair is in flight; try again when it is done")
        logger.warning("{}: close requested by the operator ({}) while {}", pair_id, caller, state.value)
        flat = ctx.router.flatten_task(pair_id, why) if pair_id in ctx.router.generators else None
        if flat is not None:
            signal, task = flat
            try:
                executed = await asyncio.wait_for(asyncio.shield(task), self._close_wait)
            except TimeoutError:
                return self._done("close", caller, pair_id, {"result": "in_flight", "signal_id": signal.signal_id},
                                  status_code=202)
            record = ctx.journal.get_signal(signal.signal_id)
            outcome = {"signal_id": signal.signal_id, "executed": executed,
                       "status": record.status if record else None, "reason": record.reason if record else None}
        else:  # the generator does not hold it (e.g. restored differently): the engine's own FLATTEN
            result = await engine.flatten(pair_id, why)
            outcome = {"signal_id": result.signal_id, "executed": result.executed, "status": result.status.value,
                       "reason": result.reason.value, "detail": result.detail}
        position = engine.positions.get(pair_id)
        outcome.update({"result": "closed" if outcome["executed"] else "not_closed",
                        "state": engine.pair_state(pair_id).value,
                        "position": None if position is None else position_event_data(position)})
        return self._done("close", caller, pair_id, outcome, status_code=200 if outcome["executed"] else 409)

    # -- configuration ----------------------------------------------------------------------------
    async def reload(self, caller: Caller) -> dict[str, Any]:
        reloader = self._ctx.current_reloader()
        if reloader is None:
            self._journal("reload", caller, None, {"refused": "no reloader in this run"})
            raise ApiError(503, "hot reload is not available in this run (no reloader)")
        result = await reloader.reload("api")
        outcome = {"ok": bool(result.ok), "message": str(result.message)}
        return self._done("reload", caller, None, outcome, status_code=200 if result.ok else 422)

    # -- helpers ----------------------------------------------------------------------------------
    def _pair(self, pair_id: str) -> None:
        if not self._ctx.known_pair(pair_id):
            raise ApiError(404, f"unknown pair {pair_id!r} (known: {', '.join(sorted(self._ctx.engine.pairs))})")

    def _done(self, action: str, caller: Caller, pair_id: str | None, result: dict[str, Any], *,
              status_code: int = 200) -> dict[str, Any]:
        self._journal(action, caller, pair_id, result)
        logger.info("operator {} {}{} by {}: {}", action, pair_id or "", "" if pair_id else "(all)", caller, result)
        return {"ok": status_code < 300, "action": action, "pair_id": pair_id, "status_code": status_code, **result}

    def _journal(self, action: str, caller: Caller, pair_id: str | None, result: dict[str, Any]) -> None:
        """Journal and publish one operator action (refusals too: an audit wants the attempt)."""
        self.counts[action] = self.counts.get(action, 0) + 1
        detail = {"who": caller.name, "address": caller.address, "what": action, "result": result}
        try:
            self._ctx.journal.record_event(f"operator_{action}", pair_id, detail)
        except JournalError as exc:
            logger.error("operator {} {}: not journaled: {}", action, pair_id or "", exc)
            raise ApiError(500, f"the action ran but could not be journaled: {exc}") from exc
        self._ctx.events.publish(EventKind.ALERT, {"alert": f"operator_{action}", **detail}, pair_id=pair_id,
                                 severity=Severity.WARNING if action in ("close", "pause", "disable")
                                 else Severity.INFO)
