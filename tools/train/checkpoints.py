"""
Checkpoints: written atomically, rotated, and resumed exactly.

Better than the anchors' `save_state` into the final folder: a checkpoint is staged and renamed into place with its
trainer_state.json written last, so a run killed mid-save never resumes from half a checkpoint; and the trainer
state holds the place in the epoch, so a resume continues with the very batch the killed run would have drawn next.
"""

import json
import shutil
from pathlib import Path

from accelerate.logging import get_logger
from safetensors import safe_open

from ..files import write_json
from .errors import TrainingError, reporting_full_disk
from .optimization import batch_settings, describe_batch
from .output import CHECKPOINTS_NAME, write_log


logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# Written last into a checkpoint: a checkpoint folder without it is incomplete and never resumed from.
TRAINER_STATE_NAME = "trainer_state.json"


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (by step). Staging folders and ones cut short by a crash are ignored."""
    found = []
    for path in checkpoints_dir.glob(f"{CHECKPOINT_PREFIX}*") if checkpoints_dir.is_dir() else []:
        step = path.name.removeprefix(CHECKPOINT_PREFIX)
        if step.isdigit() and (path / TRAINER_STATE_NAME).is_file():
            found.append((int(step), path))
    return [path for _, path in sorted(found)]


def find_checkpoint(args, accelerator) -> Path | None:
    """
    The checkpoint to resume from, checked before anything loads: --resume_from_checkpoint's (for 'latest' the
    newest complete one, or None when there is none), whose batch settings must be this run's. A new run refuses to
    mix with an earlier run's checkpoints, unless --overwrite_output_dir, which deletes them.
    """
    checkpoints_dir = Path(args.output_dir) / CHECKPOINTS_NAME
    if args.do_eval:
        return None
    if not args.resume_from_checkpoint:
        earlier_run = bool(complete_checkpoints(checkpoints_dir))
        accelerator.wait_for_everyone()  # every process has looked before the main one deletes them
        if earlier_run and not args.overwrite_output_dir:
            raise TrainingError(
                f"{checkpoints_dir} holds checkpoints of an earlier run: continue it with --resume_from_checkpoint "
                "latest, or start over with --overwrite_output_dir"
            )
        if earlier_run and accelerator.is_main_process:
            shutil.rmtree(checkpoints_dir)
        accelerator.wait_for_everyone()
        return None
    if args.resume_from_checkpoint == "latest":
        checkpoint = (complete_checkpoints(checkpoints_dir) or [None])[-1]
        if checkpoint is None:
            logger.info(f"No complete checkpoint in {checkpoints_dir}: starting from scratch")
            return None
    else:
        checkpoint = Path(args.resume_from_checkpoint)
        if not (checkpoint / TRAINER_STATE_NAME).is_file():
            raise TrainingError(f"{checkpoint}: not a complete checkpoint (no {TRAINER_STATE_NAME})")
    check_batch(checkpoint, batch_settings(args, accelerator.num_processes))
    return checkpoint


def check_batch(checkpoint: Path, batch: dict):
    """
    Refuse to resume with other batch settings: the checkpoint's step count, learning-rate schedule and place in the
    data are counted in its batches (with fewer videos per step, a finished run would even look finished and train
    nothing).
    """
    saved = json.loads((checkpoint / TRAINER_STATE_NAME).read_text()).get("batch")
    if saved is None or saved == batch:
        return
    raise TrainingError(
        f"{checkpoint} was trained with batches of {describe_batch(saved)} videos, this run's are "
        f"{describe_batch(batch)}: resume with --per_device_train_batch_size {saved['per_device_train_batch_size']} "
        f"--gradient_accumulation_steps {saved['gradient_accumulation_steps']} on {saved['num_processes']} "
        "process(es), or start over with --overwrite_output_dir"
    )


def new_trainer_state(batch: dict) -> dict:
    """Where a run stands, saved in every checkpoint as trainer_state.json."""
    return {
        "global_step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "best_metric": None,
        "best_checkpoint": None,
        "best_epoch": None,
        "log_history": [],
        "epoch_loss_sum": 0.0,
        "epoch_loss_count": 0,
        "train_runtime": 0.0,
        "batch": batch,
    }


def save_checkpoint(accelerator, checkpoints_dir: Path, trainer_state: dict, total_limit: int | None) -> Path:
    """
    accelerator.save_state into a staging folder; the main process adds trainer_state.json last and renames it into
    place. Then only the newest `total_limit` checkpoints and the best one are kept.
    """
    name = f"{CHECKPOINT_PREFIX}{trainer_state['global_step']}"
    staging, final = checkpoints_dir / f".tmp-{name}", checkpoints_dir / name
    with reporting_full_disk(staging, "a checkpoint"):
        accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with reporting_full_disk(staging, "a checkpoint"):
            write_json(staging / TRAINER_STATE_NAME, trainer_state)
        if final.exists():  # re-saved after resuming from an earlier checkpoint
            shutil.rmtree(final)
        staging.rename(final)
        rotate_checkpoints(checkpoints_dir, total_limit, trainer_state["best_checkpoint"])
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(checkpoints_dir: Path, limit: int | None, best_checkpoint: str | None):
    """Delete all but the newest `limit` checkpoints, never the best one (it is what gets exported)."""
    if limit is None:
        return
    for path in complete_checkpoints(checkpoints_dir)[:-limit]:
        if path.name != best_checkpoint:
            shutil.rmtree(path)


def keep_only_trainable_weights(models, weights, output_dir):
    """save_state pre-hook: checkpoints hold the adapters and head only (a few MB, not the frozen backbone, which is
    rebuilt from --init_from / --model_path on resume)."""
    for index, model in enumerate(models):
        trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        weights[index] = {name: tensor for name, tensor in weights[index].items() if name in trainable}


def load_checkpoint(accelerator, model, checkpoint: Path) -> dict:
    """Load a checkpoint's weights, optimizer, scheduler and RNG states; returns its trainer state."""
    with safe_open(checkpoint / "model.safetensors", framework="pt") as weights:
        saved = set(weights.keys())
    # save_state stores the unwrapped model (no DDP "module." prefix), so checkpoints work with any process count.
    unwrapped = accelerator.unwrap_model(model)
    trainable = {name for name, parameter in unwrapped.named_parameters() if parameter.requires_grad}
    if saved != trainable:
        raise TrainingError(
            f"{checkpoint}: its weights do not match this model's trainable parameters (saved from another model "
            f"configuration?); differing: {sorted(saved ^ trainable)[:5]}"
        )
    accelerator.load_state(str(checkpoint), strict=False)
    return json.loads((checkpoint / TRAINER_STATE_NAME).read_text())


