"""The training loop's two steps: one epoch of optimizer steps, and the end of an epoch (log, best, checkpoint)."""

import json
import math
import time
from pathlib import Path

import torch
from accelerate.logging import get_logger
from torch.nn import functional as F

from ..files import json_ready
from .checkpoints import CHECKPOINT_PREFIX, save_checkpoint
from .output import CHECKPOINTS_NAME, write_log
from .transforms import augment_videos, normalize_videos


logger = get_logger(__name__)

LOWER_IS_BETTER = {"eer", "loss"}


def train_one_epoch(
    args,
    accelerator,
    model,
    optimizer,
    lr_scheduler,
    train_dataloader,
    processor,
    state: dict,
    epoch: int,
    *,
    max_train_steps: int,
    progress_bar,
    started_at: float,
):
    """One pass over the training data (the rest of it after a mid-epoch resume); updates `state` as it goes."""
    model.train()
    skip_batches = state["batch_in_epoch"] if epoch == state["epoch"] else 0
    epoch_dataloader = (
        accelerator.skip_first_batches(train_dataloader, skip_batches) if skip_batches else train_dataloader
    )
    if not skip_batches:
        state["epoch_loss_sum"], state["epoch_loss_count"] = 0.0, 0
    # Summed on the device over the accumulated batches, read once per optimizer step: reading each batch's loss
    # would make the host wait for the GPU before it prepares the next batch.
    accumulated_loss, accumulated_batches = 0.0, 0
    epoch_start, videos_seen = time.time(), 0
    for batch_index, batch in enumerate(epoch_dataloader, start=skip_batches):
        with accelerator.accumulate(model):
            pixel_values = normalize_videos(augment_videos(batch["frames"], args.brightness_jitter), processor)
            logits = model(pixel_values=pixel_values).logits
            loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=args.label_smoothing)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        accumulated_loss, accumulated_batches = accumulated_loss + loss.detach(), accumulated_batches + 1
        videos_seen += len(batch["labels"]) * accelerator.num_processes
        if not accelerator.sync_gradients:
            continue
        state["epoch_loss_sum"] += accumulated_loss.item()
        state["epoch_loss_count"] += accumulated_batches
        accumulated_loss, accumulated_batches = 0.0, 0
        state["global_step"] += 1
        state["batch_in_epoch"] = batch_index + 1
        learning_rate = lr_scheduler.get_last_lr()[0]
        progress_bar.update(1)
        progress_bar.set_postfix(
            loss=f"{loss.item():.4f}",
            lr=f"{learning_rate:.2e}",
            videos_per_s=f"{videos_seen / (time.time() - epoch_start):.1f}",
        )
        if state["global_step"] % args.logging_steps == 0:
            accelerator.log(
                {"train/loss": accelerator.reduce(loss.detach(), "mean").item(), "train/learning_rate": learning_rate},
                step=state["global_step"],
            )
        last_batch = batch_index + 1 == len(train_dataloader)
        if args.checkpointing_steps and state["global_step"] % args.checkpointing_steps == 0 and not last_batch:
            state["train_runtime"] = time.time() - started_at
            checkpoints_dir = Path(args.output_dir) / CHECKPOINTS_NAME
            save_checkpoint(accelerator, checkpoints_dir, {**state, "epoch": epoch}, args.checkpoints_total_limit)
        if state["global_step"] >= max_train_steps:
            break


def is_improvement(value: float, best: float | None, metric_name: str) -> bool:
    if best is None or (math.isnan(best) and not math.isnan(value)):
        return True
    if math.isnan(value):
        return False
    return value < best if metric_name in LOWER_IS_BETTER else value > best


def end_epoch(args, accelerator, lr_scheduler, state: dict, epoch: int, metrics: dict):
    """Log the epoch's training loss and validation metrics, note whether it is the best, and checkpoint it."""
    train_loss = accelerator.reduce(
        torch.tensor(state["epoch_loss_sum"] / max(1, state["epoch_loss_count"]), device=accelerator.device), "mean"
    ).item()
    entry = {
        "epoch": epoch + 1,
        "step": state["global_step"],
        "train_loss": train_loss,
        "learning_rate": lr_scheduler.get_last_lr()[0],
        **{f"eval_{name}": value for name, value in metrics.items()},
    }
    state["log_history"].append(entry)
    accelerator.log(
        {
            "train/epoch_loss": train_loss,
            "epoch": epoch + 1,
            **{f"eval/{name}": value for name, value in metrics.items()},
        },
        step=state["global_step"],
    )
    if accelerator.is_main_process:
        write_log(Path(args.output_dir), [entry], append=True)
    value = metrics[args.metric_for_best_model]
    if is_improvement(value, state["best_metric"], args.metric_for_best_model):
        state.update(
            best_metric=value, best_checkpoint=f"{CHECKPOINT_PREFIX}{state['global_step']}", best_epoch=epoch + 1
        )
    logger.info(f"Epoch {epoch + 1}: train loss {train_loss:.4f}, validation {json.dumps(json_ready(metrics))}")
    checkpoint_state = {**state, "epoch": epoch + 1, "batch_in_epoch": 0}
    checkpoints_dir = Path(args.output_dir) / CHECKPOINTS_NAME
    save_checkpoint(accelerator, checkpoints_dir, checkpoint_state, args.checkpoints_total_limit)
