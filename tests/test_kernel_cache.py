"""A cached numba kernel that calls another module's kernel compiles again when that module changes.

numba's ``cache=True`` alone keeps the callee's old code (tests the hazard first, then the fix):
after an edit of only the callee's file, the caller must compute with the new callee.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import PROJECT_DIR

CALLEE = "from numba import njit\n\n@njit(cache=True)\ndef step(x):\n    return x + {n}\n"
CALLER = textwrap.dedent("""\
    from pathlib import Path
    from numba import njit
    from pkg import callee
    from signals.kernel_cache import flush_if_dependencies_changed

    @njit(cache=True)
    def run(x):
        return callee.step(x) * 10

    if {guard}:
        flush_if_dependencies_changed(globals(), (Path(callee.__file__),), name=__name__)
    """)


def _run(root: Path) -> str:
    code = "from pkg import caller, callee; print(caller.run(1), callee.step(1))"
    env = {"PYTHONPATH": f"{root}:{PROJECT_DIR}", "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": ""}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _package(root: Path, *, guard: bool) -> Path:
    pkg = root / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "callee.py").write_text(CALLEE.format(n=1))
    (pkg / "caller.py").write_text(CALLER.format(guard=guard))
    return pkg


def test_without_the_guard_a_cached_caller_keeps_the_old_callee(tmp_path: Path) -> None:
    pkg = _package(tmp_path, guard=False)
    assert _run(tmp_path) == "20 2"
    (pkg / "callee.py").write_text(CALLEE.format(n=5))  # only the callee's file changes
    assert _run(tmp_path) == "20 6"  # the hazard: the caller still adds 1


def test_with_the_guard_the_caller_compiles_again(tmp_path: Path) -> None:
    pkg = _package(tmp_path, guard=True)
    assert _run(tmp_path) == "20 2"
    assert _run(tmp_path) == "20 2"  # unchanged: served from the cache
    (pkg / "callee.py").write_text(CALLEE.format(n=5))
    assert _run(tmp_path) == "60 6"
