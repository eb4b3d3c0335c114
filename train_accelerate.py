#!/usr/bin/env python
"""
Train (or evaluate) the DFD video deepfake detector with 🤗 Accelerate, following the model card's recipe.

    accelerate launch train_accelerate.py --train_dir DATA --output_dir OUT     # DATA/real/*, DATA/fake/*
    python train_accelerate.py --do_eval --model_path OUT/model --eval_dir DATA --output_dir EVAL_OUT

Recipe defaults (the card): frozen CLIP ViT-L/14 with spatiotemporal adapters, 12 frames at 384x384, batch 16 per
device with 2 accumulation steps, AdamW (weight decay 0.05, none on biases and norms), lr 5e-6 with cosine decay after
10% linear warmup, 12 epochs, cross-entropy with label smoothing 0.1, gradient clipping at 1.0, class-balanced
sampling, clip-level flip + brightness jitter, seed 42.

Writes into OUT: model/ (the best checkpoint, Hub-ready with a model card), metrics.json, roc_curve.png, log.jsonl,
runs/ (tensorboard) and checkpoints/ (resumable with --resume_from_checkpoint).
"""

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path


if not __package__:
    # Run as a file (`accelerate launch train_accelerate.py`): import the package this file sits in, a clone's root or
    # the installed `dfd`, never another copy that happens to be installed.
    _spec = importlib.util.spec_from_file_location("dfd", Path(__file__).resolve().with_name("__init__.py"))
    sys.modules["dfd"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["dfd"])

import datasets
import evaluate
import numpy as np
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from huggingface_hub import EvalResult, ModelCardData, create_repo, upload_folder
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm
from transformers import get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from dfd.modeling_dfd import DFDForVideoClassification
from dfd.processing_dfd import DFDVideoProcessor
from dfd.tools.export import check_config_overrides, processor_for, save_detector
from dfd.tools.files import json_ready, parse_json_object, write_atomically, write_json
from dfd.tools.plots import plot_roc_curve
from dfd.tools.training_data import (
    CLASS_NAMES,
    CachedClips,
    FrameCache,
    augment_clips,
    load_hub_video_tables,
    load_video_tables,
    normalize_clips,
    stratified_split,
)


logger = get_logger(__name__)

