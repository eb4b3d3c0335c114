"""What the commands share: the errors they report and their argument types. It imports no model library: every
command's parser uses it (see COMMANDS in __init__.py)."""

from pathlib import Path

from ..argument_types import json_object, positive_int, probability  # noqa: F401 - the commands import them from here
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
