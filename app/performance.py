"""Performance figures of the final statistics: pure functions over closed round trips and an
equity series, exact (Decimal) in USDT; ratios are floats. Definitions: README, "Final statistics".

A round trip's ``net_pnl`` is already gross - fees + funding (``Journal.close_round_trip``), so
nothing here subtracts fees or funding again; ``fees`` and ``funding`` are shown as parts of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Protocol, Sequence

ZERO = Decimal(0)
MIN_RATIO_SAMPLES = 5  # fewer closed round trips than this: Sharpe and Sortino are "n/a"
YEAR_MS = 365 * 86_400_000


class ClosedTrip(Protocol):
    """What a figure needs of a round trip (``execution.journal_models.RoundTrip`` fits)."""

    pair_id: str
    opened_ts_ms: int
    closed_ts_ms: int | None
    net_pnl: Decimal | None
    fees: Decimal | None
    funding: Decimal | None


@dataclass(frozen=True, slots=True)
class EquityPoint:
    ts_ms: int
    equity_usdt: Decimal


@dataclass(frozen=True, slots=True)
class Drawdown:
    """Largest fall of equity from a running peak: USDT and percent of that peak."""

    usdt: Decimal
    pct: float | None
    peak_ts_ms: int | None = None
    trough_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TripFigures:
    """Figures over closed round trips (net of fees and funding)."""

    round_trips: int
    wins: int
    losses: int
    realized_usdt: Decimal
    fees_usdt: Decimal
    funding_usdt: Decimal
    gross_profit_usdt: Decimal  # sum of winning trips' net PnL
    gross_loss_usdt: Decimal  # minus the sum of losing trips' net PnL (>= 0)
    win_rate_pct: float | None
    profit_factor: float | None  # None without a losing trip (undefined)
    expectancy_usdt: Decimal | None
    avg_holding_seconds: float | None
    best_pair: tuple[str, Decimal] | None
    worst_pair: tuple[str, Decimal] | None


def closed(trips: Iterable[ClosedTrip]) -> list[ClosedTrip]:
    """The closed trips with a PnL, in order of closing."""
    done = [t for t in trips if t.closed_ts_ms is not None and t.net_pnl is not None]
    return sorted(done, key=lambda t: t.closed_ts_ms or 0)


def trip_figures(trips: Iterable[ClosedTrip]) -> TripFigures:
    """Win rate, profit factor, expectancy, holding time, best and worst pair.

    >>> from types import SimpleNamespace as T
    >>> f = trip_figures([T(pair_id="A", opened_ts_ms=0, closed_ts_ms=60_000, net_pnl=Decimal("3"),
    ...                     fees=Decimal("1"), funding=ZERO),
    ...                   T(pair_id="B", opened_ts_ms=0, closed_ts_ms=120_000, net_pnl=Decimal("-1"),
    ...                     fees=Decimal("1"), funding=ZERO)])
    >>> (f.win_rate_pct, f.profit_factor, f.expectancy_usdt, f.avg_holding_seconds)
    (50.0, 3.0, Decimal('1'), 90.0)
    """
    done = closed(trips)
    pnls = [t.net_pnl for t in done if t.net_pnl is not None]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    gross_profit = sum(wins, ZERO)
    gross_loss = -sum(losses, ZERO)
    by_pair: dict[str, Decimal] = {}
    for t in done:
        by_pair[t.pair_id] = by_pair.get(t.pair_id, ZERO) + (t.net_pnl or ZERO)
    ranked = sorted(by_pair.items(), key=lambda kv: (kv[1], kv[0]))
    n = len(done)
    return TripFigures(
        round_trips=n, wins=len(wins), losses=len(losses), realized_usdt=sum(pnls, ZERO),
        fees_usdt=sum((t.fees or ZERO for t in done), ZERO),
        funding_usdt=sum((t.funding or ZERO for t in done), ZERO),
        gross_profit_usdt=gross_profit, gross_loss_usdt=gross_loss,
        win_rate_pct=100.0 * len(wins) / n if n else None,
        profit_factor=float(gross_profit / gross_loss) if gross_loss > 0 else None,
        expectancy_usdt=sum(pnls, ZERO) / n if n else None,
        avg_holding_seconds=(sum((t.closed_ts_ms or 0) - t.opened_ts_ms for t in done) / n / 1000.0) if n else None,
        best_pair=ranked[-1] if ranked else None, worst_pair=ranked[0] if ranked else None)


@dataclass(frozen=True, slots=True)
class PairFigures:
    """One pair's closed round trips: the per-pair rows of the final screen (net of fees and funding)."""

    pair_id: str
    round_trips: int
    wins: int
    realized_usdt: Decimal
    fees_usdt: Decimal
    funding_usdt: Decimal
    max_drawdown_usdt: Decimal  # largest fall of the pair's cumulative realized net from its peak (start 0)


def pair_figures(trips: Iterable[ClosedTrip], pair_ids: Iterable[str]) -> list[PairFigures]:
    """Per pair of ``pair_ids`` (in that order, a pair without a trip included), over its closed trips.

    >>> from types import SimpleNamespace as T
    >>> rows = pair_figures([T(pair_id="A", opened_ts_ms=0, closed_ts_ms=i, net_pnl=Decimal(p), fees=Decimal("0.5"),
    ...                        funding=ZERO) for i, p in enumerate([2, -3, 1], 1)], ["A", "B"])
    >>> [(r.pair_id, r.round_trips, r.wins, r.realized_usdt, r.max_drawdown_usdt) for r in rows]
    [('A', 3, 2, Decimal('0'), Decimal('3')), ('B', 0, 0, Decimal('0'), Decimal('0'))]
    """
    done = closed(trips)
    rows = []
    for pair_id in pair_ids:
        mine = [t for t in done if t.pair_id == pair_id]
        pnls = [t.net_pnl or ZERO for t in mine]
        curve = realized_curve(mine)
        rows.append(PairFigures(
            pair_id=pair_id, round_trips=len(mine), wins=sum(1 for v in pnls if v > 0), realized_usdt=sum(pnls, ZERO),
            fees_usdt=sum((t.fees or ZERO for t in mine), ZERO), funding_usdt=sum((t.funding or ZERO for t in mine), ZERO),
            max_drawdown_usdt=max_drawdown(curve).usdt))
    return rows


