"""``python main.py sweep`` (research/sweep.py): grid input, folds, Dask against serial, the outputs.

Bounded: 2 pairs, 4 configurations, 2 folds (3 blocks of 6 hours of 5m bars), one LocalCluster of
2 workers; the serial reference runs the same 12 backtests in this process.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest

from core.config import load_app_config, load_pairs_config, signal_params
from core.errors import UsageError
from research.backtest import parse_date
from research.sweep import (Block, apply_params, build_tasks, configurations, make_blocks, make_folds, parse_grid,
                            run_serial, score)
from tests.conftest import PROJECT_DIR, run_main

PAIRS = ("EOS_AXS", "SAND_EOS")
GRID = ["lookback=30,60", "entry=1.5,2"]
FROM, TO = "2023-07-05", "2023-07-05T18:00"
BAR_MS = 300_000


def _pairs_file(tmp: Path) -> Path:
    """The backtest tests' pairs, two of them; EOS_AXS with its own lookback_bars 90, which the
    sweep must not let override the grid's value."""
    doc = json.loads((PROJECT_DIR / "tests" / "backtest_pairs.json").read_text())
    doc["pairs"] = [p for p in doc["pairs"] if p["pair_id"] in PAIRS]
    doc["pairs"][0]["lookback_bars"] = 90
    path = tmp / "pairs.json"
    path.write_text(json.dumps(doc))
    return path


# ---------------------------------------------------------------------------------------- grid


def test_grid_parsing() -> None:
    assert parse_grid(["lookback=30,60,120", "entry=1.5,2,2.5"]) == {"lookback": (30, 60, 120),
                                                                     "entry": (1.5, 2.0, 2.5)}
    assert parse_grid(["exit=-0.5,0", "stop=3.5"]) == {"exit": (-0.5, 0.0), "stop": (3.5,)}
    assert len(configurations(parse_grid(["lookback=30,60,120", "entry=1.5,2,2.5", "stop=3.5,4,5"]))) == 27
    assert configurations({"lookback": (30, 60), "entry": (1.5, 2.0)}) == [
        {"lookback": 30, "entry": 1.5}, {"lookback": 30, "entry": 2.0},
        {"lookback": 60, "entry": 1.5}, {"lookback": 60, "entry": 2.0}]


