"""``python main.py sweep``: backtests over a parameter grid and walk-forward folds, on Dask.

Why walk-forward: the best in-sample point of a grid is mostly the luckiest one. The range is cut
into ``k + 1`` consecutive, disjoint blocks in time order; fold ``i`` has block ``i`` as its
in-sample part and block ``i + 1`` as its out-of-sample part. Each configuration's score is its
mean out-of-sample PnL over the folds, shown next to its in-sample mean; per fold the
configuration with the best in-sample PnL is also "chosen" and its out-of-sample PnL reported
(``walk_forward``), which is what trading the sweep's pick would have earned.

Each (configuration, block) is one backtest (``research/backtest.py``, the bot's own engine), run
once: fold ``i``'s out-of-sample block is fold ``i + 1``'s in-sample block, never scored as
in-sample within its own fold. A backtest's warm-up reads the bars just before its block (a live
bot has that history too); it trades nothing there.

Each Dask task is ``run_task``: a pure function of (config, pairs, range) as plain JSON-able data,
importing the project inside the worker, returning a small dict. A swept parameter replaces the
field of ``config.signal`` AND clears the per-pair override of it (``pairs_config.json`` may set
``lookback_bars`` or thresholds per pair), so every pair runs the grid's value.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
from dataclasses import dataclass
from typing import Any, Callable

from core.errors import UsageError

#: grid name -> (config.signal field, the PairConfig override it must clear, value type)
GRID_FIELDS: dict[str, tuple[str, str, type]] = {
    "lookback": ("lookback_bars", "lookback_bars", int),
    "entry": ("entry_threshold", "z_score_threshold", float),
    "exit": ("exit_threshold", "exit_threshold", float),
    "stop": ("stop_loss_threshold", "stop_loss_z", float),
}
METRICS = ("pnl_usdt", "round_trips", "trades", "sharpe", "max_drawdown_usdt")


# ---------------------------------------------------------------------------------------- the grid


def parse_grid(tokens: list[str]) -> dict[str, tuple[Any, ...]]:
    """``["lookback=30,60", "entry=1.5,2"]`` -> ``{"lookback": (30, 60), "entry": (1.5, 2.0)}``.

    >>> parse_grid(["lookback=30,60", "entry=2"])
    {'lookback': (30, 60), 'entry': (2.0,)}
    """
    if not tokens:
        raise UsageError(f"sweep: empty --grid (give NAME=V1,V2,... with NAME one of {', '.join(GRID_FIELDS)})")
    grid: dict[str, tuple[Any, ...]] = {}
    for token in tokens:
        name, sep, values = token.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UsageError(f"sweep: grid item {token!r} is not NAME=V1,V2,...")
        if name not in GRID_FIELDS:
            raise UsageError(f"sweep: unknown grid parameter {name!r} (known: {', '.join(GRID_FIELDS)})")
        if name in grid:
            raise UsageError(f"sweep: grid parameter {name!r} given twice")
        kind = GRID_FIELDS[name][2]
        parsed: list[Any] = []
        for text in values.split(","):
            text = text.strip()
            if not text:
                raise UsageError(f"sweep: grid item {token!r} has an empty value")
            parsed.append(_number(name, text, kind))
        if len(set(parsed)) != len(parsed):
            raise UsageError(f"sweep: grid parameter {name!r} repeats a value ({values})")
        grid[name] = tuple(parsed)
    return grid


def _number(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"sweep: {name}={text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"sweep: {name}={text!r} is not a finite number")
    return value


def configurations(grid: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Every combination, in grid order (the last parameter varies fastest)."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def apply_params(config: Any, pairs: list[Any], params: dict[str, Any], *, file: str = "--grid") -> tuple[Any, list[Any]]:
    """(config, pairs) with the swept values on ``config.signal`` and the pairs' overrides of
    those fields cleared; validated by the config's own rules (a value out of range, or entry
    not between exit and stop, is a ``UsageError`` naming the configuration)."""
    from core.config import AppConfig, PairConfig, validate_app_rules, validate_pair_rules
    from core.errors import ConfigurationError

    signal_update = {GRID_FIELDS[n][0]: v for n, v in params.items()}
    cleared = {GRID_FIELDS[n][1]: None for n in params}
    label = config_label(params)
    try:
        signal = type(config.signal).model_validate({**config.signal.model_dump(), **signal_update})
        new_config = AppConfig.model_validate({**config.model_dump(), "signal": signal.model_dump()})
        validate_app_rules(new_config, file)
        new_pairs = [PairConfig.model_validate({**p.model_dump(), **cleared}) for p in pairs]
        validate_pair_rules(new_pairs, new_config.signal, file, risk=new_config.risk)
    except ConfigurationError as exc:
        raise UsageError(f"sweep: configuration {label} is invalid: {exc}") from None
    except ValueError as exc:  # pydantic's ValidationError
        first = str(exc).splitlines()
        raise UsageError(f"sweep: configuration {label} is invalid: {' '.join(first[1:3]).strip()}") from None
    return new_config, new_pairs


def max_lookback(config: Any, pairs: list[Any], configs: list[dict[str, Any]]) -> int:
    """The longest signal window any pair runs under any configuration (its warm-up)."""
    from core.config import signal_params

    longest = 0
    for params in configs:
        cfg, prs = apply_params(config, pairs, params)
        longest = max([longest] + [signal_params(cfg.signal, p).lookback_bars for p in prs])
    return longest


def config_label(params: dict[str, Any]) -> str:
    """``lookback=30 entry=1.5``."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# ---------------------------------------------------------------------------------------- folds


