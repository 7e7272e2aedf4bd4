"""The equity at end of the final statistics is the balance read at stop (issue 12 item 1).

Real ccxt against the simulator (tests/engine_rig.py). ``ExecutionEngine.stop`` reads the balance
once more, bounded by FINAL_BALANCE_TIMEOUT_SECONDS; the screen shows that read, or says the end
equity is unknown when the read hangs or fails, and never passes an older read off as the end.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from typing import Any

import ccxt.async_support as ccxt_async
from rich.console import Console

from app.equity import EquityRecorder
from core.stats import render_performance
from core.types import PairState, SignalType
from execution.engine import FINAL_BALANCE_TIMEOUT_SECONDS
from tests.engine_rig import TEST_TIMEOUT_S, Rig, wait_for_state
from tests.sim_helpers import local_client

#: A stop must be over this long after it began, whatever the final read does: the read's own bound
#: plus room for the rest of the stop on a loaded machine. A read that is not bounded hangs past it.
STOP_BOUND_S = FINAL_BALANCE_TIMEOUT_SECONDS + 3.0


async def _recorder(rig: Rig) -> EquityRecorder:
    def mid(symbol: str) -> D | None:
        top = rig.sim.replay.book(rig.adapter.rules(symbol).exchange_symbol)
        return top.mid if top else None

    recorder = EquityRecorder(engine=rig.engine, journal=rig.journal, mids=mid, interval_seconds=3600)
    await recorder.start()
    return recorder


async def _venue_equity(rig: Rig) -> D:
    """The account's equity now, read by a ccxt client of its own (not the engine's)."""
    client = local_client(ccxt_async.binanceusdm, rig.sim)
    try:
        return D(str((await client.fetch_balance())["USDT"]["total"]))
    finally:
        await client.close()


async def _open_and_let_the_market_move(rig: Rig) -> D:
    """An open position, the engine's balance read after it, then the market moved on (paused
    again) until the venue's equity differs from that read. Returns the engine's last read."""
    result = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
    assert result.executed, result
    await wait_for_state(rig, "EOS_AXS", PairState.LONG_SPREAD)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        while rig.engine.balance is rig.engine.balance_at_start:  # the refresh after the entry
            await asyncio.sleep(0.02)
        seen = rig.engine.balance.total
        while await _venue_equity(rig) == seen:
            rig.sim.resume()
            await asyncio.sleep(0.2)
            rig.sim.pause()
    assert rig.engine.balance.total == seen  # nothing read since: at stop it is stale
    return seen


def _screen(section: dict[str, Any]) -> list[str]:
    console = Console(width=100, record=True, color_system=None, file=open("/dev/null", "w"))
    render_performance(section, console)
    return console.export_text().splitlines()


def _cells(screen: list[str], label: str) -> list[str]:
    import re

    line = next(line for line in screen if line.startswith(label))
    return re.split(r" {2,}", line.strip())[1:]


async def test_equity_at_end_is_the_balance_read_at_stop_not_an_earlier_read(make_rig) -> None:
    rig = await make_rig()
    recorder = await _recorder(rig)
    stale = await _open_and_let_the_market_move(rig)
    venue = await _venue_equity(rig)
    assert venue != stale
    async with asyncio.timeout(STOP_BOUND_S):
        await rig.engine.stop()
    await recorder.stop()
    assert rig.engine.final_balance_error is None and rig.engine.balance_at_stop is not None
    assert abs(rig.engine.balance_at_stop.total - venue) <= D("1e-8")  # the market stood still: same equity
    section = recorder.stats()
    session = section["session"]
    assert D(session["equity_end_usdt"]) == rig.engine.balance_at_stop.total and session["equity_end_unknown"] is None
    start = rig.engine.balance_at_start.total
    assert session["return_pct"] == float((rig.engine.balance_at_stop.total - start) / start * 100)
    end_cell = _cells(_screen(section), "Equity at end")[0]
    assert end_cell == f"{rig.engine.balance_at_stop.total.quantize(D('0.01')):,.2f}"
    assert end_cell != f"{stale.quantize(D('0.01')):,.2f}"


async def _stop_with_a_bad_final_read(rig: Rig, recorder: EquityRecorder, stale: D) -> list[str]:
    """Stop (bounded), then check the figures say the end equity is unknown; returns the screen."""
    async with asyncio.timeout(STOP_BOUND_S):
        await rig.engine.stop()
    rig.sim.set_faults(latency_ms=0)  # the rig's teardown stops the engine once more
    await recorder.stop()
    assert rig.engine.balance_at_stop is None and rig.engine.final_balance_error
    session = recorder.stats()["session"]
    assert session["equity_end_usdt"] is None and session["return_pct"] is None
    assert session["equity_end_unknown"] == rig.engine.final_balance_error
    assert session["equity_last_read_usdt"] == str(stale)  # kept in the file, apart, for the record
    screen = _screen(recorder.stats())
    assert _cells(screen, "Equity at end")[0] == "unknown (see below)"
    [said] = [line for line in screen if line.startswith("Equity at end unknown")]
    reason = rig.engine.final_balance_error
    told = said.split(": ", 1)[1].rstrip("…")  # one row: a long reason is cut, the file has all of it
    assert len(said) <= 100 and len(told) > 10 and reason.startswith(told)
    assert _cells(screen, "Return")[0] == "n/a"
    assert not [line for line in screen if f"{stale.quantize(D('0.01')):,.2f}" in line]
    return screen


async def test_a_final_balance_read_that_hangs_does_not_hold_the_stop_and_the_end_is_unknown(make_rig) -> None:
    rig = await make_rig()
    recorder = await _recorder(rig)
    stale = await _open_and_let_the_market_move(rig)
    rig.sim.set_faults(latency_ms=int((STOP_BOUND_S + 3) * 1000))  # every request now hangs past the bound
    await _stop_with_a_bad_final_read(rig, recorder, stale)
    assert rig.engine.final_balance_error == f"not read within {FINAL_BALANCE_TIMEOUT_SECONDS:g} s"
    assert any("final balance not read at stop" in line for line in rig.lines("WARNING"))


async def test_a_final_balance_read_that_fails_leaves_the_end_unknown(make_rig) -> None:
    rig = await make_rig()
    recorder = await _recorder(rig)
    stale = await _open_and_let_the_market_move(rig)
    rig.sim.inject_http_errors(500, 50)
    await _stop_with_a_bad_final_read(rig, recorder, stale)
    assert "Error" in rig.engine.final_balance_error  # the exception's type, then its message
    rig.sim.inject_http_errors(500, 0)
