"""The session report: one self-contained HTML file and a PNG per chart, under the logs folder.

Written at stop (``report_at_stop``, after the statistics are saved; bounded, never fatal) and on
demand (``python main.py report [--session FILE | --since DATE]``, ``report_command``). The HTML
embeds every chart as a base64 PNG and links to nothing, so it opens anywhere, offline, and can be
mailed as one file. Charts: the equity curve, the drawdown, the net PnL per pair, and per pair
the spread and z with the thresholds and the executed entries and exits (``app/report_charts.py``);
the figures come from ``app/report_data.py``.
"""

from __future__ import annotations

import asyncio
import base64
import html
import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from loguru import logger

from app.report_data import ReportData, ReportInputError, Thresholds, load_session, load_since
from core.files import write_bytes_atomically

REPORTS_DIR = "reports"
REPORT_HTML = "report.html"
#: The most the report may add to a shutdown (``logging.report_timeout_seconds``'s default).
REPORT_AT_STOP_TIMEOUT_SECONDS = 15.0


# ---------------------------------------------------------------------------------------- drawing


def render_charts(data: ReportData) -> dict[str, bytes]:
    """Chart file name -> PNG, in the order the report shows them."""
    from app import report_charts as charts  # matplotlib loads only when a report is drawn

    images = {"equity.png": charts.equity_chart(data.equity, data.equity_label, data.equity_clock),
              "drawdown.png": charts.drawdown_chart(data.equity, data.equity_clock),
              "pnl_per_pair.png": charts.pnl_chart(data.pnl)}
    for series in data.pairs:
        images[f"pair-{_safe(series.pair_id)}.png"] = charts.pair_chart(series)
    return images


