"""Pure unit tests of leg sizing and the precision protocol (execution/sizing.py) and of the
pre-trade risk checks (execution/risk.py). No exchange: precision comes from a double built on
Decimal that floors to the lot step the way ccxt's ``amount_to_precision`` (TRUNCATE) does."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

import pytest

from core.config import RiskConfig
from core.types import SignalType
from execution.risk import RiskRefusal, RiskSnapshot, check_entry
from execution.sizing import (SizingRefusal, SizingRefused, check_order_limits, entry_sides, plan_entry,
                              raw_quantities)

D = Decimal


@dataclass(frozen=True)
class Rules:
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal = D(5)
    max_qty: Decimal | None = None
    max_market_qty: Decimal | None = None


class PrecisionDouble:
    """Market rules per symbol; ``amount_to_precision`` truncates to the step, exactly."""

    def __init__(self, **rules: Rules) -> None:
        self._rules = rules
        self.calls: list[tuple[str, Decimal]] = []

    def rules(self, symbol: str) -> Rules:
        return self._rules[symbol]

    def amount_to_precision(self, symbol: str, qty: Decimal) -> Decimal:
        self.calls.append((symbol, qty))
        step = self._rules[symbol].step_size
        return (qty / step).to_integral_value(rounding=ROUND_DOWN) * step


BTC_ETH = PrecisionDouble(BTC=Rules(D("0.001"), D("0.001")), ETH=Rules(D("0.001"), D("0.001")))


def plan(precision: PrecisionDouble = BTC_ETH, *, gross: str = "1000", beta: str = "1", mid_a: str = "30000",
         mid_b: str = "2000", transform: str = "log", max_error: str = "0.05",
         kind: SignalType = SignalType.ENTER_LONG_SPREAD, a: str = "BTC", b: str = "ETH"):
    return plan_entry(signal_type=kind, symbol_a=a, symbol_b=b, gross_usdt=D(gross), beta=D(beta), mid_a=D(mid_a),
                      mid_b=D(mid_b), transform=transform, max_hedge_error=D(max_error), precision=precision)


# ----------------------------------------------------------------------------- formulas


def test_log_sizing_splits_value_by_beta() -> None:
    # V_y = G / (1 + beta) = 100, V_x = beta * V_y = 200
    assert raw_quantities(gross_usdt=D(300), beta=D(2), mid_a=D(10), mid_b=D(20), transform="log") == (D(20), D(5))


def test_raw_sizing_splits_units_by_beta() -> None:
    # q_y = G / (P_y + beta * P_x) = 300 / (20 + 2 * 10) = 7.5, q_x = beta * q_y = 15
    assert raw_quantities(gross_usdt=D(300), beta=D(2), mid_a=D(10), mid_b=D(20), transform="raw") == \
        (D(15), D("7.5"))


@pytest.mark.parametrize("transform", ["log", "raw"])
def test_unrounded_legs_add_up_to_the_gross_notional(transform: str) -> None:
    qa, qb = raw_quantities(gross_usdt=D(1234), beta=D("0.8097"), mid_a=D("0.4123"), mid_b=D("0.7301"),
                            transform=transform)
    assert abs(qa * D("0.4123") + qb * D("0.7301") - 1234) < D("1e-20")
    if transform == "raw":
        assert abs(qa / qb - D("0.8097")) < D("1e-24")
    else:
        assert abs(qa * D("0.4123") / (qb * D("0.7301")) - D("0.8097")) < D("1e-24")


@pytest.mark.parametrize(("mid_a", "mid_b"), [("0", "1"), ("1", "0"), ("-1", "1")])
def test_non_positive_mid_is_a_bad_price(mid_a: str, mid_b: str) -> None:
    with pytest.raises(SizingRefused) as caught:
        raw_quantities(gross_usdt=D(100), beta=D(1), mid_a=D(mid_a), mid_b=D(mid_b), transform="log")
    assert caught.value.reason is SizingRefusal.BAD_PRICE


# ----------------------------------------------------------------------------- rounding and plan


def test_quantities_are_floored_never_rounded_up() -> None:
    # raw BTC 500/30000 = 0.016666.. -> 0.016 (rounding would give 0.017); ETH 0.25 stays
    p = plan()
    assert (p.leg_a.qty, p.leg_b.qty) == (D("0.016"), D("0.25"))
    assert p.gross_notional == D("0.016") * 30000 + D("0.25") * 2000 == D(980)
    assert p.hedge_error == abs(D(480) / D(500) - 1) == D("0.04")
    assert p.ratio_a_per_b == D("0.064")
    assert BTC_ETH.calls[-2:] == [("BTC", D(500) / D(30000)), ("ETH", D("0.25"))]


@pytest.mark.parametrize(("kind", "sides"), [(SignalType.ENTER_LONG_SPREAD, ("sell", "buy")),
                                             (SignalType.ENTER_SHORT_SPREAD, ("buy", "sell"))])
def test_sides_long_spread_buys_y_short_spread_sells_y(kind: SignalType, sides: tuple[str, str]) -> None:
    p = plan(kind=kind)
    assert (p.leg_a.side, p.leg_b.side) == sides == entry_sides(kind)
    assert (p.leg_a.symbol, p.leg_b.symbol) == ("BTC", "ETH")


@pytest.mark.parametrize("kind", [SignalType.EXIT, SignalType.STOP_LOSS, SignalType.TIME_STOP])
def test_exits_have_no_entry_sides(kind: SignalType) -> None:
    with pytest.raises(ValueError):
        entry_sides(kind)


def test_raw_transform_measures_the_hedge_in_units() -> None:
    # q_y = 1000 / (2000 + 0.05 * 30000) = 0.285714.. -> 0.285; q_x = 0.0142857.. -> 0.014
    p = plan(beta="0.05", transform="raw", max_error="0.05")
    assert (p.leg_a.qty, p.leg_b.qty) == (D("0.014"), D("0.285"))
    assert p.hedge_error == abs(D("0.014") / D("0.285") - D("0.05")) / D("0.05")


def test_below_one_step_is_refused() -> None:
    with pytest.raises(SizingRefused) as caught:
        plan(gross="40")  # BTC 20 / 30000 = 0.00066 < 0.001
    assert caught.value.reason is SizingRefusal.BELOW_ONE_STEP
    assert "BTC" in str(caught.value)


def test_below_min_qty_is_refused_even_when_on_the_step() -> None:
    precision = PrecisionDouble(A=Rules(D("0.001"), D("0.01"), D(0)), B=Rules(D("0.001"), D("0.001"), D(0)))
    with pytest.raises(SizingRefused) as caught:
        plan(precision, a="A", b="B", gross="300", mid_a="30000")  # A: 0.005 on the step, < min 0.01
    assert caught.value.reason is SizingRefusal.BELOW_MIN_QTY


def test_above_max_qty_is_refused() -> None:
    precision = PrecisionDouble(A=Rules(D("0.001"), D("0.001"), max_qty=D("0.01")), B=Rules(D("0.001"), D("0.001")))
    with pytest.raises(SizingRefused) as caught:
        plan(precision, a="A", b="B")
    assert caught.value.reason is SizingRefusal.ABOVE_MAX_QTY


def test_market_orders_are_bounded_by_market_lot_size_not_lot_size() -> None:
    """EOS: LOT_SIZE allows 1,000,000, MARKET_LOT_SIZE 200,000; every leg may go to market."""
    eos = Rules(D("0.1"), D("0.1"), max_qty=D(1_000_000), max_market_qty=D(200_000))
    assert check_order_limits(PrecisionDouble(EOS=eos), "EOS", D(200_000), D(1), reduce_only=False) == D(200_000)
    with pytest.raises(SizingRefused, match="MARKET_LOT_SIZE 200000") as caught:
        check_order_limits(PrecisionDouble(EOS=eos), "EOS", D("200000.1"), D(1), reduce_only=False)
    assert caught.value.reason is SizingRefusal.ABOVE_MAX_QTY


def test_min_notional_boundary_is_inclusive() -> None:
    # each leg worth exactly 5 USDT is allowed; a cent less on one leg is refused
    precision = PrecisionDouble(A=Rules(D("0.01"), D("0.01")), B=Rules(D("0.01"), D("0.01")))
    p = plan(precision, a="A", b="B", gross="10", mid_a="1", mid_b="1")
    assert (p.leg_a.qty, p.leg_b.qty) == (D(5), D(5))
    with pytest.raises(SizingRefused) as caught:
        plan(precision, a="A", b="B", gross="9.98", mid_a="1", mid_b="1")
    assert caught.value.reason is SizingRefusal.BELOW_MIN_NOTIONAL


def test_hedge_error_refusal_names_the_numbers() -> None:
    # BTC 45 / 30000 = 0.0015 -> 0.001 (30 USDT) against ETH 0.0225 -> 0.022 (44 USDT): 31.8 % off
    with pytest.raises(SizingRefused) as caught:
        plan(gross="90")
    assert caught.value.reason is SizingRefusal.HEDGE_ERROR
    assert "0.001" in str(caught.value) and "0.022" in str(caught.value)


def test_hedge_error_boundary_is_inclusive() -> None:
    error = plan(max_error="0.5").hedge_error  # 0.04, exact
    assert error == D("0.04")
    assert plan(max_error=str(error)).hedge_error == error  # equal to the maximum: allowed
    with pytest.raises(SizingRefused) as caught:
        plan(max_error=str(error - D("1e-12")))
    assert caught.value.reason is SizingRefusal.HEDGE_ERROR


def test_check_order_limits_exempts_reduce_only_from_min_notional() -> None:
    precision = PrecisionDouble(EOS=Rules(D("0.1"), D("0.1")))
    assert check_order_limits(precision, "EOS", D("3.57"), D("0.73"), reduce_only=True) == D("3.5")
    with pytest.raises(SizingRefused) as caught:
        check_order_limits(precision, "EOS", D("3.57"), D("0.73"), reduce_only=False)
    assert caught.value.reason is SizingRefusal.BELOW_MIN_NOTIONAL
    with pytest.raises(SizingRefused) as caught:
        check_order_limits(precision, "EOS", D("0.05"), D("0.73"), reduce_only=True)
    assert caught.value.reason is SizingRefusal.BELOW_ONE_STEP


# ----------------------------------------------------------------------------- risk


RISK = RiskConfig(max_open_pairs=3, max_gross_exposure_usdt=5_000, max_daily_loss_usdt=100, min_free_margin_usdt=50)


def snap(*, open_pairs: int = 0, exposure: str = "0", realized: str = "0", free: str = "10000",
         leverage: int = 2) -> RiskSnapshot:
    return RiskSnapshot(open_pairs, D(exposure), D(realized), D(free), leverage)


def test_risk_allows_an_entry_within_every_limit() -> None:
    decision = check_entry(RISK, snap(open_pairs=2, exposure="3000", realized="-99.99", free="1050"), D(2000))
    assert decision.allowed and decision.refusal is None


@pytest.mark.parametrize(("open_pairs", "allowed"), [(2, True), (3, False), (4, False)])
def test_max_open_pairs(open_pairs: int, allowed: bool) -> None:
    decision = check_entry(RISK, snap(open_pairs=open_pairs), D(100))
    assert decision.allowed is allowed
    if not allowed:
        assert decision.refusal is RiskRefusal.MAX_OPEN_PAIRS and f"{open_pairs} pairs open, max 3" in decision.detail


@pytest.mark.parametrize(("exposure", "allowed"), [("4000", True), ("4000.01", False)])
def test_max_gross_exposure_counts_the_new_entry(exposure: str, allowed: bool) -> None:
    decision = check_entry(RISK, snap(exposure=exposure), D(1000))  # 4000 + 1000 == 5000 is allowed
    assert decision.allowed is allowed
    if not allowed:
        assert decision.refusal is RiskRefusal.MAX_GROSS_EXPOSURE


@pytest.mark.parametrize(("realized", "allowed"), [("-99.99", True), ("-100", False), ("-250", False), ("500", True)])
def test_max_daily_loss(realized: str, allowed: bool) -> None:
    decision = check_entry(RISK, snap(realized=realized), D(100))
    assert decision.allowed is allowed
    if not allowed:
        assert decision.refusal is RiskRefusal.MAX_DAILY_LOSS and "limit -100" in decision.detail


@pytest.mark.parametrize(("free", "leverage", "allowed"), [
    ("1050", 2, True),  # 2000 / 2 + 50 = 1050: just enough
    ("1049.99", 2, False),
    ("2050", 1, True),
    ("2049.99", 1, False),
])
def test_insufficient_margin_for_both_legs(free: str, leverage: int, allowed: bool) -> None:
    decision = check_entry(RISK, snap(free=free, leverage=leverage), D(2000))
    assert decision.allowed is allowed
    if not allowed:
        assert decision.refusal is RiskRefusal.INSUFFICIENT_MARGIN


def test_risk_reports_the_first_failing_check_in_a_fixed_order() -> None:
    everything_wrong = snap(open_pairs=9, exposure="99999", realized="-999", free="0")
    order = []
    config = RISK
    for relax in ("max_open_pairs", "max_gross_exposure_usdt", "max_daily_loss_usdt", None):
        decision = check_entry(config, everything_wrong, D(100))
        order.append(decision.refusal)
        if relax:
            config = config.model_copy(update={relax: 10**9})
    assert order == [RiskRefusal.MAX_OPEN_PAIRS, RiskRefusal.MAX_GROSS_EXPOSURE, RiskRefusal.MAX_DAILY_LOSS,
                     RiskRefusal.INSUFFICIENT_MARGIN]


def test_risk_refusal_values_match_the_engine_reasons() -> None:
    from execution.results import Reason
    assert {r.value for r in RiskRefusal} <= {r.value for r in Reason}
    assert {r.value for r in SizingRefusal} <= {r.value for r in Reason}
