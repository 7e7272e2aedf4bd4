"""Hot reload (app/hot_reload.py): pairs_config.json and config.json's signal and risk sections.

The signal-side tests drive a real SignalGenerator through the real router with quotes; the
exchange-facing ones run the real engine, hub and router against the simulator through real ccxt
(tests/engine_rig.py), with invariants checked while they run; SIGHUP is sent to a real
``python main.py demo``.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal as signals
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.assemble import tradable_pairs
from app.hot_reload import ConfigReloader
from app.pipeline import SignalRouter
from core.config import ExchangeConfig, load_app_config, load_pairs_config, signal_params
from core.errors import ConfigurationError
from core.stats import SessionStats
from core.types import PairState, Quote, SignalType
from execution.results import ExecutionStatus, Reason
from signals.generator import SignalGenerator
from signals.market_data import MarketDataHub
from tests.conftest import clean_env, read_json, run_main, write_json
from tests.engine_rig import BTC_ETH, EOS_AXS, TEST_TIMEOUT_S, WIDE_RISK, wait_for_state

ZERO = Decimal(0)
RISK = {"max_open_pairs": WIDE_RISK.max_open_pairs, "max_gross_exposure_usdt": WIDE_RISK.max_gross_exposure_usdt,
        "max_daily_loss_usdt": WIDE_RISK.max_daily_loss_usdt}
SIGNAL = {"bar_seconds": 300, "lookback_bars": 30, "entry_threshold": 2.0, "exit_threshold": 0.0,
          "stop_loss_threshold": 4.0, "min_std": 1e-12, "max_quote_age_ms": 60_000, "cooldown_seconds": 0,
          "stop_loss_cooldown_seconds": 0}
# Never decides (|z| of a window of 30 stays below 5.29): only a flatten closes it.
QUIET_EOS = {"pair_id": "EOS_AXS", "leg_a": "EOS/USDT", "leg_b": "AXS/USDT", "hedge_ratio": 1.1664,
             "z_score_threshold": 4.5, "exit_threshold": -4.0, "stop_loss_z": 5.0, "notional_usdt": 1000}
# Enters as soon as its window is full (almost any |z| >= 0.05) and practically never exits.
EAGER_BTC = {"pair_id": "BTC_ETH", "leg_a": "BTC/USDT", "leg_b": "ETH/USDT", "hedge_ratio": 1.0,
             "z_score_threshold": 0.05, "exit_threshold": -4.0, "stop_loss_z": 5.0, "notional_usdt": 1000}


def _write_files(folder: Path, pairs: list[dict[str, Any]], *, signal: dict[str, Any] | None = None,
                 watch: bool = False) -> tuple[Path, Path]:
    config = {"signal": signal or SIGNAL, "risk": RISK, "execution": {"notional_per_pair_usdt": 1000},
              "reload": {"watch_files": watch, "poll_seconds": 0.1}}
    return write_json(folder / "config.json", config), write_json(folder / "pairs.json", {"pairs": pairs})


# ----------------------------------------------------------------------------- signal side only


def _quote(symbol: str, mid: float, ts_ms: int) -> Quote:
    return Quote(symbol=symbol, bid=mid - 1e-6, ask=mid + 1e-6, ts_ms=ts_ms)


def _spread_for_z(window: list[float], target: float) -> float:
    """The current spread whose live z over ``window`` + itself is ``target`` (bisection; z is
    monotonic in the current value). Independent of the generator's code."""
    def z_of(s: float) -> float:
        values = window + [s]
        return (s - statistics.fmean(values)) / statistics.stdev(values)
    lo, hi = statistics.fmean(window), statistics.fmean(window) + 100 * statistics.stdev(window)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if z_of(mid) < target else (lo, mid)
    return (lo + hi) / 2


@dataclass
class SignalSide:
    reloader: ConfigReloader
    router: SignalRouter
    gen: SignalGenerator
    pairs_path: Path
    config_path: Path
    window: list[float]
    ts: int


