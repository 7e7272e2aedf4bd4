"""The engine test rig: a real ``CcxtExchange`` against an in-process simulator, a fresh journal.

Shared by the engine's protocol tests and the order-outcome tests. ``make_rig`` builds the engine
the way ``app/assemble.py`` does; nothing is mocked. See tests/test_engine_protocols.py for how
each protocol branch is forced deterministically.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async
import pytest
from loguru import logger

from core.config import ExchangeConfig, ExecutionConfig, RiskConfig, Secrets
from core.types import PairState, SignalType, TradingSignal
from execution.engine import ExecutionEngine
from execution.exchange import CcxtExchange, OrderStatusUnknownError
from execution.journal import Journal, OrderPurpose, OrderStatus
from execution.results import PairSpec
from simulator.config import FillConfig, RateLimitConfig, ReplayConfig, SimulatorConfig
from simulator.server import MarketData, SimulatorServer
from tests.sim_helpers import local_client

D = Decimal
ZERO = D(0)
TEST_TIMEOUT_S = 20
SYMBOLS = ("EOSUSDT", "AXSUSDT", "DOTUSDT", "BTCUSDT", "ETHUSDT")
# warmup 900 bars: the replay starts at 15:35 UTC, far from a day boundary (daily-loss test).
REPLAY = ReplayConfig(speed=300.0, steps_per_bar=60, warmup_bars=900, seed=11)
THIN_BOOK = ReplayConfig(speed=300.0, steps_per_bar=60, warmup_bars=900, seed=11, top_qty_volume_fraction=0.002)
FAST_EXEC = ExecutionConfig(max_order_retries=3, retry_backoff_ms=5, order_timeout_seconds=5,
                            reconcile_interval_seconds=3600, duplicate_window_seconds=1.0,
                            clock_error_margin_ms=100, resolve_extra_seconds=0.5)
#: The order client's recvWindow in these tests: an unknown order's horizon is 600 ms away.
RECV_WINDOW_MS = 500
WIDE_RISK = RiskConfig(max_open_pairs=5, max_gross_exposure_usdt=50_000, max_daily_loss_usdt=1_000)
REJECT = -2010  # NEW_ORDER_REJECTED: ccxt InvalidOrder, a permanent refusal before the order exists


# ----------------------------------------------------------------------------- the rig


@dataclass(frozen=True, slots=True)
class Pair:
    pair_id: str
    leg_a: str  # X
    leg_b: str  # Y
    beta: Decimal
    notional: Decimal


EOS_AXS = Pair("EOS_AXS", "EOS/USDT", "AXS/USDT", D("1.1664"), D(1000))
BTC_ETH = Pair("BTC_ETH", "BTC/USDT", "ETH/USDT", D(1), D(1000))


class HookedAdapter:
    """The real ``CcxtExchange`` with test hooks around ``create_order`` and ``cancel_order`` (for faults that must
    hit one precise request). Every call still goes through ccxt to the simulator."""

    def __init__(self, inner: CcxtExchange) -> None:
        self._inner = inner
        self.creates = 0
        self.before_create: Callable[[int], None] | None = None
        self.on_unknown: Callable[[int], None] | None = None
        self.before_cancel: Callable[[], None] | None = None
        self.answers: list[Any] = []  # what each create_order answered (OrderState), in order

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create_order(self, **kwargs: Any) -> Any:
        self.creates += 1
        number = self.creates
        if self.before_create is not None:
            self.before_create(number)
        try:
            answer = await self._inner.create_order(**kwargs)
            self.answers.append(answer)
            return answer
        except OrderStatusUnknownError:
            if self.on_unknown is not None:
                self.on_unknown(number)
            raise

    async def cancel_order(self, **kwargs: Any) -> Any:
        if self.before_cancel is not None:
            self.before_cancel()
        return await self._inner.cancel_order(**kwargs)


@dataclass
class Rig:
    sim: SimulatorServer
    engine: ExecutionEngine
    adapter: Any
    journal: Journal
    tmp: Path
    pairs: dict[str, PairSpec]
    logs: list[Any]
    base_ts: int
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- market and signals
    def book(self, symbol: str) -> Any:
        return self.sim.replay.book(self.adapter.rules(symbol).exchange_symbol)

    def mid(self, symbol: str) -> Decimal:
        return self.book(symbol).mid

    def signal(self, pair_id: str, kind: SignalType, *, ts_ms: int | None = None) -> TradingSignal:
        """A signal from the simulator's current book; a unique id, 2 s of exchange time later."""
        spec = self.pairs[pair_id]
        sid = f"t{next(self._ids)}-{kind.side_label}"
        ts = ts_ms if ts_ms is not None else self.base_ts + 2_000 * next(self._ts)
        z = {"LONG": -2.5, "SHORT": 2.5}.get(kind.side_label, 0.0)
        return TradingSignal(sid, pair_id, kind, z, 0.0, 0.0, 1.0, float(self.mid(spec.symbol_a)),
                             float(self.mid(spec.symbol_b)), float(spec.hedge_ratio), ts)

    # -- what the exchange says
    def sim_qty(self, symbol: str) -> Decimal:
        exchange_symbol = self.adapter.rules(symbol).exchange_symbol
        held = self.sim.positions()["default"]["positions"].get(exchange_symbol)
        return D(held["amount"]) if held else ZERO

    def sim_orders(self, prefix: str = "") -> list[dict[str, Any]]:
        return [o for o in self.sim.order_log() if o["clientOrderId"].startswith(prefix)]

    def step(self, symbol: str) -> Decimal:
        return self.adapter.rules(symbol).step_size

    # -- log capture
    def lines(self, level: str) -> list[str]:
        return [r["message"] for r in self.logs if r["level"].name == level]


