"""What the commands share: the errors they report and their argument types. It imports no model library: every
command's parser uses it (see COMMANDS in __init__.py)."""

import argparse
from pathlib import Path

from ..files import check_new_output, parse_json_object


class CommandError(Exception):
    """A failure the user can act on, printed as `error: <message>` with exit status `exit_code`."""

    exit_code = 1


class UsageError(CommandError):
    exit_code = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    """argparse type for a threshold: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1), got {value:g}")
    return value


def json_object(text: str) -> dict:
    """`dfd.tools.files.parse_json_object` as an argparse type: a bad value is a usage error naming the option."""
    try:
        return parse_json_object(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def new_output_folder(path: str, overwrite: bool) -> Path:
    """`dfd.tools.files.check_new_output`, reported as a command error (exit status 1)."""
    try:
        return check_new_output(path, overwrite)
    except FileExistsError as error:
        raise CommandError(str(error)) from None
