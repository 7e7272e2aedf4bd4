"""Session statistics: the original design's four lines plus sections the components add.

JSON keys written to ``logs/session-<UTC timestamp>.json`` (``schema`` 1):

- ``schema``: integer version of this layout.
- ``mode``: PAPER, LIVE or DEMO.
- ``session_id``: this process run's id (``new_session_id``), also on every line of
  ``trades.jsonl`` and in the session report.
- ``started_at_utc``, ``stopped_at_utc``: ISO-8601 UTC times.
- ``uptime_seconds``: wall-clock seconds from start to stop.
- ``signals_processed``: decisions, i.e. new signals delivered to the execution callback. The
  re-fire of an entry held back by a persistent refusal (max open pairs, exposure, daily loss,
  margin) is a re-check of the same decision, counted in ``signals_rechecked`` instead.
- ``trades_executed``: signals the engine reports as executed.
- ``signals_refused``: refused decisions by reason (the engine's ``Reason`` values).
- ``signals_failed``: decisions that were neither executed nor refused (failed, halted, resolving).
- ``signals_rechecked``: re-checks of a held-back entry that the same cause refused again.
- ``success_rate_pct``: trades_executed / signals_processed * 100 (0 when no signals): a share
  of decisions carried out, not a win rate (file only; the screen shows the decisions line).
- ``stop_reason``: why the run ended (``signal SIGINT``, ``duration``, ``fatal: ...``).
- ``sections``: one object per component (``market_data``, ``signals``, ``execution``, ...),
  each a flat or nested object of that component's counters, documented where it is built.
  PnL figures are net of fees and funding: the ``pnl`` section's rows (``app/report.py``) carry
  ``realized_usdt``, ``unrealized_usdt``, ``fees_usdt`` and ``funding_usdt`` per pair, and
  ``execution`` has ``realized_pnl_usdt`` and ``funding_usdt`` (all funding journaled).
  ``performance`` (``app/equity.py``) has every figure of the final screen, this session and
  all time, exact money as decimal strings, this session's per-pair rows (``pairs``), the
  positions left open with the mids they were marked at, and the equity curve. The equity at
  end is the balance read at stop; without it ``equity_end_usdt`` is null and
  ``equity_end_unknown`` says why.
"""

from __future__ import annotations

import secrets
import time
from decimal import ROUND_HALF_EVEN, Decimal
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich import box
from rich.console import Console

from core.files import write_json_atomically
from rich.table import Table

SCHEMA_VERSION = 1

SectionProvider = Callable[[], dict[str, Any]]


def new_session_id(now: datetime | None = None) -> str:
    """One id per process run: its UTC start second plus 6 random hex digits, so ids sort by
    time and two runs started in the same second still differ.

    >>> new_session_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))[:17]
    '20260102T030405Z-'
    """
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class SessionStats:
    """Counters of one run. Components register a provider called at snapshot time.

    Providers are pulled, not pushed, so a hot path never pays for statistics it does not need.
    """

    mode: str
    session_id: str = field(default_factory=new_session_id)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    signals_processed: int = 0
    trades_executed: int = 0
    signals_refused: dict[str, int] = field(default_factory=dict)
    signals_failed: int = 0
    signals_rechecked: int = 0
    stop_reason: str = ""
    stopped_at: datetime | None = None
    _started_monotonic: float = field(default_factory=time.monotonic)
    _stopped_monotonic: float | None = None
    _providers: dict[str, SectionProvider] = field(default_factory=dict)

    def register_section(self, name: str, provider: SectionProvider) -> None:
        if name in self._providers:
            raise ValueError(f"statistics section {name!r} is already registered")
        self._providers[name] = provider

    def count_refusal(self, reason: str) -> None:
        self.signals_refused[reason] = self.signals_refused.get(reason, 0) + 1

    def mark_stopped(self, reason: str) -> None:
        """Freeze uptime at the first stop; later calls keep the first reason."""
        if self._stopped_monotonic is None:
            self._stopped_monotonic = time.monotonic()
            self.stopped_at = datetime.now(timezone.utc)
            self.stop_reason = reason

    @property
    def uptime_seconds(self) -> float:
        end = self._stopped_monotonic if self._stopped_monotonic is not None else time.monotonic()
        return end - self._started_monotonic

    @property
    def success_rate_pct(self) -> float:
        return 100.0 * self.trades_executed / self.signals_processed if self.signals_processed else 0.0

    def snapshot(self) -> dict[str, Any]:
        sections: dict[str, Any] = {}
        for name, provider in self._providers.items():
            try:
                sections[name] = provider()
            except Exception as exc:  # a broken counter must not lose the whole report
                sections[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "schema": SCHEMA_VERSION,
            "mode": self.mode,
            "session_id": self.session_id,
            "started_at_utc": self.started_at.isoformat(timespec="seconds"),
            "stopped_at_utc": self.stopped_at.isoformat(timespec="seconds") if self.stopped_at else None,
            "uptime_seconds": round(self.uptime_seconds, 3),
            "signals_processed": self.signals_processed,
            "trades_executed": self.trades_executed,
            "signals_refused": dict(self.signals_refused),
            "signals_failed": self.signals_failed,
            "signals_rechecked": self.signals_rechecked,
            "success_rate_pct": round(self.success_rate_pct, 2),
            "stop_reason": self.stop_reason,
            "sections": sections,
        }

    def write_json(self, directory: Path) -> Path:
        """Write the snapshot as ``session-<UTC>.json``; never overwrites an earlier run's file."""
        directory.mkdir(parents=True, exist_ok=True)
        stamp = self.started_at.strftime("%Y%m%dT%H%M%SZ")
        path = directory / f"session-{stamp}.json"
        suffix = 1
        while path.exists():
            path = directory / f"session-{stamp}-{suffix}.json"
            suffix += 1
        return write_json_atomically(path, self.snapshot(), indent=2, default=str)