async def build_engine(sim: SimulatorServer, inner: CcxtExchange, adapter: Any, journal: Journal,
                       pairs: tuple[Pair, ...], *, execution: ExecutionConfig, risk: RiskConfig, leverage: int,
                       margin_mode: str, external_path: Path, adopt: bool = False, resume_halted: bool = False,
                       moved_mids: Any = None, books: Any = None) -> tuple[ExecutionEngine, list[PairSpec]]:
    """The engine as ``app/assemble.py`` builds it, priced from the simulator's own book (not started)."""
    await inner.load_markets()
    specs = [PairSpec(p.pair_id, inner.resolve_symbol(p.leg_a), inner.resolve_symbol(p.leg_b), p.beta,
                      p.notional, "log") for p in pairs]

    def mid(symbol: str) -> Decimal | None:
        top = sim.replay.book(inner.rules(symbol).exchange_symbol)
        return top.mid if top else None

    def book(symbol: str) -> tuple[Decimal, Decimal] | None:
        top = sim.replay.book(inner.rules(symbol).exchange_symbol)
        return (top.bid, top.ask) if top else None

    engine = ExecutionEngine(adapter=adapter, journal=journal, pairs=specs, execution=execution, risk=risk,
                             leverage=leverage, margin_mode=margin_mode, mids=moved_mids or mid,
                             books=books(book) if books else book, external_positions_path=external_path,
                             adopt=adopt, resume_halted=resume_halted, seed=5)
    return engine, specs


@pytest.fixture(scope="module")
def sim_data() -> MarketData:
    return MarketData.load(SimulatorConfig(symbols=SYMBOLS))


