"""The candle replay's kernels (``market_replay/kernels.py``): paths, draws, text to units.

The intrabar path kernel must be exactly the arithmetic the Python ``paths.py`` had (kept in
``tests/quote_reference.py`` as the reference, compared on random candles and step counts); the draws must be SplitMix64, stable
and uniform, and independent of one another; the text conversion must equal ``to_units``.
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from market_replay import kernels
from market_replay.candle_arrays import text_to_units
from market_replay.formats import UnitFormatter
from market_replay.paths import allocate_steps, choose_low_first, intrabar_path, round_div
from tests.quote_reference import MASK, ref_allocate, ref_path, ref_round_div, ref_uniform

@st.composite
def candles(draw: st.DrawFn) -> tuple[int, int, int, int]:
    lo = draw(st.integers(1, 10**9))
    h = lo + draw(st.one_of(st.integers(0, 5), st.integers(0, 10**6)))
    o, c = draw(st.integers(lo, h)), draw(st.integers(lo, h))
    return o, h, lo, c


@settings(max_examples=600, deadline=None)
@given(candle=candles(), steps=st.one_of(st.integers(1, 12), st.integers(1, 2000)), low_first=st.booleans())
def test_the_path_kernel_is_the_python_arithmetic(candle: tuple[int, int, int, int], steps: int,
                                                  low_first: bool) -> None:
    o, h, lo, c = candle
    path = intrabar_path(o, h, lo, c, steps, low_first)
    assert path == ref_path(o, h, lo, c, steps, low_first)
    if steps >= 4:
        assert {o, h, lo, c} <= set(path) and path[0] == o and path[-1] == c
        assert min(path) == lo and max(path) == h


@settings(max_examples=400, deadline=None)
@given(segments=st.integers(0, 500), lengths=st.lists(st.integers(0, 50), min_size=1, max_size=6))
def test_allocate_steps_keeps_the_largest_remainder_and_tie_rules(segments: int, lengths: list[int]) -> None:
    if sum(lengths) == 0:
        lengths = lengths[:-1] + [1]
    assert allocate_steps(segments, lengths) == ref_allocate(segments, lengths)


@given(numerator=st.integers(-10**15, 10**15), denominator=st.integers(1, 10**6))
def test_round_div_rounds_half_away_from_zero(numerator: int, denominator: int) -> None:
    assert round_div(numerator, denominator) == ref_round_div(numerator, denominator)


def test_nearest_order_puts_the_closer_extreme_first_and_the_coin_breaks_ties() -> None:
    assert choose_low_first(10, 20, 8, "nearest", 0.99) is True
    assert choose_low_first(10, 12, 0, "nearest", 0.01) is False
    assert [choose_low_first(10, 12, 8, "nearest", u) for u in (0.49, 0.5)] == [True, False]
    assert [choose_low_first(10, 20, 8, "random", u) for u in (0.49, 0.5)] == [True, False]


# -- draws --------------------------------------------------------------------------------------

def test_the_mixer_is_splitmix64() -> None:
    """Seed 1234567: the first outputs of Vigna's reference ``splitmix64.c``."""
    outs = [int(kernels.mix64(np.uint64((1234567 + n * 0x9E3779B97F4A7C15) & MASK))) for n in (1, 2, 3)]
    assert outs == [6457827717110365317, 3203168211198807973, 9817491932198370423]


def test_the_kernel_draws_are_the_python_integer_ones() -> None:
    """No silent float or signed arithmetic in the kernel: bit for bit the Python integers,
    for keys above 2**63 too."""
    key = kernels.stream_key(7, "BTCUSDT", "lots")
    for key_ in (key, MASK, 0, 1 << 63):
        for bar, index in ((0, 0), (1, 0), (0, 1), (123_456, 59), (10**7, 2**31)):
            assert kernels.uniform(np.uint64(key_), bar, index) == ref_uniform(key_, bar, index)