@dataclass(frozen=True, slots=True)
class Block:
    """A time range of bars [from_ms, to_ms)."""

    index: int
    from_ms: int
    to_ms: int


@dataclass(frozen=True, slots=True)
class Fold:
    """In-sample block, then the out-of-sample block right after it."""

    index: int
    in_sample: Block
    out_of_sample: Block


def make_blocks(from_ms: int, to_ms: int, folds: int, bar_ms: int) -> list[Block]:
    """``folds + 1`` consecutive blocks of whole bars, as equal as the bars allow."""
    if folds < 1:
        raise UsageError("sweep: --folds must be at least 1")
    bars = (to_ms - from_ms) // bar_ms
    if bars < folds + 1:
        raise UsageError(f"sweep: {bars} bars in the range cannot make {folds + 1} blocks for {folds} folds")
    edges = [from_ms + (bars * i // (folds + 1)) * bar_ms for i in range(folds + 2)]
    return [Block(i, edges[i], edges[i + 1]) for i in range(folds + 1)]


def make_folds(blocks: list[Block]) -> list[Fold]:
    return [Fold(i, blocks[i], blocks[i + 1]) for i in range(len(blocks) - 1)]


# ---------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True, slots=True)
class Task:
    """One backtest: configuration ``config_index`` over block ``block_index``; the rest is its input."""

    config_index: int
    block_index: int
    config: dict[str, Any]  # AppConfig.model_dump(mode="json")
    pairs: list[dict[str, Any]]  # PairConfig.model_dump(mode="json") each
    data_dir: str
    from_ms: int
    to_ms: int


def run_task(task: Task) -> dict[str, Any]:
    """One backtest on the worker: a pure function of the task; the project is imported here.

    Returns the figures the sweep scores (money as strings: exact, as the backtest writes it).
    The backtest's files go to a temporary folder, removed after."""
    import asyncio
    import io
    import sys
    import tempfile
    from pathlib import Path

    from loguru import logger
    from rich.console import Console

    from core.config import AppConfig, PairConfig
    from research.backtest import Backtest, BacktestRequest

    logger.remove()  # the worker's log: warnings only (a backtest's INFO lines are per order)
    logger.add(sys.stderr, level="ERROR", format="{time:HH:mm:ss} {level} {message}")
    config = AppConfig.model_validate(task.config)
    pairs = [PairConfig.model_validate(p) for p in task.pairs]
    with tempfile.TemporaryDirectory(prefix="sweep-task-") as tmp:
        request = BacktestRequest(data_dir=Path(task.data_dir), from_ms=task.from_ms, to_ms=task.to_ms,
                                  out_dir=Path(tmp), progress=False,
                                  report_timeout_seconds=0)  # the folder is thrown away: no report.html
        result = asyncio.run(Backtest(config=config, pairs=pairs, request=request,
                                      console=Console(file=io.StringIO())).run())
    s = result.summary
    return {"config_index": task.config_index, "block_index": task.block_index,
            "pnl_usdt": s["pnl_usdt"], "round_trips": s["round_trips"], "trades": s["trades_executed"],
            "sharpe": s["sharpe"], "max_drawdown_usdt": s["max_drawdown_usdt"], "bars": s["bars"],
            "from": s["from"], "to": s["to"], "wall_seconds": s["wall_seconds"]}


def build_tasks(config: Any, pairs: list[Any], configs: list[dict[str, Any]], blocks: list[Block],
                data_dir: str) -> list[Task]:
    tasks = []
    for ci, params in enumerate(configs):
        cfg, prs = apply_params(config, pairs, params)
        dumped = cfg.model_dump(mode="json")
        dumped_pairs = [p.model_dump(mode="json") for p in prs]
        for block in blocks:
            tasks.append(Task(ci, block.index, dumped, dumped_pairs, data_dir, block.from_ms, block.to_ms))
    return tasks


# ---------------------------------------------------------------------------------------- runners

Progress = Callable[[int, int], None]  # (done, total)


def run_serial(tasks: list[Task], progress: Progress | None = None) -> list[dict[str, Any]]:
    """The same tasks one after another in this process (the tests' and the bench's reference)."""
    out = []
    for i, task in enumerate(tasks):
        out.append(run_task(task))
        if progress is not None:
            progress(i + 1, len(tasks))
    return out


def default_workers() -> int:
    return max(1, multiprocessing.cpu_count())


def run_dask(tasks: list[Task], *, scheduler: str | None = None, workers: int | None = None,
             progress: Progress | None = None, connect_timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The tasks on Dask: a ``LocalCluster`` (processes, one thread each, loopback, no
    dashboard) unless ``scheduler`` names a running one. Results in task order.

    A scheduler that cannot be reached within ``connect_timeout_s`` is a ``UsageError`` (one line).
    A task that fails raises ``SweepTaskError`` naming its configuration and block."""
    import logging

    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers or default_workers(), processes=True, threads_per_worker=1,
                               dashboard_address=None, host="127.0.0.1", silence_logs=logging.ERROR)
        client = Client(cluster, set_as_default=False)
    else:
        try:
            client = Client(scheduler, timeout=f"{connect_timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"sweep: cannot reach the Dask scheduler {scheduler}: {detail}") from None
    try:
        futures = client.map(run_task, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        done = 0
        for future in as_completed(futures, loop=client.loop):
            i = index[future.key]
            try:
                results[i] = future.result()
            except Exception as exc:
                raise SweepTaskError(f"sweep: backtest of configuration #{tasks[i].config_index} over block "
                                     f"{tasks[i].block_index} failed: {type(exc).__name__}: {exc}") from exc
            done += 1
            if progress is not None:
                progress(done, len(tasks))
        return [r for r in results if r is not None]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


class SweepTaskError(RuntimeError):
    """A backtest of the sweep failed on a worker (its configuration and block named): a runtime
    failure (exit 1 with the cause chained), not bad input, which is all checked before the run."""


# ---------------------------------------------------------------------------------------- scoring


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score(configs: list[dict[str, Any]], folds: list[Fold], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: in-sample and out-of-sample means over the folds (PnL, Sharpe over the
    folds that have one, trades, the worst drawdown), ranked by mean out-of-sample PnL; and the
    walk-forward pick: per fold the best in-sample PnL, scored on its out-of-sample block only."""
    by = {(r["config_index"], r["block_index"]): r for r in runs}
    rows = []
    for ci, params in enumerate(configs):
        side: dict[str, Any] = {}
        for part, pick in (("is", lambda f: f.in_sample), ("oos", lambda f: f.out_of_sample)):
            chosen = [by[(ci, pick(f).index)] for f in folds]
            side[f"{part}_pnl_usdt"] = _mean([float(r["pnl_usdt"]) for r in chosen])
            side[f"{part}_sharpe"] = _mean([r["sharpe"] for r in chosen if r["sharpe"] is not None])
            side[f"{part}_trades"] = sum(r["round_trips"] for r in chosen)
            side[f"{part}_max_drawdown_usdt"] = max(float(r["max_drawdown_usdt"]) for r in chosen)
        rows.append({"config_index": ci, "label": config_label(params), **params, **side})
    ranked = sorted(rows, key=lambda r: (-r["oos_pnl_usdt"], r["config_index"]))
    for rank, row in enumerate(ranked, 1):
        row["oos_rank"] = rank
    walk = []
    for fold in folds:
        best = max(range(len(configs)),
                   key=lambda ci: (float(by[(ci, fold.in_sample.index)]["pnl_usdt"]), -ci))
        walk.append({"fold": fold.index, "chosen": config_label(configs[best]), "config_index": best,
                     "is_pnl_usdt": float(by[(best, fold.in_sample.index)]["pnl_usdt"]),
                     "oos_pnl_usdt": float(by[(best, fold.out_of_sample.index)]["pnl_usdt"])})
    return {"rows": rows, "walk_forward": walk,
            "walk_forward_oos_pnl_usdt": sum(w["oos_pnl_usdt"] for w in walk)}
