"""docs/architecture.md is written from the code: its tables must say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from execution.journal_models import OPEN_STATUSES, TRANSITIONS, OrderStatus
from execution.orders import Outcome

DOC = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"


def _table_rows(heading: str) -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_the_order_state_table_is_the_journals_transition_table() -> None:
    rows = _table_rows("Order states (the journal's transition table)")
    assert [r[0] for r in rows] == [s.value for s in OrderStatus]
    for status, openness, targets in rows:
        state = OrderStatus(status)
        assert (openness == "open") is (state in OPEN_STATUSES), status
        listed = set(re.findall(r"[A-Z_]{4,}", targets))
        if "+ itself" in targets:
            listed.add(status)
        assert listed == {s.value for s in TRANSITIONS[state]}, status


def test_the_outcome_table_names_every_outcome() -> None:
    assert [r[0].strip("`") for r in _table_rows("Order outcomes")] == [o.value for o in Outcome]


def test_the_pair_lifecycle_table_is_the_code_table() -> None:
    from core.types import PairState
    from execution.lifecycle import PAIR_TRANSITIONS, PairEvent

    documented = {}
    for event, sources, targets in _table_rows("Pair lifecycle"):
        for source in sources.split(", "):
            documented[(PairState(source), PairEvent(event))] = frozenset(PairState(t) for t in targets.split(", "))
    assert documented == dict(PAIR_TRANSITIONS)