def build_html(data: ReportData, images: dict[str, bytes]) -> str:
    """The whole page: a header, the PnL table, the charts inline; no external URL anywhere."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(data.title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:62em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .6em}td.num{text-align:right;font-family:monospace}"
        "img{max-width:100%}section{margin-top:1.5em}</style></head><body>",
        f"<h1>{e(data.title)}</h1>",
        "<table>",
        *(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in (
            ("mode", data.mode), ("session id", ", ".join(data.session_ids) or "none"), ("period", data.period),
            ("journal", ", ".join(data.journals)),
            ("generated", datetime.now(timezone.utc).isoformat(timespec="seconds")))),
        "</table>",
        _pnl_table(data),
        '<section id="equity"><h2>Equity curve</h2>', _img(images, "equity.png", "equity curve"), "</section>",
        '<section id="drawdown"><h2>Drawdown</h2>', _img(images, "drawdown.png", "drawdown"), "</section>",
        '<section id="pnl-per-pair"><h2>PnL per pair</h2>', _img(images, "pnl_per_pair.png", "PnL per pair"),
        "</section>",
    ]
    for series in data.pairs:
        limits = series.thresholds
        entries = sum(m.is_entry for m in series.markers)
        parts += [f'<section class="pair" id="pair-{e(_safe(series.pair_id))}" data-pair="{e(series.pair_id)}">',
                  f"<h2>{e(series.pair_id)} <small>{e(series.legs)}</small></h2>",
                  f"<p>{_limits_text(limits)} | {len(series.samples)} samples ({e(series.samples_source)}) | "
                  f"{entries} entries, {len(series.markers) - entries} exits</p>",
                  _img(images, f"pair-{_safe(series.pair_id)}.png", f"{series.pair_id} spread and z"), "</section>"]
    parts.append("</body></html>")
    return "\n".join(parts)


def _pnl_table(data: ReportData) -> str:
    e = html.escape
    rows = ['<section id="pnl-table"><h2>Round trips per pair</h2><table>',
            "<tr><th>pair</th><th>round trips</th><th>wins</th><th>net PnL (USDT)</th><th>fees</th>"
            "<th>funding</th><th>open</th></tr>"]
    for p in data.pnl:
        rows.append(f'<tr data-pair="{e(p.pair_id)}" data-net-usdt="{p.net_usdt}"><td>{e(p.pair_id)}</td>'
                    f'<td class="num">{p.round_trips}</td><td class="num">{p.wins}</td>'
                    f'<td class="num">{_usd(p.net_usdt)}</td><td class="num">{_usd(p.fees_usdt)}</td>'
                    f'<td class="num">{_usd(p.funding_usdt)}</td><td class="num">{p.open_trips}</td></tr>')
    rows.append(f'<tr data-pair="TOTAL" data-net-usdt="{data.total_net_usdt}"><th>total</th>'
                f'<td class="num">{sum(p.round_trips for p in data.pnl)}</td>'
                f'<td class="num">{sum(p.wins for p in data.pnl)}</td><td class="num">{_usd(data.total_net_usdt)}</td>'
                "<td></td><td></td><td></td></tr></table></section>")
    return "\n".join(rows)


def _img(images: dict[str, bytes], name: str, alt: str) -> str:
    encoded = base64.b64encode(images[name]).decode("ascii")
    return f'<img alt="{html.escape(alt)}" data-file="{html.escape(name)}" src="data:image/png;base64,{encoded}">'


def _limits_text(limits: Thresholds | None) -> str:
    if limits is None:
        return "thresholds unknown (pair not in the configuration)"
    return f"|z| entry {limits.entry_z:g}, exit {limits.exit_z:g}, stop {limits.stop_z:g}"


def _usd(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,.2f}"


def _safe(pair_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in pair_id)


def write_report(data: ReportData, out_dir: Path) -> Path:
    """Draw every chart, write the PNGs and the HTML (each atomically), return the HTML's path."""
    images = render_charts(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        write_bytes_atomically(out_dir / name, png)
    page = out_dir / REPORT_HTML
    write_bytes_atomically(page, build_html(data, images).encode("utf-8"))
    return page


def session_report_dir(logs_dir: Path, session_json: Path) -> Path:
    """``logs/reports/<session file stem>/``."""
    return logs_dir / REPORTS_DIR / session_json.stem


# ---------------------------------------------------------------------------------------- entry points


def report_command(*, logs_dir: Path, session: Path | None, since: str | None,
                   since_scope: Callable[[], dict[str, Any]] | None = None) -> Path:
    """``python main.py report``: the report of one session file (default: the newest in
    ``logs_dir``), or with ``since`` of every session from that date (``since_scope`` gives
    ``load_since``'s mode, journal and thresholds). Raises ``ReportInputError`` on bad input,
    before anything is written."""
    if since is not None:
        if since_scope is None:
            raise ReportInputError("--since needs the configuration's mode and journal")
        scope = since_scope()
        data = load_since(since=since, logs_dir=logs_dir, **scope)
        return write_report(data, logs_dir / REPORTS_DIR / f"since-{since}-{scope['mode']}")
    session = session if session is not None else newest_session(logs_dir)
    data = load_session(session)
    return write_report(data, session_report_dir(logs_dir, session))


def config_scope(config: Any, pairs: list[Any], *, storage_dir: Path) -> dict[str, Any]:
    """``--since``'s inputs from the configuration: the mode ``dry_run`` selects (paper, else
    live), that mode's journal, and each configured pair's legs and effective thresholds."""
    from core.config import signal_params

    mode = "paper" if config.dry_run else "live"
    journal = storage_dir / (config.storage.journal_paper if config.dry_run else config.storage.journal_live)
    thresholds = {}
    for pair in pairs:
        p = signal_params(config.signal, pair)
        thresholds[pair.pair_id] = (f"{pair.leg_a} / {pair.leg_b}",
                                    Thresholds(float(p.entry_z), float(p.exit_z), float(p.stop_z)))
    return {"mode": mode, "journal": journal, "thresholds": thresholds}


def newest_session(logs_dir: Path) -> Path:
    files = sorted(logs_dir.glob("session-*.json"))
    if not files:
        raise ReportInputError(f"no session statistics file (session-*.json) in {logs_dir}; give --session FILE")
    return max(files, key=lambda p: p.stat().st_mtime)


async def report_at_stop(*, series: Any, session_json: Path, logs_dir: Path, session_id: str, mode: str,
                         timeout_seconds: float = REPORT_AT_STOP_TIMEOUT_SECONDS,
                         report_dir: Path | None = None) -> Path | None:
    """At stop, after the statistics are saved: the series file, then the report, drawn in a
    daemon thread so the shutdown waits at most ``timeout_seconds`` (a report still drawing
    then is abandoned; its files are written atomically, so none is left half-written). Any
    failure is one ERROR line with its cause; it never raises, and the statistics are already
    on disk. ``timeout_seconds`` 0 writes only the series file. ``report_dir`` (default
    ``logs/reports/<session>/``): where the backtest puts it, its ``--out``."""
    try:
        if series is None:
            raise ReportInputError("no series recorder in this run (it stopped before the pipeline was built)")
        series.write_sidecar(session_json, session_id=session_id, mode=mode)
        if timeout_seconds <= 0:
            logger.info("session report at stop off (logging.report_timeout_seconds 0): python main.py report "
                        "--session {} draws it", session_json)
            return None
        out_dir = report_dir if report_dir is not None else session_report_dir(logs_dir, session_json)
        path = await _in_daemon_thread(lambda: write_report(load_session(session_json), out_dir), timeout_seconds)
    except TimeoutError:
        logger.error("session report not written: drawing took longer than {:g}s; shutdown goes on "
                     "(python main.py report --session {} draws it later)", timeout_seconds, session_json)
        return None
    except Exception as exc:
        logger.opt(exception=exc).debug("session report failure detail")
        logger.error("session report not written: {}: {} (the statistics are saved in {})",
                     type(exc).__name__, exc, session_json)
        return None
    logger.info("session report written to {}", path)
    return path


async def _in_daemon_thread(work: Callable[[], Path], timeout_seconds: float) -> Path:
    """Run ``work`` in a daemon thread, waiting at most ``timeout_seconds``. Not the loop's
    executor: ``asyncio.run`` waits for its threads at exit, which would unbound the shutdown."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Path] = loop.create_future()

    def settle(result: Path | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # handed to the awaiting side, which logs it
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed: the shutdown went on without this report
            pass

    threading.Thread(target=run, name="session-report", daemon=True).start()
    return await asyncio.wait_for(done, timeout_seconds)