def resume(args, accelerator, model, checkpoint: Path | None, max_train_steps: int) -> dict:
    """
    The trainer state to start from: a new one, or `checkpoint`'s, whose weights, optimizer, scheduler and RNG states
    are loaded too (its place in the data is in the state). log.jsonl starts over from it.
    """
    if checkpoint is None:
        state = new_trainer_state(batch_settings(args, accelerator.num_processes))
    else:
        state = load_checkpoint(accelerator, model, checkpoint)
        logger.info(
            f"Resumed from {checkpoint}: epoch {state['epoch']}, batch {state['batch_in_epoch']}, "
            f"step {state['global_step']}"
        )
        if state["global_step"] >= max_train_steps:
            logger.info(f"Its run is finished (step {state['global_step']} of {max_train_steps}): exporting again")
    if accelerator.is_main_process:  # the log holds exactly the epochs of the state we continue from
        write_log(Path(args.output_dir), state["log_history"])
    return state


def load_best_checkpoint(args, accelerator, model, state: dict) -> Path:
    """Load the run's best checkpoint (by --metric_for_best_model) into `model`; returns its folder."""
    best_checkpoint = Path(args.output_dir) / CHECKPOINTS_NAME / state["best_checkpoint"]
    load_checkpoint(accelerator, model, best_checkpoint)
    return best_checkpoint
