"""Pre-trade risk checks: pure, run before any order of an entry, each refusal named.

Exits are never refused by risk: closing a position always reduces risk.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from core.config import RiskConfig


class RiskRefusal(str, Enum):
    MAX_OPEN_PAIRS = "max_open_pairs"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    MAX_DAILY_LOSS = "max_daily_loss"
    INSUFFICIENT_MARGIN = "insufficient_margin"


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    """What the engine knows right before an entry."""

    open_pairs: int
    gross_exposure_usdt: Decimal  # sum of |qty| * mid over every open leg
    realized_pnl_today_usdt: Decimal  # net of fees and funding, UTC day (Journal.realized_pnl_since)
    free_margin_usdt: Decimal
    leverage: int


@dataclass(frozen=True, slots=True)
class RiskDecision:
    refusal: RiskRefusal | None
    detail: str = ""

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def check_entry(config: RiskConfig, snapshot: RiskSnapshot, new_gross_usdt: Decimal) -> RiskDecision:
    """The first failing check, in a fixed order, or an allowed decision.

    >>> from core.config import RiskConfig
    >>> snap = RiskSnapshot(5, Decimal(0), Decimal(0), Decimal(1000), 2)
    >>> check_entry(RiskConfig(max_open_pairs=5), snap, Decimal(100)).refusal.value
    'max_open_pairs'
    """
    if snapshot.open_pairs >= config.max_open_pairs:
        return RiskDecision(RiskRefusal.MAX_OPEN_PAIRS,
                            f"{snapshot.open_pairs} pairs open, max {config.max_open_pairs}")
    limit = Decimal(str(config.max_gross_exposure_usdt))
    if snapshot.gross_exposure_usdt + new_gross_usdt > limit:
        return RiskDecision(RiskRefusal.MAX_GROSS_EXPOSURE,
                            f"exposure {snapshot.gross_exposure_usdt:.2f} + {new_gross_usdt:.2f} > {limit} USDT")
    max_loss = Decimal(str(config.max_daily_loss_usdt))
    if snapshot.realized_pnl_today_usdt <= -max_loss:
        return RiskDecision(RiskRefusal.MAX_DAILY_LOSS,
                            f"realized today {snapshot.realized_pnl_today_usdt:.2f} USDT, limit -{max_loss}")
    needed = new_gross_usdt / Decimal(snapshot.leverage) + Decimal(str(config.min_free_margin_usdt))
    if snapshot.free_margin_usdt < needed:
        return RiskDecision(RiskRefusal.INSUFFICIENT_MARGIN,
                            f"free margin {snapshot.free_margin_usdt:.2f} < {needed:.2f} USDT needed for both legs")
    return RiskDecision(None)
