"""The ``>>>`` examples in the project's docstrings run, pass, and really exist.

``doctest.testmod`` answers ``failed == 0`` for a module with no examples at all, so a runner
that checks only failures keeps passing when the examples are deleted, or when the finder no
longer sees them. Each module listed here must run at least one example. And every module
whose source holds a runnable (not skipped) example must be listed, so examples written in a
new module are not left unrun: that is how those of ``execution/`` went untested.
"""

from __future__ import annotations

import doctest
import importlib
from types import ModuleType

import pytest

from tests.conftest import PROJECT_DIR

DOCTEST_MODULES = (
    "app.notify_format",
    "app.operator_api.ws",
    "app.performance",
    "app.report_charts",
    "app.report_data",
    "bench.exposure_audit",
    "core.backoff",
    "core.cli_args",
    "core.config",
    "core.stats",
    "core.venue",
    "execution.engine",
    "execution.journal_models",
    "execution.lifecycle",
    "execution.markets_watch",
    "execution.orders",
    "execution.paper",
    "execution.rate_limit",
    "execution.reconcile",
    "execution.risk",
    "execution.sizing",
    "matching.accounts",
    "matching.engine",
    "matching.fill_model",
    "matching.orders",
    "matching.rules",
    "research.store",
    "research.multiple_testing",
    "signals.generator",
    "signals.kernels",
    "signals.spread",
    "market_replay.candle_arrays",
    "market_replay.candle_csv",
    "market_replay.formats",
    "market_replay.kernels",
    "market_replay.paths",
    "research.backtest",
    "research.replay_feed",
    "research.sweep",
)


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run_and_pass(name: str) -> None:
    failed, attempted = doctest.testmod(importlib.import_module(name))
    assert attempted > 0, f"{name}: no docstring example ran (removed, skipped or not found?)"
    assert failed == 0, f"{name}: {failed} of {attempted} examples failed (report in stdout)"


def test_every_module_with_a_runnable_example_is_listed() -> None:
    with_examples = {name for name in _modules_whose_source_has_a_prompt()
                     if _runnable_examples(importlib.import_module(name)) > 0}
    unlisted = sorted(with_examples - set(DOCTEST_MODULES))
    assert unlisted == [], f"add {unlisted} to DOCTEST_MODULES in {__file__}"


def _modules_whose_source_has_a_prompt() -> list[str]:
    """Modules of the project's packages (not tests, not ``__main__``) that contain ``>>>``."""
    names = []
    for init in sorted(PROJECT_DIR.glob("*/__init__.py")):
        package = init.parent
        if package.name == "tests":
            continue
        for path in sorted(package.rglob("*.py")):
            if path.name == "__main__.py" or ">>>" not in path.read_text(encoding="utf-8"):
                continue
            parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _runnable_examples(module: ModuleType) -> int:
    return sum(1 for test in doctest.DocTestFinder().find(module) for example in test.examples
               if not example.options.get(doctest.SKIP))
