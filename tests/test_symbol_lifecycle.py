"""Symbol lifecycle and filters (issue 11, item 7): real ccxt against the simulator.

- A symbol that stops trading (exchangeInfo ``status`` SETTLING or CLOSE, ccxt ``active``
  False) is noticed at the next markets refresh: its pairs exit through the engine and stay
  disabled until the symbol trades again AND an operator resumes them.
- An order refused by a filter (-4164 MIN_NOTIONAL) makes the bot re-read exchangeInfo, and the
  next entry is sized against the new filter.
- The simulator serves the recorded minimum notionals, and a documented value for a symbol the
  recorded file lacks; it can change a symbol's filters and status while running.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import ccxt.async_support as ccxt_async
import pytest

import main as bot_main
from core.types import PairState, SignalType
from execution.journal import Journal
from execution.journal_models import PairPosition
from execution.results import ExecutionStatus, Reason
from simulator.config import SimulatorConfig
from market_replay.markets import PriceHint, derive_symbol_info
from simulator.server import MarketData, SimulatorServer
from tests.engine_rig import (BTC_ETH, D, EOS_AXS, FAST_EXEC, REPLAY, TEST_TIMEOUT_S, assert_journal_matches_exchange,
                              wait_for_state)
from tests.sim_helpers import local_client

WATCHING = FAST_EXEC.model_copy(update={"markets_refresh_seconds": 0.3})
EOS, AXS = "EOS/USDT:USDT", "AXS/USDT:USDT"


@pytest.mark.parametrize("status", ["SETTLING", "CLOSE"])
async def test_a_symbol_that_stops_trading_makes_its_pairs_exit_and_stay_disabled(make_rig, status: str) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig(pairs=(EOS_AXS, BTC_ETH), execution=WATCHING)
        assert (await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))).executed
        rig.sim.set_symbol_status("AXSUSDT", status)
        await wait_for_state(rig, "EOS_AXS", PairState.FLAT)
        assert rig.sim_qty(EOS) == rig.sim_qty(AXS) == 0
        assert_journal_matches_exchange(rig)
        assert any("EOS_AXS DISABLED" in line and AXS in line for line in rig.lines("WARNING"))
        (event,) = rig.journal.events("pair_disabled")
        assert event["pair_id"] == "EOS_AXS" and event["detail"]["symbols"] == [AXS]
        sent = len(rig.sim_orders("pb-"))
        refused = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD))
        assert (refused.status, refused.reason) == (ExecutionStatus.REFUSED, Reason.PAIR_DISABLED)
        assert len(rig.sim_orders("pb-")) == sent
        assert rig.engine.resume("EOS_AXS") is False  # AXS still does not trade
        assert list(rig.engine.stats()["disabled_pairs"]) == ["EOS_AXS"]
        assert (await rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.ENTER_LONG_SPREAD))).executed
        rig.sim.set_symbol_status("AXSUSDT", "TRADING")
        await rig.engine.refresh_markets("test")
        assert "EOS_AXS" in rig.engine.disabled  # trading again is not enough: sticky until resumed
        assert rig.engine.resume("EOS_AXS") is True
        assert (await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_SHORT_SPREAD))).executed
        assert [e["kind"] for e in rig.journal.events() if e["kind"].startswith("pair_")
                and e["pair_id"] == "EOS_AXS" and e["kind"] != "pair_transition"] == ["pair_disabled", "pair_enabled"]


async def test_a_filter_rejection_reloads_the_markets_and_the_new_filter_is_used(make_rig) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        rig = await make_rig()  # markets_refresh_seconds 3600: only the rejection can reload them
        assert rig.adapter.rules(EOS).min_notional == 5
        rig.sim.set_symbol_filters("EOSUSDT", min_notional="600")  # the EOS leg is ~540 USDT
        first = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert first.status is ExecutionStatus.ROLLED_BACK  # EOS refused with -4164, AXS closed again
        assert [o["status"] for o in rig.sim_orders("pb-") if o["symbol"] == "EOSUSDT"] == []
        async with asyncio.timeout(5):
            while rig.adapter.rules(EOS).min_notional != 600:
                await asyncio.sleep(0.02)
        sent = len(rig.sim_orders("pb-"))
        second = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert (second.status, second.reason) == (ExecutionStatus.REFUSED, Reason.BELOW_MIN_NOTIONAL)
        assert len(rig.sim_orders("pb-")) == sent  # refused before anything was sent
        assert any("re-reading the markets" in line for line in rig.lines("WARNING"))


async def test_recorded_min_notionals_are_served_and_can_change_while_running(sim_data: MarketData) -> None:
    recorded = {s["symbol"]: s for s in sim_data.recorded_info["symbols"]}
    sim = SimulatorServer(SimulatorConfig(symbols=("EOSUSDT", "AXSUSDT", "DOTUSDT", "BTCUSDT", "ETHUSDT"), port=0,
                                          replay=REPLAY), data=sim_data)
    await sim.start()
    client = local_client(ccxt_async.binanceusdm, sim)
    try:
        await client.load_markets()
        for symbol in ("EOSUSDT", "BTCUSDT", "ETHUSDT"):
            want = next(f["notional"] for f in recorded[symbol]["filters"] if f["filterType"] == "MIN_NOTIONAL")
            assert D(str(client.market(symbol[:-4] + "/USDT:USDT")["limits"]["cost"]["min"])) == D(want)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sim.base_url}/sim/markets/BTCUSDT",
                                 data=json.dumps({"min_notional": "100", "status": "SETTLING"})) as response:
                assert response.status == 200
                body = await response.json()
        assert body["status"] == "SETTLING" and body["filters"]["MIN_NOTIONAL"]["notional"] == "100"
        await client.load_markets(True)
        market = client.market("BTC/USDT:USDT")
        assert market["limits"]["cost"]["min"] == 100 and market["active"] is False
    finally:
        await client.close()
        await sim.stop()


def test_a_symbol_missing_from_the_recorded_file_takes_binances_documented_min_notional() -> None:
    """Derived entries: BTCUSDT-class symbols 100 USDT (Binance's contract specifications page),
    the rest 5 USDT."""
    def notional(symbol: str, price: str) -> str:
        info = derive_symbol_info(symbol, PriceHint(D(price), 2))
        return next(f["notional"] for f in info["filters"] if f["filterType"] == "MIN_NOTIONAL")
    assert notional("BTCUSDT", "30000") == "100"
    assert notional("CELOUSDT", "0.5") == "5"


async def test_a_disabled_pair_stays_disabled_across_a_restart_until_resumed(make_rig, tmp_path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT_S):
        path = tmp_path / "disabled.sqlite"
        rig = await make_rig(execution=WATCHING, journal_path=path)
        rig.sim.set_symbol_status("AXSUSDT", "SETTLING")
        await rig.engine.refresh_markets("test")
        assert "EOS_AXS" in rig.engine.disabled
        await rig.engine.stop()
        rig.journal.close()
        rig.sim.set_symbol_status("AXSUSDT", "TRADING")
        again = await make_rig(journal_path=path, sim=rig.sim)
        assert "EOS_AXS" in again.engine.disabled  # rebuilt from the journal's events; AXS trading is not enough
        refused = await again.engine.execute_signal(again.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
        assert refused.reason is Reason.PAIR_DISABLED
        await again.engine.stop()
        again.journal.close()
        resumed = await make_rig(journal_path=path, sim=rig.sim, resume_halted=True)
        assert "EOS_AXS" not in resumed.engine.disabled


def test_the_resume_command_enables_a_disabled_pair_in_the_journal(tmp_path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"dry_run": True, "storage": {"dir": "state"}}), encoding="utf-8")
    pairs = bot_main.PROJECT_DIR / "pairs_config.json"
    path = tmp_path / "state" / "journal-paper.sqlite"
    path.parent.mkdir()
    with Journal.open(path, mode="paper") as journal:
        journal.save_position(PairPosition("EOS_AXS", PairState.FLAT, D(0), D(0), EOS, AXS))
        journal.record_event("pair_disabled", "EOS_AXS", {"symbols": [AXS], "reason": "AXS not trading"})
    assert bot_main.main(["resume", "EOS_AXS", "--config", str(config), "--pairs", str(pairs)]) == 0
    assert "EOS_AXS: enabled again" in capsys.readouterr().out
    with Journal.open(path, mode="paper") as journal:
        assert [e["kind"] for e in journal.events() if e["pair_id"] == "EOS_AXS"] == ["pair_disabled", "pair_enabled"]
