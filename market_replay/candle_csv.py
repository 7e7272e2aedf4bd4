"""The candle CSV read straight from its bytes: open times as int64, prices and volumes as exact
decimal digits, the text kept only as a lazy view.

Why: ``csv`` + a tuple of ``str`` per column costs about a microsecond a field, ~50 s for a year of
1-minute bars of 20 symbols, and holds gigabytes of small strings the replay never reads again
(it works in int64 ticks, ``candle_arrays.py``). Here one numba pass over the decompressed file
turns each field ``d...d[.d...d]`` into its digits as an integer (``mantissa``) and the number of
digits after the point (``places``): ``"31029.50"`` is ``(3102950, 2)``. That pair is the text,
losslessly, so :class:`DecimalColumn` gives the recorded string back on demand, and
:meth:`DecimalColumn.scaled` gives the integers of a unit of ``10**-d`` exactly (never a float).

Only canonical text takes the fast path: no sign, no leading zero (``0`` itself before the point),
at least one digit either side of a point, at most 18 significant digits. Any other numeric
spelling (``1.34e+10``, as some recorded volumes are) is kept as its text for that field alone;
anything else in the file (quotes, spaces, another byte, a wrong number of fields) makes
:func:`parse_candle_bytes` answer ``None`` and the caller reads the file with ``csv`` as before, so
every odd file behaves exactly as it always did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["DecimalColumn", "ParsedCandles", "parse_candle_bytes"]

_JIT = {"cache": True, "nogil": True}
EXOTIC = 255  # ``places`` of a field kept as text (an exponent, a sign, too many digits, ...)
_COLUMNS = 5  # open, high, low, close, volume
_FAIL_LAYOUT = 1  # a row the fast path does not take: read the file with csv


class DecimalColumn(Sequence[str]):
    """One column of recorded decimals as ``Sequence[str]``: item ``j`` is the recorded text,
    rebuilt from ``mantissa[j]`` and ``places[j]`` when read (about half a microsecond).

    >>> col = DecimalColumn(np.array([3102950, 5, 12], np.int64), np.array([2, 3, 0], np.uint8), {})
    >>> list(col), col[1:].places.tolist()
    (['31029.50', '0.005', '12'], [3, 0])
    >>> DecimalColumn(np.array([0], np.int64), np.array([EXOTIC], np.uint8), {0: "1.3e+10"})[0]
    '1.3e+10'

    Slices are views (the same arrays); ``+`` with another sequence gives a tuple, ``==`` compares
    the texts with any sequence of strings.
    """

    __slots__ = ("mantissa", "places", "exotic")
    __hash__ = None  # type: ignore[assignment]  # equal to tuples of its texts, which hash otherwise

    def __init__(self, mantissa: np.ndarray, places: np.ndarray, exotic: dict[int, str]) -> None:
        self.mantissa = mantissa  # int64: the field's digits as an integer (0 where exotic)
        self.places = places  # uint8: digits after the point, EXOTIC where the text is in exotic
        self.exotic = exotic  # {row: recorded text} of the fields the digits cannot spell

    def __len__(self) -> int:
        return int(self.mantissa.shape[0])

    def __getitem__(self, j):  # type: ignore[override]
        if isinstance(j, slice):
            rows = range(len(self))[j]
            if rows.step != 1:
                return tuple(self._text(r) for r in rows)
            a, b = rows.start, rows.stop
            return DecimalColumn(self.mantissa[a:b], self.places[a:b],
                                 {r - a: t for r, t in self.exotic.items() if a <= r < b})
        n = len(self)
        j = int(j)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(j)
        return self._text(j)

    def _text(self, j: int) -> str:
        return _spell(int(self.mantissa[j]), int(self.places[j]), j, self.exotic)

    def __iter__(self) -> Iterator[str]:
        exotic = self.exotic
        for j, (m, w) in enumerate(zip(self.mantissa.tolist(), self.places.tolist())):
            yield _spell(m, w, j, exotic)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __add__(self, other: Sequence[str]) -> tuple[str, ...]:
        return tuple(self) + tuple(other)

    def __radd__(self, other: Sequence[str]) -> tuple[str, ...]:
        return tuple(other) + tuple(self)

    def __repr__(self) -> str:
        head = ", ".join(repr(self[j]) for j in range(min(3, len(self))))
        return f"DecimalColumn([{head}{', ...' if len(self) > 3 else ''}], {len(self)} values)"

    def scaled(self, decimals: int, values: np.ndarray, bad: np.ndarray) -> None:
        """Each field into ``values`` (int64) as an integer of ``10**-decimals``, exactly what
        ``kernels.parse_scaled`` makes of its text, and ``bad`` (bool) where that would refuse
        it: a significant digit finer than that, more than 17 digits, or an exotic field."""
        scale_digits(self.mantissa, self.places, decimals, values, bad)

    def significant_decimals(self) -> int:
        """The most decimals any field uses once trailing zeros are dropped (exotic fields aside)."""
        return int(max_significant_places(self.mantissa, self.places)) if len(self) else 0


def _spell(m: int, w: int, j: int, exotic: dict[int, str]) -> str:
    if w == EXOTIC:
        return exotic[j]
    digits = str(m)
    if not w:
        return digits
    digits = digits.rjust(w + 1, "0")
    return f"{digits[:-w]}.{digits[-w:]}"


@dataclass(frozen=True, slots=True)
class ParsedCandles:
    """A candle file's rows: ``open_ms`` int64 and the five decimal columns."""

    open_ms: np.ndarray
    open: DecimalColumn
    high: DecimalColumn
    low: DecimalColumn
    close: DecimalColumn
    volume: DecimalColumn


