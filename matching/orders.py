"""Orders of the venue model: state, the lifecycle transition table, and Binance's JSON shapes.

The lifecycle is an explicit table (``TRANSITIONS``): ``Order.apply_status`` checks it and
raises ``IllegalTransition`` for anything else, so an engine bug cannot, say, fill a
canceled order silently.

Rendering follows Binance USD-M exactly where ccxt reads it: the REST order object
(``rest_payload``) and the user-stream ``ORDER_TRADE_UPDATE`` event (``ws_event``). Quantities
and prices are exact ``Decimal`` values rendered as plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELED = "CANCELED"
EXPIRED = "EXPIRED"

TRANSITIONS: dict[str, frozenset[str]] = {
    NEW: frozenset({PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED}),
    PARTIALLY_FILLED: frozenset({PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED}),
    FILLED: frozenset(),
    CANCELED: frozenset(),
    EXPIRED: frozenset(),
}
OPEN_STATUSES = frozenset({NEW, PARTIALLY_FILLED})
_AVG = Decimal("0.00000001")


class IllegalTransition(RuntimeError):
    """An engine bug: an order was asked to move to a status its table forbids."""


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One execution of an order (Binance "trade"): exact price, qty, fee and realized PnL."""

    trade_id: int
    price: Decimal
    qty: Decimal
    fee: Decimal
    is_maker: bool
    realized_pnl: Decimal
    time_ms: int
    fee_asset: str = "USDT"  # ``fee`` is in this asset (BNB when the account pays fees in BNB)

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


