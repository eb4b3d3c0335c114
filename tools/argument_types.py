"""argparse types that the `dfd` commands and `train_accelerate.py` share: a bad value is a usage error naming it."""

import argparse

from .files import parse_json_object


def positive_int(text: str) -> int:
    """A count that must be at least 1 (0 epochs, steps or videos per batch would do nothing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    """A threshold or a rate: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {value:g}")
    return value


def json_object(text: str) -> dict:
    """`dfd.tools.files.parse_json_object`: a JSON object given inline or as the path of a JSON file."""
    try:
        return parse_json_object(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
