"""The types of the management commands' numeric options, refused by argparse (a usage
error naming the option, before any work) when they cannot work: a batch of 0 did
nothing round after round without a word, a negative one failed each round with a
traceback, and an interval of zero, less or NaN ran rounds back to back against the
database."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """A whole number of at least 1 (`--batch`, `--ttl`)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least 1")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (`--tickets`: none is a valid count)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or more")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 (`--interval`, `--seconds`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