def _signal_side(tmp_path: Path, *, watch: bool = False) -> SignalSide:
    """One raw-spread pair (Y - X) whose window is filled with known bars, routed with no engine."""
    pair = {"pair_id": "X_Y", "leg_a": "X/USDT", "leg_b": "Y/USDT", "hedge_ratio": 1.0, "price_transform": "raw"}
    config_path, pairs_path = _write_files(tmp_path, [pair], watch=watch)
    config = load_app_config(config_path)
    pairs = load_pairs_config(pairs_path, config.signal, risk=config.risk)
    gen = SignalGenerator(signal_params(config.signal, pairs[0]))
    router = SignalRouter(generators={"X_Y": gen}, engine=None, stats=SessionStats(mode="DEMO"),
                          history=None)  # type: ignore[arg-type]  # filled by quotes here, no history
    hub = MarketDataHub(exchange_config=ExchangeConfig(), max_quote_age_ms=60_000)  # never connected
    reloader = ConfigReloader(config_path=config_path, pairs_path=pairs_path, config=config, pairs=pairs,
                              router=router, engine=None, hub=hub, resolve=lambda added: [])
    bar_ms = 300_000
    window = [0.01 * math.sin(i * 1.3) for i in range(29)]  # 29 completed bars: the window is full
    ts = 1_700_000_000_000 - 1_700_000_000_000 % bar_ms
    for spread in window:
        router.on_quote(_quote("X/USDT", 100.0, ts))
        router.on_quote(_quote("Y/USDT", 100.0 + spread, ts + 1))
        ts += bar_ms
    return SignalSide(reloader, router, gen, pairs_path, config_path, window, ts)


async def test_lowered_entry_threshold_fires_on_the_next_quote(tmp_path: Path) -> None:
    side = _signal_side(tmp_path)
    gen, router = side.gen, side.router
    spread = _spread_for_z(side.window, 1.75)  # between the new threshold (1.5) and the old one (2.0)
    router.on_quote(_quote("X/USDT", 100.0, side.ts))
    router.on_quote(_quote("Y/USDT", 100.0 + spread, side.ts + 1))
    await asyncio.sleep(0)
    assert gen.calculator.is_ready and abs(gen.calculator.z - 1.75) < 1e-6  # decided, not gated
    assert router.counters.signals == 0 and gen.params.entry_z == 2.0

    pairs = read_json(side.pairs_path)
    pairs["pairs"][0]["z_score_threshold"] = 1.5
    write_json(side.pairs_path, pairs)
    result = await side.reloader.reload("test")
    assert result.ok and result.changes == ["X_Y: entry_z 2.0 -> 1.5 (next quote)"], result
    assert router.counters.signals == 0  # nothing fires until a quote comes

    router.on_quote(_quote("Y/USDT", 100.0 + spread + 1e-9, side.ts + 2))  # the same z, one quote later
    await asyncio.sleep(0)
    assert router.counters.signals == 1
    assert gen.snapshot().signals_emitted[SignalType.ENTER_SHORT_SPREAD.value] == 1


async def test_a_changed_file_is_reloaded_by_the_watcher(tmp_path: Path) -> None:
    side = _signal_side(tmp_path, watch=True)
    await side.reloader.start()
    try:
        pairs = read_json(side.pairs_path)
        pairs["pairs"][0]["z_score_threshold"] = 1.5
        write_json(side.pairs_path, pairs)
        async with asyncio.timeout(TEST_TIMEOUT_S):
            while side.gen.params.entry_z != 1.5:
                await asyncio.sleep(0.02)
        assert side.reloader.counters.file_changes == 1 and side.reloader.last is not None
        assert side.reloader.last.message == "config reloaded (file change): 1 change(s)"
        # Rewritten with the same bytes (new mtime): the content did not change, no reload.
        side.pairs_path.write_bytes(side.pairs_path.read_bytes())
        await asyncio.sleep(0.5)
        assert side.reloader.counters.file_changes == 1 and side.reloader.counters.applied == 1
    finally:
        await side.reloader.stop()


# ----------------------------------------------------------------------------- against the simulator


@dataclass
class Live:
    rig: Any
    reloader: ConfigReloader
    router: SignalRouter
    hub: MarketDataHub
    pairs_path: Path
    config_path: Path

    def write_pairs(self, pairs: list[dict[str, Any]]) -> None:
        write_json(self.pairs_path, {"pairs": pairs})

    def legs(self, pair: Any) -> tuple[Decimal, Decimal]:
        spec = self.rig.pairs[pair.pair_id] if pair.pair_id in self.rig.pairs else self.rig.engine.pairs[pair.pair_id]
        return self.rig.sim_qty(spec.symbol_a), self.rig.sim_qty(spec.symbol_b)


