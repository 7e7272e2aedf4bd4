"""``python main.py resume PAIR ...``: an operator clears HALTED or BLOCKED (or disabled) pairs in the journal.

The bot must not be running (the journal is the running bot's). A cleared pair goes to RESOLVING
through the lifecycle table, with a ``pair_transition`` event saying it was the operator; the next
start reconciles it afresh: a naked leg is closed, a held position restored, and a pair whose
exchange position the journal still cannot explain is blocked again.
"""

from __future__ import annotations

from pathlib import Path

from core.config import AppConfig
from core.errors import UsageError
from core.types import PairState
from execution.journal import Journal
from execution.lifecycle import PairEvent, PairLifecycle
from execution.markets_watch import DisabledPairs


def journal_file(config: AppConfig, config_path: Path) -> Path:
    """The journal of the mode ``config.json`` selects (paper or live); relative to its folder."""
    storage = Path(config.storage.dir)
    if not storage.is_absolute():
        storage = config_path.resolve().parent / storage
    return storage / (config.storage.journal_paper if config.dry_run else config.storage.journal_live)


def resume_pairs(config: AppConfig, config_path: Path, pair_ids: list[str]) -> list[str]:
    """Clear each named HALTED or BLOCKED pair; returns one line per pair for the console.

    Raises ``UsageError`` (exit 2) for a missing journal or a pair it does not know."""
    path = journal_file(config, config_path)
    if not path.is_file():
        raise UsageError(f"resume: no journal at {path}; nothing to resume")
    lines = []
    with Journal.open(path, mode="paper" if config.dry_run else "live") as journal:
        positions = {p.pair_id: p for p in journal.all_positions()}
        unknown = [p for p in pair_ids if p not in positions]
        if unknown:
            raise UsageError(f"resume: {', '.join(unknown)} not in {path} (known: {', '.join(sorted(positions))})")
        lifecycle = PairLifecycle(journal, positions)
        disabled = DisabledPairs(journal)
        disabled.restore()
        for pair_id in pair_ids:
            before = positions[pair_id]
            enabled = disabled.enable(pair_id, by="operator (main.py resume)")
            if enabled:
                lines.append(f"{pair_id}: enabled again; the next start disables it again if a leg still does "
                             "not trade")
            if before.state not in (PairState.HALTED, PairState.BLOCKED):
                if enabled:
                    continue
                lines.append(f"{pair_id}: {before.state.value}, nothing to resume")
                continue
            lifecycle.apply(pair_id, PairEvent.OPERATOR_RESUME, PairState.RESOLVING,
                            reason=f"operator resume from {before.state.value}: {before.halted_reason}")
            lines.append(f"{pair_id}: {before.state.value} -> RESOLVING ({before.halted_reason}); "
                         "the next start reconciles it")
    return lines
