"""AdamW on the trainable weights, the run's length in optimizer steps, and the learning-rate schedule."""

import math

import torch
from torch import nn
from transformers import get_scheduler
from transformers.trainer_pt_utils import get_parameter_names


def make_optimizer(args, model) -> torch.optim.AdamW:
    """AdamW on the trainable parameters, no weight decay on biases and norms."""
    decay_names = set(get_parameter_names(model, [nn.LayerNorm], ["bias"]))
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in trainable if n in decay_names], "weight_decay": args.weight_decay},
            {"params": [p for n, p in trainable if n not in decay_names], "weight_decay": 0.0},
        ],
        lr=args.learning_rate,
    )


def batch_settings(args, num_processes: int) -> dict:
    """What makes one optimizer step: a checkpoint's steps, schedule and place in the data mean these settings."""
    return {
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "num_processes": num_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
    }


def describe_batch(batch: dict) -> str:
    per_device, processes = batch["per_device_train_batch_size"], batch["num_processes"]
    accumulation = batch["gradient_accumulation_steps"]
    return (
        f"{per_device} per device x {processes} process(es) x {accumulation} accumulation steps = "
        f"{per_device * processes * accumulation}"
    )


def training_length(args, accelerator, train_dataloader) -> tuple[int, int]:
    """(optimizer steps in total, epochs), from --max_train_steps or --num_train_epochs."""
    num_update_steps_per_epoch = math.ceil(
        math.ceil(len(train_dataloader) / accelerator.num_processes) / args.gradient_accumulation_steps
    )
    max_train_steps = args.max_train_steps or args.num_train_epochs * num_update_steps_per_epoch
    return max_train_steps, math.ceil(max_train_steps / num_update_steps_per_epoch)


def make_lr_scheduler(args, optimizer, max_train_steps: int, accelerator):
    # The prepared scheduler steps once per process on every optimizer step (see AcceleratedScheduler).
    return get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * max_train_steps) * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
