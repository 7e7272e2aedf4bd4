"""The backtest's fast replay: every pair's generator on the replay kernel, the engine only at signals.

Why it is the same backtest (docs/architecture.md, "Backtest"): between two of its signals a pair's
generator is moved by nothing but its own two legs' quotes, so ``signals.replay_kernel.run_pair``
can run it over a block of the replay's quotes (``CandleSource.quote_block``) up to its next
signal, with the generator's own arithmetic and counters. Signals are then handed to the router
in the stream's order -- ``(step, stamp, symbol index)``, the order ``advance_to`` sends them in --
after the router's books and the paper exchange's books have been brought to that quote, and each
execution settles before the stream moves on, as in the per-quote loop. Funding is collected after
the step the per-quote loop collects it after. Anything that would make the pairs depend on each
other's timing between signals (the engine moving a pair's state while it ran ahead, a gap) stops
the run with ``ReplayDiverged`` instead of guessing; ``--per-quote`` runs the reference loop.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from app.pipeline import SignalRouter
from app.series import SeriesRecorder
from core.types import PairState
from execution.paper import PaperExchange
from market_replay.formats import UnitFormatter
from market_replay.sources import QuoteBlock
from research.replay_feed import OfflineMarkets, ReplayFeed
from signals import replay_kernel as rk
from signals.generator import SignalGenerator
from signals.spread import ReplayUnsupported

#: Steps read per block: 8,192 steps of 20 symbols are 1.3 MB per array, and a signal's books
#: are found inside one block.
BLOCK_STEPS = 8_192


class ReplayDiverged(RuntimeError):
    """The fast replay met what it cannot reproduce exactly; the message says what and where."""


@dataclass(frozen=True, slots=True)
class PriceScale:
    """``float(text)`` of ``n`` units of a tick, computed exactly: the text is the decimal
    ``n * mult / 10**d`` and IEEE division of two exact doubles rounds to the nearest double, as
    ``float`` does for the text (``tests/test_fast_replay.py`` checks every symbol)."""

    mult: int
    divisor: float

    @classmethod
    def of(cls, fmt: UnitFormatter) -> PriceScale:
        mult = fmt.unit.scaleb(fmt.decimals)
        if mult != mult.to_integral_value():
            raise ValueError(f"unit {fmt.unit} is not a whole number of 10^-{fmt.decimals}")
        return cls(int(mult), float(10 ** fmt.decimals))

    def floats(self, units: np.ndarray) -> np.ndarray:
        if np.any(np.abs(units) * self.mult >= 2**53):
            raise ValueError("units too large for an exact double")
        scaled = (units * self.mult).astype(np.float64)
        return scaled / self.divisor if self.divisor != 1.0 else scaled


@dataclass(slots=True)
class FloatBlock:
    """A ``QuoteBlock`` with the prices as the floats a ``Quote`` carries."""

    block: QuoteBlock
    bid: np.ndarray
    ask: np.ndarray


class PairCursor:
    """One pair's generator on the kernel: its state, its place in the block, its bar samples."""

    def __init__(self, gen: SignalGenerator, sym_a: int, sym_b: int, recorder: SeriesRecorder,
                 block_steps: int) -> None:
        self.gen = gen
        self.sym_a, self.sym_b = sym_a, sym_b
        self.recorder = recorder
        self.state: rk.ReplayState | None = None
        self.t = 0
        self.sub = 0
        self._samples = np.zeros((block_steps + 2, rk.SAMPLE_COLUMNS))

    def load(self) -> None:
        """Take the generator's state (after an execution moved it, or at a block's start)."""
        self.state = self.gen.export_replay()
        self.state.iv[rk.I_LAST_SAMPLE] = self.recorder.last_sampled_bucket(self.gen.pair_id)

    def run(self, fb: FloatBlock) -> int:
        """Feed quotes from the cursor on until the pair fires or the block ends."""
        st = self.state
        assert st is not None
        b = fb.block
        outcome, self.t, self.sub = rk.run_pair(
            b.stamp[self.sym_a], fb.bid[self.sym_a], fb.ask[self.sym_a], self.sym_a,
            b.stamp[self.sym_b], fb.bid[self.sym_b], fb.ask[self.sym_b], self.sym_b,
            self.t, self.sub, st.f, st.iv, st.buf, st.fstate, st.istate, st.gated, st.rejects, st.suppressed,
            self._samples)
        if outcome == rk.UNSUPPORTED:
            g = b.g0 + self.t
            raise ReplayDiverged(f"{self.gen.pair_id}: bars without a quote before step {g} "
                                 "(the per-quote path would wait for a backfill); run with --per-quote")
        return outcome

    def store(self) -> None:
        """Hand the kernel's state back to the generator and its bar samples to the recorder."""
        st = self.state
        assert st is not None
        self.gen.import_replay(st)
        n = int(st.iv[rk.I_SAMPLES])
        rows = [(int(r[0]), r[1], r[2], r[3], r[4]) for r in self._samples[:n].tolist()]
        self.recorder.add_replayed(self.gen.pair_id, rows, int(st.iv[rk.I_LAST_SAMPLE]))
        st.iv[rk.I_SAMPLES] = 0

    def fire_key(self, fb: FloatBlock) -> tuple[int, int, int]:
        """``(step, stamp, symbol)`` of the quote that fired (the one before the cursor)."""
        t, q = self.t, self.sub - 1
        sa, sb = int(fb.block.stamp[self.sym_a, t]), int(fb.block.stamp[self.sym_b, t])
        a_first = sb < 0 or (0 <= sa and (sa, self.sym_a) < (sb, self.sym_b))
        leg_a = a_first if q == 0 else not a_first
        return (t, sa, self.sym_a) if leg_a else (t, sb, self.sym_b)