METRICS_PATH = Path(__file__).resolve().parent / "tools" / "metrics" / "dfd_metrics"
LOWER_IS_BETTER = {"eer", "loss"}
# Reported in the model card's model-index, with their display names.
CARD_METRICS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "roc_auc": "ROC AUC",
    "average_precision": "Average precision",
    "f1": "F1 (fake)",
    "recall_real": "Real detection rate (recall of real)",
    "recall_fake": "Fake detection rate (recall of fake)",
    "eer": "Equal error rate",
}
CHECKPOINT_PREFIX = "checkpoint-"
# Written last into a checkpoint: a checkpoint folder without it is incomplete and never resumed from.
TRAINER_STATE_NAME = "trainer_state.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train_dir",
        help="Folder with real/ and fake/ subfolders (video files or frame folders), or a CSV/JSONL manifest with "
        "columns path, label and optionally split.",
    )
    data.add_argument(
        "--validation_dir",
        help="Validation data, same forms as --train_dir. Default: the training data's validation split, else a "
        "stratified split of the training data.",
    )
    data.add_argument("--eval_dir", help="Data to evaluate with --do_eval, same forms as --train_dir.")
    data.add_argument(
        "--dataset_name",
        help="A Hub dataset (or local load_dataset path) with a video/path column and a label column, instead of "
        "--train_dir/--eval_dir.",
    )
    data.add_argument("--dataset_config_name")
    data.add_argument("--video_column", help="Column of --dataset_name holding videos. Default: 'video', else 'path'.")
    data.add_argument("--label_column", default="label")
    data.add_argument("--eval_split", help="Split evaluated by --do_eval. Default: test, else validation, else train.")
    data.add_argument(
        "--validation_split_percentage",
        type=float,
        default=10.0,
        help="Held-out share (stratified) when no validation split is given.",
    )
    data.add_argument(
        "--cache_dir",
        default=str(Path(datasets.config.HF_DATASETS_CACHE) / "dfd_frames"),
        help="Frame cache, shared by runs.",
    )
    data.add_argument(
        "--preprocessing_num_workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="Processes decoding videos into the frame cache.",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument(
        "--init_from",
        default="openai/clip-vit-large-patch14",
        help="CLIP checkpoint (Hub id or local dir) to build a new detector from.",
    )
    model.add_argument(
        "--model_path",
        help="A DFD checkpoint (e.g. an earlier OUT/model) to fine-tune or evaluate, instead of --init_from.",
    )
    model.add_argument(
        "--config_overrides",
        help='DFDConfig overrides for a new detector (with --init_from) as JSON, e.g. \'{"image_size": 224, '
        '"adapter_layers": []}\', or a JSON file.',
    )

    training = parser.add_argument_group("training")
    training.add_argument("--output_dir", required=True)
    training.add_argument("--per_device_train_batch_size", type=int, default=16)
    training.add_argument("--per_device_eval_batch_size", type=int, default=16)
    training.add_argument("--gradient_accumulation_steps", type=int, default=2)
    training.add_argument("--learning_rate", type=float, default=5e-6)
    training.add_argument("--weight_decay", type=float, default=0.05)
    training.add_argument("--num_train_epochs", type=int, default=12)
    training.add_argument(
        "--max_train_steps", type=int, help="Optimizer steps in total; overrides --num_train_epochs."
    )
    training.add_argument("--lr_scheduler_type", default="cosine")
    training.add_argument("--warmup_ratio", type=float, default=0.1)
    training.add_argument("--label_smoothing", type=float, default=0.1)
    training.add_argument("--max_grad_norm", type=float, default=1.0)
    training.add_argument("--brightness_jitter", type=float, default=0.2)
    training.add_argument("--seed", type=int, default=42)
    training.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        help="Default: accelerate's config (fp32 unless set). bf16 also keeps the frozen backbone in bf16.",
    )
    training.add_argument(
        "--gradient_checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Recompute activations in the backward pass. On by default: the card's batch of 16 x 12 frames at 384 "
        "peaks at ~121 GB of GPU memory without it (bf16, H200), ~24 GB with it.",
    )
    training.add_argument(
        "--checkpointed_blocks",
        type=lambda text: [int(index) for index in text.split(",") if index.strip()],
        help="With --gradient_checkpointing: only these encoder blocks (comma-separated indices), to trade less "
        "recomputation for memory. Default: every block that runs with autograd.",
    )
    training.add_argument(
        "--torch_compile", action="store_true", help="torch.compile each encoder block (model.compile_blocks())."
    )
    training.add_argument(
        "--metric_for_best_model",
        default="roc_auc",
        choices=[*CARD_METRICS, "f1_macro", "loss"],
        help="Validation metric that picks the exported checkpoint (eer and loss: lower is better).",
    )
    training.add_argument("--logging_steps", type=int, default=10)
    training.add_argument(
        "--report_to", default="tensorboard", help="Accelerate trackers: tensorboard, wandb, all, none, ..."
    )

    checkpoints = parser.add_argument_group("checkpoints and export")
    checkpoints.add_argument(
        "--checkpointing_steps",
        type=int,
        help="Also save a checkpoint every N optimizer steps (one is always saved at each epoch end).",
    )
    checkpoints.add_argument(
        "--checkpoints_total_limit", type=int, default=3, help="Keep the newest N checkpoints (plus the best)."
    )
    checkpoints.add_argument(
        "--resume_from_checkpoint", help="'latest' (of OUT/checkpoints; a fresh start if none) or a checkpoint folder."
    )
    checkpoints.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Start over in an --output_dir that holds checkpoints of an earlier run (they are deleted).",
    )
    checkpoints.add_argument(
        "--do_eval", action="store_true", help="Only evaluate --model_path on --eval_dir (or --dataset_name)."
    )
    checkpoints.add_argument("--push_to_hub", action="store_true")
    checkpoints.add_argument("--hub_model_id", help="ORG/NAME to upload OUT/model to with --push_to_hub.")
    checkpoints.add_argument("--hub_private", action="store_true")
    args = parser.parse_args(argv)

    if args.do_eval:
        if not args.model_path or not (args.eval_dir or args.dataset_name):
            parser.error("--do_eval needs --model_path and --eval_dir (or --dataset_name)")
    elif not (args.train_dir or args.dataset_name):
        parser.error("training needs --train_dir (or --dataset_name); use --do_eval to only evaluate")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id ORG/NAME")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        parser.error("--checkpoints_total_limit must be at least 1")
    if args.config_overrides and args.model_path:
        # A checkpoint's weights are shaped by its config: overriding it on load would drop or misfit weights.
        parser.error(
            "--config_overrides can't reshape a --model_path checkpoint; start a new shape with --init_from "
            "(or `dfd init --config-overrides`)"
        )
    try:
        args.config_overrides = parse_json_object(args.config_overrides) if args.config_overrides else {}
        check_config_overrides(args.config_overrides)
    except ValueError as error:
        parser.error(f"--config_overrides: {error}")
    return args


