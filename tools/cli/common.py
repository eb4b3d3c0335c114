"""What the commands share: the errors they report, argument types, and the checkpoint-writing steps of init/convert."""

from pathlib import Path

from ..argument_types import json_object, positive_int, probability  # noqa: F401 - the commands import them from here
from ..export import check_config_overrides, hub_id, processor_for, save_detector
from ..files import check_new_output


class CommandError(Exception):
    """A failure the user can act on, printed as `error: <message>` with exit status `exit_code`."""

    exit_code = 1


class UsageError(CommandError):
    exit_code = 2


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
