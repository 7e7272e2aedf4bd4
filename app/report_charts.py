"""The session report's charts as PNG bytes (matplotlib, Agg: no display, no browser).

Each function draws one chart on its own ``Figure`` through the object API (never ``pyplot``,
whose global state is not safe in the thread the report runs in at stop) and returns the PNG.
Times are UTC; the pair charts use exchange time (the signals' and the bars'), the equity chart
the clock of its samples (a session's wall clock, a backtest's replayed exchange time).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from decimal import Decimal
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before anything draws: never a GUI backend, also on a desktop

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from app.report_data import Marker, PairPnl, PairSeries  # noqa: E402

DPI = 80
WIDE = (10.0, 3.2)
PAIR = (10.0, 5.2)
# Fixed margins instead of a layout engine: a third less time per chart, the same look here.
WIDE_MARGINS = {"left": 0.08, "right": 0.98, "top": 0.9, "bottom": 0.14}
PAIR_MARGINS = {"left": 0.08, "right": 0.98, "top": 0.93, "bottom": 0.09, "hspace": 0.08}
GAIN, LOSS, NEUTRAL = "#1a7f37", "#cf222e", "#0969da"


def _times(ms: Sequence[int]) -> list[datetime]:
    return [datetime.fromtimestamp(t / 1000, tz=timezone.utc) for t in ms]


def _clock_label(clock: str) -> str:
    return "exchange time (UTC)" if clock == "exchange" else "wall-clock time (UTC)"


def png_bytes(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # no URL inside the file
    return buffer.getvalue()


def _empty(ax: object, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")  # type: ignore[attr-defined]


def drawdown_of(points: Sequence[tuple[int, Decimal]]) -> list[tuple[int, Decimal]]:
    """Equity minus its running peak at each point (<= 0), exact.

    >>> drawdown_of([(1, Decimal(10)), (2, Decimal(7)), (3, Decimal(12)), (4, Decimal(11))])
    [(1, Decimal('0')), (2, Decimal('-3')), (3, Decimal('0')), (4, Decimal('-1'))]
    """
    peak: Decimal | None = None
    out = []
    for ts, value in points:
        peak = value if peak is None or value > peak else peak
        out.append((ts, value - peak))
    return out


def equity_chart(points: Sequence[tuple[int, Decimal]], label: str, clock: str = "wall") -> bytes:
    fig = Figure(figsize=WIDE)
    fig.subplots_adjust(**WIDE_MARGINS)
    ax = fig.add_subplot()
    ax.set_title("Equity curve")
    ax.set_ylabel("USDT")
    ax.set_xlabel(_clock_label(clock))
    if points:
        ax.plot(_times([p[0] for p in points]), [float(p[1]) for p in points], color=NEUTRAL, marker=".",
                label=label)
        ax.legend(loc="best", fontsize="small")
    else:
        _empty(ax, "no equity sample")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def drawdown_chart(points: Sequence[tuple[int, Decimal]], clock: str = "wall") -> bytes:
    fig = Figure(figsize=WIDE)
    fig.subplots_adjust(**WIDE_MARGINS)
    ax = fig.add_subplot()
    ax.set_title("Drawdown from the running peak")
    ax.set_ylabel("USDT")
    ax.set_xlabel(_clock_label(clock))
    dd = drawdown_of(points)
    if dd:
        times, values = _times([p[0] for p in dd]), [float(p[1]) for p in dd]
        ax.fill_between(times, values, 0, color=LOSS, alpha=0.3, step="post")
        ax.step(times, values, where="post", color=LOSS)
    else:
        _empty(ax, "no equity sample")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def pnl_chart(rows: Sequence[PairPnl]) -> bytes:
    fig = Figure(figsize=WIDE)
    fig.subplots_adjust(**WIDE_MARGINS)
    ax = fig.add_subplot()
    ax.set_title("Net PnL per pair (closed round trips, after fees and funding)")
    ax.set_ylabel("USDT")
    if rows:
        values = [float(r.net_usdt) for r in rows]
        ax.bar([r.pair_id for r in rows], values, color=[GAIN if v >= 0 else LOSS for v in values])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.tick_params(axis="x", labelrotation=20, labelsize="small")
    else:
        _empty(ax, "no pair")
    ax.grid(alpha=0.3, axis="y")
    return png_bytes(fig)


def pair_chart(series: PairSeries) -> bytes:
    """Spread with its rolling mean and the entry/stop bands, z with the thresholds, and the
    executed entries (triangles: up long, down short) and exits (crosses) on both."""
    fig = Figure(figsize=PAIR)
    fig.subplots_adjust(**PAIR_MARGINS)
    ax_s, ax_z = fig.subplots(2, 1, sharex=True)
    fig.suptitle(f"{series.pair_id} ({series.legs})")
    samples, limits = series.samples, series.thresholds
    if samples:
        times = _times([s[0] for s in samples])
        spread = [s[1] for s in samples]
        mean = [s[3] for s in samples]
        std = [s[4] for s in samples]
        style = {"marker": "."} if series.samples_source == "signals" else {}
        ax_s.plot(times, spread, color=NEUTRAL, linewidth=1, label="spread", **style)
        ax_s.plot(times, mean, color="gray", linewidth=0.8, label="rolling mean")
        if limits is not None:
            for k, colour in ((limits.entry_z, "orange"), (limits.stop_z, LOSS)):
                ax_s.fill_between(times, [m - k * s for m, s in zip(mean, std)], [m + k * s for m, s in zip(mean, std)],
                                  color=colour, alpha=0.08)
        ax_z.plot(times, [s[2] for s in samples], color=NEUTRAL, linewidth=1, label="z", **style)
    else:
        _empty(ax_s, "no bar sample recorded")
    if limits is not None:
        for level, colour, name in ((limits.entry_z, "orange", "entry"), (limits.exit_z, GAIN, "exit"),
                                    (limits.stop_z, LOSS, "stop")):
            for sign in (1, -1):
                ax_z.axhline(sign * level, color=colour, linestyle="--", linewidth=0.8,
                             label=f"±{name} {level:g}" if sign == 1 else None)
    _markers(ax_s, ax_z, series.markers)
    ax_s.set_ylabel("spread")
    ax_z.set_ylabel("z")
    ax_z.set_xlabel("exchange time (UTC)")
    for ax in (ax_s, ax_z):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="x-small", ncol=4)
    return png_bytes(fig)


def _markers(ax_s: object, ax_z: object, markers: Sequence[Marker]) -> None:
    groups = (("entry long", "^", GAIN, lambda m: m.kind == "ENTER_LONG_SPREAD"),
              ("entry short", "v", LOSS, lambda m: m.kind == "ENTER_SHORT_SPREAD"),
              ("exit", "X", "black", lambda m: not m.is_entry))
    for name, shape, colour, pick in groups:
        chosen = [m for m in markers if pick(m)]
        if not chosen:
            continue
        times = _times([m.ts_ms for m in chosen])
        for ax, values in ((ax_s, [m.spread for m in chosen]), (ax_z, [m.z for m in chosen])):
            ax.scatter(times, values, marker=shape, color=colour, s=60, zorder=3, label=name)  # type: ignore[attr-defined]
