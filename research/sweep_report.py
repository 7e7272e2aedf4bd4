"""The sweep's outputs: the rich table, the heatmap PNG, ``report.html``, ``results.csv``, ``results.json``.

The HTML is self-contained as the session report's is (``app/session_report.py``): the heatmap
is embedded as a base64 PNG and nothing is linked. The heatmap shows in-sample and
out-of-sample mean PnL side by side over the first two grid parameters (with more parameters,
each cell is the mean over the others, said in its title), so a corner that only shines
in-sample is visible as such.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from core.files import write_bytes_atomically

TABLE_WIDTH = 100
CSV_COLUMNS = ("oos_rank", "label", "is_pnl_usdt", "oos_pnl_usdt", "is_sharpe", "oos_sharpe", "is_trades",
               "oos_trades", "is_max_drawdown_usdt", "oos_max_drawdown_usdt")


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def results_table(scored: dict[str, Any], *, show: int = 20) -> Table:
    """The best ``show`` configurations by mean out-of-sample PnL, in-sample beside it."""
    rows = sorted(scored["rows"], key=lambda r: r["oos_rank"])
    table = Table(title=f"sweep: {len(rows)} configurations, ranked by mean out-of-sample PnL (USDT)",
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    for name, justify in (("#", "right"), ("configuration", "left"), ("IS PnL", "right"), ("OOS PnL", "right"),
                          ("IS Sh", "right"), ("OOS Sh", "right"), ("IS trips", "right"), ("OOS trips", "right"),
                          ("OOS maxDD", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows[:show]:
        table.add_row(str(r["oos_rank"]), r["label"], _f(r["is_pnl_usdt"]), _f(r["oos_pnl_usdt"]),
                      _f(r["is_sharpe"]), _f(r["oos_sharpe"]), str(r["is_trades"]), str(r["oos_trades"]),
                      _f(r["oos_max_drawdown_usdt"]))
    return table


def heatmap_png(grid: dict[str, tuple[Any, ...]], scored: dict[str, Any]) -> bytes:
    """IS | OOS mean PnL over the first two grid parameters (one row when there is one)."""
    from app.report_charts import png_bytes  # matplotlib with the Agg backend, as the reports draw
    from matplotlib.figure import Figure

    names = list(grid)
    x_name = names[0]
    y_name = names[1] if len(names) > 1 else None
    xs, ys = list(grid[x_name]), list(grid[y_name]) if y_name else [None]
    rest = names[2:]
    fig = Figure(figsize=(10.0, 3.8))
    fig.subplots_adjust(left=0.08, right=0.97, top=0.82, bottom=0.16, wspace=0.3)
    axes = fig.subplots(1, 2)
    cells = {}
    for part in ("is", "oos"):
        matrix = []
        for y in ys:
            row = []
            for x in xs:
                vals = [r[f"{part}_pnl_usdt"] for r in scored["rows"]
                        if r[x_name] == x and (y_name is None or r[y_name] == y)]
                row.append(sum(vals) / len(vals))
            matrix.append(row)
        cells[part] = matrix
    bound = max((abs(v) for m in cells.values() for row in m for v in row), default=1.0) or 1.0
    for ax, part, title in ((axes[0], "is", "in-sample"), (axes[1], "oos", "out-of-sample")):
        image = ax.imshow(cells[part], cmap="RdYlGn", vmin=-bound, vmax=bound, origin="lower", aspect="auto")
        ax.set_title(f"{title} mean PnL (USDT)")
        ax.set_xticks(range(len(xs)), [f"{x:g}" for x in xs])
        ax.set_xlabel(x_name)
        ax.set_yticks(range(len(ys)), [f"{y:g}" for y in ys] if y_name else [""])
        if y_name:
            ax.set_ylabel(y_name)
        for j, row in enumerate(cells[part]):
            for i, v in enumerate(row):
                ax.text(i, j, f"{v:,.1f}", ha="center", va="center", fontsize="small")
        fig.colorbar(image, ax=ax)
    fig.suptitle("mean over folds" + (f"; each cell also the mean over {', '.join(rest)}" if rest else ""))
    return png_bytes(fig)


def write_outputs(out_dir: Path, *, meta: dict[str, Any], grid: dict[str, tuple[Any, ...]],
                  scored: dict[str, Any], runs: list[dict[str, Any]], table_text: str) -> dict[str, Path]:
    """results.json (everything: grid, folds, every run), results.csv (one row per configuration),
    heatmap.png and report.html; each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(grid)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "results.csv",
             "png": out_dir / "heatmap.png", "html": out_dir / "report.html"}
    document = {**meta, "grid": {k: list(v) for k, v in grid.items()}, "configurations": scored["rows"],
                "walk_forward": scored["walk_forward"],
                "walk_forward_oos_pnl_usdt": scored["walk_forward_oos_pnl_usdt"], "runs": runs}
    write_bytes_atomically(paths["json"], (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow((*CSV_COLUMNS[:2], *names, *CSV_COLUMNS[2:]))
    for r in sorted(scored["rows"], key=lambda r: r["oos_rank"]):
        writer.writerow([r[c] for c in CSV_COLUMNS[:2]] + [r[n] for n in names]
                        + ["" if r[c] is None else r[c] for c in CSV_COLUMNS[2:]])
    write_bytes_atomically(paths["csv"], text.getvalue().encode("utf-8"))
    png = heatmap_png(grid, scored)
    write_bytes_atomically(paths["png"], png)
    write_bytes_atomically(paths["html"], build_html(meta, scored, png, table_text).encode("utf-8"))
    return paths


def build_html(meta: dict[str, Any], scored: dict[str, Any], png: bytes, table_text: str) -> str:
    e = html.escape
    head = ("<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>parameter sweep</title>',
            "<style>body{font-family:sans-serif;margin:1.5em;max-width:70em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.2em .6em}td.num{text-align:right;font-family:monospace}"
            "img{max-width:100%}section{margin-top:1.5em}</style></head><body>", "<h1>Parameter sweep</h1>")
    info = ["<table>"] + [f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in (
        ("range", f"{meta['from']} to {meta['to']}"), ("pairs", ", ".join(meta["pairs"])),
        ("folds", f"{len(meta['folds'])} (in-sample block i, out-of-sample block i+1)"),
        ("executor", meta["executor"]), ("configurations", len(scored["rows"])),
        ("walk-forward OOS PnL (USDT)", f"{scored['walk_forward_oos_pnl_usdt']:,.2f}"),
        ("generated", meta["generated"]))] + ["</table>"]
    encoded = base64.b64encode(png).decode("ascii")
    cols = ("#", "configuration", "IS PnL", "OOS PnL", "IS Sharpe", "OOS Sharpe", "IS trips", "OOS trips",
            "OOS max DD")
    rows = ['<section id="results"><h2>Configurations (mean over folds)</h2><table>',
            "<tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for r in sorted(scored["rows"], key=lambda r: r["oos_rank"]):
        rows.append(f'<tr data-config="{e(r["label"])}" data-oos-pnl="{r["oos_pnl_usdt"]}"><td>{r["oos_rank"]}</td>'
                    f'<td>{e(r["label"])}</td>' + "".join(
                        f'<td class="num">{_f(r[k])}</td>' for k in ("is_pnl_usdt", "oos_pnl_usdt", "is_sharpe",
                                                                     "oos_sharpe"))
                    + f'<td class="num">{r["is_trades"]}</td><td class="num">{r["oos_trades"]}</td>'
                    f'<td class="num">{_f(r["oos_max_drawdown_usdt"])}</td></tr>')
    rows.append("</table></section>")
    walk = ['<section id="walk-forward"><h2>Walk-forward pick per fold</h2><table>',
            "<tr><th>fold</th><th>in-sample</th><th>out-of-sample</th><th>chosen (best IS PnL)</th>"
            "<th>IS PnL</th><th>OOS PnL</th></tr>"]
    for w, f in zip(scored["walk_forward"], meta["folds"]):
        walk.append(f"<tr><td>{w['fold']}</td><td>{e(f['in_sample'])}</td><td>{e(f['out_of_sample'])}</td>"
                    f"<td>{e(w['chosen'])}</td><td class=\"num\">{_f(w['is_pnl_usdt'])}</td>"
                    f"<td class=\"num\">{_f(w['oos_pnl_usdt'])}</td></tr>")
    walk.append("</table></section>")
    return "\n".join([*head, *info,
                      f'<section id="heatmap"><h2>Heatmap</h2><img alt="heatmap" data-file="heatmap.png" '
                      f'src="data:image/png;base64,{encoded}"></section>', *rows, *walk,
                      f"<section><h2>Console table</h2><pre>{e(table_text)}</pre></section>", "</body></html>"])
