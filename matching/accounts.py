"""Accounts, positions and margin: the bookkeeping half of the venue model (simulator and paper).

One-way position mode (``positionSide`` BOTH): each symbol has one signed position amount. The
account's position mode (``dual_side_position``) and Multi-Assets mode are kept and enforced
(``TradingEngine.set_position_mode`` / ``set_multi_assets_mode``), but hedge-mode LONG/SHORT
positions themselves are not modelled: such orders are refused.
Accounting rules, plainly:

- Increasing a position moves the entry price to the quantity-weighted average (kept to
  10 decimals); reducing it keeps the entry price and realizes
  ``(fill - entry) * closed qty * sign`` (8 decimals); flipping through zero closes the old
  side and opens the rest at the fill price.
- The wallet balance (USDT) changes by realized PnL minus fees (a fee paid in BNB comes off
  the BNB balance instead) and by funding payments (``TradingEngine.settle_funding``).
- Margin: position initial margin = |amount| * mark / leverage; open-order initial margin =
  the position-increasing part of each open order's remainder * its price / leverage;
  available = wallet + unrealized PnL - position margin - open-order margin. Cross and
  isolated are computed alike (isolated wallets are not separated).
- Liquidation (``liquidation_price``): every position is priced as an isolated one, whose
  isolated wallet is the initial margin it was opened with (|amount| * entry / leverage), by
  Binance's USD-M formula with the maintenance rate and amount of its bracket; the matching
  engine liquidates it when the mark price crosses that price. Cross-margin liquidation (the
  whole wallet backing every position) is not modelled.

Payload builders render ``GET /fapi/v3/account``, ``GET /fapi/v3/positionRisk`` and the
user-stream ``ACCOUNT_UPDATE`` event as Binance shapes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from matching.config import AccountConfig
from matching.orders import Order, decimal_text

_ENTRY = Decimal("1E-10")
_MONEY = Decimal("1E-8")
ZERO = Decimal(0)
MarkFn = Callable[[str], Decimal | None]


@dataclass(slots=True)
class Position:
    """A signed position amount with its entry price and cumulative realized PnL."""

    symbol: str
    amount: Decimal = ZERO
    entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    update_ms: int = 0

    def apply_fill(self, side: str, qty: Decimal, price: Decimal, now_ms: int) -> Decimal:
        """Book a fill; returns the PnL it realized (0 when it only adds to the position)."""
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if self.amount == 0 or (self.amount > 0) == (signed > 0):
            new_amount = self.amount + signed
            cost = abs(self.amount) * self.entry_price + qty * price
            self.entry_price = (cost / abs(new_amount)).quantize(_ENTRY, ROUND_HALF_EVEN)
            self.amount = new_amount
        else:
            closing = min(qty, abs(self.amount))
            direction = Decimal(1) if self.amount > 0 else Decimal(-1)
            realized = ((price - self.entry_price) * closing * direction).quantize(_MONEY)
            self.amount += signed
            if self.amount == 0:
                self.entry_price = ZERO
            elif (self.amount > 0) != (direction > 0):
                self.entry_price = price  # flipped: the rest opened at this fill
        self.realized_pnl += realized
        self.update_ms = now_ms
        return realized

    def unrealized(self, mark: Decimal | None) -> Decimal:
        if self.amount == 0 or mark is None:
            return ZERO
        return ((mark - self.entry_price) * self.amount).quantize(_MONEY)


@dataclass(slots=True)
class Account:
    """One simulated futures account: USDT wallet, positions, per-symbol settings."""

    name: str
    api_key: str = field(repr=False)
    secret: str = field(repr=False)
    wallet: Decimal
    default_leverage: int
    default_margin_type: str
    positions: dict[str, Position] = field(default_factory=dict)
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    fees_paid: Decimal = ZERO
    update_ms: int = 0
    taker_fee_rate: Decimal | None = None  # None: the venue's rate
    maker_fee_rate: Decimal | None = None
    pay_fees_in_bnb: bool = False
    bnb: Decimal = ZERO  # BNB balance for fee deduction
    funding_paid: Decimal = ZERO  # net funding (USDT), + received
    #: Position mode, for every symbol at once: False one-way (``BOTH``), True hedge (LONG/SHORT).
    dual_side_position: bool = False
    #: Multi-Assets mode: cross margin only, across assets (the model keeps USDT only).
    multi_assets_margin: bool = False

    @classmethod
    def from_config(cls, cfg: AccountConfig) -> Account:
        return cls(name=cfg.name, api_key=cfg.api_key, secret=cfg.secret,
                   wallet=cfg.starting_balance_usdt, default_leverage=cfg.default_leverage,
                   default_margin_type=cfg.default_margin_type, taker_fee_rate=cfg.taker_fee_rate,
                   maker_fee_rate=cfg.maker_fee_rate, pay_fees_in_bnb=cfg.pay_fees_in_bnb,
                   bnb=cfg.starting_balance_bnb)

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        return pos

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(symbol, self.default_leverage)

    def margin_type_of(self, symbol: str) -> str:
        return self.margin_type.get(symbol, self.default_margin_type)

    def to_state(self) -> dict[str, Any]:
        return {
            "wallet": str(self.wallet), "fees_paid": str(self.fees_paid),
            "bnb": str(self.bnb), "funding_paid": str(self.funding_paid),
            "update_ms": self.update_ms, "leverage": dict(self.leverage),
            "margin_type": dict(self.margin_type),
            "dual_side_position": self.dual_side_position,
            "multi_assets_margin": self.multi_assets_margin,
            "positions": {s: [str(p.amount), str(p.entry_price), str(p.realized_pnl),
                              p.update_ms] for s, p in self.positions.items()},
        }

    def load_state(self, data: Mapping[str, Any]) -> None:
        self.wallet = Decimal(data["wallet"])
        self.fees_paid = Decimal(data["fees_paid"])
        self.bnb = Decimal(data.get("bnb", self.bnb))
        self.funding_paid = Decimal(data.get("funding_paid", "0"))
        self.update_ms = int(data["update_ms"])
        self.leverage = {k: int(v) for k, v in data["leverage"].items()}
        self.margin_type = dict(data["margin_type"])
        self.dual_side_position = bool(data.get("dual_side_position", False))
        self.multi_assets_margin = bool(data.get("multi_assets_margin", False))
        self.positions = {
            s: Position(s, Decimal(v[0]), Decimal(v[1]), Decimal(v[2]), int(v[3]))
            for s, v in data["positions"].items()
        }


@dataclass(frozen=True, slots=True)
class MarginSummary:
    """Account-level margin figures in USDT."""

    wallet: Decimal
    unrealized: Decimal
    position_margin: Decimal
    order_margin: Decimal

    @property
    def margin_balance(self) -> Decimal:
        return self.wallet + self.unrealized

    @property
    def available(self) -> Decimal:
        return self.margin_balance - self.position_margin - self.order_margin


def increasing_qty(position_amount: Decimal, side: str, qty: Decimal) -> Decimal:
    """The part of an order of ``qty`` on ``side`` that would increase |position|."""
    reducing = (side == "SELL" and position_amount > 0) or (side == "BUY" and position_amount < 0)
    if not reducing:
        return qty
    return max(ZERO, qty - abs(position_amount))


def margin_summary(account: Account, open_orders: Iterable[Order], mark: MarkFn) -> MarginSummary:
    """Margin figures of ``account`` given its open orders and a mark-price lookup."""
    unrealized = ZERO
    position_margin = ZERO
    for symbol, pos in account.positions.items():
        if pos.amount == 0:
            continue
        price = mark(symbol) or pos.entry_price
        unrealized += pos.unrealized(price)
        position_margin += abs(pos.amount) * price / account.leverage_of(symbol)
    order_margin = ZERO
    for order in open_orders:
        if order.reduce_only:
            continue
        held = account.positions.get(order.symbol)
        amount = held.amount if held is not None else ZERO
        inc = increasing_qty(amount, order.side, order.remaining)
        if inc > 0:
            order_margin += inc * order.price / account.leverage_of(order.symbol)
    return MarginSummary(account.wallet, unrealized, position_margin.quantize(_MONEY),
                         order_margin.quantize(_MONEY))


def liquidation_price(position: Position, leverage: int, maint_rate: Decimal,
                      maint_amount: Decimal) -> Decimal | None:
    """The mark price at which ``position`` is liquidated (isolated margin), None when flat.

    Binance USD-M, one-way mode, isolated (other contracts' margin and PnL count 0):
    ``LP = (WB + cum - side * qty * entry) / (qty * MMR - side * qty)``, with WB the isolated
    wallet (here the initial margin: qty * entry / leverage), ``side`` +1 long / -1 short and
    ``qty`` the absolute size. Never below 0.

    >>> p = Position("EOSUSDT", Decimal("-100"), Decimal("1"))
    >>> liquidation_price(p, 50, Decimal("0.01"), Decimal(0))
    Decimal('1.00990099')
    """
    if position.amount == 0:
        return None
    qty = abs(position.amount)
    side = Decimal(1) if position.amount > 0 else Decimal(-1)
    wallet = qty * position.entry_price / leverage
    price = (wallet + maint_amount - side * qty * position.entry_price) / (qty * maint_rate - side * qty)
    return max(ZERO, price.quantize(_MONEY))


def position_risk_payload(account: Account, symbol: str, mark: Decimal | None,
                          maint_ratio: Decimal, order_margin: Decimal, *,
                          position: Position | None = None,
                          liquidation: Decimal | None = None) -> dict[str, Any]:
    """One ``GET /fapi/v3/positionRisk`` row (v3 shape: no leverage / marginType fields).

    ``position`` (default: the account's current one) lets a lagged report show an old state.
    """
    pos = position if position is not None else account.position(symbol)
    price = mark if mark is not None else pos.entry_price
    notional = (pos.amount * price).quantize(_MONEY)
    leverage = account.leverage_of(symbol)
    initial = (abs(notional) / leverage).quantize(_MONEY)
    isolated = account.margin_type_of(symbol) == "ISOLATED"
    isolated_margin = initial if isolated and pos.amount != 0 else ZERO
    return {
        "symbol": symbol,
        "positionSide": "BOTH",
        "positionAmt": decimal_text(pos.amount),
        "entryPrice": decimal_text(pos.entry_price),
        "breakEvenPrice": decimal_text(pos.entry_price),
        "markPrice": decimal_text(price),
        "unRealizedProfit": decimal_text(pos.unrealized(price)),
        "liquidationPrice": decimal_text(liquidation) if liquidation is not None and pos.amount else "0",
        "isolatedMargin": decimal_text(isolated_margin),
        "notional": decimal_text(notional),
        "marginAsset": "USDT",
        "isolatedWallet": decimal_text(isolated_margin),
        "initialMargin": decimal_text(initial + order_margin),
        "maintMargin": decimal_text((abs(notional) * maint_ratio).quantize(_MONEY)),
        "positionInitialMargin": decimal_text(initial),
        "openOrderInitialMargin": decimal_text(order_margin),
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": pos.update_ms,
    }


def account_v3_payload(account: Account, summary: MarginSummary,
                       positions: list[dict[str, Any]], now_ms: int) -> dict[str, Any]:
    """``GET /fapi/v3/account``: totals, the USDT asset row and the non-zero positions.

    The asset row's ``updateTime`` is never 0 (ccxt drops rows with 0 as uninitialised).
    """
    wallet, unrealized = decimal_text(account.wallet), decimal_text(summary.unrealized)
    margin_balance = decimal_text(summary.margin_balance)
    initial = decimal_text(summary.position_margin + summary.order_margin)
    available = decimal_text(summary.available)
    asset = {
        "asset": "USDT",
        "walletBalance": wallet,
        "unrealizedProfit": unrealized,
        "marginBalance": margin_balance,
        "maintMargin": "0",
        "initialMargin": initial,
        "positionInitialMargin": decimal_text(summary.position_margin),
        "openOrderInitialMargin": decimal_text(summary.order_margin),
        "crossWalletBalance": wallet,
        "crossUnPnl": unrealized,
        "availableBalance": available,
        "maxWithdrawAmount": available,
        "updateTime": account.update_ms or now_ms,
    }
    return {
        "totalInitialMargin": initial,
        "totalMaintMargin": "0",
        "totalWalletBalance": wallet,
        "totalUnrealizedProfit": unrealized,
        "totalMarginBalance": margin_balance,
        "totalPositionInitialMargin": decimal_text(summary.position_margin),
        "totalOpenOrderInitialMargin": decimal_text(summary.order_margin),
        "totalCrossWalletBalance": wallet,
        "totalCrossUnPnl": unrealized,
        "availableBalance": available,
        "maxWithdrawAmount": available,
        "assets": [asset],
        "positions": [
            {"symbol": p["symbol"], "positionSide": "BOTH", "positionAmt": p["positionAmt"],
             "unrealizedProfit": p["unRealizedProfit"], "isolatedMargin": p["isolatedMargin"],
             "notional": p["notional"], "isolatedWallet": p["isolatedWallet"],
             "initialMargin": p["initialMargin"], "maintMargin": p["maintMargin"],
             "updateTime": p["updateTime"]}
            for p in positions
        ],
    }


def account_update_event(account: Account, symbol: str, mark: Decimal | None,
                         event_ms: int, reason: str = "ORDER") -> dict[str, Any]:
    """The user-stream ``ACCOUNT_UPDATE`` after a fill on ``symbol``."""
    pos = account.position(symbol)
    wallet = decimal_text(account.wallet)
    return {
        "e": "ACCOUNT_UPDATE",
        "E": event_ms,
        "T": event_ms,
        "a": {
            "m": reason,
            "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}],
            "P": [{
                "s": symbol,
                "pa": decimal_text(pos.amount),
                "ep": decimal_text(pos.entry_price),
                "bep": decimal_text(pos.entry_price),
                "cr": decimal_text(pos.realized_pnl),
                "up": decimal_text(pos.unrealized(mark)),
                "mt": "isolated" if account.margin_type_of(symbol) == "ISOLATED" else "cross",
                "iw": "0",
                "ps": "BOTH",
            }],
        },
    }
