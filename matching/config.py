"""Configuration of the matching engine: trading costs and accounts. Typed, frozen, units in names.

The simulator builds these from its CLI and ``SimulatorConfig`` (``simulator/config.py``
re-exports both), the paper exchange from ``core.config.PaperConfig``.

``DEFAULT_API_KEY`` / ``DEFAULT_API_SECRET`` are the default account's key pair: test
credentials for the local fake exchange, not secrets. The engine finds an account by its key
(the simulator's REST layer); the paper exchange names its one account ``paper``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

DEFAULT_API_KEY = "sim-api-key-0000000000000000000000000000000000000000000000000000000"
DEFAULT_API_SECRET = "sim-api-secret-000000000000000000000000000000000000000000000000000"


@dataclass(frozen=True, slots=True)
class FillConfig:
    """Trading costs of the venue (fractions of notional; slippage in bps).

    The default rates are Binance USD-M's VIP 0 (maker 0.02 %, taker 0.05 %). An account that
    pays fees in BNB (``AccountConfig.pay_fees_in_bnb``) gets ``bnb_fee_discount`` off, charged
    in BNB at ``bnb_price_usdt`` (the venue's BNB price; None: BNB fees are impossible, USDT is
    charged as Binance does when the BNB balance cannot cover a fee).
    """

    taker_fee_rate: Decimal = Decimal("0.0005")
    maker_fee_rate: Decimal = Decimal("0.0002")
    slippage_bps: Decimal = Decimal("0")
    depth_levels: int = 5
    bnb_price_usdt: Decimal | None = None
    bnb_fee_discount: Decimal = Decimal("0.1")

    def __post_init__(self) -> None:
        if not (Decimal("-0.01") <= self.maker_fee_rate <= Decimal("0.01")):
            raise ValueError("maker_fee_rate must be within [-0.01, 0.01]")
        if not (0 <= self.taker_fee_rate <= Decimal("0.01")):
            raise ValueError("taker_fee_rate must be within [0, 0.01]")
        if self.slippage_bps < 0 or self.depth_levels < 0:
            raise ValueError("slippage_bps and depth_levels must be >= 0")
        if self.bnb_price_usdt is not None and self.bnb_price_usdt <= 0:
            raise ValueError("bnb_price_usdt must be positive (or None)")
        if not 0 <= self.bnb_fee_discount < 1:
            raise ValueError("bnb_fee_discount must be within [0, 1)")


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One futures account (USDT-margined, one-way position mode).

    ``taker_fee_rate`` / ``maker_fee_rate`` None use the venue's (``FillConfig``); set them for
    an account on another fee tier (``GET /fapi/v1/commissionRate`` answers them).
    ``pay_fees_in_bnb`` with ``starting_balance_bnb`` models Binance's BNB fee deduction.
    """

    name: str = "default"
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    secret: str = field(default=DEFAULT_API_SECRET, repr=False)
    starting_balance_usdt: Decimal = Decimal("10000")
    default_leverage: int = 20
    default_margin_type: Literal["CROSSED", "ISOLATED"] = "CROSSED"
    taker_fee_rate: Decimal | None = None
    maker_fee_rate: Decimal | None = None
    pay_fees_in_bnb: bool = False
    starting_balance_bnb: Decimal = Decimal("0")

    def __post_init__(self) -> None:
        if not self.api_key or not self.secret:
            raise ValueError(f"account {self.name!r}: api_key and secret must be non-empty")
        if self.starting_balance_usdt < 0:
            raise ValueError(f"account {self.name!r}: starting_balance_usdt must be >= 0")
        if not 1 <= self.default_leverage <= 125:
            raise ValueError(f"account {self.name!r}: default_leverage must be within 1..125")
        if self.default_margin_type not in ("CROSSED", "ISOLATED"):
            raise ValueError(f"account {self.name!r}: default_margin_type CROSSED or ISOLATED")
        if self.starting_balance_bnb < 0:
            raise ValueError(f"account {self.name!r}: starting_balance_bnb must be >= 0")
        for rate in (self.taker_fee_rate, self.maker_fee_rate):
            if rate is not None and not Decimal("-0.01") <= rate <= Decimal("0.01"):
                raise ValueError(f"account {self.name!r}: fee rates must be within [-0.01, 0.01]")
