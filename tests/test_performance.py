"""The final statistics' performance math (app/performance.py) against numbers computed by hand."""

from __future__ import annotations

import math
from decimal import Decimal as D
from types import SimpleNamespace

import pytest

from app import performance as perf
from app.equity import OpenMark, performance_section
from core.types import PairState
from execution.journal_models import PairPosition


def _trip(pair: str, net: str, *, opened_s: int, closed_s: int | None, fees: str = "1", funding: str = "0"):
    return SimpleNamespace(pair_id=pair, opened_ts_ms=opened_s * 1000,
                           closed_ts_ms=None if closed_s is None else closed_s * 1000,
                           net_pnl=None if closed_s is None else D(net), fees=D(fees), funding=D(funding))


# Five closed trips: +10 (A, held 60 s), -4 (A, 120 s), +6 (B, 180 s), -2 (B, 240 s), 0 (C, 300 s),
# and one still open (ignored).
TRIPS = [_trip("A", "10", opened_s=0, closed_s=60, fees="2", funding="-1"),
         _trip("A", "-4", opened_s=100, closed_s=220),
         _trip("B", "6", opened_s=200, closed_s=380),
         _trip("B", "-2", opened_s=300, closed_s=540),
         _trip("C", "0", opened_s=400, closed_s=700),
         _trip("C", "0", opened_s=800, closed_s=None)]


def test_trip_figures_by_hand() -> None:
    f = perf.trip_figures(TRIPS)
    assert (f.round_trips, f.wins, f.losses) == (5, 2, 2)  # a break-even trip is neither
    assert f.realized_usdt == D("10")  # 10 - 4 + 6 - 2 + 0; net already holds fees and funding
    assert (f.fees_usdt, f.funding_usdt) == (D("6"), D("-1"))
    assert f.win_rate_pct == 40.0  # 2 of 5
    assert (f.gross_profit_usdt, f.gross_loss_usdt) == (D("16"), D("6"))
    assert f.profit_factor == pytest.approx(16 / 6)
    assert f.expectancy_usdt == D("2")  # 10 / 5
    assert f.avg_holding_seconds == 180.0  # (60 + 120 + 180 + 240 + 300) / 5
    assert f.best_pair == ("A", D("6")) and f.worst_pair == ("C", D("0"))


def test_trip_figures_without_trips_or_losses_say_undefined() -> None:
    empty = perf.trip_figures([])
    assert (empty.round_trips, empty.win_rate_pct, empty.profit_factor, empty.expectancy_usdt) == (0, None, None, None)
    assert empty.best_pair is None and empty.avg_holding_seconds is None
    only_wins = perf.trip_figures([_trip("A", "3", opened_s=0, closed_s=1)])
    assert only_wins.profit_factor is None and only_wins.win_rate_pct == 100.0


def test_max_drawdown_on_a_known_equity_curve() -> None:
    curve = [perf.EquityPoint(i, D(v)) for i, v in enumerate([1000, 1050, 1020, 1100, 990, 1010, 1200])]
    dd = perf.max_drawdown(curve)
    # falls: 1050 -> 1020 (30), 1100 -> 990 (110 = 10 % of 1100): the second is the largest
    assert dd == perf.Drawdown(D("110"), 10.0, peak_ts_ms=3, trough_ts_ms=4)
    rising = [perf.EquityPoint(i, D(v)) for i, v in enumerate([1, 2, 3])]
    assert perf.max_drawdown(rising).usdt == 0
    assert perf.max_drawdown([]) == perf.Drawdown(D(0), None)


def test_realized_curve_adds_each_close_in_order() -> None:
    curve = perf.realized_curve(TRIPS, D("100"))
    assert [(p.ts_ms, p.equity_usdt) for p in curve] == [
        (0, D("100")), (60_000, D("110")), (220_000, D("106")), (380_000, D("112")), (540_000, D("110")),
        (700_000, D("110"))]
    assert perf.max_drawdown(curve).usdt == D("4")