@dataclass(slots=True)
class Order:
    """An order of one account (one-way mode: positionSide is always BOTH)."""

    order_id: int
    client_order_id: str
    account: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    orig_qty: Decimal
    price: Decimal
    reduce_only: bool
    time_ms: int
    status: str = NEW
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    update_ms: int = 0
    trades: list[TradeRecord] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def avg_price(self) -> Decimal:
        if self.executed_qty == 0:
            return Decimal(0)
        return (self.cum_quote / self.executed_qty).quantize(_AVG)

    def apply_status(self, status: str, now_ms: int) -> None:
        """Move to ``status`` if the transition table allows it, else raise."""
        if status not in TRANSITIONS.get(self.status, frozenset()):
            raise IllegalTransition(f"order {self.order_id}: {self.status} -> {status}")
        self.status = status
        self.update_ms = now_ms

    def add_trade(self, trade: TradeRecord) -> None:
        """Record an execution and move to PARTIALLY_FILLED or FILLED."""
        if trade.qty <= 0 or trade.qty > self.remaining:
            raise IllegalTransition(
                f"order {self.order_id}: fill of {trade.qty} with {self.remaining} remaining"
            )
        new_status = FILLED if trade.qty == self.remaining else PARTIALLY_FILLED
        self.apply_status(new_status, trade.time_ms)
        self.trades.append(trade)
        self.executed_qty += trade.qty
        self.cum_quote += trade.quote_qty
        self.fees += trade.fee

    def rest_payload(self, *, with_time: bool = True) -> dict[str, Any]:
        """The REST order object (``POST/GET/DELETE /fapi/v1/order``, ``openOrders``)."""
        payload: dict[str, Any] = {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_order_id,
            "price": decimal_text(self.price),
            "avgPrice": decimal_text(self.avg_price),
            "origQty": decimal_text(self.orig_qty),
            "executedQty": decimal_text(self.executed_qty),
            "cumQty": decimal_text(self.executed_qty),
            "cumQuote": decimal_text(self.cum_quote),
            "timeInForce": self.time_in_force,
            "type": self.order_type,
            "reduceOnly": self.reduce_only,
            "closePosition": False,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": self.order_type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0,
            "updateTime": self.update_ms,
        }
        if with_time:
            payload["time"] = self.time_ms
        return payload

    def ack_payload(self) -> dict[str, Any]:
        """``newOrderRespType=ACK``: the order as accepted, before any fill."""
        payload = self.rest_payload(with_time=False)
        payload.update(status=NEW, avgPrice="0", executedQty="0", cumQty="0", cumQuote="0",
                       updateTime=self.time_ms)
        return payload

    def ws_event(self, execution_type: str, event_ms: int,
                 trade: TradeRecord | None = None) -> dict[str, Any]:
        """The user-stream ``ORDER_TRADE_UPDATE`` event for this order's latest change."""
        last_qty = trade.qty if trade else Decimal(0)
        last_price = trade.price if trade else Decimal(0)
        inner: dict[str, Any] = {
            "s": self.symbol,
            "c": self.client_order_id,
            "S": self.side,
            "o": self.order_type,
            "f": self.time_in_force,
            "q": decimal_text(self.orig_qty),
            "p": decimal_text(self.price),
            "ap": decimal_text(self.avg_price),
            "sp": "0",
            "x": execution_type,
            "X": self.status,
            "i": self.order_id,
            "l": decimal_text(last_qty),
            "z": decimal_text(self.executed_qty),
            "L": decimal_text(last_price),
            "T": event_ms,
            "t": trade.trade_id if trade else 0,
            "b": "0",
            "a": "0",
            "m": trade.is_maker if trade else False,
            "R": self.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": self.order_type,
            "ps": "BOTH",
            "cp": False,
            "rp": decimal_text(trade.realized_pnl) if trade else "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
        }
        if trade is not None:
            inner["N"] = trade.fee_asset
            inner["n"] = decimal_text(trade.fee)
        return {"e": "ORDER_TRADE_UPDATE", "E": event_ms, "T": event_ms, "o": inner}

    def trade_payloads(self) -> list[dict[str, Any]]:
        """``GET /fapi/v1/userTrades`` rows for this order."""
        buyer = self.side == "BUY"
        return [
            {
                "buyer": buyer,
                "commission": decimal_text(t.fee),
                "commissionAsset": t.fee_asset,
                "id": t.trade_id,
                "maker": t.is_maker,
                "orderId": self.order_id,
                "price": decimal_text(t.price),
                "qty": decimal_text(t.qty),
                "quoteQty": decimal_text(t.quote_qty),
                "realizedPnl": decimal_text(t.realized_pnl),
                "side": self.side,
                "positionSide": "BOTH",
                "symbol": self.symbol,
                "time": t.time_ms,
            }
            for t in self.trades
        ]

    def to_state(self) -> dict[str, Any]:
        """A JSON-safe snapshot for the state file (decimals as strings)."""
        return {
            "order_id": self.order_id, "client_order_id": self.client_order_id,
            "account": self.account, "symbol": self.symbol, "side": self.side,
            "order_type": self.order_type, "time_in_force": self.time_in_force,
            "orig_qty": str(self.orig_qty), "price": str(self.price),
            "reduce_only": self.reduce_only, "time_ms": self.time_ms, "status": self.status,
            "executed_qty": str(self.executed_qty), "cum_quote": str(self.cum_quote),
            "fees": str(self.fees), "update_ms": self.update_ms,
            "trades": [[t.trade_id, str(t.price), str(t.qty), str(t.fee), t.is_maker,
                        str(t.realized_pnl), t.time_ms, t.fee_asset] for t in self.trades],
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Order:
        order = cls(
            order_id=int(data["order_id"]), client_order_id=data["client_order_id"],
            account=data["account"], symbol=data["symbol"], side=data["side"],
            order_type=data["order_type"], time_in_force=data["time_in_force"],
            orig_qty=Decimal(data["orig_qty"]), price=Decimal(data["price"]),
            reduce_only=bool(data["reduce_only"]), time_ms=int(data["time_ms"]),
            status=data["status"], executed_qty=Decimal(data["executed_qty"]),
            cum_quote=Decimal(data["cum_quote"]), fees=Decimal(data["fees"]),
            update_ms=int(data["update_ms"]),
        )
        order.trades = [TradeRecord(int(t[0]), Decimal(t[1]), Decimal(t[2]), Decimal(t[3]),
                                    bool(t[4]), Decimal(t[5]), int(t[6]),
                                    t[7] if len(t) > 7 else "USDT")
                        for t in data["trades"]]
        return order


def decimal_text(value: Decimal) -> str:
    """Binance's decimal text: no exponent, no trailing zeros.

    >>> decimal_text(Decimal("1E+1")), decimal_text(Decimal("0.50")), decimal_text(Decimal("-0"))
    ('10', '0.5', '0')
    """
    if value == 0:
        return "0"
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
