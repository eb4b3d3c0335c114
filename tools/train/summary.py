"""What a run trains on and with: logged when it starts, saved at the end in metrics.json and the model card."""

import os
import platform

import torch
from accelerate.logging import get_logger

from ..data import Row
from .calibration import window_duration
from .data import VideoData, count_labels
from .splits import Overlap


logger = get_logger(__name__)


def describe_hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        device = f"{accelerator.device.type.upper()} ({platform.machine()}, {os.cpu_count()} cores)"
    return f"{accelerator.num_processes} x {device}"


def composition(rows: list[Row]) -> dict[str, dict[str, int]]:
    """Dataset -> method -> videos ("" for rows that name none: a folder's videos go by their label)."""
    counts = {}
    for row in rows:
        methods = counts.setdefault(row.dataset, {})
        methods[row.method or row.label] = methods.get(row.method or row.label, 0) + 1
    return counts


def describe_split(split: dict) -> str:
    """How the validation split was made and what it shares with training, in words (log and model card)."""
    if split["validation"] == "given":
        how = split["source"]
    else:
        kind = "by identity group" if split["validation"] == "identity" else "by a plain stratified split"
        how = f"{split['percentage']:g}% of the training videos held out {kind} (seed {split['seed']}"
        how += (
            f"; {split['excluded']} fakes whose identities fell on both sides excluded)" if split["excluded"] else ")"
        )
    leakage = split["leakage"]
    if leakage["groups_known"]:
        shared = (
            f"{leakage['shared_groups']} of its {leakage['validation_groups']} identity groups and "
            f"{leakage['shared_videos']} of its {leakage['validation_videos']} videos also in training"
        )
    else:
        shared = (
            f"{leakage['shared_videos']} of its {leakage['validation_videos']} videos also in training; the videos "
            "carry no identity groups, so shared identities are not measured"
        )
    return f"{how}: {shared}"


def describe_run(args, accelerator, model, data: VideoData, max_train_steps: int, num_train_epochs: int) -> dict:
    unwrapped = accelerator.unwrap_model(model)
    effective_batch_size = (
        args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    )
    run = {
        "epochs": num_train_epochs,
        "data": {"train": count_labels(data.train), "validation": count_labels(data.validation)},
        "datasets": {"train": composition(data.train), "validation": composition(data.validation)},
        "split": data.split,
        "augment": args.augment,
        "skipped_videos": len(data.unreadable),
        "window_duration": window_duration([row.path for row in data.train], args.seed),
        "num_processes": accelerator.num_processes,
        "effective_batch_size": effective_batch_size,
        "mixed_precision": accelerator.mixed_precision,
        "hardware": describe_hardware(accelerator),
        "trainable_parameters": unwrapped.num_parameters(only_trainable=True),
        "total_parameters": unwrapped.num_parameters(),
    }
    logger.info(
        f"Training on {len(data.train)} videos {run['data']['train']}, validating on {len(data.validation)} "
        f"{run['data']['validation']}, {run['skipped_videos']} unreadable skipped; {run['trainable_parameters']:,} of "
        f"{run['total_parameters']:,} parameters trainable; {num_train_epochs} epochs, {max_train_steps} optimizer "
        f"steps of {run['effective_batch_size']} videos ({accelerator.num_processes} processes, precision "
        f"{accelerator.mixed_precision})"
    )
    logger.info(f"Validation split: {describe_split(data.split)}")
    for overlap in data.split["overlaps"]:
        logger.warning(f"--allow_overlap: {Overlap(**overlap).describe()}")
    return run