@pytest.fixture
async def make_rig(sim_data: MarketData, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """``await make_rig(pairs=..., execution=..., risk=..., replay=..., fills=..., journal_cls=...)``.

    The simulator enforces Binance's real rate limits unless ``rate_limits`` says otherwise."""
    opened: list[tuple[SimulatorServer, ExecutionEngine, Journal, int]] = []

    async def make(*, pairs: tuple[Pair, ...] = (EOS_AXS,), execution: ExecutionConfig = FAST_EXEC,
                   risk: RiskConfig = WIDE_RISK, replay: ReplayConfig = REPLAY, fills: FillConfig = FillConfig(),
                   leverage: int = 2, hooked: bool = False, journal_path: Path | None = None,
                   journal_cls: type[Journal] = Journal, adopt: bool = False, resume_halted: bool = False,
                   sim: SimulatorServer | None = None, books: Any = None, moved_mids: Any = None,
                   rate_limits: RateLimitConfig = RateLimitConfig(), exchange: ExchangeConfig | None = None) -> Rig:
        if sim is None:
            sim = SimulatorServer(SimulatorConfig(symbols=SYMBOLS, port=0, replay=replay, fills=fills,
                                                  rate_limits=rate_limits), data=sim_data)
            await sim.start()
            sim.pause()
        records: list[Any] = []
        sink = logger.add(lambda message: records.append(message.record), level="DEBUG")
        base = exchange or ExchangeConfig(enable_rate_limit=False, leverage=leverage, recv_window_ms=RECV_WINDOW_MS)
        inner = CcxtExchange(base.model_copy(update={"base_url": sim.base_url}),
                             Secrets(sim.api_key, sim.api_secret, "test"))
        adapter: Any = HookedAdapter(inner) if hooked else inner
        journal = journal_cls.open(journal_path or tmp_path / f"journal-{len(opened)}.sqlite", mode="demo")
        engine, specs = await build_engine(sim, inner, adapter, journal, pairs, execution=execution, risk=risk,
                                           leverage=leverage, margin_mode="isolated",
                                           external_path=tmp_path / "external.json", adopt=adopt,
                                           resume_halted=resume_halted, moved_mids=moved_mids, books=books)
        opened.append((sim, engine, journal, sink))
        await engine.start()
        return Rig(sim, engine, adapter, journal, tmp_path, {s.pair_id: s for s in specs}, records,
                   sim.replay.now_ms)

    yield make
    stopped: set[int] = set()
    for sim, engine, journal, sink in reversed(opened):
        await engine.stop()
        journal.close()
        logger.remove(sink)
        if id(sim) not in stopped:
            stopped.add(id(sim))
            await sim.stop()


# ----------------------------------------------------------------------------- shared checks


async def wait_for_state(rig: Rig, pair_id: str, state: PairState, timeout_s: float = 15.0) -> None:
    """Event-driven wait (polling the engine, bounded) until the pair reaches ``state``."""
    async with asyncio.timeout(timeout_s):
        while rig.engine.pair_state(pair_id) is not state:
            await asyncio.sleep(0.02)


def hedge_excess(fa: Decimal, fb: Decimal, want_a: Decimal, want_b: Decimal, step_a: Decimal,
                 step_b: Decimal) -> tuple[Decimal, Decimal]:
    """(a over its exact hedge in a-steps, b over its exact hedge in b-steps); independent of the
    engine's code. A hedge within one lot step has both < 1."""
    return ((fa * want_b - fb * want_a) / (want_b * step_a), (fb * want_a - fa * want_b) / (want_a * step_b))


def history(rig: Rig, cid: str) -> list[OrderStatus]:
    """The statuses an order went through in the journal (a repeat that only adds data, such as
    the fee once the trades are read, is shown once)."""
    return [status for status, _ in itertools.groupby(e.to_status for e in rig.journal.order_events(cid))]


def entry_plan(rig: Rig, signal_id: str) -> tuple[Decimal, Decimal]:
    entries = {o.leg.value: o.qty for o in rig.journal.orders_for_signal(signal_id)
               if o.purpose is OrderPurpose.ENTRY}
    return entries["a"], entries["b"]


def assert_journal_matches_exchange(rig: Rig) -> None:
    """Per symbol, the journal's recorded fills net to the simulator's position, and no order
    of ours is left working on the exchange."""
    symbols = {s for spec in rig.pairs.values() for s in (spec.symbol_a, spec.symbol_b)}
    with sqlite3.connect(rig.journal.path) as conn:
        for symbol in symbols:
            rows = conn.execute("SELECT f.side, f.qty FROM fills f JOIN orders o USING (client_order_id)"
                                " WHERE o.symbol = ?", (symbol,)).fetchall()
            net = sum((D(q) if side == "buy" else -D(q) for side, q in rows), ZERO)
            assert net == rig.sim_qty(symbol), symbol
    assert not [o for o in rig.sim.order_log() if o["status"] in ("NEW", "PARTIALLY_FILLED")]


async def assert_round_trip_pnl(rig: Rig) -> int:
    """Every closed round trip's PnL equals, to 1e-8, the sum over its fills and fees computed
    (1) from the journal's fills table and (2) from the exchange's trades via ccxt.
    Returns how many round trips were checked."""
    trips = [t for t in rig.journal.round_trips() if not t.is_open]
    client = local_client(ccxt_async.binanceusdm, rig.sim)
    try:
        await client.load_markets()
        trades: dict[str, dict[str, Any]] = {}
        for symbol in {s for spec in rig.pairs.values() for s in (spec.symbol_a, spec.symbol_b)}:
            for trade in await client.fetch_my_trades(symbol, None, 1000):
                trades[f"{symbol}/{trade['id']}"] = trade
    finally:
        await client.close()
    with sqlite3.connect(rig.journal.path) as conn:
        for trip in trips:
            rows = conn.execute("SELECT f.side, f.qty, f.price, f.fee, o.exchange_order_id, o.symbol FROM fills f"
                                " JOIN orders o USING (client_order_id) WHERE o.round_trip_id = ?",
                                (trip.id,)).fetchall()
            assert rows, f"round trip {trip.id} has no fills"
            gross = sum((D(q) * D(p) * (1 if side == "sell" else -1) for side, q, p, _, _, _ in rows), ZERO)
            fees = sum((D(fee) for *_, fee, _, _ in rows), ZERO)
            assert abs(trip.gross_pnl - gross) <= D("1e-8") and abs(trip.fees - fees) <= D("1e-8")
            funding = trip.funding or ZERO  # funding paid or received while open (journal v4)
            assert abs(trip.net_pnl - (gross - fees + funding)) <= D("1e-8")
            order_ids = {(symbol, oid) for *_, oid, symbol in rows}
            mine = [t for t in trades.values() if (t["symbol"], str(t["order"])) in order_ids]
            assert len(mine) == len(rows)
            ex_gross = sum((D(t["info"]["qty"]) * D(t["info"]["price"]) * (1 if t["side"] == "sell" else -1)
                            for t in mine), ZERO)
            ex_fees = sum((D(t["info"]["commission"]) for t in mine), ZERO)
            assert abs(trip.net_pnl - (ex_gross - ex_fees + funding)) <= D("1e-8")
            # the trip is flat: what it bought it sold, per symbol
            held: dict[str, Decimal] = {}
            for t in mine:
                held[t["symbol"]] = held.get(t["symbol"], ZERO) + D(t["info"]["qty"]) * (1 if t["side"] == "buy" else -1)
            assert all(q == 0 for q in held.values()), held
    return len(trips)


def _seed_for(probability: float, wanted: Callable[[list[bool]], bool], draws: int) -> int:
    """The first fault seed whose reject stream gives a sequence ``wanted`` accepts (True = rejected)."""
    for seed in range(10_000):
        rng = random.Random(f"{seed}:reject")
        if wanted([rng.random() < probability for _ in range(draws)]):
            return seed
    raise AssertionError("no seed found")


