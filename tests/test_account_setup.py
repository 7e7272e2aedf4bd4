"""Account preconditions and clock skew at start and while running (issue 11), through real ccxt.

Every test runs the real ``CcxtExchange`` against the in-process simulator (tests/engine_rig.py)
or, for the exit code, ``python main.py`` against a standalone simulator. The account's modes are
set the way a user sets them, through ccxt's own calls (``set_position_mode``, the
``multiAssetsMargin`` endpoint); the clock skew is the simulator's ``clock_skew_ms`` fault (its
clock runs that far from the host's). The rig signs with ``recvWindow`` 500 ms, so a 3 s skew
either way refuses every signed request that is not corrected for it (-1021).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from core.config import ExchangeConfig, Secrets
from core.errors import AccountSetupError
from core.types import PairState, SignalType
from core.venue import point_at_local_exchange
from execution.exchange import CcxtExchange
from execution.journal import Journal
from execution.results import ExecutionStatus
from matching.rules import maintenance_bracket
from simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimulatorConfig
from simulator.server import SimulatorServer
from tests.conftest import PROJECT_DIR, PYTHON, SimulatorProcess, clean_env, read_json, write_json
from tests.engine_rig import (EOS_AXS, FAST_EXEC, RECV_WINDOW_MS, REPLAY, SYMBOLS, TEST_TIMEOUT_S, WIDE_RISK, Rig,
                              assert_journal_matches_exchange, build_engine)
from tests.sim_helpers import local_client

SKEW_MS = 3_000
HEDGE_LINE = ("startup refused: the account is in hedge mode (dualSidePosition); pairs-bot needs one-way mode: "
              "Binance Futures > Preferences > Position Mode > One-way, or POST /fapi/v1/positionSide/dual "
              "dualSidePosition=false")


async def _sim(sim_data: Any) -> SimulatorServer:
    sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=REPLAY), data=sim_data)
    await sim.start()
    sim.pause()
    return sim


async def _start_engine(sim: SimulatorServer, tmp_path: Path, *, margin_mode: str = "isolated",
                        clock_sync_interval_seconds: float = 300.0) -> Any:
    """Build and start the engine as app/assemble.py does; returns it (the caller stops it)."""
    inner = CcxtExchange(ExchangeConfig(base_url=sim.base_url, enable_rate_limit=False, leverage=2,
                                        recv_window_ms=RECV_WINDOW_MS,
                                        clock_sync_interval_seconds=clock_sync_interval_seconds),
                         Secrets(sim.api_key, sim.api_secret, "test"))
    journal = Journal.open(tmp_path / f"journal-{time.monotonic_ns()}.sqlite", mode="demo")
    engine, _ = await build_engine(sim, inner, inner, journal, (EOS_AXS,), execution=FAST_EXEC, risk=WIDE_RISK,
                                   leverage=2, margin_mode=margin_mode, external_path=tmp_path / "external.json")
    try:
        await engine.start()
    except BaseException:
        await engine.stop()
        journal.close()
        raise
    return engine, journal


async def _user_client(sim: SimulatorServer) -> Any:
    client = local_client(ccxt_async.binanceusdm, sim)
    await client.load_markets()
    return client


# ----------------------------------------------------------------------------- position mode


async def test_hedge_mode_account_is_refused_at_start_with_the_line_saying_how_to_switch(
        sim_data: Any, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data)
        client = await _user_client(sim)
        try:
            await client.set_position_mode(True)  # POST /fapi/v1/positionSide/dual dualSidePosition=true
            with pytest.raises(AccountSetupError) as refused:
                await _start_engine(sim, tmp_path)
            assert str(refused.value).startswith(HEDGE_LINE) and "\n" not in str(refused.value)
            assert sim.order_log() == [] and sim.engine.accounts["default"].leverage == {}  # before any change
            # the refusal is right: in hedge mode Binance refuses every order of ours (-4061)
            with pytest.raises(ccxt.OperationRejected, match="-4061"):
                await client.create_order("EOS/USDT:USDT", "market", "buy", 100)
            await client.set_position_mode(False)
            engine, journal = await _start_engine(sim, tmp_path)  # one-way again: it starts
            await engine.stop()
            journal.close()
        finally:
            await client.close()
            await sim.stop()


def test_main_exits_2_with_one_line_on_a_hedge_mode_account(tmp_path: Path,
                                                             simulator_process: SimulatorProcess) -> None:
    user = ccxt.binanceusdm({"apiKey": DEFAULT_API_KEY, "secret": DEFAULT_API_SECRET, "timeout": 5000,
                             "enableRateLimit": False})
    point_at_local_exchange(user, base_url=simulator_process.base_url, ws_url=simulator_process.ws_url)
    user.load_markets()
    user.set_position_mode(True)
    config = read_json(PROJECT_DIR / "config.json")
    config["exchange"].update(base_url=simulator_process.base_url, startup_timeout_seconds=30,
                              request_timeout_ms=5_000, enable_rate_limit=False)
    config["logging"]["dir"] = str(tmp_path / "logs")
    config["storage"]["dir"] = str(tmp_path / "store")
    config["dry_run"] = False
    path = write_json(tmp_path / "config.json", config)
    proc = subprocess.run([PYTHON, str(PROJECT_DIR / "main.py"), "--live", "--config", str(path), "--pairs",
                           str(PROJECT_DIR / "pairs_config.json")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=45, env=clean_env(BINANCE_API_KEY=DEFAULT_API_KEY,
                                                    BINANCE_API_SECRET=DEFAULT_API_SECRET))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and HEDGE_LINE in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "start attempt" not in proc.stdout  # permanent: not retried
    assert simulator_process.admin("/sim/orders") == []  # no order, no setting changed first


# ----------------------------------------------------------------------------- Multi-Assets mode


async def test_multi_assets_account_refuses_isolated_margin_with_its_reason_and_starts_with_cross(
        sim_data: Any, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data)
        client = await _user_client(sim)
        try:
            await client.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"})
            with pytest.raises(AccountSetupError) as refused:
                await _start_engine(sim, tmp_path, margin_mode="isolated")
            line = str(refused.value)
            assert "Multi-Assets mode" in line and "-4168" in line and "exchange.margin_mode" in line \
                and "multiAssetsMargin=false" in line and "\n" not in line
            assert sim.engine.accounts["default"].leverage == {}  # said at the check, before any change
            engine, journal = await _start_engine(sim, tmp_path, margin_mode="cross")
            try:
                assert engine.margin_modes == {"EOS/USDT:USDT": "cross", "AXS/USDT:USDT": "cross"}
            finally:
                await engine.stop()
                journal.close()
        finally:
            await client.close()
            await sim.stop()


async def test_a_4168_from_the_margin_type_call_is_an_account_setup_error(sim_data: Any) -> None:
    """If the mode changes between the check and the margin-type call, Binance's -4168 says why."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data)
        client = await _user_client(sim)
        adapter = CcxtExchange(ExchangeConfig(base_url=sim.base_url, enable_rate_limit=False),
                               Secrets(sim.api_key, sim.api_secret, "test"))
        try:
            await adapter.load_markets()
            await client.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"})
            with pytest.raises(AccountSetupError, match="-4168"):
                await adapter.set_margin_mode("EOS/USDT:USDT", "isolated")
            assert await adapter.set_margin_mode("EOS/USDT:USDT", "cross") == "cross"  # already: -4046
        finally:
            await adapter.close()
            await client.close()
            await sim.stop()