AfterSignal = Callable[[], Awaitable[None]]


class FastReplay:
    """The replay loop of ``research/backtest.py`` on the kernel (see the module docstring)."""

    def __init__(self, *, feed: ReplayFeed, markets: OfflineMarkets, router: SignalRouter, paper: PaperExchange,
                 recorder: SeriesRecorder, generators: dict[str, SignalGenerator], after_signal: AfterSignal,
                 collect_funding: Callable[[], Awaitable[None]], block_steps: int = BLOCK_STEPS) -> None:
        self.feed, self.markets, self.router, self.paper = feed, markets, router, paper
        self.after_signal, self.collect_funding = after_signal, collect_funding
        self.block_steps = block_steps
        index = self._index = {s: i for i, s in enumerate(feed.symbols)}
        for gen in generators.values():
            if recorder.symbol_bar_ms(gen.symbol_a) != gen.calculator.bar_ms or \
                    recorder.symbol_bar_ms(gen.symbol_b) != gen.calculator.bar_ms:
                raise ReplayUnsupported(f"{gen.pair_id}: a leg shared with a pair of another bar size")
            gen.export_replay()  # rolling OLS and the like: refused before anything runs
        self.cursors = [PairCursor(g, index[g.symbol_a], index[g.symbol_b], recorder, block_steps)
                        for g in generators.values()]
        self._scales = [PriceScale.of(fmt) for fmt in feed.inst.price_fmt]
        self.quotes = 0
        # Where the replay's time goes (summary.json "replay_seconds"): executions (the engine, from
        # the signal to its settle), funding collections, and books brought up to date; the rest of
        # the loop is the signal pass (quote blocks and the kernel).
        self.seconds = {"executions": 0.0, "funding": 0.0, "books": 0.0}

    def end_step(self, end_ms: int) -> int:
        """The first step the per-quote loop would not send (ready at or after ``end_ms``)."""
        src = self.feed.source
        return src.first_step_after(end_ms - 1, src.g, src.total_steps)

    async def run(self, end_ms: int, next_funding: int, on_block: Callable[[int], None]) -> None:
        """Replay every step before ``end_ms``, collecting funding from ``next_funding`` on."""
        src = self.feed.source
        g, g_end = src.g, self.end_step(end_ms)
        while g < g_end:
            g1 = min(g_end, g + self.block_steps)
            fb = self._floats(src.quote_block(g, g1))
            next_funding = await self._block(fb, next_funding)
            self.quotes += int(np.count_nonzero(fb.block.stamp >= 0))
            src.g = g = g1
            self.feed.now_ms = max(self.feed.now_ms, self.feed.step_ready_ms(g1 - 1))
            on_block(self.feed.now_ms)

    async def _block(self, fb: FloatBlock, next_funding: int) -> int:
        n = fb.block.steps
        heap: list[tuple[tuple[int, int, int], int]] = []
        for k, cursor in enumerate(self.cursors):
            self.router.follow_engine(cursor.gen)  # the engine's word before the pair's next quote
            cursor.t = cursor.sub = 0
            cursor.load()
            if cursor.run(fb) == rk.FIRED:
                heapq.heappush(heap, (cursor.fire_key(fb), k))
        funding_t = self._funding_step(fb, next_funding)
        while heap or funding_t < n:
            if heap and (funding_t >= n or heap[0][0][0] <= funding_t):  # a step's quotes before its funding
                key = heap[0][0]
                fired = []
                while heap and heap[0][0] == key:  # pairs sharing the quote's symbol: one settle, as live
                    fired.append(self.cursors[heapq.heappop(heap)[1]])
                await self._execute(fb, fired, key)
                for cursor in fired:
                    if cursor.run(fb) == rk.FIRED:
                        heapq.heappush(heap, (cursor.fire_key(fb), self.cursors.index(cursor)))
            else:
                self._books(fb, (funding_t, 2**62, 2**62))
                self.markets.now_ms = max(self.markets.now_ms, int(fb.block.stamp[:, funding_t].max()))
                started = time.perf_counter()
                await self.collect_funding()
                self.seconds["funding"] += time.perf_counter() - started
                next_funding = self.markets.funding.next_after(self.feed.step_ready_ms(fb.block.g0 + funding_t))
                funding_t = self._funding_step(fb, next_funding, after=funding_t + 1)
        for cursor in self.cursors:
            cursor.store()
        self._books(fb, (n - 1, 2**62, 2**62))
        self.markets.now_ms = max(self.markets.now_ms, int(fb.block.stamp[:, n - 1].max()))
        return next_funding

    async def _execute(self, fb: FloatBlock, fired: list[PairCursor], key: tuple[int, int, int]) -> None:
        """The signals found at quote ``key``: books to that quote, every signal submitted in the
        router's order (as ``on_quote`` spawns them), then one settle."""
        self._books(fb, key, self._execution_symbols(fired))
        self.markets.now_ms = key[1]
        for cursor in fired:
            cursor.store()
            self.router.submit(cursor.gen, cursor.gen.emit_replayed(cursor.state))  # type: ignore[arg-type]
        started = time.perf_counter()
        await self.after_signal()
        self.seconds["executions"] += time.perf_counter() - started
        for other in self.cursors:
            if other not in fired and self.router.follow_engine(other.gen):
                raise ReplayDiverged(f"{other.gen.pair_id}: the engine moved it to {other.gen.state.value} while "
                                     f"{', '.join(c.gen.pair_id for c in fired)} executed at {key[1]}; "
                                     "run with --per-quote")
        for cursor in fired:
            self.router.follow_engine(cursor.gen)
            cursor.load()

    def _funding_step(self, fb: FloatBlock, next_funding: int, after: int = 0) -> int:
        """The block step after which funding is due (the per-quote loop's check), or the block's length."""
        g0 = fb.block.g0
        return self.feed.source.first_step_after(next_funding - 1, g0 + after, g0 + fb.block.steps) - g0

    def _execution_symbols(self, fired: list[PairCursor]) -> list[int]:
        """The symbols an execution of ``fired`` reads a book of: their legs (sizing, fills) and
        the legs of every pair the engine holds (exposure, the account's marks). The rest are
        brought up to date at each funding time and at each block's end."""
        engine = self.router.engine
        held = [(p.symbol_a, p.symbol_b) for p in engine.positions.values()
                if p.state is not PairState.FLAT] if engine is not None else []
        legs = {s for c in fired for s in (c.gen.symbol_a, c.gen.symbol_b)} | {s for pair in held for s in pair}
        return sorted(self._index[s] for s in legs if s in self._index)

    def _books(self, fb: FloatBlock, key: tuple[int, int, int], symbols: list[int] | None = None) -> None:
        """The latest quote at or before ``key`` of each of ``symbols`` (default: every one) into
        the router's and the paper's books."""
        started = time.perf_counter()
        self._push_books(fb, key, symbols)
        self.seconds["books"] += time.perf_counter() - started

    def _push_books(self, fb: FloatBlock, key: tuple[int, int, int], symbols: list[int] | None) -> None:
        t_key, ts_key, sym_key = key
        b = fb.block
        for i in range(len(self.feed.symbols)) if symbols is None else symbols:
            symbol = self.feed.symbols[i]
            t = t_key
            if b.stamp[i, t] < 0 or (int(b.stamp[i, t]), i) > (ts_key, sym_key):
                t -= 1
            while t >= 0 and b.stamp[i, t] < 0:
                t -= 1
            if t < 0:
                continue  # its latest quote is the previous block's, already in the books
            quote = self.feed.quote(i, int(b.stamp[i, t]), int(b.bid[i, t]), int(b.ask[i, t]),
                                    int(b.bid_lots[i, t]), int(b.ask_lots[i, t]))
            latest = self.router.latest.get(symbol)
            if latest is None or latest != quote:
                self.router.latest[symbol] = quote
                self.paper.on_quote(quote)

    def _floats(self, block: QuoteBlock) -> FloatBlock:
        bid = np.empty(block.bid.shape)
        ask = np.empty(block.ask.shape)
        for i, scale in enumerate(self._scales):
            bid[i] = scale.floats(block.bid[i])
            ask[i] = scale.floats(block.ask[i])
        return FloatBlock(block, bid, ask)