def max_drawdown(points: Sequence[EquityPoint]) -> Drawdown:
    """Largest peak-to-trough fall of an equity series (0 when it never fell).

    >>> pts = [EquityPoint(i, Decimal(v)) for i, v in enumerate([100, 110, 99, 105, 88, 120])]
    >>> max_drawdown(pts)
    Drawdown(usdt=Decimal('22'), pct=20.0, peak_ts_ms=1, trough_ts_ms=4)
    """
    if not points:
        return Drawdown(ZERO, None)
    peak = points[0]
    worst = Drawdown(ZERO, 0.0)
    for point in points:
        if point.equity_usdt > peak.equity_usdt:
            peak = point
        fall = peak.equity_usdt - point.equity_usdt
        if fall > worst.usdt:
            pct = float(fall / peak.equity_usdt * 100) if peak.equity_usdt > 0 else None
            worst = Drawdown(fall, pct, peak.ts_ms, point.ts_ms)
    return worst


def realized_curve(trips: Iterable[ClosedTrip], start_usdt: Decimal = ZERO) -> list[EquityPoint]:
    """``start_usdt`` at the first trip's opening, then plus the cumulative net PnL at each close
    (the curve of the all-time figures). The start is a point of its own: a first trip that loses
    is a fall from it, not the curve's first peak."""
    done = closed(trips)
    if not done:
        return []
    equity = start_usdt
    points = [EquityPoint(min(t.opened_ts_ms for t in done), equity)]
    for t in done:
        equity += t.net_pnl or ZERO
        points.append(EquityPoint(t.closed_ts_ms or 0, equity))
    return points


@dataclass(frozen=True, slots=True)
class Ratios:
    """Sharpe and Sortino of per-round-trip returns (net PnL / capital), annualised by the square
    root of the round trips per year seen over the trips' span; None with fewer than
    ``MIN_RATIO_SAMPLES`` trips, or when the spread is zero (Sortino: no losing trip)."""

    samples: int
    trips_per_year: float | None
    sharpe: float | None
    sortino: float | None


def ratios(trips: Iterable[ClosedTrip], *, capital_usdt: Decimal, min_samples: int = MIN_RATIO_SAMPLES) -> Ratios:
    """Sharpe = mean(r) / std(r) * sqrt(N/yr); Sortino = mean(r) / downside(r) * sqrt(N/yr), where
    r is each trip's net PnL / ``capital_usdt``, std the sample deviation (n - 1), downside the
    root mean square of min(r, 0) over all n trips, and N/yr the closed trips per year between the
    first trip's opening and the last one's close. Risk-free rate 0.

    >>> from types import SimpleNamespace as T
    >>> trips = [T(pair_id="A", opened_ts_ms=0, closed_ts_ms=YEAR_MS * (i + 1) // 4, net_pnl=Decimal(p),
    ...            fees=ZERO, funding=ZERO) for i, p in enumerate([10, -5, 20, 15])]
    >>> r = ratios(trips, capital_usdt=Decimal(1000), min_samples=4)
    >>> (r.trips_per_year, round(r.sharpe, 4), round(r.sortino, 4))
    (4.0, 1.8516, 8.0)
    """
    done = closed(trips)
    n = len(done)
    if n < min_samples or capital_usdt <= 0:
        return Ratios(n, None, None, None)
    returns = [float((t.net_pnl or ZERO) / capital_usdt) for t in done]
    span_ms = (done[-1].closed_ts_ms or 0) - min(t.opened_ts_ms for t in done)
    per_year = n * YEAR_MS / span_ms if span_ms > 0 else None
    if per_year is None:
        return Ratios(n, None, None, None)
    mean = sum(returns) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    scale = math.sqrt(per_year)
    return Ratios(n, per_year, mean / std * scale if std > 0 else None,
                  mean / downside * scale if downside > 0 else None)


def figures_json(figures: TripFigures) -> dict[str, Any]:
    """Every figure for the session file (money as exact decimal strings)."""
    return {
        "round_trips": figures.round_trips, "wins": figures.wins, "losses": figures.losses,
        "realized_usdt": str(figures.realized_usdt), "fees_usdt": str(figures.fees_usdt),
        "funding_usdt": str(figures.funding_usdt), "gross_profit_usdt": str(figures.gross_profit_usdt),
        "gross_loss_usdt": str(figures.gross_loss_usdt), "win_rate_pct": figures.win_rate_pct,
        "profit_factor": figures.profit_factor,
        "expectancy_usdt": None if figures.expectancy_usdt is None else str(figures.expectancy_usdt),
        "avg_holding_seconds": figures.avg_holding_seconds,
        "best_pair": None if figures.best_pair is None else [figures.best_pair[0], str(figures.best_pair[1])],
        "worst_pair": None if figures.worst_pair is None else [figures.worst_pair[0], str(figures.worst_pair[1])],
    }