# ----------------------------------------------------------------------------- leverage brackets


async def test_leverage_brackets_are_read_at_start_exact(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig: Rig = await make_rig()
        for symbol in ("EOS/USDT:USDT", "AXS/USDT:USDT"):
            rules = rig.sim.engine.rules[rig.adapter.rules(symbol).exchange_symbol]
            (bracket,) = rig.adapter.leverage_brackets(symbol)
            assert (bracket.initial_leverage, bracket.notional_floor) == (rules.max_leverage, Decimal(0))
            rate, cum = maintenance_bracket(rules)  # what the venue's leverageBracket serves
            assert (bracket.maint_margin_ratio, bracket.cum) == (rate, cum)  # exact, not a float's shadow
            assert isinstance(bracket.notional_cap, Decimal)


# ----------------------------------------------------------------------------- clock skew


def _orders_once_each(rig: Rig) -> list[tuple[str, str]]:
    log = rig.sim_orders("pb-")
    counts = Counter(o["clientOrderId"] for o in log)
    assert all(n == 1 for n in counts.values()), counts  # no order doubled by a resend
    return [(o["clientOrderId"][-3:], o["status"]) for o in log]


async def _entry_and_exit(rig: Rig) -> None:
    spec = rig.pairs["EOS_AXS"]
    entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
    assert entry.status is ExecutionStatus.EXECUTED and entry.state_after is PairState.LONG_SPREAD, entry
    assert rig.sim_qty(spec.symbol_a) != 0 and rig.sim_qty(spec.symbol_b) != 0
    assert_journal_matches_exchange(rig)
    exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
    assert exit_.status is ExecutionStatus.EXECUTED and exit_.state_after is PairState.FLAT, exit_
    assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0


@pytest.mark.parametrize("skew_ms", [SKEW_MS, -SKEW_MS], ids=["client_behind", "client_ahead"])
async def test_a_3s_clock_skew_is_synced_at_start_and_a_pair_trades_with_no_order_lost_or_doubled(
        make_rig, sim_data: Any, skew_ms: int) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data)
        sim.set_faults(clock_skew_ms=skew_ms)
        unsynced = local_client(ccxt_async.binanceusdm, sim, options={"recvWindow": RECV_WINDOW_MS})
        try:  # the skew is real: a client on this machine's clock is refused
            await unsynced.load_markets()
            with pytest.raises(ccxt.InvalidNonce, match="-1021"):
                await unsynced.fetch_balance()
        finally:
            await unsynced.close()
        rig: Rig = await make_rig(sim=sim)
        assert abs(rig.adapter.clock_offset_ms + skew_ms) < 200  # local minus exchange
        await _entry_and_exit(rig)
        assert _orders_once_each(rig) == [("aE0", "FILLED"), ("bE0", "FILLED"), ("aX0", "FILLED"),
                                          ("bX0", "FILLED")]
        assert rig.adapter.counters.errors.get("InvalidNonce", 0) == 0  # synced before the first signed call
        assert_journal_matches_exchange(rig)
        assert not rig.lines("ERROR") and not rig.lines("CRITICAL")


