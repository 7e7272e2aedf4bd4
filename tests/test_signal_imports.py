"""Importing the signal core must stay light: no pandas, no statsmodels (they cost ~1 s and
hundreds of MB, and the live path needs neither: OLS and ADF are numba kernels)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_signal_modules_do_not_import_pandas_or_statsmodels() -> None:
    code = ("import sys, json; import signals.generator, signals.spread, signals.kernels; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'statsmodels'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
