"""Read-only views of the running bot, as JSON-ready dicts (exact money as decimal strings).

Pure readers of the pipeline's parts: nothing here changes state, so every GET route is one
call to a function of this module.
"""

from __future__ import annotations

import math
import re
import time
from decimal import Decimal
from typing import Any

from app.report import display_state, open_pnl, pnl_rows, totals
from core.types import IN_POSITION, PairState
from execution.journal_models import RoundTrip, order_event_data, position_event_data

from app.operator_api.context import ApiContext

_SECRET_KEY = re.compile(r"(api_?key|secret|token|password)", re.IGNORECASE)
_SAFE_KEYS = frozenset({"token_env"})  # the NAME of the token's variable, not the token


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def pair_rows(ctx: ApiContext) -> list[dict[str, Any]]:
    """Each traded pair: the engine's state, the generator's z and window, legs held, gates."""
    rows = []
    gate = ctx.engine.entry_gate
    for pair_id, spec in ctx.engine.pairs.items():
        gen = ctx.router.generators.get(pair_id)
        snap = gen.snapshot() if gen is not None else None
        position = ctx.engine.positions.get(pair_id)
        rows.append({
            "pair_id": pair_id, "symbol_a": spec.symbol_a, "symbol_b": spec.symbol_b,
            "hedge_ratio": str(spec.hedge_ratio), "notional_usdt": str(spec.notional_usdt),
            "state": ctx.engine.pair_state(pair_id).value,
            "signal_state": None if snap is None else display_state(snap),
            "z": None if snap is None else _num(snap.z),
            "window_full": None if snap is None else snap.window_full,
            "bars_in_window": None if snap is None else snap.bars_in_window,
            "qty_a": str(position.qty_a) if position else "0", "qty_b": str(position.qty_b) if position else "0",
            "halted_reason": position.halted_reason if position else None,
            "entries_enabled": pair_id not in gate.disabled and not gate.paused,
            "operator_disabled": gate.disabled.get(pair_id),
            "symbol_disabled": ctx.engine.disabled.reasons.get(pair_id),
            "refusals": ctx.engine.refusals_by_pair.get(pair_id, 0),
        })
    return rows


def positions(ctx: ApiContext) -> list[dict[str, Any]]:
    """Pairs holding a leg (or in a state an operator must see), with unrealized PnL."""
    out = []
    for pair_id, position in ctx.engine.positions.items():
        if position.qty_a == 0 and position.qty_b == 0 and position.state is PairState.FLAT:
            continue
        row = position_event_data(position)
        row["unrealized_usdt"] = _money(open_pnl(ctx.journal, position, ctx.router.mid))
        out.append(row)
    return out


def trip_row(trip: RoundTrip) -> dict[str, Any]:
    return {"id": trip.id, "pair_id": trip.pair_id, "entry_signal_id": trip.entry_signal_id,
            "exit_signal_id": trip.exit_signal_id, "opened_ts_ms": trip.opened_ts_ms,
            "closed_ts_ms": trip.closed_ts_ms, "open": trip.is_open, "gross_pnl_usdt": _money(trip.gross_pnl),
            "fees_usdt": _money(trip.fees), "funding_usdt": _money(trip.funding),
            "net_pnl_usdt": _money(trip.net_pnl), "exit_reason": trip.exit_reason}


def trades(ctx: ApiContext, *, limit: int, pair_id: str | None) -> list[dict[str, Any]]:
    """The newest round trips, newest first."""
    trips = ctx.journal.round_trips(pair_id)
    return [trip_row(t) for t in reversed(trips[-limit:])]


def orders(ctx: ApiContext, *, limit: int, pair_id: str | None, open_only: bool) -> list[dict[str, Any]]:
    if open_only:
        found = ctx.journal.open_orders(pair_id)
        return [order_event_data(o) for o in reversed(found[-limit:])]
    return [order_event_data(o) for o in ctx.journal.recent_orders(limit, pair_id)]


def pnl(ctx: ApiContext) -> dict[str, Any]:
    rows = pnl_rows(ctx.journal, ctx.engine.positions, ctx.router.mid)
    return {"rows": rows, "total": totals(rows)}


def equity(ctx: ApiContext) -> dict[str, Any]:
    """The session's equity curve (the final statistics' samples) and the value now."""
    recorder = ctx.equity
    if recorder is None:
        return {"samples": [], "now": None}
    now = recorder.current()
    return {"samples": [{"ts_ms": p.ts_ms, "equity_usdt": str(p.equity_usdt)} for p in recorder.samples[-500:]],
            "now": None if now is None else {"ts_ms": now.ts_ms, "equity_usdt": str(now.equity_usdt)}}


def status(ctx: ApiContext) -> dict[str, Any]:
    engine = ctx.engine
    states: dict[str, int] = {}
    for pair_id in engine.pairs:
        state = engine.pair_state(pair_id).value
        states[state] = states.get(state, 0) + 1
    balance = engine.balance
    return {
        "mode": ctx.mode, "uptime_seconds": round(time.monotonic() - ctx.started_mono, 3),
        "started_ts_ms": int(ctx.started_wall * 1000), "entries_paused": engine.entry_gate.paused,
        "paused_reason": engine.entry_gate.paused_reason, "feed_lost": bool(ctx.hub.feed_lost),
        "pairs": len(engine.pairs), "pair_states": states,
        "open_pairs": sum(1 for p in engine.pairs if engine.pair_state(p) in IN_POSITION),
        "signals": ctx.router.counters.signals, "executed": ctx.router.counters.executed,
        "equity_usdt": None if balance is None else str(balance.total),
        "resolving_pairs": engine.resolving_pairs(), "events": ctx.events.stats(),
        "reloader": ctx.current_reloader() is not None,
    }


def config(ctx: ApiContext) -> dict[str, Any]:
    """The effective configuration with every secret left out (keys never leave the process)."""
    raw = ctx.config.model_dump(mode="json", exclude={"binance_api_key", "binance_api_secret"})
    return {"config": scrub(raw), "pairs": [scrub(p.model_dump(mode="json")) for p in ctx.pairs],
            "api_keys": "present" if ctx.secrets_present else "absent"}


def scrub(value: Any) -> Any:
    """Drop every key that names a secret, at any depth (a second guard behind the explicit exclude)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k in _SAFE_KEYS or not _SECRET_KEY.search(k)}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value