@pytest.mark.parametrize("tokens, words", [
    ([], "empty --grid"),
    (["window=30"], "unknown grid parameter 'window'"),
    (["lookback=30.5"], "not an integer"),
    (["entry=abc"], "not a number"),
    (["entry=nan"], "not a finite number"),
    (["entry=1.5,,2"], "empty value"),
    (["entry="], "empty value"),
    (["lookback"], "is not NAME=V1,V2"),
    (["entry=2", "entry=1.5"], "given twice"),
    (["entry=2,2"], "repeats a value"),
])
def test_grid_errors(tokens: list[str], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_grid(tokens)


def test_grid_values_checked_by_the_config_rules(tmp_path: Path) -> None:
    config = load_app_config(PROJECT_DIR / "config.json")
    pairs = load_pairs_config(_pairs_file(tmp_path), config.signal, risk=config.risk)
    with pytest.raises(UsageError, match="configuration entry=5 is invalid"):
        apply_params(config, pairs, {"entry": 5.0})  # above the stop (4)
    with pytest.raises(UsageError, match="configuration lookback=2 is invalid"):
        apply_params(config, pairs, {"lookback": 2})


def test_swept_value_applies_to_every_pair(tmp_path: Path) -> None:
    config = load_app_config(PROJECT_DIR / "config.json")
    pairs = load_pairs_config(_pairs_file(tmp_path), config.signal, risk=config.risk)
    assert signal_params(config.signal, pairs[0]).lookback_bars == 90  # the pair's own override
    for params in configurations({"lookback": (30, 60), "entry": (1.5, 2.0), "exit": (0.25,), "stop": (3.5,)}):
        cfg, prs = apply_params(config, pairs, params)
        for pair in prs:
            sp = signal_params(cfg.signal, pair)
            assert (sp.lookback_bars, sp.entry_z, sp.exit_z, sp.stop_z) == (
                params["lookback"], params["entry"], params["exit"], params["stop"]), pair.pair_id


@pytest.mark.parametrize("grid, words", [
    (["window=30"], "unknown grid parameter"), (["entry=x"], "not a number"), (["entry=9"], "is invalid")])
def test_bad_grid_exits_2_with_one_line(tmp_path: Path, grid: list[str], words: str) -> None:
    done = run_main(["sweep", "--pairs", str(_pairs_file(tmp_path)), "--grid", *grid, "--out", str(tmp_path / "o")],
                    cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------- folds


@pytest.mark.parametrize("folds, bars", [(1, 2), (2, 216), (3, 217), (5, 1000)])
def test_folds_time_ordered_disjoint(folds: int, bars: int) -> None:
    start = parse_date("2023-07-05")
    blocks = make_blocks(start, start + bars * BAR_MS, folds, BAR_MS)
    assert len(blocks) == folds + 1
    assert blocks[0].from_ms == start and blocks[-1].to_ms == start + bars * BAR_MS
    for a, b in zip(blocks, blocks[1:]):
        assert a.from_ms < a.to_ms == b.from_ms < b.to_ms  # consecutive, no overlap, none empty
        assert (a.to_ms - a.from_ms) % BAR_MS == 0
    for fold in make_folds(blocks):
        assert fold.in_sample.to_ms <= fold.out_of_sample.from_ms
        assert fold.out_of_sample.index == fold.in_sample.index + 1
    with pytest.raises(UsageError, match="cannot make"):
        make_blocks(start, start + 2 * BAR_MS, 2, BAR_MS)


def test_out_of_sample_never_scores_in_sample() -> None:
    """Runs whose PnL tells which block they came from: the in-sample side sees only in-sample
    blocks, the walk-forward pick looks only at in-sample PnL (config 1 is best out of sample
    everywhere, config 0 best in sample: the pick is config 0)."""
    configs = [{"entry": 1.5}, {"entry": 2.0}]
    blocks = [Block(i, i * 10, (i + 1) * 10) for i in range(3)]
    folds = make_folds(blocks)
    pnl = {(0, 0): 5, (0, 1): 7, (0, 2): -100, (1, 0): 1, (1, 1): 2, (1, 2): 50}
    runs = [{"config_index": c, "block_index": b, "pnl_usdt": str(v), "sharpe": float(v), "round_trips": 1,
             "max_drawdown_usdt": "0"} for (c, b), v in pnl.items()]
    scored = score(configs, folds, runs)
    rows = {r["config_index"]: r for r in scored["rows"]}
    assert rows[0]["is_pnl_usdt"] == (5 + 7) / 2 and rows[0]["oos_pnl_usdt"] == (7 - 100) / 2
    assert rows[1]["is_pnl_usdt"] == (1 + 2) / 2 and rows[1]["oos_pnl_usdt"] == (2 + 50) / 2
    assert rows[1]["oos_rank"] == 1  # ranked out of sample, not in sample
    assert [w["config_index"] for w in scored["walk_forward"]] == [0, 0]
    assert [w["oos_pnl_usdt"] for w in scored["walk_forward"]] == [7, -100]


# ---------------------------------------------------------------------------------------- the sweep


@pytest.fixture(scope="module")
def cli_sweep(tmp_path_factory: pytest.TempPathFactory):
    """``main.py sweep`` on a LocalCluster of 2 workers: 2x2 configurations, 2 folds, 2 pairs."""
    tmp = tmp_path_factory.mktemp("sweep")
    pairs = _pairs_file(tmp)
    out = tmp / "out"
    done = run_main(["sweep", "--pairs", str(pairs), "--grid", *GRID, "--from", FROM, "--to", TO, "--folds", "2",
                     "--workers", "2", "--out", str(out)], cwd=tmp, timeout=120)
    assert done.returncode == 0, done.stderr
    return done, out, pairs


def test_dask_sweep_equals_serial_backtests(cli_sweep) -> None:
    """Every (configuration, block) of the LocalCluster run has exactly the figures of the same
    backtest run serially in this process; IS and OOS runs stay inside their own blocks."""
    _done, out, pairs_path = cli_sweep
    doc = json.loads((out / "results.json").read_text())
    config = load_app_config(PROJECT_DIR / "config.json")
    pairs = load_pairs_config(pairs_path, config.signal, risk=config.risk)
    configs = configurations(parse_grid(GRID))
    blocks = make_blocks(parse_date(FROM), parse_date(TO, end=True), 2, BAR_MS)
    tasks = build_tasks(config, pairs, configs, blocks, str(PROJECT_DIR / "data" / "binance-usdm-perp-5m-2023-07"))
    seen: list[int] = []
    serial = run_serial(tasks, progress=lambda done, total: seen.append(done))
    assert seen == list(range(1, len(tasks) + 1))
    assert len(doc["runs"]) == len(serial) == 12
    keep = ("config_index", "block_index", "pnl_usdt", "round_trips", "trades", "sharpe", "max_drawdown_usdt",
            "bars", "from", "to")
    assert [{k: r[k] for k in keep} for r in doc["runs"]] == [{k: r[k] for k in keep} for r in serial]
    assert sum(r["round_trips"] for r in serial) > 0  # something traded: the comparison compares something
    assert len({r["pnl_usdt"] for r in serial}) > 1
    for r in serial:
        block = blocks[r["block_index"]]
        assert parse_date(r["from"].rstrip("Z")) >= block.from_ms and parse_date(r["to"].rstrip("Z")) <= block.to_ms
    expected = score(configs, make_folds(blocks), serial)
    assert doc["configurations"] == expected["rows"]
    assert doc["walk_forward"] == expected["walk_forward"]


def test_outputs_written(cli_sweep) -> None:
    done, out, _ = cli_sweep
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["label"] for r in rows) == sorted(["lookback=30 entry=1.5", "lookback=30 entry=2",
                                                      "lookback=60 entry=1.5", "lookback=60 entry=2"])
    assert [int(r["oos_rank"]) for r in rows] == [1, 2, 3, 4]
    oos = [float(r["oos_pnl_usdt"]) for r in rows]
    assert oos == sorted(oos, reverse=True)
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    assert all(f'data-config="{r["label"]}"' in page for r in rows)
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "out-of-sample" in done.stdout or "OOS PnL" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines() if "OOS" in line) <= 100