@asynccontextmanager
async def _live(make_rig: Any, tmp_path: Path, pairs: list[dict[str, Any]], *,
                engine_pairs: tuple[Any, ...]) -> AsyncIterator[Live]:
    """The bot's signal side as app/assemble.py wires it, on a rig engine that knows ``engine_pairs``."""
    rig = await make_rig(pairs=engine_pairs)
    config_path, pairs_path = _write_files(tmp_path, pairs)
    config = load_app_config(config_path)
    pair_configs = load_pairs_config(pairs_path, config.signal, risk=config.risk)
    hub = MarketDataHub(exchange_config=ExchangeConfig(base_url=rig.sim.base_url, enable_rate_limit=False,
                                                       request_timeout_ms=2_000),
                        max_quote_age_ms=60_000, reconnect_base_ms=20, reconnect_max_ms=100, seed=3)
    await hub.connect()
    generators = {}
    for pair, symbol_a, symbol_b in tradable_pairs(hub, pair_configs, pairs_file=str(pairs_path), venue="binanceusdm"):
        generators[pair.pair_id] = SignalGenerator(signal_params(config.signal, pair), symbol_a=symbol_a,
                                                   symbol_b=symbol_b)
    router = SignalRouter(generators=generators, engine=rig.engine, stats=SessionStats(mode="DEMO"),
                          history=hub.fetch_history)
    rig.engine.flatten_pair = router.flatten
    for symbol in router.symbols:
        hub.subscribe(symbol, router.on_quote)
    reloader = ConfigReloader(
        config_path=config_path, pairs_path=pairs_path, config=config, pairs=pair_configs, router=router,
        engine=rig.engine, hub=hub,
        resolve=lambda added: tradable_pairs(hub, added, pairs_file=str(pairs_path), venue="binanceusdm"))
    rig.sim.resume()
    try:
        await router.start()
        await hub.start()
        await reloader.start()
        yield Live(rig, reloader, router, hub, pairs_path, config_path)
    finally:
        await reloader.stop()
        await hub.stop()
        await router.stop()


async def _watch_hedged(live: Live, pair: Any, until: Any, *, timeout_s: float = TEST_TIMEOUT_S) -> int:
    """Poll until ``until()`` holds; meanwhile the pair's two legs are both open or both closed
    whenever it is not mid-execution. Returns how many moments were checked."""
    checked = 0
    async with asyncio.timeout(timeout_s):
        while not until():
            state = live.rig.engine.pair_state(pair.pair_id)
            a, b = live.legs(pair)
            if state not in (PairState.ENTERING, PairState.EXITING):
                assert (a == ZERO) == (b == ZERO), f"{pair.pair_id}: one leg without the other in {state}: {a} {b}"
                checked += 1
            await asyncio.sleep(0.02)
    return checked


def _in_position(live: Live, pair_id: str) -> bool:
    """The engine holds the pair and its generator knows it (the result has come back)."""
    gen = live.router.generators[pair_id]
    return live.rig.engine.pair_state(pair_id) in (PairState.LONG_SPREAD, PairState.SHORT_SPREAD) \
        and gen.state is live.rig.engine.pair_state(pair_id) and not gen.in_flight


def _entries(rig: Any, pair_id: str) -> list[Any]:
    return [r.signal for r in rig.journal.signals_for_pair_since(pair_id, 0) if r.signal.signal_type.is_entry]


