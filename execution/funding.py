"""Funding payments into the journal: read from the exchange, tied to the round trips that paid them.

Why it is its own step: a perpetual position held through a funding time (every 8 h on Binance,
4 h on some symbols) pays or receives ``notional x rate`` from the account's wallet, without any
order or fill. The bot's PnL is computed from the journal, so the payments must be brought into
it: read per symbol (``ExchangeAdapter.fetch_funding_payments``, Binance's income FUNDING_FEE)
from the opening of the oldest open round trip on that symbol, and recorded idempotently by the
venue's id (``Journal.record_funding``), which ties each to the round trip open at its time.

When: with every reconciliation pass, every ``execution.funding_poll_seconds`` while a round
trip is open (so a payment is in the daily-loss figure soon after its funding time), and at each
exit before the round trip is closed (so the trip's net PnL includes what it paid). A failed
read is logged and tried again at the next of these; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loguru import logger

from core.errors import PermanentError, RetryableError
from execution.exchange import ExchangeAdapter
from execution.journal import Journal


@dataclass(frozen=True, slots=True)
class OpenTrip:
    """A round trip whose symbols may be paying funding."""

    pair_id: str
    round_trip_id: int
    symbols: tuple[str, str]


class FundingCollector:
    """Reads funding payments for open round trips and records the new ones."""

    def __init__(self, adapter: ExchangeAdapter, journal: Journal) -> None:
        self._adapter = adapter
        self._journal = journal
        self.recorded = 0
        self.failures = 0

    async def collect(self, trips: Iterable[OpenTrip]) -> int:
        """Record the payments on the trips' symbols since each symbol's oldest trip opened;
        returns how many were new. A read that fails is logged (the next pass retries)."""
        since: dict[str, int] = {}
        for trip in trips:
            record = self._journal.get_round_trip(trip.round_trip_id)
            if record is None:
                continue
            for symbol in trip.symbols:
                since[symbol] = min(since.get(symbol, record.opened_ts_ms), record.opened_ts_ms)
        new = 0
        for symbol, start_ms in sorted(since.items()):
            fetch = getattr(self._adapter, "fetch_funding_payments", None)
            if fetch is None:
                return new
            try:
                payments = await fetch(symbol, start_ms)
            except (RetryableError, PermanentError) as exc:
                self.failures += 1
                logger.warning("funding payments of {} cannot be read now ({}); the next pass retries", symbol, exc)
                continue
            for payment in payments:
                if self._journal.record_funding(symbol=symbol, payment_id=payment.payment_id, amount=payment.amount,
                                                asset=payment.asset, ts_ms=payment.ts_ms):
                    new += 1
        self.recorded += new
        return new