def test_bad_scheduler_exits_2_bounded(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = run_main(["sweep", "--pairs", str(_pairs_file(tmp_path)), "--grid", "entry=2", "--from", FROM, "--to", TO,
                     "--folds", "1", "--scheduler", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path / "o")],
                    cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Dask scheduler tcp://127.0.0.1:{port}" in lines[0], done.stderr
    assert not (tmp_path / "o").exists()


def test_running_scheduler_gives_the_serial_figures(tmp_path: Path) -> None:
    """``scheduler=`` an address: a cluster already running (started here, 1 worker process on
    127.0.0.1), two backtests on it, the same figures as in-process."""
    from distributed import LocalCluster

    from research.sweep import run_dask

    config = load_app_config(PROJECT_DIR / "config.json")
    pairs = load_pairs_config(_pairs_file(tmp_path), config.signal, risk=config.risk)
    blocks = make_blocks(parse_date("2023-07-05"), parse_date("2023-07-05T06:00"), 1, BAR_MS)
    tasks = build_tasks(config, pairs, [{"entry": 1.5}], blocks, str(PROJECT_DIR / "data" / "binance-usdm-perp-5m-2023-07"))
    with LocalCluster(n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        seen: list[tuple[int, int]] = []
        remote = run_dask(tasks, scheduler=cluster.scheduler_address, progress=lambda d, t: seen.append((d, t)))
        assert seen == [(1, 2), (2, 2)]  # one step per completed backtest, as the progress bar shows
        assert "run_task" in cluster.scheduler.task_prefixes  # the tasks ran on that cluster's scheduler
        assert len(cluster.scheduler.workers) == 1  # and it is still up: the sweep closed only its client
    local = run_serial(tasks)
    assert [{k: v for k, v in r.items() if k != "wall_seconds"} for r in remote] == \
        [{k: v for k, v in r.items() if k != "wall_seconds"} for r in local]
    assert all(r["bars"] == 36 for r in local)


def test_a_failing_backtest_names_its_configuration_and_block(tmp_path: Path) -> None:
    from dataclasses import replace

    from research.sweep import SweepTaskError, run_dask

    config = load_app_config(PROJECT_DIR / "config.json")
    pairs = load_pairs_config(_pairs_file(tmp_path), config.signal, risk=config.risk)
    blocks = make_blocks(parse_date("2023-07-05"), parse_date("2023-07-05T01:00"), 1, BAR_MS)
    tasks = build_tasks(config, pairs, [{"entry": 1.5}], blocks, str(tmp_path / "no-such-data"))
    tasks = [replace(tasks[0], config_index=3, block_index=1)]
    with pytest.raises(SweepTaskError, match=r"configuration #3 over block 1 failed: UsageError: .*not found"):
        run_dask(tasks, workers=1)
