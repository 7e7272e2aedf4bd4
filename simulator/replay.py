"""Market replay: real recorded prices turned into a best bid/ask stream on a replay clock.

Two sources (``ReplayConfig.source``):

- ``"candles"`` (default): the bundled 5-minute perp candles. Each candle becomes
  ``steps_per_bar`` quotes along the path open -> first extreme -> second extreme -> close,
  in whole ticks (``market_replay/paths.py``). The extreme nearer to the open comes first
  (``path_order "nearest"``, ties by a seeded coin) or a seeded coin decides (``"random"``).
  The path price is the bid (less half the spread); ask = bid + the spread: ``spread_ticks``
  (>= 1), or with ``spread_range_fraction`` > 0 the larger of that and the bar's range in ticks
  times the fraction, so fast bars quote wider (the demo uses 1 %). Top-of-book sizes
  are ``top_qty_volume_fraction`` of the candle's volume times a seeded factor in [0.5, 1.5).
  Step k of a bar is stamped ``open + k * bar / steps``; all symbols step together, so one
  server loop iteration sends a batch of frames across symbols. With ``stamp_jitter`` each
  symbol stamps its quote of step k by its own seeded draw within ``[step k, step k + 1)``
  (sent in time order once the replay clock has passed them), as independent live streams do.
- ``"ticks"``: the real bookTicker captures at their recorded event times and update ids.
  Gaps longer than ``max_gap_ms`` (the captures are days apart) are skipped by jumping the
  clock (``gap_jump_target``).

Determinism: every random draw is a counter-based draw of (seed, symbol, stream, bar, step)
(``market_replay/kernels.py``), so the stream is a pure function of (data, config), whatever the
speed, the batching or a seek.

Two clocks: the replay clock maps wall time to exchange time, ``start + elapsed * speed``
(speed 0 = as fast as the consumer loop runs). Quotes, klines, order times and user-stream
events carry replay time. Request authentication (``timestamp``, ``recvWindow``) and
``/fapi/v1/time`` use the wall clock, because ccxt signs with the local wall clock.

Klines serve the history visible at the replay time, priced at the MID of the quotes the path
produced (so a bot's live bars, sampled from mids, and its warm-up candles share one price
definition; with an odd ``spread_ticks`` the mid is half a tick off the grid and klines carry
one more decimal): every closed candle
(``open + interval <= now``) plus the candle in progress, as Binance does; the latter is built
from the path quoted so far (high/low/close as quoted, volume the elapsed share of the
recorded volume). Replay starts at bar ``warmup_bars`` so a bot can warm up from the first
second. Intervals that are whole multiples of the data's bar are aggregated; finer intervals
(1m, 3m from 5m data) cannot be served truthfully and are refused with -1120. The tick source
serves 1m klines built from the replayed bids (volume 0: the captures hold no trades).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from decimal import Decimal

from matching.fill_model import BookTop
from matching.rules import SymbolRules
from simulator.config import ReplayConfig
from market_replay.datasets import CandleSeries, TickSeries
from market_replay.sources import (
    CandleSource,
    Instruments,
    QuoteTick,
    TickSource,
    select_klines,
    ticker_window,
)

__all__ = ["MarketReplay", "QuoteTick", "ReplayClock", "ReplayConfig"]


class ReplayClock:
    """Replay time as a function of wall time: ``anchor + (wall - wall_anchor) * speed``.

    ``target_ms`` is unbounded (``inf``) at speed 0. ``jump_to`` rebases (data gaps, restore).
    """

    def __init__(self, start_ms: int, speed: float, wall: Callable[[], float] = time.monotonic):
        self._wall = wall
        self._speed = speed
        self._anchor_ms = float(start_ms)
        self._anchor_wall = wall()
        self._paused = False

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    def target_ms(self) -> float:
        if self._paused:
            return self._anchor_ms
        if self._speed == 0:
            return math.inf
        return self._anchor_ms + (self._wall() - self._anchor_wall) * 1000.0 * self._speed

    def jump_to(self, replay_ms: float) -> None:
        self._anchor_ms = float(replay_ms)
        self._anchor_wall = self._wall()

    def set_speed(self, speed: float, current_ms: float) -> None:
        if not (speed >= 0 and math.isfinite(speed)):
            raise ValueError("speed must be a finite number >= 0")
        self._speed = speed
        self.jump_to(current_ms)

    def pause(self, current_ms: float) -> None:
        self.jump_to(current_ms)
        self._paused = True

    def resume(self) -> None:
        self._anchor_wall = self._wall()
        self._paused = False


class MarketReplay:
    """The simulated market: current quotes, klines and 24h stats at the replay time.

    ``advance_to(target_ms)`` emits every quote stamped <= target (bounded per call) in time
    order and keeps the latest quote of every symbol in flat lists (``bid``, ``ask`` in ticks,
    ``bid_lots``, ``ask_lots``) for the server's hot path; ``book`` gives exact decimals.
    """

    def __init__(
        self,
        *,
        rules: Mapping[str, SymbolRules],
        config: ReplayConfig,
        candles: Mapping[str, CandleSeries] | None = None,
        ticks: Mapping[str, TickSeries] | None = None,
    ) -> None:
        self.config = config
        self.inst = Instruments.from_rules(rules)
        self.symbols = list(self.inst.symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        self.ts = [0] * n
        self.bid = [0] * n
        self.ask = [0] * n
        self.bid_lots = [0] * n
        self.ask_lots = [0] * n
        self.uid = [0] * n
        self.has_quote = [False] * n
        self.source: CandleSource | TickSource
        if config.source == "candles":
            if candles is None:
                raise ValueError("the candles source needs candle series")
            self.source = CandleSource(self.inst, candles, config)
        else:
            if ticks is None:
                raise ValueError("the ticks source needs tick series")
            self.source = TickSource(self.inst, ticks, config)
        self.now_ms: int = self.source.start_ms

    @property
    def start_ms(self) -> int:
        return self.source.start_ms

    @property
    def finished(self) -> bool:
        return self.source.finished

    @property
    def base_interval_ms(self) -> int:
        return self.source.base_interval_ms

    def advance_to(self, target_ms: float) -> list[QuoteTick]:
        """Emit every quote up to ``target_ms`` (bounded per call); move ``now_ms`` along."""
        events = self.source.advance_to(target_ms)
        self._apply(events)
        nxt = self.source.next_event_ms()
        if math.isfinite(target_ms) and (nxt is None or nxt > target_ms):
            self.now_ms = max(self.now_ms, int(target_ms))  # caught up with the clock
        elif events:
            self.now_ms = max(self.now_ms, events[-1][1])  # budget-bound or as fast as possible
        return events

    def gap_jump_target(self) -> int | None:
        """Where to jump the clock when the next quote is more than ``max_gap_ms`` away."""
        nxt = self.source.next_event_ms()
        if nxt is not None and nxt - self.now_ms > self.config.max_gap_ms:
            return nxt
        return None

    def seek(self, replay_ms: int) -> None:
        """Continue as if the replay had already run to ``replay_ms`` (state restore)."""
        self._apply(self.source.seek(replay_ms))
        self.now_ms = replay_ms

    def book(self, symbol: str) -> BookTop | None:
        """The current top of book as exact decimals; None before the symbol's first quote."""
        i = self.index.get(symbol)
        if i is None or not self.has_quote[i]:
            return None
        rules = self.inst.rules[i]
        return BookTop(
            bid=self.bid[i] * rules.tick_size,
            ask=self.ask[i] * rules.tick_size,
            bid_qty=self.bid_lots[i] * rules.step_size,
            ask_qty=self.ask_lots[i] * rules.step_size,
        )

    def mark_price(self, symbol: str) -> Decimal | None:
        """Mid of the current quote: the simulator's mark price."""
        book = self.book(symbol)
        return None if book is None else book.mid

    def last_price(self, symbol: str) -> Decimal | None:
        """The latest path price (the bid): the "last trade" of tickers."""
        i = self.index.get(symbol)
        if i is None or not self.has_quote[i]:
            return None
        return self.bid[i] * self.inst.rules[i].tick_size

    def klines(
        self,
        symbol: str,
        interval_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[list[object]]:
        """Binance kline rows visible now: ``start_ms`` -> the first ``limit`` from there,
        only ``end_ms`` -> the last ``limit`` up to it, neither -> the latest ``limit``.

        Raises ``ValueError`` for an interval that is not a multiple of the data's bar.
        """
        view = self.source.bar_view(self.index[symbol], self.now_ms)
        return select_klines(view, interval_ms, start_ms, end_ms, limit)

    def ticker_24h(self, symbol: str) -> dict[str, object]:
        """Rolling 24h statistics at the replay time, Binance ``ticker/24hr`` shaped."""
        i = self.index[symbol]
        fmt = self.inst.price_fmt[i]
        bars = ticker_window(self.source.bar_view(i, self.now_ms), self.now_ms)
        last = self.bid[i] if self.has_quote[i] else (bars[-1].c if bars else 0)
        if not bars:
            text = fmt(last)
            return _ticker(symbol, text, text, text, text, Decimal(0), Decimal(0),
                           self.now_ms - 86_400_000, self.now_ms)
        open_price = bars[0].o
        high = max(max(b.h for b in bars), last)
        low = min(min(b.lo for b in bars), last)
        volume = sum((b.volume for b in bars), Decimal(0))
        quote_volume = sum((b.volume * Decimal(b.c_text) for b in bars), Decimal(0))
        return _ticker(symbol, bars[0].o_text, fmt(high), fmt(low), fmt(last), volume,
                       quote_volume, bars[0].open_ms, self.now_ms, change=last - open_price,
                       tick=self.inst.rules[i].tick_size, open_units=open_price)

    def _apply(self, events: list[QuoteTick]) -> None:
        ts, bid, ask, bl, al, uid, has = (self.ts, self.bid, self.ask, self.bid_lots,
                                          self.ask_lots, self.uid, self.has_quote)
        for i, t, b, a, bq, aq, u in events:
            ts[i] = t
            bid[i] = b
            ask[i] = a
            bl[i] = bq
            al[i] = aq
            uid[i] = u
            has[i] = True


def _ticker(
    symbol: str,
    open_text: str,
    high_text: str,
    low_text: str,
    last_text: str,
    volume: Decimal,
    quote_volume: Decimal,
    open_ms: int,
    close_ms: int,
    *,
    change: int = 0,
    tick: Decimal = Decimal(1),
    open_units: int = 0,
) -> dict[str, object]:
    change_dec = change * tick
    percent = (Decimal(100) * change / open_units) if open_units else Decimal(0)
    weighted = quote_volume / volume if volume else Decimal(last_text)
    return {
        "symbol": symbol,
        "priceChange": f"{change_dec:f}",
        "priceChangePercent": f"{percent.quantize(Decimal('0.001')):f}",
        "weightedAvgPrice": f"{weighted.quantize(tick) if tick < 1 else weighted:f}",
        "lastPrice": last_text,
        "lastQty": "0",
        "openPrice": open_text,
        "highPrice": high_text,
        "lowPrice": low_text,
        "volume": f"{volume:f}",
        "quoteVolume": f"{quote_volume.quantize(Decimal('0.0001')):f}",
        "openTime": open_ms,
        "closeTime": close_ms,
        "firstId": 0,
        "lastId": 0,
        "count": 0,
    }