async def test_invalid_files_are_refused_and_nothing_changes(make_rig, tmp_path: Path) -> None:
    async with _live(make_rig, tmp_path, [QUIET_EOS], engine_pairs=(EOS_AXS,)) as live:
        engine, gen = live.rig.engine, live.router.generators["EOS_AXS"]
        before = (gen.params, dict(engine.pairs), engine.risk, live.reloader.config, dict(live.reloader.pairs))
        good_text = live.config_path.read_text()
        cases = []
        # 1. config.json is not JSON at all, while pairs.json carries a valid threshold change.
        live.write_pairs([{**QUIET_EOS, "z_score_threshold": 3.0}])
        live.config_path.write_text(good_text.replace('"risk": {', '"risk": {,'))
        cases.append("config")
        # 2. valid JSON, one invalid value, next to valid changes of the signal and risk sections
        #    and of a pair: none of them may be applied.
        config = json.loads(good_text)
        config["signal"]["entry_threshold"] = 1.5
        config["risk"]["max_open_pairs"] = 1
        config["risk"]["max_daily_loss_usdt"] = -5
        cases.append(config)
        # 3. pairs.json invalid (a hedge ratio of zero) next to a valid change of its other field,
        #    and config.json valid with a new risk limit: the valid file is not applied either.
        cases.append([{**QUIET_EOS, "z_score_threshold": 3.0, "hedge_ratio": 0}])
        for case in cases:
            if isinstance(case, dict):
                write_json(live.config_path, case)
            elif isinstance(case, list):
                valid = json.loads(good_text)
                valid["risk"]["max_open_pairs"] = 2
                write_json(live.config_path, valid)
                live.write_pairs(case)
            try:  # what the start says about the same files
                start_config = load_app_config(live.config_path)
                load_pairs_config(live.pairs_path, start_config.signal, risk=start_config.risk)
            except ConfigurationError as exc:
                expected = str(exc)
            else:
                raise AssertionError(f"case {case!r} is valid")
            result = await live.reloader.reload("test")
            assert not result.ok and result.message == expected and "\n" not in expected and not result.changes
            assert any(expected in line for line in live.rig.lines("ERROR"))
            after = (gen.params, dict(engine.pairs), engine.risk, live.reloader.config, dict(live.reloader.pairs))
            assert after == before, case
        # The command line says the same line for the same file (exit 2).
        check = run_main(["check-config", "--config", str(live.config_path), "--pairs", str(live.pairs_path)],
                         cwd=tmp_path, timeout=60)
        assert check.returncode == 2 and check.stderr.strip() == expected


async def test_a_new_pair_warms_up_and_trades(make_rig, tmp_path: Path) -> None:
    async with _live(make_rig, tmp_path, [QUIET_EOS], engine_pairs=(EOS_AXS,)) as live:
        engine = live.rig.engine
        assert "BTC_ETH" not in engine.pairs and "BTC/USDT:USDT" not in live.hub.symbols
        live.write_pairs([QUIET_EOS, EAGER_BTC])
        result = await live.reloader.reload("test")
        assert result.ok and result.changes == [
            "BTC_ETH: added (BTC/USDT:USDT / ETH/USDT:USDT, hedge ratio 1.0): warming up, then trading"], result
        spec = engine.pairs["BTC_ETH"]
        assert (spec.symbol_a, spec.symbol_b, spec.hedge_ratio) == ("BTC/USDT:USDT", "ETH/USDT:USDT", Decimal("1.0"))
        assert live.rig.journal.get_position("BTC_ETH").state is PairState.FLAT  # its row, as at start
        assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(live.hub.symbols)
        await _watch_hedged(live, BTC_ETH,
                            lambda: _in_position(live, "BTC_ETH"))
        a, b = live.rig.sim_qty("BTC/USDT:USDT"), live.rig.sim_qty("ETH/USDT:USDT")
        assert a != ZERO and b != ZERO and (a > 0) != (b > 0)  # both legs, opposite sides
        gen = live.router.generators["BTC_ETH"]
        assert gen.state is engine.pair_state("BTC_ETH")
        # It decided on a window filled from history: the warm-up came before its first signal.
        messages = [r["message"] for r in live.rig.logs]
        warmed = next(i for i, m in enumerate(messages) if m.startswith("BTC_ETH: warm-up used"))
        signalled = next(i for i, m in enumerate(messages) if "SIGNAL RECEIVED" in m and "BTC_ETH" in m)
        assert warmed < signalled
        entry = _entries(live.rig, "BTC_ETH")[0]
        assert math.isfinite(entry.std) and entry.std > 0