async def test_a_skew_that_appears_while_running_is_recovered_by_a_resync_after_the_first_1021(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig: Rig = await make_rig()
        assert rig.adapter.clock_syncs == 1 and abs(rig.adapter.clock_offset_ms) < 200
        rig.sim.set_faults(clock_skew_ms=SKEW_MS)  # the exchange's clock jumps 3 s ahead of ours
        spec = rig.pairs["EOS_AXS"]
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.status is ExecutionStatus.EXECUTED, entry
        # both legs left at once and met -1021; the clock was measured once, each leg sent again once
        assert rig.adapter.clock_syncs == 2 and abs(rig.adapter.clock_offset_ms + SKEW_MS) < 200
        resent = [line for line in rig.lines("WARNING") if "refused with -1021" in line]
        assert 1 <= len(resent) <= 2 and all("sending it again" in line for line in resent), resent
        rig.sim.set_faults(clock_skew_ms=-SKEW_MS)  # and now 3 s behind: our requests are "ahead"
        exit_ = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert exit_.status is ExecutionStatus.EXECUTED and exit_.state_after is PairState.FLAT, exit_
        assert rig.adapter.clock_syncs == 3 and abs(rig.adapter.clock_offset_ms - SKEW_MS) < 200
        assert rig.sim_qty(spec.symbol_a) == rig.sim_qty(spec.symbol_b) == 0
        assert _orders_once_each(rig) == [("aE0", "FILLED"), ("bE0", "FILLED"), ("aX0", "FILLED"),
                                          ("bX0", "FILLED")]
        assert_journal_matches_exchange(rig)
        assert rig.engine.counters.fills_recorded == 4
        assert not rig.lines("ERROR") and not rig.lines("CRITICAL")


async def test_the_clock_is_re_measured_periodically_so_a_skew_is_corrected_before_any_1021(
        sim_data: Any, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        sim = await _sim(sim_data)
        engine, journal = await _start_engine(sim, tmp_path, clock_sync_interval_seconds=0.2)
        try:
            adapter = engine.adapter
            sim.set_faults(clock_skew_ms=SKEW_MS)
            while abs(adapter.clock_offset_ms + SKEW_MS) >= 200:  # the periodic task, not a -1021
                await asyncio.sleep(0.05)
            await engine.refresh_balance()
            await adapter.fetch_open_orders()
            assert adapter.counters.errors.get("InvalidNonce", 0) == 0
        finally:
            await engine.stop()
            journal.close()
            await sim.stop()


@pytest.mark.parametrize("skew_when", ["right_after_the_loss", "at_the_lookup_past_the_horizon"])
async def test_a_skew_that_appears_while_an_order_is_unknown_never_doubles_it(make_rig, skew_when: str) -> None:
    """The entry's first order is lost and lands 2 s later; right after it is lost the exchange's
    clock falls 3 s behind ours. By the exchange's clock the order is still inside its recvWindow
    when it lands, so it must not be confirmed "none" (and resent) in the meantime: the resolver's
    horizon and lookup times are on the exchange's clock, not this machine's. In the second case
    the skew appears inside the first lookup sent past the horizon (by the clock as it stood): that
    lookup meets -1021 and is sent again after a re-sync, at an earlier exchange time, so its "not
    found" must not count."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig: Rig = await make_rig(hooked=True)
        spec = rig.pairs["EOS_AXS"]
        hooked, skewed = rig.adapter, []

        def skew() -> None:
            rig.sim.set_faults(lands_late_probability=0.0, lands_late_ms=2_000, clock_skew_ms=-SKEW_MS)
            skewed.append(True)

        def before_create(number: int) -> None:
            if number == 1:
                rig.sim.set_faults(lands_late_probability=1.0, lands_late_ms=2_000)

        def on_unknown(number: int) -> None:
            if number == 1:
                if skew_when == "right_after_the_loss":
                    skew()
                else:
                    rig.sim.set_faults(lands_late_probability=0.0, lands_late_ms=2_000)

        async def fetch_order(**kwargs: Any) -> Any:  # the real adapter's lookup, the skew just before it
            record = rig.journal.get_order(kwargs["client_order_id"])
            if not skewed and record is not None and record.horizon_ms is not None \
                    and hooked.exchange_now_ms() > record.horizon_ms:
                skew()
            return await hooked._inner.fetch_order(**kwargs)

        hooked.before_create, hooked.on_unknown = before_create, on_unknown
        if skew_when == "at_the_lookup_past_the_horizon":
            hooked.fetch_order = fetch_order
        entry = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert entry.status in (ExecutionStatus.EXECUTED, ExecutionStatus.RESOLVING), entry
        while rig.engine.resolving_pairs() or not rig.sim.stats()["faults_injected"].get("late_order_landed"):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # every late order has landed by now
        injected = rig.sim.stats()["faults_injected"]
        assert injected.get("late_order_landed", 0) >= 1 and not injected.get("late_order_expired"), injected
        _orders_once_each(rig)
        assert rig.engine.counters.ghost_resends == 0
        assert rig.sim_qty(spec.symbol_a) != 0 and rig.sim_qty(spec.symbol_b) != 0
        assert_journal_matches_exchange(rig)
        assert rig.engine.pair_state("EOS_AXS") is PairState.LONG_SPREAD and skewed