def test_stream_keys_are_stable_and_distinct() -> None:
    """Pinned: a key is blake2b of ``seed:symbol:stream`` and must not change between runs or
    Python versions (``hash`` of a str would); changing it changes every replayed size and stamp."""
    assert kernels.stream_key(7, "BTCUSDT", "lots") == 18157843298258875948
    assert kernels.stream_key(7, "BTCUSDT", "lots") == int.from_bytes(
        hashlib.blake2b(b"7:BTCUSDT:lots", digest_size=8).digest(), "little")
    keys = {kernels.stream_key(seed, sym, stream) for seed in (1, 7) for sym in ("BTCUSDT", "ETHUSDT")
            for stream in kernels.STREAMS}
    assert len(keys) == 12


def _draws(key: int, bars: np.ndarray, indices: np.ndarray) -> np.ndarray:
    return kernels.uniform_array(np.uint64(key), bars.astype(np.int64), indices.astype(np.int64))


def test_draws_are_uniform_in_zero_one() -> None:
    key = kernels.stream_key(7, "ETHUSDT", "lots")
    bars, idx = np.divmod(np.arange(400_000), 60)
    u = _draws(key, bars, idx)
    assert u.min() >= 0.0 and u.max() < 1.0
    counts = np.bincount((u * 100).astype(np.int64), minlength=100)
    expected = len(u) / 100
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 160  # 99 degrees of freedom: p ~ 1e-4 would be 150
    assert abs(u.mean() - 0.5) < 0.002 and abs(u.var() - 1 / 12) < 0.001
    ks = np.abs(np.sort(u) - (np.arange(len(u)) + 0.5) / len(u)).max()
    assert ks < 1.95 / math.sqrt(len(u))  # Kolmogorov-Smirnov at 0.1 %


def test_draws_are_independent_across_indices_bars_and_streams() -> None:
    n = 200_000
    bars, idx = np.divmod(np.arange(n), 30)
    lots = kernels.stream_key(7, "BTCUSDT", "lots")
    base = _draws(lots, bars, 2 * idx)
    pairs = {
        "next index (the ask's draw)": _draws(lots, bars, 2 * idx + 1),
        "next bar, same step": _draws(lots, bars + 1, 2 * idx),
        "other stream": _draws(kernels.stream_key(7, "BTCUSDT", "stamps"), bars, 2 * idx),
        "other symbol": _draws(kernels.stream_key(7, "ETHUSDT", "lots"), bars, 2 * idx),
        "other seed": _draws(kernels.stream_key(8, "BTCUSDT", "lots"), bars, 2 * idx),
    }
    bound = 4.5 / math.sqrt(n)  # |r| of independent uniforms: sd 1/sqrt(n)
    for name, other in pairs.items():
        r = float(np.corrcoef(base, other)[0, 1])
        assert abs(r) < bound, (name, r)
        joint = np.histogram2d(base, other, bins=10, range=[[0, 1], [0, 1]])[0]
        chi2 = float(((joint - n / 100) ** 2 / (n / 100)).sum())
        assert chi2 < 160, (name, chi2)  # 81 degrees of freedom (2-D cells): independence, not just r


# -- recorded text -> units ---------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(
    st.integers(0, 9).flatmap(lambda places: st.decimals(min_value=-10**6, max_value=10**9, places=places,
                                                         allow_nan=False, allow_infinity=False)),
    st.integers(0, 10**12).map(Decimal)), min_size=1, max_size=30),
    unit=st.sampled_from(["0.1", "0.01", "0.001", "1", "10", "0.05", "0.5", "0.00001", "0.0000001"]))
def test_text_to_units_is_to_units(values: list[Decimal], unit: str) -> None:
    fmt = UnitFormatter(Decimal(unit))
    texts = [f"{v:f}" for v in values] + ["1e-3", "", "12.3.4", "-0.15", "99999999999999999999.1", "5."]
    expected: list[object] = []
    for t in texts:
        try:
            units = fmt.to_units(t)
            expected.append(units if -(1 << 63) <= units < 1 << 63 else ValueError)
        except Exception as exc:  # noqa: BLE001 - the same error must surface
            expected.append(type(exc))
    good = [t for t, e in zip(texts, expected) if not isinstance(e, type)]
    assert text_to_units(good, fmt).tolist() == [e for e in expected if not isinstance(e, type)]
    for t, e in zip(texts, expected):
        if isinstance(e, type):
            try:
                text_to_units([t], fmt)
            except Exception as exc:  # noqa: BLE001
                assert isinstance(exc, e)
            else:
                raise AssertionError(f"{t!r} converted, to_units raised {e}")