def final_statistics_text(snapshot: dict[str, Any]) -> str:
    """The original design's recognisable block: uptime, signals, trades, decisions."""
    return (
        "FINAL STATISTICS:\n"
        f"   Uptime: {snapshot['uptime_seconds']:.1f}s\n"
        f"   Signals processed: {snapshot['signals_processed']}\n"
        f"   Trades executed: {snapshot['trades_executed']}\n"
        f"   Decisions: {_decisions(snapshot)}"
    )


def _decisions(snapshot: dict[str, Any]) -> str:
    refused = snapshot.get("signals_refused") or {}
    by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(refused.items(), key=lambda kv: -kv[1]))
    text = (f"{snapshot['signals_processed']} signals: {snapshot['trades_executed']} executed, "
            f"{sum(refused.values())} refused{f' ({by_reason})' if by_reason else ''}, "
            f"{snapshot.get('signals_failed', 0)} failed")
    rechecks = snapshot.get("signals_rechecked", 0)
    return text + (f"; {rechecks} re-checks of held-back entries" if rechecks else "")


PERFORMANCE_SECTION = "performance"
PNL_SECTION = "pnl"
#: The final screen fits a terminal of this many columns (and, with ten pairs, 50 rows).
SCREEN_MAX_WIDTH = 100
_TABLE = dict(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def render_tables(snapshot: dict[str, Any], console: Console) -> None:
    """The final screen below the four lines, for a terminal of 100 columns x 50 rows: the
    performance figures, the per-pair rows of this session (with what is left open), then every
    other section's non-zero counters packed into lines. Money to 2 decimals, right-aligned. The
    session file keeps everything (zero counters, the per-pair rows of other sections)."""
    performance = snapshot["sections"].get(PERFORMANCE_SECTION)
    not_counters = {PERFORMANCE_SECTION}
    if isinstance(performance, dict) and performance.get("session"):
        render_performance(performance, console)
        not_counters.add(PNL_SECTION)  # the all-time twin of the per-pair table and its totals: file only
    width = min(console.width, SCREEN_MAX_WIDTH)
    lines: list[str] = []
    for name, section in snapshot["sections"].items():
        if name in not_counters or not isinstance(section, dict) or not section:
            continue
        counters = [f"{key} {_cell(value, key)}" for key, value in _flatten(
            {k: v for k, v in section.items() if k != "rows" or not isinstance(v, list)}) if not _is_zero(value)]
        lines.extend(_pack(counters, head=f"{name}: ", width=width))
    if lines:
        console.print("counters, non-zero only (the session file has all, and the per-pair rows):", highlight=False)
        for line in lines:
            console.print(line, highlight=False, overflow="fold")


def _pack(items: list[str], *, head: str, width: int) -> list[str]:
    """``head`` then the items joined by `` · ``, wrapped between items (never inside one)."""
    if not items:
        return []
    lines, current = [], head + items[0]
    for item in items[1:]:
        if len(current) + 3 + len(item) > width:
            lines.append(current)
            current = " " * len(head) + item
        else:
            current += " · " + item
    return lines + [current]


def render_performance(perf: dict[str, Any], console: Console) -> None:
    """This session and all time side by side, then the per-pair rows and what is left open."""
    session, all_time = perf["session"], perf.get("all_time") or {}
    need = perf.get("min_ratio_samples", 0)
    table = Table(**_TABLE, padding=(0, 1))
    table.add_column("USDT, net = after fees and funding")
    table.add_column("this session", justify="right")
    table.add_column("all time (journal)", justify="right")

    def row(label: str, key: str, fmt: Callable[[Any, dict[str, Any]], str]) -> None:
        table.add_row(label, fmt(session.get(key), session), fmt(all_time.get(key), all_time) if all_time else "")

    def end_equity(value: Any, d: dict[str, Any]) -> str:
        return "unknown (see below)" if value is None and d.get("equity_end_unknown") else _usd(value, d)

    row("Net PnL (realized + unrealized)", "net_pnl_usdt", _usd)
    row("  realized, closed round trips", "realized_usdt", _usd)
    row("  unrealized, open positions", "unrealized_usdt", _usd)
    row("  fees paid (in realized)", "fees_usdt", _usd)
    row("  funding received (in realized)", "funding_usdt", _usd)
    row("Equity at start", "equity_start_usdt", _usd)
    row("Equity at end", "equity_end_usdt", end_equity)
    row("Return", "return_pct", lambda v, _: _pct(v))
    row("Round trips", "round_trips", lambda v, _: "" if v is None else str(v))
    row("Win rate", "win_rate_pct", lambda v, d: "n/a" if v is None else f"{v:.1f}% ({d['wins']}/{d['round_trips']})")
    row("Profit factor", "profit_factor",
        lambda v, d: f"{v:.2f}" if v is not None else ("n/a (no losing trip)" if d.get("round_trips") else "n/a"))
    row("Expectancy per round trip", "expectancy_usdt", _usd)
    row("Average holding time", "avg_holding_seconds", lambda v, _: "n/a" if v is None else _hms(v))
    row("Max drawdown", "max_drawdown_usdt",
        lambda v, d: "" if v is None else f"{_usd(v, d)} ({_pct(d.get('max_drawdown_pct'))})")
    ratio = lambda v, d: (f"{v:.2f}" if v is not None else  # noqa: E731
                          (f"n/a (fewer than {need} samples)" if d.get("ratio_samples", 0) < need else "n/a"))
    row("Sharpe (per trip, annualised)", "sharpe", ratio)
    row("Sortino (per trip, annualised)", "sortino", ratio)
    row("Best pair", "best_pair", _pair)
    row("Worst pair", "worst_pair", _pair)
    console.print(table)
    if session.get("equity_end_usdt") is None and session.get("equity_end_unknown"):
        # one row whatever the error says (cut with an ellipsis): the session file has all of it
        console.print(f"Equity at end unknown, no older read shown as the end: {session['equity_end_unknown']}",
                      highlight=False, no_wrap=True, overflow="ellipsis", crop=True)
    render_pairs(perf, console)


PAIR_COLUMNS = ("pair", "state", "trips", "won", "realized", "unrealized", "fees", "funding", "max dd",
                "open a / b")


def render_pairs(perf: dict[str, Any], console: Console) -> None:
    """Per pair, this session: trips, wins, realized (net), unrealized, fees and funding (in
    realized), max drawdown of its realized PnL, and the base quantities still open (+ long, - short)."""
    rows = perf.get("pairs") or []
    opened = perf.get("open_positions") or []
    if rows:
        table = Table(**_TABLE, padding=0)
        for column in PAIR_COLUMNS:
            table.add_column(column, justify="left" if column in ("pair", "state") else "right")
        for r in rows:
            held = Decimal(r["qty_a"]) != 0 or Decimal(r["qty_b"]) != 0
            table.add_row(r["pair"], r["state"].replace("_SPREAD", ""), str(r["round_trips"]), str(r["wins"]),
                          _usd(r["realized_usdt"], r), _usd(r["unrealized_usdt"], r), _usd(r["fees_usdt"], r),
                          _usd(r["funding_usdt"], r), _usd(r["max_drawdown_usdt"], r),
                          f"{_qty(r['qty_a'])} / {_qty(r['qty_b'])}" if held else "")
        console.print(table)
    if opened:
        console.print(f"{len(opened)} position(s) left open at shutdown, held on the exchange until the next "
                      "start reconciles them", highlight=False)
    else:
        console.print("no position left open at shutdown", highlight=False)


def _qty(value: str) -> str:
    qty = Decimal(value)
    return f"{qty:+f}" if qty else "0"


def _usd(value: Any, _: dict[str, Any]) -> str:
    if value is None:
        return "n/a"
    return f"{Decimal(str(value)).quantize(Decimal('0.01'), ROUND_HALF_EVEN):,.2f}"


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _hms(seconds: float) -> str:
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _pair(value: Any, d: dict[str, Any]) -> str:
    return "n/a" if not value else f"{value[0]} {_usd(value[1], d)}"


def _is_zero(value: Any) -> bool:
    return value is None or value is False or value == 0 or value in ([], {}, "")


def _flatten(section: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


def _cell(value: Any, key: str = "") -> str:
    if isinstance(value, float) and key.endswith("_usdt"):
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return "" if value is None else str(value)
