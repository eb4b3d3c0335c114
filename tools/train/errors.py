"""The error training raises for what the user can act on, and the one place a full disk is recognised."""

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path


class TrainingError(ValueError):
    """
    A refusal or a failure the user can act on (an argument, the data, the output folder, the disk, the Hub):
    `train_accelerate.main` prints its message as one line, without a traceback, and exits with status 1.
    """


def one_line(error: Exception) -> str:
    """An error's message on one line (library messages often span several)."""
    return " ".join(str(error).split()) or type(error).__name__


# Free space under which a failed write is taken for a full disk (torch reports one as "basic_ios::clear: iostream
# error", without the system's reason).
FULL_DISK_BYTES = 1 << 20


@contextmanager
def reporting_full_disk(path: Path, what: str):
    """A write of `what` into `path` that fails on a full disk becomes a TrainingError saying so."""
    try:
        yield
    except Exception as error:
        existing = next(folder for folder in (path, *path.parents) if folder.exists())
        free = shutil.disk_usage(existing).free
        out_of_space = getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)
        if not (out_of_space or free < FULL_DISK_BYTES):
            raise
        raise TrainingError(
            f"{path}: no space left on the device ({free:,} bytes free) while writing {what}; free some space, then "
            "continue with --resume_from_checkpoint latest"
        ) from error
