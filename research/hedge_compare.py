"""``python main.py backtest --compare-hedge``: the static and the rolling-OLS hedge ratio on the same data.

Two full backtests (research/backtest.py) over the same range, replay seed and pairs, one with
every pair on ``hedge_ratio_mode: static`` and one with every pair on ``rolling_ols`` (a pair's
own override is replaced in both runs, so the two columns differ only in the mode). Each run
writes its ``fills.csv``, ``summary.json`` and session report (``report.html``, with the journal,
statistics and series files it is drawn from) under ``<out>/static/`` and ``<out>/rolling_ols/``;
``<out>/summary.json`` holds both summaries side by side, and a two-column table is printed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from loguru import logger
from rich.console import Console
from rich.table import Table

from core.config import AppConfig, PairConfig
from research.backtest import Backtest, BacktestRequest, default_out_dir

MODES = ("static", "rolling_ols")
#: (label, summary key): what the printed comparison shows, in order
ROWS = (("PnL (USDT)", "pnl_usdt"), ("fees (USDT)", "fees_usdt"), ("funding (USDT)", "funding_usdt"),
        ("round trips", "round_trips"), ("wins", "wins"), ("losses", "losses"), ("win rate %", "win_rate_pct"),
        ("profit factor", "profit_factor"), ("expectancy (USDT)", "expectancy_usdt"),
        ("max drawdown (USDT)", "max_drawdown_usdt"), ("max drawdown %", "max_drawdown_pct"),
        ("return %", "return_pct"), ("sharpe", "sharpe"), ("signals", "signals"),
        ("trades executed", "trades_executed"), ("signals refused", "signals_refused"),
        ("avg holding (s)", "avg_holding_seconds"))


def in_mode(config: AppConfig, pairs: list[PairConfig], mode: str) -> tuple[AppConfig, list[PairConfig]]:
    """The configuration with every pair on ``mode`` (defaults and per-pair overrides alike)."""
    signal = config.signal.model_copy(update={"hedge_ratio_mode": mode})
    return (config.model_copy(update={"signal": signal}),
            [p.model_copy(update={"hedge_ratio_mode": None}) for p in pairs])


async def compare(*, config: AppConfig, pairs: list[PairConfig], request: BacktestRequest,
                  console: Console) -> dict[str, Any]:
    """Run both modes one after the other; write and return the side-by-side summary."""
    out_dir = request.out_dir or default_out_dir()
    summaries: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    for mode in MODES:
        mode_config, mode_pairs = in_mode(config, pairs, mode)
        run = Backtest(config=mode_config, pairs=mode_pairs, request=replace(request, out_dir=out_dir / mode),
                       console=console)
        result = await run.run()
        summaries[mode] = result.summary | {"hedge_ratio_mode": mode}
        reports[mode] = result.report
        logger.info("compare-hedge: {} run done: PnL {} USDT over {} round trips", mode,
                    result.summary["pnl_usdt"], result.summary["round_trips"])
    combined = {"compare_hedge": list(MODES), **summaries}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(combined, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for mode in MODES:
        console.print(f"backtest report: {reports[mode]}" if reports[mode] is not None else
                      f"backtest report: {mode} run's not written (the ERROR line above says why)", highlight=False)
    return combined


def comparison_table(combined: dict[str, Any]) -> Table:
    """Two columns, one row per headline number."""
    first = combined[MODES[0]]
    table = Table(title=f"hedge ratio: static vs rolling OLS ({first['from']} to {first['to']}, "
                        f"{len(first['pairs'])} pairs)")
    table.add_column("")
    for mode in MODES:
        table.add_column(mode, justify="right")
    for label, key in ROWS:
        table.add_row(label, *(_cell(combined[mode].get(key)) for mode in MODES))
    return table


def money_cell(text: str) -> str:
    """A summary's exact decimal string (USDT), shown to 4 places."""
    return f"{Decimal(text):,.4f}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            return money_cell(value)
        except InvalidOperation:
            return value
    if isinstance(value, dict):
        return str(sum(value.values()))
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def run_comparison(*, config: AppConfig, pairs: list[PairConfig], request: BacktestRequest,
                   console: Console) -> int:
    """The CLI's entry (``--compare-hedge``): quiet logs, both runs, the table. Exit code 0."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{time:HH:mm:ss} {level} {message}")
    request = replace(request, out_dir=request.out_dir or default_out_dir())
    combined = asyncio.run(compare(config=config, pairs=pairs, request=request, console=console))
    console.print(comparison_table(combined))
    out_dir = request.out_dir
    console.print(f"compare-hedge: both summaries in {out_dir}/summary.json; each run's fills.csv and report.html in "
                  f"{out_dir}/static/ and {out_dir}/rolling_ols/", highlight=False)
    return 0