async def test_a_removed_pair_exits_and_takes_no_entries(make_rig, tmp_path: Path) -> None:
    async with _live(make_rig, tmp_path, [QUIET_EOS, EAGER_BTC], engine_pairs=(EOS_AXS, BTC_ETH)) as live:
        engine = live.rig.engine
        await _watch_hedged(live, BTC_ETH,
                            lambda: _in_position(live, "BTC_ETH"))
        assert len(_entries(live.rig, "BTC_ETH")) == 1
        live.write_pairs([QUIET_EOS])
        result = await live.reloader.reload("test")
        assert result.ok and len(result.changes) == 1 and result.changes[0].startswith(
            "BTC_ETH: removed from pairs.json: no new entries; "), result
        assert "closed through the engine (FLATTEN)" in result.changes[0]
        await _watch_hedged(live, BTC_ETH, lambda: "BTC_ETH" not in live.router.generators)
        assert engine.pair_state("BTC_ETH") is PairState.FLAT and live.legs(BTC_ETH) == (ZERO, ZERO)
        trips = live.rig.journal.round_trips("BTC_ETH")
        assert len(trips) == 1 and not trips[0].is_open and trips[0].exit_reason == SignalType.FLATTEN.value
        # Quotes keep coming for a while (its eager thresholds would re-enter at once): nothing does.
        quotes = live.hub.counters.quotes_processed
        await _watch_hedged(live, BTC_ETH, lambda: live.hub.counters.quotes_processed > quotes + 200)
        assert engine.pair_state("BTC_ETH") is PairState.FLAT and live.legs(BTC_ETH) == (ZERO, ZERO)
        assert len(_entries(live.rig, "BTC_ETH")) == 1
        refused = await engine.execute_signal(live.rig.signal("BTC_ETH", SignalType.ENTER_LONG_SPREAD))
        assert refused.status is ExecutionStatus.REFUSED and refused.reason is Reason.PAIR_REMOVED
        assert engine.refusals_by_pair.get("BTC_ETH") == 1  # that one: its generator asked for none
        assert live.router.generators.keys() == {"EOS_AXS"}


async def test_a_changed_hedge_ratio_waits_until_flat(make_rig, tmp_path: Path) -> None:
    async with _live(make_rig, tmp_path, [QUIET_EOS, EAGER_BTC], engine_pairs=(EOS_AXS, BTC_ETH)) as live:
        engine, gen = live.rig.engine, live.router.generators["BTC_ETH"]
        await _watch_hedged(live, BTC_ETH,
                            lambda: _in_position(live, "BTC_ETH"))
        held = engine.pair_state("BTC_ETH")
        # New hedge ratio, and thresholds that will not re-enter once it is flat.
        live.write_pairs([QUIET_EOS, {**EAGER_BTC, "hedge_ratio": 1.2, "z_score_threshold": 4.5}])
        result = await live.reloader.reload("test")
        assert result.ok and result.changes == [
            "BTC_ETH: entry_z 0.05 -> 4.5 (next quote)",
            f"BTC_ETH: hedge_ratio 1.0 -> 1.2: waits until the pair is flat (now {held.value})"], result
        assert gen.params.entry_z == 4.5  # thresholds at once
        quotes = gen.quotes_accepted

        def old_ratio_held() -> bool:  # checked at every poll while the pair is in position
            assert gen.params.hedge_ratio == 1.0 and gen.calculator.hedge_ratio == 1.0
            assert engine.pairs["BTC_ETH"].hedge_ratio == Decimal("1.0")
            return gen.quotes_accepted > quotes + 100

        await _watch_hedged(live, BTC_ETH, old_ratio_held)
        assert live.router.pending_rewindow("BTC_ETH").hedge_ratio == 1.2 and engine.pair_state("BTC_ETH") is held
        again = await live.reloader.reload("test")  # the same file again: nothing new to say
        assert again.ok and again.changes == [] and again.message == "config reloaded (test): no change"
        assert live.router.flatten("BTC_ETH", "test: close it")
        await wait_for_state(live.rig, "BTC_ETH", PairState.FLAT)
        async with asyncio.timeout(TEST_TIMEOUT_S):
            while not (gen.params.hedge_ratio == 1.2 and gen.calculator.is_ready):
                await asyncio.sleep(0.02)
        assert gen.calculator.hedge_ratio == 1.2 and engine.pairs["BTC_ETH"].hedge_ratio == Decimal("1.2")
        assert live.router.pending_rewindow("BTC_ETH") is None
        assert any(m.startswith("BTC_ETH: flat: new window applied (hedge ratio 1.0 -> 1.2")
                   for m in live.rig.lines("INFO"))


