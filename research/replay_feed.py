"""The backtest's market: the demo's replayed quotes and klines, and offline markets for paper fills.

Why this shape: a backtest must see exactly what ``python main.py demo`` shows the bot, so it builds
its quotes with the code the simulator serves them from (``market_replay.sources.CandleSource``:
``steps_per_bar`` quotes per candle along open -> extremes -> close, the spread, the seeded draws)
and turns them into ``Quote`` objects the way the demo's path does: the simulator formats integer
ticks and lots as Binance decimal text and ccxt parses that text with ``float``. Klines for the
warm-up are the simulator's too (``select_klines`` over the same source: mids of the path), parsed
as ccxt parses OHLCV rows. Nothing here imports ``simulator/`` (tests/test_layering.py).

``OfflineMarkets`` is the ``MarketSource`` a ``PaperExchange`` borrows markets, rules and precision
from, built from the recorded exchangeInfo exactly as the simulator builds its rules
(``market_replay.markets.build_rules``); its funding rate is the documented constant of
``config.demo`` (the bundled data carry no funding history), due every ``interval`` of exchange
time from the UTC epoch, as Binance's 00:00/08:00/16:00.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from core.errors import InvalidOrderError
from core.types import Quote
from execution.exchange import FundingRateInfo, MarketRules
from market_replay.config import ReplayConfig
from market_replay.datasets import CandleSeries
from market_replay.formats import UnitFormatter
from market_replay.sources import CandleSource, Instruments, select_klines
from matching.rules import SymbolRules


def unified_symbol(exchange_id: str, quote_asset: str = "USDT") -> str:
    """ccxt's unified symbol of a USDT-margined perpetual.

    >>> unified_symbol("BTCUSDT")
    'BTC/USDT:USDT'
    """
    return f"{exchange_id[: -len(quote_asset)]}/{quote_asset}:{quote_asset}"


@dataclass(frozen=True, slots=True)
class FundingSchedule:
    """A constant funding rate, due at every multiple of ``interval_ms`` of exchange time."""

    rate: Decimal
    interval_ms: int

    def next_after(self, ts_ms: int) -> int:
        """The first funding time strictly after ``ts_ms``.

        >>> FundingSchedule(Decimal("0.0001"), 28_800_000).next_after(28_800_000)
        57600000
        """
        return (ts_ms // self.interval_ms + 1) * self.interval_ms


class OfflineMarkets:
    """Markets, rules and precision of the replayed symbols, as the simulator serves them."""

    def __init__(self, rules: Mapping[str, SymbolRules], funding: FundingSchedule) -> None:
        self._rules = {unified_symbol(r.symbol, r.quote_asset): r for r in rules.values()}
        self._by_id = {r.symbol: s for s, r in self._rules.items()}
        self.funding = funding
        self.now_ms = 0  # set by the backtest loop: exchange time of the latest quote

    async def load_markets(self, *, reload: bool = False) -> None:
        return None

    def is_trading(self, symbol: str) -> bool:
        return symbol in self._rules

    def market_info(self, symbol: str) -> dict[str, Any]:
        return dict(self._rule(symbol).info)

    def rules(self, symbol: str) -> MarketRules:
        r = self._rule(symbol)
        return MarketRules(symbol, r.symbol, r.step_size, r.tick_size, r.min_qty, r.min_notional, r.max_qty,
                           r.market_max_qty)

    def resolve_symbol(self, raw: str) -> str:
        if raw in self._rules:
            return raw
        compact = raw.replace("/", "").split(":")[0]
        if compact in self._by_id:
            return self._by_id[compact]
        raise InvalidOrderError(f"unknown market {raw}")

    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal:
        """Floored to the lot step, as ccxt's ``amount_to_precision`` (TRUNCATE) does."""
        step = self._rule(symbol).step_size
        floored = (qty / step).to_integral_value(rounding=ROUND_DOWN) * step
        if floored <= 0:
            raise InvalidOrderError(f"amount of {symbol} must be greater than minimum amount precision of {step}")
        return floored

    def price_to_precision(self, symbol: str, price: Decimal) -> Decimal:
        tick = self._rule(symbol).tick_size
        return (price / tick).to_integral_value(rounding=ROUND_HALF_UP) * tick

    async def fetch_funding_rate(self, symbol: str) -> FundingRateInfo:
        return FundingRateInfo(symbol, self.funding.rate, None, self.funding.next_after(self.now_ms))

    def _rule(self, symbol: str) -> SymbolRules:
        rule = self._rules.get(symbol)
        if rule is None:
            raise InvalidOrderError(f"unknown market {symbol}")
        return rule


