"""Argument types for the command line: a number parsed, then checked against its range.

One rule for every subcommand, so a bad ``--duration``, ``--speed``, ``--top`` or ``--alpha`` is
refused the same way: argparse's usage line, then what was given and what is expected.
"""

from __future__ import annotations

import argparse
from typing import Callable, TypeVar

N = TypeVar("N", int, float)


def checked_number(convert: Callable[[str], N], accept: Callable[[N], bool], *, noun: str,
                   expected: str) -> Callable[[str], N]:
    """An argparse ``type``: ``convert`` the text (else "'x' is not <noun>"), then ``accept`` it
    (else "'x': expected <expected>").

    >>> speed = checked_number(float, lambda v: 0 < v <= 1e6, noun="a number", expected="above 0")
    >>> speed("2.5")
    2.5
    >>> speed("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: '0': expected above 0
    """
    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
        return value

    return parse


positive_seconds = checked_number(float, lambda v: 0 < v < 1e9, noun="a number of seconds",
                                  expected="a positive number of seconds")
speed_factor = checked_number(float, lambda v: 0 < v <= 1e6, noun="a number",
                              expected="a speed factor above 0 (1 = real time)")
positive_int = checked_number(int, lambda v: v >= 1, noun="a whole number", expected="1 or more")
open_fraction = checked_number(float, lambda v: 0 < v < 1, noun="a number", expected="a number between 0 and 1")