def load_model_and_processor(args):
    """
    A new detector from CLIP weights (--init_from, with --config_overrides) or a DFD checkpoint (--model_path), in
    fp32, and its video processor.
    """
    if args.model_path:
        model = DFDForVideoClassification.from_pretrained(args.model_path, dtype=torch.float32)
        try:
            return model, DFDVideoProcessor.from_pretrained(args.model_path)
        except OSError:
            pass  # a checkpoint saved without its processor: build the one its config implies
    else:
        model = DFDForVideoClassification.from_clip(args.init_from, **args.config_overrides)
    return model, processor_for(model.config)


def load_tables(args) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """The table (video path, label) to train on and the validation one if given, or the one to evaluate."""
    if args.dataset_name:
        tables = load_hub_video_tables(
            args.dataset_name,
            args.dataset_config_name,
            args.video_column,
            args.label_column,
            Path(args.cache_dir) / "hub_videos",
        )
    else:
        tables = load_video_tables(args.eval_dir if args.do_eval else args.train_dir)

    if args.do_eval:
        split = args.eval_split or next(name for name in ("test", "validation", "train", *tables) if name in tables)
        return tables[split], None
    if "train" not in tables:
        raise ValueError(f"no training split in the data (found {sorted(tables)})")
    if args.validation_dir:
        validation_tables = load_video_tables(args.validation_dir)
        validation = validation_tables.get("validation") or next(iter(validation_tables.values()))
        return tables["train"], validation
    return tables["train"], tables.get("validation")


def decode_videos(tables: list[datasets.Dataset], frame_cache: FrameCache, args) -> tuple[datasets.Dataset, dict, int]:
    """
    Decode every video of `tables` into the frame cache (or find it there), in one pass so that decoding runs in
    parallel over all of them. Returns the cached frames, the row of each readable video in them, and how many
    videos were unreadable (each one warned about on one line, then left out).
    """
    videos = [video for table in tables for video in table["video"]]
    frames, rows, failures = frame_cache.lookup(videos, num_proc=args.preprocessing_num_workers)
    for failure in failures:
        logger.warning(f"Skipping unreadable video {failure}")
    row_of_video = {video: row for video, row in zip(videos, rows) if row is not None}
    if videos and not row_of_video:
        raise ValueError(f"none of the {len(videos)} videos could be read; the first: {failures[0]}")
    return frames, row_of_video, len(set(failures))


def readable(table: datasets.Dataset, row_of_video: dict) -> datasets.Dataset:
    return table.select([index for index, video in enumerate(table["video"]) if video in row_of_video])


def make_clips(table: datasets.Dataset, frames: datasets.Dataset, row_of_video: dict) -> CachedClips:
    return CachedClips(frames, [row_of_video[video] for video in table["video"]], list(table["label"]))


def class_counts(labels) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts)}


@torch.no_grad()
def evaluate_model(model, dataloader, processor, metric, accelerator) -> tuple[dict, np.ndarray, np.ndarray]:
    """Metrics over the whole dataset (predictions gathered from every process), plus labels and fake scores."""
    model.eval()
    labels, scores, predictions, losses = [], [], [], []
    for batch in dataloader:
        logits = model(pixel_values=normalize_clips(batch["frames"], processor)).logits.float()
        loss = F.cross_entropy(logits, batch["labels"], reduction="none")
        gathered = accelerator.gather_for_metrics((batch["labels"], logits.softmax(-1)[:, 1], logits.argmax(-1), loss))
        for store, values in zip((labels, scores, predictions, losses), gathered):
            store.append(values.cpu())
    labels, scores, predictions, losses = (
        torch.cat(values).numpy() for values in (labels, scores, predictions, losses)
    )
    metrics = metric.compute(predictions=predictions, references=labels, prediction_scores=scores)
    metrics["loss"] = float(losses.mean())
    return metrics, labels, scores


