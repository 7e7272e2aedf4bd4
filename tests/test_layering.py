"""Layering (docs/architecture.md, "Order outcomes"): production code never imports ``simulator/``, the test exchange.

The matching engine and fill model live in ``matching/``, which serves paper trading and the
simulator alike and imports only the standard library (so also no ccxt, aiohttp, execution or
simulator). Checked on the source, by walking each module's AST, so an import inside a
function or under ``TYPE_CHECKING`` counts too. ``app/`` is not walked: the demo runs the
embedded simulator on purpose (``app/demo.py``).

The seam between the two is ``matching.engine.VenueFaults``: the simulator's ``FaultInjector``
and matching's own ``PartialFills`` (the paper exchange's) both implement it.
"""

from __future__ import annotations

import ast
import inspect
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from matching.engine import PartialFills, VenueFaults
from simulator.faults import FaultConfig, FaultInjector

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_PACKAGES = ("execution", "core", "signals", "matching", "market_replay", "research")
MATCHING_MAY_IMPORT = frozenset(sys.stdlib_module_names) | {"matching"}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in the module at ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_walked_package_has_modules() -> None:
    """Guards the two tests below against walking an empty or renamed folder."""
    for package in PRODUCTION_PACKAGES:
        assert _modules(package), f"no modules found under {package}/"


def test_production_code_never_imports_the_simulator() -> None:
    offenders = [_where(path, line) for package in PRODUCTION_PACKAGES for path in _modules(package)
                 for line, name in _imports(path) if name == "simulator"]
    assert offenders == [], (f"imports of simulator/ (the test exchange) from production code: {offenders}; "
                             "what both need belongs in matching/")


def test_matching_imports_only_the_standard_library_and_itself() -> None:
    offenders = [f"{_where(path, line)} imports {name}" for path in _modules("matching")
                 for line, name in _imports(path) if name not in MATCHING_MAY_IMPORT]
    assert offenders == [], (f"matching/ must stay pure (no ccxt, aiohttp, execution or simulator, nor any "
                             f"other package): {offenders}")


@pytest.mark.parametrize("faults", [FaultInjector(FaultConfig(seed=5, partial_fill_probability=0.3)),
                                    PartialFills(0.3, seed=5)], ids=["FaultInjector", "PartialFills"])
def test_both_fault_sources_are_venue_faults(faults: object) -> None:
    for name, member in inspect.getmembers(VenueFaults):
        if not name.startswith("_") and (callable(member) or isinstance(member, property)):
            assert hasattr(faults, name), f"{type(faults).__name__} lacks VenueFaults.{name}"
    assert faults.partial_fill_probability == 0.3  # type: ignore[attr-defined]
    assert faults.position_lag_ms == 0 and faults.reject_order() is None  # type: ignore[attr-defined]
    assert isinstance(faults.fill_rng(), random.Random)  # type: ignore[attr-defined]


def test_paper_partial_fills_draw_the_simulators_fill_stream() -> None:
    """One seed, one order sequence: a paper run cuts the same fills as the simulator."""
    paper, sim = PartialFills(0.3, seed=11).fill_rng(), FaultInjector(FaultConfig(seed=11)).fill_rng()
    assert [paper.random() for _ in range(20)] == [sim.random() for _ in range(20)]


def test_partial_fills_refuses_a_probability_outside_0_1() -> None:
    with pytest.raises(ValueError, match="partial_fill_probability"):
        PartialFills(1.5)