def test_realized_curve_starts_at_the_start_so_a_first_losing_trip_is_a_drawdown() -> None:
    """A demo run: the first trip lost 7.33 and the all-time drawdown left it out (the first close
    was the curve's first peak), showing 16.13 where the fall from the start was 19.95."""
    trips = [_trip("A", "-7", opened_s=0, closed_s=10), _trip("A", "2", opened_s=20, closed_s=30),
             _trip("B", "-4", opened_s=40, closed_s=50)]
    curve = perf.realized_curve(trips, D("1000"))
    assert [p.equity_usdt for p in curve] == [D("1000"), D("993"), D("995"), D("991")]
    assert perf.max_drawdown(curve) == perf.Drawdown(D("9"), 0.9, peak_ts_ms=0, trough_ts_ms=50_000)
    assert perf.realized_curve([], D("1000")) == []


def test_sharpe_and_sortino_per_trip_annualised_by_trips_per_year() -> None:
    year = perf.YEAR_MS // 1000
    trips = [_trip("A", p, opened_s=0, closed_s=year * (i + 1) // 5) for i, p in enumerate(["10", "-5", "20", "15", "5"])]
    r = perf.ratios(trips, capital_usdt=D("1000"))
    # returns 0.01 -0.005 0.02 0.015 0.005: mean 0.009; deviations 0.001 -0.014 0.011 0.006 -0.004,
    # squares sum 0.00037, / (n - 1) = 0.0000925; downside: sqrt(0.005^2 / 5) = 0.0022360680;
    # 5 trips over one year: x sqrt(5)
    assert r.samples == 5 and r.trips_per_year == pytest.approx(5.0)
    assert r.sharpe == pytest.approx(0.009 / math.sqrt(0.0000925) * math.sqrt(5))  # 2.09246
    assert r.sortino == pytest.approx(0.009 / math.sqrt(0.000025 / 5) * math.sqrt(5))  # 9.0
    assert round(r.sharpe, 4) == 2.0925 and round(r.sortino, 4) == 9.0


def test_ratios_need_enough_samples_and_a_loss() -> None:
    four = [_trip("A", "1", opened_s=0, closed_s=i + 1) for i in range(4)]
    assert perf.ratios(four, capital_usdt=D("1000")) == perf.Ratios(4, None, None, None)
    wins = [_trip("A", str(i + 1), opened_s=0, closed_s=i + 1) for i in range(5)]
    r = perf.ratios(wins, capital_usdt=D("1000"))
    assert r.sharpe is not None and r.sortino is None  # no downside: Sortino undefined


def test_performance_section_net_pnl_adds_unrealized_once_and_return_from_equity() -> None:
    position = PairPosition("A", PairState.LONG_SPREAD, D("2"), D("-3"), "X", "Y")
    section = performance_section(
        session_trips=TRIPS[:3], all_trips=TRIPS, marks={"A": OpenMark(D("10"), D("20"), D("-1.5"))},
        positions={"A": position},
        start_equity=D("1000"), end_balance=SimpleNamespace(total=D("1010.5")),
        samples=[perf.EquityPoint(0, D("1000")), perf.EquityPoint(1, D("990")), perf.EquityPoint(2, D("1010.5"))])
    s = section["session"]
    assert s["realized_usdt"] == "12" and s["unrealized_usdt"] == "-1.5" and s["net_pnl_usdt"] == "10.5"
    assert s["equity_start_usdt"] == "1000" and s["equity_end_usdt"] == "1010.5"
    assert s["return_pct"] == pytest.approx(1.05)
    assert (s["max_drawdown_usdt"], s["max_drawdown_pct"]) == ("10", 1.0)
    assert s["sharpe"] is None and s["ratio_samples"] == 3  # fewer than MIN_RATIO_SAMPLES
    assert section["all_time"]["net_pnl_usdt"] == "8.5"  # 10 realized - 1.5 open
    assert section["open_positions"] == [{"pair": "A", "state": "LONG_SPREAD", "symbol_a": "X", "qty_a": "2",
                                          "mid_a": "10", "symbol_b": "Y", "qty_b": "-3", "mid_b": "20",
                                          "unrealized_usdt": "-1.5"}]
    assert [(r["pair"], r["round_trips"], r["realized_usdt"], r["unrealized_usdt"]) for r in section["pairs"]] == [
        ("A", 2, "6", "-1.5")]  # this session's trips of A (10 and -4); B's trip is not A's


class _Journal:
    def __init__(self, trips: list) -> None:
        self.trips = trips

    def round_trips(self) -> list:
        return list(self.trips)


def _rt(trip_id: int, net: str | None, *, pair: str = "A", closed_s: int | None = 10):
    return SimpleNamespace(id=trip_id, pair_id=pair, opened_ts_ms=0,
                           closed_ts_ms=None if closed_s is None else closed_s * 1000, net_pnl=None if net is None else D(net), fees=D("1"), funding=D("0"),
                           is_open=closed_s is None)


async def test_equity_recorder_samples_at_start_each_close_and_stop_counting_only_this_run() -> None:
    from app.equity import EquityRecorder

    journal = _Journal([_rt(1, "50")])  # closed before this run: all time, not the session
    engine = SimpleNamespace(positions={}, balance_at_start=SimpleNamespace(total=D("1000")),
                             balance=SimpleNamespace(total=D("995")), balance_at_stop=SimpleNamespace(total=D("995")),
                             final_balance_error=None)
    clock = iter(range(1, 100))
    recorder = EquityRecorder(engine=engine, journal=journal, mids=lambda s: None, interval_seconds=3600,
                              wall_ms=lambda: next(clock))
    await recorder.start()
    try:
        journal.trips.append(_rt(2, "-10"))
        recorder.on_execution(None)  # closed a trip: one sample
        recorder.on_execution(None)  # nothing new closed: none
        journal.trips.append(_rt(3, "5"))
        recorder.on_execution(None)
    finally:
        await recorder.stop()
    section = recorder.stats()
    assert [(p.ts_ms, p.equity_usdt) for p in recorder.samples] == [
        (1, D("1000")), (2, D("990")), (3, D("995")), (4, D("995"))]  # start, two closes, stop
    assert recorder.stats() is section  # computed once: the screen and the file agree
    s = section["session"]
    assert (s["round_trips"], s["realized_usdt"], s["net_pnl_usdt"]) == (2, "-5", "-5")
    assert (s["equity_start_usdt"], s["equity_end_usdt"], s["max_drawdown_usdt"]) == ("1000", "995", "10")
    assert section["all_time"]["round_trips"] == 3 and section["all_time"]["realized_usdt"] == "45"
    assert section["open_positions"] == []


def test_open_trip_is_marked_by_what_its_fills_hold_while_an_exit_is_being_recorded(tmp_path) -> None:
    """A sample taken mid-exit: leg b's closing fill is in the journal, the engine's position still
    shows both legs. The open trip is worth its fills' cash + what those fills still hold (leg a
    only) x mid; counting leg b from the position as well would add its value a second time (the
    demo's 450 USDT dip of one sample)."""
    from app.report import open_pnl as open_trip_pnl
    from execution.journal import Journal

    with Journal.open(tmp_path / "j.sqlite", mode="demo") as journal:
        trip = journal.open_round_trip("A", entry_signal_id="s1", opened_ts_ms=1_000)
        for cid, signal, leg, symbol, side, qty in (("a0", "s1", "a", "X", "sell", "2"), ("b0", "s1", "b", "Y", "buy", "3"),
                                                    ("b1", "s2", "b", "Y", "sell", "3")):
            journal.record_order_intent(client_order_id=cid, signal_id=signal, pair_id="A", leg=leg, purpose="ENTRY",
                                        attempt=0, symbol=symbol, side=side, order_type="market", qty=D(qty),
                                        round_trip_id=trip)
        journal.record_fill("a0", trade_id="1", qty=D("2"), price=D("100"), fee=D("0.1"), ts_ms=1_001)
        journal.record_fill("b0", trade_id="2", qty=D("3"), price=D("50"), fee=D("0.2"), ts_ms=1_002)
        journal.record_fill("b1", trade_id="3", qty=D("3"), price=D("52"), fee=D("0.2"), ts_ms=2_000)  # exit, leg b
        position = PairPosition("A", PairState.EXITING, D("-2"), D("3"), "X", "Y", round_trip_id=trip)
        mids = {"X": D("99"), "Y": D("52")}.get
        # cash 200 - 150 + 156 = 206; held: X -2 (x 99 = -198), Y 0; fees 0.5
        assert open_trip_pnl(journal, position, mids) == D("206") - D("198") - D("0.5")
        journal.close_round_trip(trip, exit_signal_id="s2", closed_ts_ms=2_001, exit_reason="EXIT")
        assert open_trip_pnl(journal, position, mids) == 0  # closed: realized, not open any more