def parse_candle_bytes(data: bytes) -> ParsedCandles | None:
    """Parse a decompressed candle CSV (``timestamp_ms,open,high,low,close,volume``); ``None``
    when the file is not plain enough for the fast path (the caller then reads it with ``csv``).

    Blank lines are skipped and ``\\r\\n`` line ends accepted, as ``csv`` does.

    >>> p = parse_candle_bytes(b"timestamp_ms,open,high,low,close,volume\\n1000,1.5,2,1,1.50,3e2\\n")
    >>> p.open_ms.tolist(), list(p.close), list(p.volume)
    ([1000], ['1.50'], ['3e2'])
    >>> parse_candle_bytes(b'timestamp_ms,open,high,low,close,volume\\n1000,"1.5",2,1,1.5,3\\n') is None
    True
    """
    first = data.find(b"\n")
    header = data[: first if first >= 0 else len(data)].rstrip(b"\r")
    if b'"' in header or b"\r" in header or header.count(b",") != _COLUMNS:
        return None
    try:
        header.decode("ascii")
    except UnicodeDecodeError:
        return None
    if first < 0:
        return _columns(np.empty(0, np.int64), np.empty((_COLUMNS, 0), np.int64),
                        np.empty((_COLUMNS, 0), np.uint8), [])
    buf = np.frombuffer(data, dtype=np.uint8)
    lines = data.count(b"\n") + 1
    open_ms = np.empty(lines, dtype=np.int64)
    mantissa = np.empty((_COLUMNS, lines), dtype=np.int64)
    places = np.empty((_COLUMNS, lines), dtype=np.uint8)
    spans = np.empty((4096 + lines, 4), dtype=np.int64)  # an exotic field a row; untouched pages cost nothing
    rows, n_exotic, status = parse_rows(buf, first + 1, open_ms, mantissa, places, spans)
    if status != 0:
        return None
    exotic: list[dict[int, str]] = [{} for _ in range(_COLUMNS)]
    for row, col, a, b in spans[:n_exotic].tolist():
        exotic[col][row] = data[a:b].decode("ascii")
    return _columns(open_ms[:rows], mantissa[:, :rows], places[:, :rows], exotic)


def _columns(open_ms: np.ndarray, mantissa: np.ndarray, places: np.ndarray,
             exotic: list[dict[int, str]]) -> ParsedCandles:
    cols = [DecimalColumn(mantissa[k], places[k], exotic[k] if exotic else {}) for k in range(_COLUMNS)]
    return ParsedCandles(open_ms, *cols)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@njit(**_JIT)
def parse_rows(buf: np.ndarray, pos: int, open_ms: np.ndarray, mantissa: np.ndarray, places: np.ndarray,
               spans: np.ndarray) -> tuple[int, int, int]:
    """Rows of ``buf`` from ``pos`` into the arrays; ``(rows, exotic fields, status)``.

    ``spans[e]`` = (row, column, start, end) of exotic field ``e``: only ``0-9 . + - e E``, but not
    canonical (see the module's docstring). Status ``_FAIL_LAYOUT`` for anything else: a byte
    outside those (a quote, a space), a field count other than 6, an empty or non-canonical open
    time, a lone ``\\r``, or more exotic fields than ``spans`` holds.
    """
    size = buf.shape[0]
    rows = 0
    n_exotic = 0
    while pos < size:
        ch = buf[pos]
        if ch == 10:  # blank line
            pos += 1
            continue
        if ch == 13 and pos + 1 < size and buf[pos + 1] == 10:
            pos += 2
            continue
        # open time: 0 or [1-9][0-9]*, at most 18 digits
        t = 0
        nd = 0
        lead_zero = ch == 48
        while pos < size and 48 <= buf[pos] <= 57:
            t = t * 10 + (buf[pos] - 48)
            nd += 1
            pos += 1
            if nd > 18:
                return rows, n_exotic, _FAIL_LAYOUT
        if nd == 0 or (lead_zero and nd > 1) or pos >= size or buf[pos] != 44:
            return rows, n_exotic, _FAIL_LAYOUT
        pos += 1
        for col in range(5):
            start = pos
            # the usual field, in one pass: [0-9]+ (. [0-9]+)? up to a delimiter, <= 18 digits
            pos, m = _run_of_digits(buf, pos, size, np.int64(0))
            int_len = pos - start
            w = 0
            dotted = pos < size and buf[pos] == 46
            if dotted:
                pos += 1
                f0 = pos
                pos, m = _run_of_digits(buf, pos, size, m)
                w = pos - f0
            at_end = pos >= size or buf[pos] == 44 or buf[pos] == 10 or buf[pos] == 13
            canonical = (at_end and int_len >= 1 and (int_len == 1 or buf[start] != 48)
                         and (w >= 1 or not dotted) and int_len + w <= 18)
            if not canonical:  # anything else: the careful scan (m may have overflowed above)
                pos, m, w, canonical, fail = scan_field(buf, start)
                if fail:
                    return rows, n_exotic, _FAIL_LAYOUT
            end = pos
            # the delimiter: ',' after the first four, the line's end after the volume
            if col < 4:
                if pos >= size or buf[pos] != 44:
                    return rows, n_exotic, _FAIL_LAYOUT
                pos += 1
            elif pos < size:
                if buf[pos] == 13:
                    if pos + 1 >= size or buf[pos + 1] != 10:
                        return rows, n_exotic, _FAIL_LAYOUT
                    pos += 1
                elif buf[pos] != 10:
                    return rows, n_exotic, _FAIL_LAYOUT
            if canonical:
                mantissa[col, rows] = m
                places[col, rows] = w
            else:
                if n_exotic >= spans.shape[0]:
                    return rows, n_exotic, _FAIL_LAYOUT
                spans[n_exotic, 0] = rows
                spans[n_exotic, 1] = col
                spans[n_exotic, 2] = start
                spans[n_exotic, 3] = end
                n_exotic += 1
                mantissa[col, rows] = 0
                places[col, rows] = 255
        pos += 1  # past the newline
        open_ms[rows] = t
        rows += 1
    return rows, n_exotic, 0


