"""The shipped hedge ratios and half-lives are what the documented script computes."""

from __future__ import annotations

import pytest

from scripts.compute_pairs import DEFAULT_DATA, analyse_pair, load_log_closes
from tests.conftest import PROJECT_DIR, read_json

SHIPPED = read_json(PROJECT_DIR / "pairs_config.json")["pairs"]


@pytest.fixture(scope="module")
def closes():
    return load_log_closes(DEFAULT_DATA)


@pytest.mark.parametrize("pair", SHIPPED[:3], ids=[p["pair_id"] for p in SHIPPED[:3]])
def test_shipped_pair_matches_recomputation(closes, pair) -> None:
    x = pair["leg_a"].split("/")[0] + "USDT"
    y = pair["leg_b"].split("/")[0] + "USDT"
    stats = analyse_pair(closes[x], closes[y])
    assert round(stats["beta"], 4) == pair["hedge_ratio"]
    assert round(stats["half_life"], 1) == pair["half_life_candles"]
    assert stats["p_value"] < 0.05  # the shipped pairs are cointegrated on the bundled data
