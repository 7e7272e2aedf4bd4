"""Funding of the simulated perpetuals: a configurable rate schedule, settled at funding times.

The recorded data carry no funding history and no index price, so both are modelled plainly:

- **Mark price** is the mid of the replayed quote (``MarketReplay.mark_price``); the index
  price is reported equal to it. Margin, unrealized PnL and funding notional all use it.
- **Rate**: every symbol pays ``FundingConfig.default_rate`` per funding interval unless
  ``rates`` names its own (a constant, so a run's funding is predictable).
- **Times**: every ``default_interval_seconds`` (8 h: 00:00, 08:00, 16:00 UTC, aligned on the
  epoch like Binance) of REPLAY time, or a symbol's own interval (4 h symbols exist on
  Binance). A funding time is settled when the replay clock first reaches it, at the mark
  then; a replay jump past several funding times settles each of them.
- **Payment**: ``position amount x mark x rate`` per account (``TradingEngine.settle_funding``):
  positive rates make longs pay shorts. It moves the USDT wallet and appears in
  ``GET /fapi/v1/income`` (FUNDING_FEE, with a tranId); the rate and time appear in
  ``GET /fapi/v1/fundingRate``.

Funding-rate history is kept in memory only (the state file keeps the income rows, which are
what an account's PnL depends on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from matching.engine import TradingEngine

EIGHT_HOURS_SECONDS = 8 * 3600


@dataclass(frozen=True, slots=True)
class FundingConfig:
    """The simulator's funding schedule: rates per interval (fractions) and intervals in seconds.

    ``enabled`` False keeps every rate at 0 and settles nothing.
    """

    enabled: bool = True
    default_rate: Decimal = Decimal("0.0001")
    rates: Mapping[str, Decimal] = field(default_factory=dict)
    default_interval_seconds: int = EIGHT_HOURS_SECONDS
    interval_seconds: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rate in (self.default_rate, *self.rates.values()):
            if not Decimal("-0.03") <= rate <= Decimal("0.03"):
                raise ValueError("funding rates must be within [-0.03, 0.03] per interval")
        for seconds in (self.default_interval_seconds, *self.interval_seconds.values()):
            if int(seconds) < 1:
                raise ValueError("funding intervals must be >= 1 second")

    def rate(self, symbol: str) -> Decimal:
        if not self.enabled:
            return Decimal(0)
        return self.rates.get(symbol, self.default_rate)

    def interval_ms(self, symbol: str) -> int:
        return int(self.interval_seconds.get(symbol, self.default_interval_seconds)) * 1000


class FundingSchedule:
    """Next funding time per symbol, the settled history, and the settling itself."""

    def __init__(self, config: FundingConfig, symbols: Iterable[str], now_ms: int) -> None:
        self.config = config
        self.history: list[dict[str, Any]] = []  # GET /fapi/v1/fundingRate rows, oldest first
        self._next: dict[str, int] = {}
        self.restart(symbols, now_ms)

    def restart(self, symbols: Iterable[str], now_ms: int) -> None:
        """Schedule from ``now_ms`` (start, restore, rewind): the next funding time after it."""
        self._next = {s: self.next_after(s, now_ms) for s in symbols}

    def next_after(self, symbol: str, now_ms: int) -> int:
        interval = self.config.interval_ms(symbol)
        return now_ms - now_ms % interval + interval

    def next_funding_ms(self, symbol: str) -> int:
        return self._next[symbol]

    def settle_due(self, now_ms: int, engine: TradingEngine, mark: Any) -> int:
        """Settle every funding time at or before ``now_ms``; returns how many were settled."""
        if not self.config.enabled:
            return 0
        settled = 0
        for symbol, due in self._next.items():
            interval = self.config.interval_ms(symbol)
            while due <= now_ms:
                price = mark(symbol)
                rate = self.config.rate(symbol)
                if price is not None:
                    engine.settle_funding(symbol, rate, price, due)
                    self.history.append({"symbol": symbol, "fundingRate": f"{rate:f}", "fundingTime": due,
                                         "markPrice": f"{price:f}"})
                    settled += 1
                due += interval
            self._next[symbol] = due
        return settled

    def rate_history(self, symbol: str | None, *, start_ms: int | None, end_ms: int | None,
                     limit: int) -> list[dict[str, Any]]:
        rows = [r for r in self.history if (symbol is None or r["symbol"] == symbol)
                and (start_ms is None or r["fundingTime"] >= start_ms)
                and (end_ms is None or r["fundingTime"] <= end_ms)]
        return rows[:limit] if start_ms is not None else rows[-limit:]

    def info_rows(self) -> list[dict[str, Any]]:
        """``GET /fapi/v1/fundingInfo``: the symbols whose interval differs from 8 h, as Binance."""
        rows = []
        for symbol in self._next:
            seconds = self.config.interval_ms(symbol) // 1000
            if seconds != EIGHT_HOURS_SECONDS:
                hours = seconds / 3600
                rows.append({"symbol": symbol, "adjustedFundingRateCap": "0.03", "adjustedFundingRateFloor": "-0.03",
                             "fundingIntervalHours": int(hours) if hours == int(hours) else hours,
                             "disclaimer": False})
        return rows