def is_improvement(value: float, best: float | None, metric_name: str) -> bool:
    if best is None or (math.isnan(best) and not math.isnan(value)):
        return True
    if math.isnan(value):
        return False
    return value < best if metric_name in LOWER_IS_BETTER else value > best


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (by step). Staging folders and ones cut short by a crash are ignored."""
    found = []
    for path in checkpoints_dir.glob(f"{CHECKPOINT_PREFIX}*") if checkpoints_dir.is_dir() else []:
        step = path.name.removeprefix(CHECKPOINT_PREFIX)
        if step.isdigit() and (path / TRAINER_STATE_NAME).is_file():
            found.append((int(step), path))
    return [path for _, path in sorted(found)]


def save_checkpoint(accelerator, checkpoints_dir: Path, trainer_state: dict, total_limit: int | None) -> Path:
    """
    accelerator.save_state into a staging folder; the main process adds trainer_state.json last and renames it into
    place, so a run killed mid-save leaves only a staging folder that is never resumed from. Then only the newest
    `total_limit` checkpoints and the best one are kept.
    """
    name = f"{CHECKPOINT_PREFIX}{trainer_state['global_step']}"
    staging, final = checkpoints_dir / f".tmp-{name}", checkpoints_dir / name
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
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
    """save_state pre-hook: checkpoints hold the adapters and head only (~21 MB, not the 1.2 GB frozen backbone,
    which is rebuilt from --init_from / --model_path on resume)."""
    for index, model in enumerate(models):
        trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
        weights[index] = {name: tensor for name, tensor in weights[index].items() if name in trainable}


def load_checkpoint(accelerator, model, checkpoint: Path) -> dict:
    with safe_open(checkpoint / "model.safetensors", framework="pt") as weights:
        saved = set(weights.keys())
    # save_state stores the unwrapped model (no DDP "module." prefix), so checkpoints work with any process count.
    unwrapped = accelerator.unwrap_model(model)
    trainable = {name for name, parameter in unwrapped.named_parameters() if parameter.requires_grad}
    if saved != trainable:
        raise ValueError(
            f"{checkpoint}: its weights do not match this model's trainable parameters (saved from another model "
            f"configuration?); differing: {sorted(saved ^ trainable)[:5]}"
        )
    accelerator.load_state(str(checkpoint), strict=False)
    return json.loads((checkpoint / TRAINER_STATE_NAME).read_text())


def export_model(args, checkpoint: Path):
    """
    The detector to export: a fresh fp32 copy of the source (--init_from / --model_path) with `checkpoint`'s
    trainable weights, all a checkpoint holds. The training copy won't do: bf16 training rounded its frozen backbone.
    """
    model, _ = load_model_and_processor(args)
    model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
    return model


def describe_hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        device = f"{accelerator.device.type.upper()} ({platform.machine()}, {os.cpu_count()} cores)"
    return f"{accelerator.num_processes} x {device}"


def model_card(args, model, summary: dict, metrics: dict) -> str:
    """README.md for the exported model: the original card's sections with this run's numbers and a model-index."""
    config = model.config
    base_model = None if args.model_path else args.init_from
    if base_model and Path(base_model).exists():
        base_model = None  # a local folder is not a Hub reference
    dataset_name = args.dataset_name or "local videos"
    card_data = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="video-classification",
        base_model=base_model,
        datasets=[args.dataset_name] if args.dataset_name else None,
        metrics=["accuracy", "roc_auc", "f1", "recall"],
        tags=["deepfake-detection", "video-classification", "clip", "spatiotemporal-adapters"],
        model_name=args.hub_model_id or Path(args.output_dir).name,
        eval_results=[
            EvalResult(
                task_type="video-classification",
                task_name="Deepfake detection",
                dataset_type=args.dataset_name or "videofolder",
                dataset_name=dataset_name,
                dataset_split="validation",
                metric_type=name,
                metric_value=round(metrics[name], 4),
                metric_name=display_name,
            )
            for name, display_name in CARD_METRICS.items()
            if math.isfinite(metrics[name])
        ],
    )
    trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
    adapters = (
        f"in {len(config.adapter_layers)} of {config.vision_config.num_hidden_layers} blocks"
        if config.adapter_layers
        else "none (frame-only ablation)"
    )
    counts = summary["data"]
    data_rows = "\n".join(
        f"| {split} | {counts[split]['real']:,} | {counts[split]['fake']:,} | {sum(counts[split].values()):,} |"
        for split in ("train", "validation")
    )
    metric_rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items())
    repo = args.hub_model_id or "path/to/model"
    batch = (
        f"{args.per_device_train_batch_size} per device x {summary['num_processes']} process(es) x "
        f"{args.gradient_accumulation_steps} accumulation steps = {summary['effective_batch_size']}"
    )
    precision = {"no": "fp32", "bf16": "bf16 autocast, frozen backbone stored in bf16"}.get(
        summary["mixed_precision"], summary["mixed_precision"]
    )
    body = f"""
