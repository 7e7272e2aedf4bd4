"""Session statistics: the original design's four lines plus sections the components add.

JSON keys written to ``logs/session-<UTC timestamp>.json`` (``schema`` 1):

- ``schema``: integer version of this layout.
- ``mode``: PAPER, LIVE or DEMO.
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
  of decisions carried out, not a win rate.
- ``stop_reason``: why the run ended (``signal SIGINT``, ``duration``, ``fatal: ...``).
- ``sections``: one object per component (``market_data``, ``signals``, ``execution``, ...),
  each a flat or nested object of that component's counters, documented where it is built.
  PnL figures are net of fees and funding: the ``pnl`` section's rows (``app/report.py``) carry
  ``realized_usdt``, ``unrealized_usdt``, ``fees_usdt`` and ``funding_usdt`` per pair, and
  ``execution`` has ``realized_pnl_usdt`` and ``funding_usdt`` (all funding journaled).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from core.files import write_json_atomically
from rich.table import Table

SCHEMA_VERSION = 1

SectionProvider = Callable[[], dict[str, Any]]


@dataclass(slots=True)
class SessionStats:
    """Counters of one run. Components register a provider called at snapshot time.

    Providers are pulled, not pushed, so a hot path never pays for statistics it does not need.
    """

    mode: str
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
    """The original design's recognisable block, kept line for line."""
    return (
        "FINAL STATISTICS:\n"
        f"   Uptime: {snapshot['uptime_seconds']:.1f}s\n"
        f"   Signals processed: {snapshot['signals_processed']}\n"
        f"   Trades executed: {snapshot['trades_executed']}\n"
        f"   Success rate: {snapshot['success_rate_pct']:.1f}% (trades executed / signals; not a win rate)\n"
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


def render_tables(snapshot: dict[str, Any], console: Console) -> None:
    """Print each statistics section as a table after the four-line block."""
    for name, section in snapshot["sections"].items():
        if not isinstance(section, dict) or not section:
            continue
        rows = section.get("rows") if isinstance(section.get("rows"), list) else None
        if rows and all(isinstance(r, dict) for r in rows):
            table = Table(title=name, title_justify="left")
            columns = list(rows[0].keys())
            for column in columns:
                table.add_column(str(column))
            for row in rows:
                table.add_row(*(_cell(row.get(c)) for c in columns))
            console.print(table)
            section = {k: v for k, v in section.items() if k != "rows"}
        if section:
            table = Table(title=name if not rows else None, show_header=False, title_justify="left")
            table.add_column("counter")
            table.add_column("value", justify="right")
            for key, value in _flatten(section):
                table.add_row(key, _cell(value))
            console.print(table)


def _flatten(section: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return "" if value is None else str(value)
