"""Exact, fast text formatting of integer ticks and lots as Binance decimal strings.

The replay keeps prices as integer multiples of the tick and sizes as multiples of the lot
step, so the hot path (tens of thousands of bookTicker frames per second) formats integers
instead of doing Decimal arithmetic. For the usual power-of-ten units that is one ``divmod``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal


class UnitFormatter:
    """Formats ``n`` units of ``unit`` as text with exactly the unit's decimals.

    >>> UnitFormatter(Decimal("0.01"))(3103170)
    '31031.70'
    >>> UnitFormatter(Decimal("1"))(42)
    '42'
    >>> UnitFormatter(Decimal("0.5"))(3)
    '1.5'
    """

    __slots__ = ("unit", "decimals", "_scale", "_power_of_ten", "_cache")
    _CACHE_LIMIT = 16_384

    def __init__(self, unit: Decimal, *, cache: bool = False) -> None:
        if unit <= 0:
            raise ValueError("unit must be positive")
        self.unit = unit
        exponent = int(unit.normalize().as_tuple().exponent)
        self.decimals = max(0, -exponent)
        self._scale = 10**self.decimals
        self._power_of_ten = unit == Decimal(1).scaleb(-self.decimals)
        self._cache: dict[int, str] | None = {} if cache else None

    def __call__(self, units: int) -> str:
        # Replayed prices revisit the same few hundred ticks: a dict hit beats formatting.
        if self._cache is None:
            return self._format(units)
        text = self._cache.get(units)
        if text is None:
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            text = self._cache[units] = self._format(units)
        return text

    def _format(self, units: int) -> str:
        if self._power_of_ten:
            if self.decimals == 0:
                return str(units)
            sign = "-" if units < 0 else ""
            whole, frac = divmod(abs(units), self._scale)
            return f"{sign}{whole}.{frac:0{self.decimals}d}"
        return f"{(units * self.unit).quantize(Decimal(1).scaleb(-self.decimals)):f}"

    def to_units(self, value: Decimal | str) -> int:
        """``value`` in whole units, rounded half-even if it is off the grid.

        >>> UnitFormatter(Decimal("0.01")).to_units("31031.7")
        3103170
        """
        if self._power_of_ten and isinstance(value, str):
            whole, dot, frac = value.partition(".")
            if whole.isdigit() and (not dot or frac.isdigit()) and len(frac) <= self.decimals:
                return int(whole) * self._scale + (int(frac.ljust(self.decimals, "0"))
                                                   if self.decimals else 0)
        quotient = Decimal(value) / self.unit
        return int(quotient.to_integral_value(rounding=ROUND_HALF_EVEN))

    def to_decimal(self, units: int) -> Decimal:
        return units * self.unit