@njit(**_JIT)
def _run_of_digits(buf: np.ndarray, pos: int, size: int, m: np.int64) -> tuple[int, np.int64]:
    """Append the ASCII digits from ``pos`` to ``m`` (base 10); the position after them and ``m``."""
    while pos < size:
        d = np.int64(buf[pos]) - 48
        if d < 0 or d > 9:
            break
        m = m * 10 + d
        pos += 1
    return pos, m


@njit(**_JIT)
def scan_field(buf: np.ndarray, pos: int) -> tuple[int, int, int, bool, bool]:
    """One field from ``pos`` to its delimiter, any spelling: ``(end, mantissa, places,
    canonical, fail)``; ``fail`` for an empty field or a byte outside ``0-9 . + - e E``."""
    size = buf.shape[0]
    start = pos
    m = 0
    digits = 0  # significant digits in m
    int_digits = 0
    first_int = -1
    w = 0
    seen_dot = False
    canonical = True
    while pos < size:
        ch = buf[pos]
        if ch == 44 or ch == 10 or ch == 13:
            break
        pos += 1
        if 48 <= ch <= 57:
            d = np.int64(ch) - 48
            if seen_dot:
                w += 1
            else:
                int_digits += 1
                if int_digits == 1:
                    first_int = d
                elif first_int == 0:
                    canonical = False  # a leading zero
            if m > 0 or d != 0:
                digits += 1
                if digits > 18:
                    canonical = False
            if canonical:
                m = m * 10 + d
        elif ch == 46 and not seen_dot:
            seen_dot = True
            if int_digits == 0:
                canonical = False
        elif ch == 46 or ch == 43 or ch == 45 or ch == 69 or ch == 101:  # . + - E e
            canonical = False
        else:
            return pos, 0, 0, False, True
    if pos == start:
        return pos, 0, 0, False, True
    if int_digits == 0 or (seen_dot and w == 0) or w >= 255:
        canonical = False
    return pos, m, w, canonical, False


@njit(**_JIT)
def scale_digits(mantissa: np.ndarray, places: np.ndarray, decimals: int, values: np.ndarray,
                 bad: np.ndarray) -> None:
    """``mantissa * 10**(decimals - places)`` where that is exact and below 10**17 (the bound of
    ``kernels.parse_scaled``: the same fields are refused, the same values given)."""
    for n in range(mantissa.shape[0]):
        w = np.int64(places[n])
        m = mantissa[n]
        if w == 255:
            bad[n] = True
            values[n] = 0
            continue
        while w > decimals and m % 10 == 0:  # trailing zeros below the unit carry nothing
            m //= 10
            w -= 1
        ok = w <= decimals and m < 100_000_000_000_000_000
        k = decimals - w
        while ok and k > 0:
            if m >= 10_000_000_000_000_000:
                ok = False
            m *= 10
            k -= 1
        bad[n] = not ok
        values[n] = m if ok else 0


@njit(**_JIT)
def max_significant_places(mantissa: np.ndarray, places: np.ndarray) -> int:
    """``max(len(fraction.rstrip("0")))`` over the canonical fields."""
    best = 0
    for n in range(mantissa.shape[0]):
        w = np.int64(places[n])
        if w == 255 or w <= best:
            continue
        m = mantissa[n]
        while w > best and m % 10 == 0 and m > 0:
            m //= 10
            w -= 1
        if m == 0:
            continue
        if w > best:
            best = w
    return best
