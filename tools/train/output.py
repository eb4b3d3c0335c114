"""
The run's output folder: its layout, what a killed run left there, the refusal to replace an earlier run's export
unless asked, and log.jsonl.
"""

import json
import shutil
from pathlib import Path

from accelerate.logging import get_logger

from ..files import json_ready, write_atomically
from .errors import TrainingError


logger = get_logger(__name__)

EXPORT_NAME = "model"
EVALUATION_NAME = "evaluation"  # the export's results on --eval_dir's sets
CHECKPOINTS_NAME = "checkpoints"
LOG_NAME = "log.jsonl"


def recover_killed_run(output_dir: Path) -> Path | None:
    """
    Remove what a killed run leaves in OUT: staging folders of an export (`.model.tmp-*`) or a checkpoint (`.tmp-*`)
    and half-written files (`.<name>.*.tmp`). An earlier export caught while being replaced (`model/` moved aside to
    `.model.old-*`, the new one not in place yet) is put back, since it is then the only export there is; returns
    where it was found, if so.
    """
    export, restored = output_dir / EXPORT_NAME, None
    for previous in sorted(output_dir.glob(f".{EXPORT_NAME}.old-*")):
        if export.exists():
            shutil.rmtree(previous)
        else:
            previous.rename(export)
            restored = previous
    checkpoints_dir = output_dir / CHECKPOINTS_NAME
    leftovers = [*output_dir.glob(f".{EXPORT_NAME}.tmp-*"), *output_dir.glob(".*.tmp"), *checkpoints_dir.glob(".tmp-*")]
    for leftover in leftovers:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return restored


def check_output_dir(args, accelerator):
    """
    Recover what a killed run left in --output_dir, and refuse to replace an earlier run's export unless asked (an
    earlier run's checkpoints are `checkpoints.find_checkpoint`'s to refuse). The folder itself is made by the first
    file written into it, so that a run refused later leaves none behind.
    """
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process and output_dir.is_dir() and (restored := recover_killed_run(output_dir)):
        logger.warning(f"Restored {output_dir / EXPORT_NAME} from {restored.name}, left by a run killed replacing it")
    accelerator.wait_for_everyone()
    new_run = not args.do_eval and not args.resume_from_checkpoint
    if new_run and (output_dir / EXPORT_NAME).exists() and not args.overwrite_output_dir:
        raise TrainingError(
            f"{output_dir / EXPORT_NAME} holds the export of an earlier run: start over with --overwrite_output_dir "
            "(it is replaced once the new export is ready), or choose another --output_dir"
        )


def write_log(output_dir: Path, entries: list[dict], append: bool = False):
    """log.jsonl, one JSON line per epoch."""
    lines = "".join(json.dumps(json_ready(entry)) + "\n" for entry in entries)
    if not append:
        write_atomically(output_dir / LOG_NAME, lines)
        return
    with open(output_dir / LOG_NAME, "a", encoding="utf-8") as log_file:
        log_file.write(lines)
