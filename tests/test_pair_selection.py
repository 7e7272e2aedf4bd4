"""The shipped pairs are exactly what ``python main.py scan`` proposes on the bundled 5m data."""

from __future__ import annotations

from core.config import load_app_config, load_pairs_config
from research.bars import load_bars
from research.scan import ScanSettings, proposed_pairs, run_scan
from tests.conftest import PROJECT_DIR, read_json


def test_shipped_pairs_are_the_scans_proposal_on_the_bundled_data() -> None:
    config = load_app_config(PROJECT_DIR / "config.json")
    report = run_scan(load_bars(PROJECT_DIR / "data" / "binance-usdm-perp-5m-2023-07", "5m"), ScanSettings())
    proposal = proposed_pairs(report, config.signal)
    assert read_json(PROJECT_DIR / "pairs_config.json") == proposal
    shipped = load_pairs_config(PROJECT_DIR / "pairs_config.json", config.signal, risk=config.risk)
    assert len(shipped) == 10 and all(p.scan is not None for p in shipped)
    # none passes on one month of 5m data (README, "What the bundled data says"): the file says so
    assert report.passed == [] and not any(p.scan.passed for p in shipped)