# {card_data.model_name}

A video deepfake detector: a frozen CLIP vision tower (`{args.model_path or args.init_from}`) with spatiotemporal
adapters, trained with `train_accelerate.py`. It reads {config.num_frames} evenly spaced frames per video at
{config.image_size}x{config.image_size} and predicts label 0 = real or 1 = fake.

- Adapters: {adapters} (bottleneck {config.adapter_bottleneck}, 3-D kernel {config.adapter_kernel_size})
- Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%); the CLIP backbone is frozen

## Intended use

Research on deepfake detection and benchmarking; screening in content-moderation pipelines with human review. Not for
high-stakes decisions on its own, nor for video domains far from the training data without fine-tuning.

## Training data

Source: {args.train_dir or dataset_name}. Unreadable videos skipped: {summary["skipped_videos"]}.

| split | real | fake | total |
|---|---|---|---|
{data_rows}

## Training procedure

| setting | value |
|---|---|
| epochs / optimizer steps | {summary["epochs"]} / {summary["global_step"]} |
| batch | {batch} |
| optimizer | AdamW, weight decay {args.weight_decay} (none on biases and norms) |
| learning rate | {args.learning_rate}, {args.lr_scheduler_type} after {args.warmup_ratio:.0%} linear warmup |
| loss | cross-entropy, label smoothing {args.label_smoothing} |
| gradient clipping | max norm {args.max_grad_norm} |
| sampling | WeightedRandomSampler, inverse class-frequency weights |
| augmentation | horizontal flip, brightness jitter {args.brightness_jitter} (one draw per clip) |
| precision | {precision}{", gradient checkpointing" if args.gradient_checkpointing else ""} |
| seed | {args.seed} |
| hardware | {summary["hardware"]} |
| training time | {summary["train_runtime"] / 60:.1f} min |

## Evaluation

Validation metrics of this checkpoint ({summary["best_checkpoint"]}, epoch {summary["best_epoch"]}), the best by
`{args.metric_for_best_model}`; fake is the positive class, `recall_real` / `recall_fake` are the real / fake
detection rates.

| metric | value |
|---|---|
{metric_rows}

## Usage

```python
from transformers import AutoModelForVideoClassification, AutoVideoProcessor

model = AutoModelForVideoClassification.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoVideoProcessor.from_pretrained("{repo}", trust_remote_code=True)
inputs = processor(videos="clip.mp4", return_tensors="pt")
probabilities = model(**inputs).logits.softmax(-1)  # [p(real), p(fake)]
```

## Limitations