def test_sighup_reloads_a_running_demo(bot_dir: Path, spawn_main) -> None:
    config = read_json(bot_dir / "config.json")
    config["reload"] = {"watch_files": False}  # only the signal may trigger this reload
    write_json(bot_dir / "config.json", config)
    bot = spawn_main(["demo", "--duration", "90", "--config", "config.json", "--pairs", "pairs_config.json"],
                     cwd=bot_dir, env=clean_env())
    bot.wait_for("hot reload: SIGHUP re-reads", timeout=60)
    pairs = read_json(bot_dir / "pairs_config.json")
    pairs["pairs"][0]["z_score_threshold"] = 1.5
    write_json(bot_dir / "pairs_config.json", pairs)
    config["risk"]["max_open_pairs"] = 4
    config["exchange"]["leverage"] = 3
    write_json(bot_dir / "config.json", config)
    bot.send_signal(signals.SIGHUP)
    bot.wait_for("config reloaded (SIGHUP): 3 change(s)", timeout=20)
    out = bot.output
    first = pairs["pairs"][0]["pair_id"]
    assert f"{first}: entry_z 2.0 -> 1.5 (next quote)" in out
    assert "risk.max_open_pairs 5 -> 4 (from the next entry)" in out
    assert "exchange section changed: restart to apply" in out
    bot.send_signal(signals.SIGINT)
    assert bot.wait(timeout=30) == 0


async def test_a_new_lookback_on_a_flat_pair_warms_it_up_again_at_once(make_rig, tmp_path: Path) -> None:
    async with _live(make_rig, tmp_path, [QUIET_EOS], engine_pairs=(EOS_AXS,)) as live:
        gen = live.router.generators["EOS_AXS"]
        assert gen.calculator.is_ready and gen.calculator.bars_in_window == 29
        old_calc = gen.calculator
        live.write_pairs([{**QUIET_EOS, "lookback_bars": 40}])
        result = await live.reloader.reload("test")
        assert result.ok and result.changes == ["EOS_AXS: lookback_bars 30 -> 40: new window, warming up"], result
        assert gen.calculator is not old_calc and gen.needs_backfill  # WARMING: no decision on an empty window
        async with asyncio.timeout(TEST_TIMEOUT_S):
            while not gen.calculator.is_ready:
                assert gen.snapshot().signals_emitted == {t.value: 0 for t in SignalType}
                await asyncio.sleep(0.02)
        assert gen.params.lookback_bars == 40 and gen.calculator.bars_in_window == 39
        assert live.rig.engine.pairs["EOS_AXS"].hedge_ratio == Decimal("1.1664")


async def test_a_new_hedge_ratio_mode_on_a_flat_pair_is_a_new_window(make_rig, tmp_path: Path) -> None:
    """hedge_ratio_mode static -> rolling_ols: a new (rolling-OLS) window warmed from history, and
    the engine's spec says rolling_ols, so the next entry is sized with the signal's beta."""
    from signals.spread import RollingOLSCalculator

    async with _live(make_rig, tmp_path, [QUIET_EOS], engine_pairs=(EOS_AXS,)) as live:
        gen = live.router.generators["EOS_AXS"]
        assert gen.calculator.is_ready and live.rig.engine.pairs["EOS_AXS"].hedge_ratio_mode == "static"
        live.write_pairs([{**QUIET_EOS, "hedge_ratio_mode": "rolling_ols"}])
        result = await live.reloader.reload("test")
        assert result.ok and result.changes == [
            "EOS_AXS: hedge_ratio_mode static -> rolling_ols: new window, warming up"], result
        assert isinstance(gen.calculator, RollingOLSCalculator) and gen.needs_backfill
        async with asyncio.timeout(TEST_TIMEOUT_S):
            while not gen.calculator.is_ready:
                await asyncio.sleep(0.02)
        assert gen.params.hedge_ratio_mode == "rolling_ols" and gen.calculator.bars_in_window == 29
        assert live.rig.engine.pairs["EOS_AXS"].hedge_ratio_mode == "rolling_ols"
