"""Refusal spam (issue 10, defect 9): a persistent refusal is a held-back decision, not a stream
of new signals. Real engine and simulator; max_open_pairs 1 with one pair already open, so
every entry of the second pair is refused for the same cause until the first pair exits."""

from __future__ import annotations

from loguru import logger

from app.pipeline import SignalRouter
from core.config import PairConfig, RiskConfig, SignalConfig, signal_params
from core.stats import SessionStats
from core.types import SignalType
from signals.generator import SignalGenerator
from tests.engine_rig import BTC_ETH, EOS_AXS


async def test_a_persistent_refusal_is_logged_once_and_counted_as_one_decision(make_rig) -> None:
    rig = await make_rig(pairs=(EOS_AXS, BTC_ETH), risk=RiskConfig(max_open_pairs=1, max_gross_exposure_usdt=50_000,
                                                                 max_daily_loss_usdt=1_000))
    rig.sim.resume()
    opened = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.ENTER_LONG_SPREAD))
    assert opened.executed
    spec = rig.pairs["BTC_ETH"]
    params = signal_params(SignalConfig(), PairConfig(pair_id="BTC_ETH", leg_a="BTC/USDT", leg_b="ETH/USDT",
                                                      hedge_ratio=1.0))
    gen = SignalGenerator(params, symbol_a=spec.symbol_a, symbol_b=spec.symbol_b)
    stats = SessionStats(mode="DEMO")
    router = SignalRouter(generators={"BTC_ETH": gen}, engine=rig.engine, stats=stats, history=None)  # type: ignore[arg-type]
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        for _ in range(6):  # the generator re-fires the refused entry every cooldown
            await gen.dispatch(rig.signal("BTC_ETH", SignalType.ENTER_SHORT_SPREAD))
        assert stats.signals_processed == 1 and stats.signals_refused == {"max_open_pairs": 1}
        assert stats.signals_rechecked == 5 == router.counters.rechecks and stats.trades_executed == 0
        received = [line for line in lines if line.startswith("SIGNAL RECEIVED") and "BTC_ETH" in line]
        refused = [line for line in lines if "BTC_ETH" in line and "refused: max_open_pairs" in line]
        assert len(received) == 1 and len(refused) == 1, (received, refused)
        # The cause goes away (the open pair exits): the next re-fire is a decision of its own.
        closed = await rig.engine.execute_signal(rig.signal("EOS_AXS", SignalType.EXIT))
        assert closed.executed
        await gen.dispatch(rig.signal("BTC_ETH", SignalType.ENTER_SHORT_SPREAD))
        assert stats.signals_processed == 2 and stats.trades_executed == 1
        assert sum(line.startswith("SIGNAL RECEIVED") and "BTC_ETH" in line for line in lines) == 2
        assert any(line.startswith("TRADE EXECUTED") and "BTC_ETH" in line for line in lines)
    finally:
        logger.remove(sink)
    closed = await rig.engine.execute_signal(rig.signal("BTC_ETH", SignalType.EXIT))
    assert closed.executed