The validation set is small and imbalanced like the training data, so its metrics are noisy, especially for the
minority class. {config.num_frames} frames cover only part of a long video; artifacts between them can be missed.
"""
    return f"---\n{card_data.to_yaml()}\n---\n{body}"


def push_export(args, export_dir: Path):
    """Upload the exported folder; on failure keep it and say how to retry."""
    try:
        create_repo(args.hub_model_id, private=args.hub_private, exist_ok=True)
        upload_folder(
            repo_id=args.hub_model_id,
            folder_path=export_dir,
            commit_message="Upload DFD detector trained with train_accelerate.py",
        )
    except Exception as error:  # noqa: BLE001 - network, auth and offline failures all end the same way
        retry = f"hf upload {shlex.quote(args.hub_model_id)} {shlex.quote(str(export_dir))} ." + (
            " --private" if args.hub_private else ""
        )
        raise SystemExit(
            f"Upload to the Hub failed: {type(error).__name__}: {error}\n"
            f"The exported model is intact in {export_dir}. To retry: {retry}"
        ) from None
    logger.info(f"Uploaded {export_dir} to https://huggingface.co/{args.hub_model_id}")


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    checkpoints_dir = output_dir / "checkpoints"
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" or args.do_eval else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "runs")),
        # The DataLoaders pin memory on CUDA, so host-to-device copies can overlap with compute.
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file of every checkpoint is noise
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        transformers.utils.logging.set_verbosity_error()
    # Each process gets its own seed (seed + rank) for augmentation and dropout; the model starts from rank 0's
    # weights (DDP broadcasts them) and the sampler has its own generator, the same on every rank.
    set_seed(args.seed, device_specific=True)
    earlier_run = not args.do_eval and not args.resume_from_checkpoint and complete_checkpoints(checkpoints_dir)
    if earlier_run and not args.overwrite_output_dir:
        raise SystemExit(
            f"{checkpoints_dir} holds checkpoints of an earlier run: continue it with --resume_from_checkpoint "
            "latest, or start over with --overwrite_output_dir"
        )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if earlier_run:
            shutil.rmtree(checkpoints_dir)
        for leftover in checkpoints_dir.glob(".tmp-*") if checkpoints_dir.is_dir() else []:
            shutil.rmtree(leftover)  # staging folders of a run killed mid-save
    accelerator.wait_for_everyone()

    # Model and metric
    model, processor = load_model_and_processor(args)
    if args.gradient_checkpointing:
        model.set_checkpointed_blocks(args.checkpointed_blocks)
    if args.torch_compile:
        model.compile_blocks()
    if accelerator.mixed_precision == "bf16":
        model.cast_frozen_weights(torch.bfloat16)  # the export is rebuilt in fp32 (see export_model)
    with accelerator.main_process_first():
        metric = evaluate.load(str(METRICS_PATH), keep_in_memory=True)

    # Data: decode every video once into the frame cache (the main process decodes, the others then read it).
    with accelerator.main_process_first():
        table, validation_table = load_tables(args)
        tables = [table] if validation_table is None else [table, validation_table]
        frames, row_of_video, skipped = decode_videos(tables, FrameCache(args.cache_dir, processor), args)
    table = readable(table, row_of_video)
    if validation_table is not None:
        validation_table = readable(validation_table, row_of_video)
    elif not args.do_eval:
        table, validation_table = stratified_split(table, args.validation_split_percentage, args.seed)
    evaluation_table = table if args.do_eval else validation_table
    eval_dataloader = DataLoader(
        make_clips(evaluation_table, frames, row_of_video),
        batch_size=args.per_device_eval_batch_size,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
    )

    if args.do_eval:
        model, eval_dataloader = accelerator.prepare(model, eval_dataloader)
        metrics, labels, scores = evaluate_model(model, eval_dataloader, processor, metric, accelerator)
        if accelerator.is_main_process:
            results = {f"eval_{name}": value for name, value in metrics.items()}
            results.update(eval_samples=len(labels), eval_class_counts=class_counts(labels), skipped_videos=skipped)
            write_json(output_dir / "metrics.json", results)
            plot_roc_curve(labels, scores, metrics, output_dir / "roc_curve.png")
            logger.info(
                f"Evaluation of {args.model_path} on {len(labels)} videos ({skipped} unreadable skipped): "
                f"{json.dumps(json_ready(metrics))}"
            )
        accelerator.end_training()
        return

    train_labels = np.asarray(table["label"], dtype=np.int64)
    counts = np.bincount(train_labels, minlength=len(CLASS_NAMES))
    if (counts == 0).any():
        raise ValueError(f"the training data needs both classes, got {class_counts(train_labels)}")
    # Inverse class frequency: both classes are drawn equally often. Reseeded every epoch (see the loop), so the
    # order of epoch e depends only on (seed, e), which is what makes a mid-epoch resume exact.
    sampler_generator = torch.Generator().manual_seed(args.seed)
    sampler = WeightedRandomSampler(
        (1.0 / counts[train_labels]).tolist(),
        num_samples=len(train_labels),
        replacement=True,
        generator=sampler_generator,
    )
    train_dataloader = DataLoader(
        make_clips(table, frames, row_of_video),
        sampler=sampler,
        batch_size=args.per_device_train_batch_size,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=sampler_generator,  # otherwise each new iterator draws its worker seed from the global RNG
    )

    # Optimizer: AdamW on the trainable parameters, no weight decay on biases and norms.
    decay_names = set(get_parameter_names(model, [nn.LayerNorm], ["bias"]))
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in trainable if n in decay_names], "weight_decay": args.weight_decay},
            {"params": [p for n, p in trainable if n not in decay_names], "weight_decay": 0.0},
        ],
        lr=args.learning_rate,
    )
    num_update_steps_per_epoch = math.ceil(
        math.ceil(len(train_dataloader) / accelerator.num_processes) / args.gradient_accumulation_steps
    )
    max_train_steps = args.max_train_steps or args.num_train_epochs * num_update_steps_per_epoch
    num_train_epochs = math.ceil(max_train_steps / num_update_steps_per_epoch)
    # The prepared scheduler steps once per process on every optimizer step (see AcceleratedScheduler).
    lr_scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * max_train_steps) * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )
    accelerator.register_save_state_pre_hook(keep_only_trainable_weights)
    tracker_config = {
        key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in vars(args).items()
    }
    accelerator.init_trackers("dfd", config=tracker_config)

    unwrapped = accelerator.unwrap_model(model)
    num_trainable, num_total = unwrapped.num_parameters(only_trainable=True), unwrapped.num_parameters()
    data_counts = {"train": class_counts(table["label"]), "validation": class_counts(validation_table["label"])}
    effective_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(
        f"Training on {len(table)} videos {data_counts['train']}, validating on {len(validation_table)} "
        f"{data_counts['validation']}, {skipped} unreadable skipped; {num_trainable:,} of {num_total:,} parameters "
        f"trainable; {num_train_epochs} epochs, {max_train_steps} optimizer steps of {effective_batch} videos "
        f"({accelerator.num_processes} processes, precision {accelerator.mixed_precision})"
    )

    # Resume: weights, optimizer, scheduler and RNG states from the checkpoint, position in the data from its state.
    state = {
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
    }
    checkpoint = None
    if args.resume_from_checkpoint == "latest":
        checkpoint = (complete_checkpoints(checkpoints_dir) or [None])[-1]
        if checkpoint is None:
            logger.info(f"No complete checkpoint in {checkpoints_dir}: starting from scratch")
    elif args.resume_from_checkpoint:
        checkpoint = Path(args.resume_from_checkpoint)
        if not (checkpoint / TRAINER_STATE_NAME).is_file():
            raise ValueError(f"{checkpoint}: not a complete checkpoint (no {TRAINER_STATE_NAME})")
    if checkpoint is not None:
        state = load_checkpoint(accelerator, model, checkpoint)
        logger.info(
            f"Resumed from {checkpoint}: epoch {state['epoch']}, batch {state['batch_in_epoch']}, "
            f"step {state['global_step']}"
        )
    if accelerator.is_main_process:  # the log holds exactly the epochs of the state we continue from
        write_atomically(
            output_dir / "log.jsonl", "".join(json.dumps(json_ready(entry)) + "\n" for entry in state["log_history"])
        )

    # Training loop
    progress_bar = tqdm(
        total=max_train_steps, initial=state["global_step"], unit="step", disable=not accelerator.is_local_main_process
    )
    start_time, videos_seen = time.time(), 0
    runtime_before = state["train_runtime"]
    for epoch in range(state["epoch"], num_train_epochs):
        if state["global_step"] >= max_train_steps:
            break
        model.train()
        sampler_generator.manual_seed(args.seed + epoch)
        skip_batches = state["batch_in_epoch"] if epoch == state["epoch"] else 0
        epoch_dataloader = (
            accelerator.skip_first_batches(train_dataloader, skip_batches) if skip_batches else train_dataloader
        )
        if not skip_batches:
            state["epoch_loss_sum"], state["epoch_loss_count"] = 0.0, 0
        # Summed on the device over the accumulation window, read once per optimizer step: reading each micro-batch's
        # loss would make the host wait for the GPU before it prepares the next batch.
        window_loss, window_batches = 0.0, 0
        for batch_index, batch in enumerate(epoch_dataloader, start=skip_batches):
            with accelerator.accumulate(model):
                pixel_values = normalize_clips(augment_clips(batch["frames"], args.brightness_jitter), processor)
                logits = model(pixel_values=pixel_values).logits
                loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=args.label_smoothing)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            window_loss, window_batches = window_loss + loss.detach(), window_batches + 1
            videos_seen += len(batch["labels"]) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state["epoch_loss_sum"] += window_loss.item()
            state["epoch_loss_count"] += window_batches
            window_loss, window_batches = 0.0, 0
            state["global_step"] += 1
            state["batch_in_epoch"] = batch_index + 1
            learning_rate = lr_scheduler.get_last_lr()[0]
            progress_bar.update(1)
            progress_bar.set_postfix(
                loss=f"{loss.item():.4f}",
                lr=f"{learning_rate:.2e}",
                videos_per_s=f"{videos_seen / (time.time() - start_time):.1f}",
            )
            if state["global_step"] % args.logging_steps == 0:
                accelerator.log(
                    {
                        "train/loss": accelerator.reduce(loss.detach(), "mean").item(),
                        "train/learning_rate": learning_rate,
                    },
                    step=state["global_step"],
                )
            last_batch = batch_index + 1 == len(train_dataloader)
            if args.checkpointing_steps and state["global_step"] % args.checkpointing_steps == 0 and not last_batch:
                state["train_runtime"] = runtime_before + time.time() - start_time
                save_checkpoint(accelerator, checkpoints_dir, {**state, "epoch": epoch}, args.checkpoints_total_limit)
            if state["global_step"] >= max_train_steps:
                break

        # End of epoch: validate, log, checkpoint (the best one is kept for export).
        metrics, _, _ = evaluate_model(model, eval_dataloader, processor, metric, accelerator)
        train_loss = accelerator.reduce(
            torch.tensor(state["epoch_loss_sum"] / max(1, state["epoch_loss_count"]), device=accelerator.device),
            "mean",
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
            with open(output_dir / "log.jsonl", "a", encoding="utf-8") as log_file:
                log_file.write(json.dumps(json_ready(entry)) + "\n")
        checkpoint_name = f"{CHECKPOINT_PREFIX}{state['global_step']}"
        value = metrics[args.metric_for_best_model]
        if is_improvement(value, state["best_metric"], args.metric_for_best_model):
            state.update(best_metric=value, best_checkpoint=checkpoint_name, best_epoch=epoch + 1)
        logger.info(f"Epoch {epoch + 1}: train loss {train_loss:.4f}, validation {json.dumps(json_ready(metrics))}")
        state["train_runtime"] = runtime_before + time.time() - start_time
        checkpoint_state = {**state, "epoch": epoch + 1, "batch_in_epoch": 0}
        save_checkpoint(accelerator, checkpoints_dir, checkpoint_state, args.checkpoints_total_limit)
    progress_bar.close()

    # Export the best checkpoint, evaluated once more so that every reported number belongs to the exported weights.
    best_checkpoint = checkpoints_dir / state["best_checkpoint"]
    load_checkpoint(accelerator, model, best_checkpoint)
    metrics, labels, scores = evaluate_model(model, eval_dataloader, processor, metric, accelerator)
    if accelerator.is_main_process:
        summary = {
            "best_checkpoint": best_checkpoint.name,
            "best_epoch": state["best_epoch"],
            "metric_for_best_model": args.metric_for_best_model,
            "epochs": num_train_epochs,
            "global_step": state["global_step"],
            "train_runtime": state["train_runtime"],
            "data": data_counts,
            "skipped_videos": skipped,
            "num_processes": accelerator.num_processes,
            "effective_batch_size": effective_batch,
            "mixed_precision": accelerator.mixed_precision,
            "hardware": describe_hardware(accelerator),
            "trainable_parameters": num_trainable,
            "total_parameters": num_total,
        }
        results = {f"eval_{name}": value for name, value in metrics.items()}
        results.update(eval_samples=len(labels), train_samples=len(table), **summary)
        model_to_export = export_model(args, best_checkpoint)
        export_dir = save_detector(
            model_to_export,
            processor,
            output_dir / "model",
            readme=model_card(args, model_to_export, summary, metrics),
        )
        write_json(output_dir / "metrics.json", results)
        plot_roc_curve(labels, scores, metrics, output_dir / "roc_curve.png")
        logger.info(
            f"Done in {state['train_runtime'] / 60:.1f} min: best {args.metric_for_best_model} "
            f"{metrics[args.metric_for_best_model]:.4f} at epoch {state['best_epoch']} ({best_checkpoint.name}); "
            f"{skipped} unreadable video(s) skipped. Exported to {export_dir}, metrics in {output_dir}/metrics.json"
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        push_export(args, output_dir / "model")


if __name__ == "__main__":
    main()