class ReplayFeed:
    """The demo's quote stream of ``candles`` from bar ``config.warmup_bars`` on, one step at a time."""

    def __init__(self, *, rules: Mapping[str, SymbolRules], candles: Mapping[str, CandleSeries],
                 config: ReplayConfig) -> None:
        self.inst = Instruments.from_rules(rules)
        self.source = CandleSource(self.inst, candles, config)
        self.symbols = [unified_symbol(r.symbol, r.quote_asset) for r in self.inst.rules]
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._qty_fmt = [UnitFormatter(r.step_size) for r in self.inst.rules]
        self.bar_ms = self.source.base_interval_ms
        self.now_ms = self.source.start_ms
        # float(text) of a tick count, remembered: a replay revisits the same few hundred prices
        self._price_cache: list[dict[int, float]] = [{} for _ in self.symbols]
        self._qty_cache: list[dict[int, float]] = [{} for _ in self.symbols]

    def _price(self, i: int, ticks: int) -> float:
        cache = self._price_cache[i]
        value = cache.get(ticks)
        if value is None:
            if len(cache) > 65_536:
                cache.clear()
            value = cache[ticks] = float(self.inst.price_fmt[i](ticks))
        return value

    def _qty(self, i: int, lots: int) -> float:
        cache = self._qty_cache[i]
        value = cache.get(lots)
        if value is None:
            if len(cache) > 65_536:
                cache.clear()
            value = cache[lots] = float(self._qty_fmt[i](lots))
        return value

    def quote(self, i: int, ts: int, bid: int, ask: int, bid_lots: int, ask_lots: int) -> Quote:
        """Symbol ``i``'s quote of these ticks and lots, as the demo's hub parses the simulator's text."""
        price, qty = self._price, self._qty
        return Quote(self.symbols[i], price(i, bid), price(i, ask), ts, qty(i, bid_lots), qty(i, ask_lots))

    def step_ready_ms(self, g: int) -> int:
        """When step ``g`` of the source may be sent (``next_ms`` of that step)."""
        return self.source.ready_ms(g)

    @property
    def finished(self) -> bool:
        return self.source.finished

    def next_ms(self) -> int | None:
        """Exchange time at which the next step may be sent (None at the end of the data)."""
        return self.source.next_event_ms()

    def step(self) -> list[Quote]:
        """The quotes of the next step, in time order, as the demo's hub receives them."""
        nxt = self.source.next_event_ms()
        if nxt is None:
            return []
        events = self.source.advance_to(nxt)
        quote = self.quote
        out = [quote(i, ts, bid, ask, bq, aq) for i, ts, bid, ask, bq, aq, _ in events]
        if out:
            self.now_ms = max(self.now_ms, out[-1].ts_ms, nxt)
        return out

    async def history(self, symbols: Iterable[str], *, bar_seconds: int, bars: int) -> dict[str, list[list[float]]]:
        """The newest ``bars`` closed OHLCV rows of each symbol at the replay time, as the
        demo's hub gets them from the simulator (``MarketDataHub.fetch_history``)."""
        interval = bar_seconds * 1000
        out: dict[str, list[list[float]]] = {}
        for symbol in dict.fromkeys(symbols):
            view = self.source.bar_view(self._index[symbol], self.now_ms)
            rows = select_klines(view, interval, None, None, bars + 1)
            out[symbol] = [[float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5])]  # type: ignore[arg-type]
                           for r in rows if int(r[0]) + interval <= self.now_ms][-bars:]  # type: ignore[call-overload]
        return out


def bar_index(series: CandleSeries, ts_ms: int) -> int:
    """Index of the first candle opening at or after ``ts_ms`` (may be ``len(series)``)."""
    first = series.open_ms[0]
    if ts_ms <= first:
        return 0
    return min(len(series), -(-(ts_ms - first) // series.interval_ms))
