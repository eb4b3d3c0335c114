"""What the commands share: the errors they report, argument types, and the checkpoint-writing steps of init/convert."""

import argparse
from pathlib import Path

from ..export import check_config_overrides, hub_id, processor_for, save_detector
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


def check_overrides(overrides: dict):
    """`dfd.tools.export.check_config_overrides`, reported as a usage error (exit status 2)."""
    try:
        check_config_overrides(overrides)
    except ValueError as error:
        raise UsageError(f"--config-overrides: {error}") from None


def export_detector(model, output: Path, card: str) -> Path:
    """The model plus the processor its config implies, as a Hub-ready folder (see `dfd.tools.export.save_detector`)."""
    return save_detector(model, processor_for(model.config), output, readme=card)


def describe_clip(name: str) -> str:
    """A CLIP checkpoint as a card names it: a Hub id as it is, a local folder without its path."""
    repo = hub_id(name)
    return f"the CLIP checkpoint [`{repo}`](https://huggingface.co/{repo})" if repo else "a local CLIP checkpoint"


def parameter_counts(model) -> str:
    return f"{model.num_parameters():,} parameters, {model.num_parameters(only_trainable=True):,} trainable"
