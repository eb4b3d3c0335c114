"""What a run trains on and with: logged when it starts, saved at the end in metrics.json and the model card."""

import os
import platform

import torch
from accelerate.logging import get_logger

from .calibration import window_duration
from .data import VideoData, class_counts


logger = get_logger(__name__)


def describe_hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        device = f"{accelerator.device.type.upper()} ({platform.machine()}, {os.cpu_count()} cores)"
    return f"{accelerator.num_processes} x {device}"


def describe_run(args, accelerator, model, data: VideoData, max_train_steps: int, num_train_epochs: int) -> dict:
    unwrapped = accelerator.unwrap_model(model)
    effective_batch_size = (
        args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    )
    run = {
        "epochs": num_train_epochs,
        "data": {"train": class_counts(data.train["label"]), "validation": class_counts(data.validation["label"])},
        "skipped_videos": len(data.unreadable),
        "window_duration": window_duration(list(data.train["video"]), args.seed),
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
    return run
