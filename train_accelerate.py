#!/usr/bin/env python
"""
Train (or evaluate) the DFD video deepfake detector with 🤗 Accelerate, following the model card's recipe.

    accelerate launch train_accelerate.py --train_dir DATA --output_dir OUT     # DATA/real/*, DATA/fake/*
    python train_accelerate.py --do_eval --model_path OUT/model --eval_dir DATA --output_dir EVAL_OUT

Recipe defaults (the card): frozen CLIP ViT-L/14 with spatiotemporal adapters, 12 frames at 384x384, batch 16 per
device with 2 accumulation steps, AdamW (weight decay 0.05, none on biases and norms), lr 5e-6 with cosine decay after
10% linear warmup, 12 epochs, cross-entropy with label smoothing 0.1, gradient clipping at 1.0, class-balanced
sampling, video-level flip + brightness jitter, bf16 mixed precision where the GPU supports it, seed 42.

Writes into OUT: model/ (the best checkpoint, Hub-ready with a model card, and the metrics.json and roc_curve.png of
its validation, replaced in one step with it), log.jsonl, runs/ (tensorboard) and checkpoints/ (resumable with
--resume_from_checkpoint). --do_eval writes metrics.json and roc_curve.png into OUT.
"""

import argparse
import csv
import errno
import importlib.resources
import io
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


if not __package__:
    # Run as a file (`accelerate launch train_accelerate.py`): import the package this file sits in (a clone's root or
    # the installed `dfd`), never another copy that happens to be installed.
    _spec = importlib.util.spec_from_file_location("dfd", Path(__file__).resolve().with_name("__init__.py"))
    sys.modules["dfd"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["dfd"])

import datasets
import numpy as np
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, parse_flag_from_env, set_seed
from huggingface_hub import EvalResult, ModelCardData, create_repo, upload_folder
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler
from tqdm.auto import tqdm
from transformers import get_scheduler
from transformers.trainer_pt_utils import get_parameter_names

from dfd.configuration_dfd import CLASS_NAMES
from dfd.decision_dfd import DecisionRule, calibrate, sigmoid
from dfd.faces_dfd import load_face_detector
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.probing_dfd import VideoDecodeError, probe_video
from dfd.processing_dfd import DFDVideoProcessor
from dfd.tools.export import DEFAULT_MODEL_NAME, check_config_overrides, hub_id, processor_for, save_detector
from dfd.tools.files import json_ready, parse_json_object, write_atomically, write_json
from dfd.tools.metrics import load_dfd_metrics
from dfd.tools.plots import plot_roc_curve
from dfd.tools.training_data import (
    CachedVideos,
    FrameCache,
    augment_videos,
    load_hub_video_tables,
    load_video_tables,
    normalize_videos,
    stratified_split,
)


logger = get_logger(__name__)

FAKE_LABEL = "fake"
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
# The model-index name of an export that has no --hub_model_id.
MODEL_CARD_TEMPLATE = importlib.resources.files("dfd.tools") / "model_card.md"
EXPORT_NAME = "model"
CHECKPOINT_PREFIX = "checkpoint-"
# Written last into a checkpoint: a checkpoint folder without it is incomplete and never resumed from.
TRAINER_STATE_NAME = "trainer_state.json"


# Arguments


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and each option's default after its help (unless it has none)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (0 epochs or steps would train nothing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_data_arguments(group):
    group.add_argument(
        "--train_dir",
        help="Folder with real/ and fake/ subfolders (video files or frame folders), or a CSV/JSONL manifest with "
        "columns path, label and optionally split.",
    )
    group.add_argument(
        "--validation_dir",
        help="Validation data, same forms as --train_dir. Default: the training data's validation split, else a "
        "stratified split of the training data.",
    )
    group.add_argument(
        "--eval_dir",
        nargs="+",
        help="Data to evaluate with --do_eval, same forms as --train_dir; several evaluation sets give a "
        "cross-dataset table (one row per set).",
    )
    group.add_argument(
        "--dataset_name",
        help="A Hub dataset (or local load_dataset path) with a video/path column and a label column, instead of "
        "--train_dir/--eval_dir.",
    )
    group.add_argument("--dataset_config_name", help="Configuration of --dataset_name.")
    group.add_argument(
        "--video_column", help="Column of --dataset_name holding videos. Default: 'video', else 'path'."
    )
    group.add_argument("--label_column", default="label", help="Column of --dataset_name holding the labels.")
    group.add_argument(
        "--eval_split", help="Split evaluated by --do_eval. Default: test, else validation, else train."
    )
    group.add_argument(
        "--validation_split_percentage",
        type=float,
        default=10.0,
        help="Held-out share (stratified) when no validation split is given.",
    )
    group.add_argument(
        "--cache_dir",
        default=str(Path(datasets.config.HF_DATASETS_CACHE) / "dfd_frames"),
        help="Frame cache, shared by runs.",
    )
    group.add_argument(
        "--preprocessing_num_workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="Processes decoding videos into the frame cache.",
    )
    group.add_argument("--dataloader_num_workers", type=int, default=0, help="Worker processes of each DataLoader.")
    group.add_argument(
        "--crop",
        choices=("frame", "face"),
        help="What the model sees of each frame: the whole frame (the card's recipe) or a square that follows the face "
        "(needs the `face` extra). Saved with the processor, so the exported model crops alike when it predicts. "
        "Default: --model_path's setting, else frame.",
    )


def add_model_arguments(group):
    group.add_argument(
        "--init_from",
        default="openai/clip-vit-large-patch14",
        help="CLIP checkpoint (Hub id or local dir) to build a new detector from.",
    )
    group.add_argument(
        "--model_path",
        help="A DFD checkpoint (e.g. an earlier OUT/model) to fine-tune or evaluate, instead of --init_from.",
    )
    group.add_argument(
        "--config_overrides",
        help='DFDConfig overrides for a new detector (with --init_from) as JSON, e.g. \'{"image_size": 224, '
        '"adapter_layers": []}\', or a JSON file.',
    )


def add_training_arguments(group):
    group.add_argument("--output_dir", required=True, help="Where the export, metrics, logs and checkpoints go.")
    group.add_argument("--per_device_train_batch_size", type=positive_int, default=16, help="Videos per device.")
    group.add_argument("--per_device_eval_batch_size", type=positive_int, default=16, help="Videos per device.")
    group.add_argument("--gradient_accumulation_steps", type=positive_int, default=2, help="Batches per update.")
    group.add_argument("--learning_rate", type=float, default=5e-6, help="Peak learning rate of AdamW.")
    group.add_argument("--weight_decay", type=float, default=0.05, help="AdamW weight decay (none on biases, norms).")
    group.add_argument("--num_train_epochs", type=positive_int, default=12, help="Passes over the training data.")
    group.add_argument(
        "--max_train_steps", type=positive_int, help="Optimizer steps in total; overrides --num_train_epochs."
    )
    group.add_argument("--lr_scheduler_type", default="cosine", help="transformers scheduler after the warmup.")
    group.add_argument("--warmup_ratio", type=float, default=0.1, help="Share of the steps warming up linearly.")
    group.add_argument("--label_smoothing", type=float, default=0.1, help="Of the cross-entropy loss.")
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping.")
    group.add_argument(
        "--class_balanced_sampling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Draw both classes equally often (inverse class-frequency weights, with replacement); off: a plain "
        "shuffle, e.g. for a balanced dataset.",
    )
    group.add_argument(
        "--brightness_jitter", type=float, default=0.2, help="Brightness factor range [1 - b, 1 + b] per video."
    )
    group.add_argument("--seed", type=int, default=42, help="Seed of the data order, augmentation and dropout.")
    group.add_argument(
        "--metric_for_best_model",
        default="roc_auc",
        choices=[*CARD_METRICS, "f1_macro", "loss"],
        help="Validation metric that picks the exported checkpoint (eer and loss: lower is better).",
    )
    group.add_argument(
        "--target_false_positive_rate",
        type=float,
        default=0.05,
        help="Share of real validation videos the exported decision threshold may call fake (per video, under the "
        "decision rule); stored in the export's config.json with the fitted calibration temperature.",
    )
    group.add_argument("--logging_steps", type=positive_int, default=10, help="Log the loss every N steps.")
    group.add_argument(
        "--report_to", default="tensorboard", help="Accelerate trackers: tensorboard, wandb, all, none, ..."
    )


def add_speed_and_memory_arguments(group):
    group.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        help="Default: the launcher's setting when it enables mixed precision (`accelerate launch --mixed_precision` "
        "or `accelerate config`), else bf16 on a CUDA GPU that supports it, else no (a CPU without bf16 units runs "
        "bf16 several times slower). bf16 also keeps the frozen backbone in bf16.",
    )
    group.add_argument(
        "--gradient_checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Recompute activations in the backward pass. On by default: the card's batch of 16 x 12 frames at 384 "
        "peaks at ~121 GB of GPU memory without it (bf16, H200), ~24 GB with it.",
    )
    group.add_argument(
        "--checkpointed_blocks",
        type=lambda text: [int(index) for index in text.split(",") if index.strip()],
        help="With --gradient_checkpointing: only these encoder blocks (comma-separated indices), to trade less "
        "recomputation for memory. Default: every block that runs with autograd.",
    )
    group.add_argument(
        "--torch_compile", action="store_true", help="torch.compile each encoder block (model.compile_blocks())."
    )


def add_checkpoint_arguments(group):
    group.add_argument(
        "--checkpointing_steps",
        type=positive_int,
        help="Also save a checkpoint every N optimizer steps (one is always saved at each epoch end).",
    )
    group.add_argument(
        "--checkpoints_total_limit",
        type=positive_int,
        default=3,
        help="Keep the newest N checkpoints (plus the best).",
    )
    group.add_argument(
        "--resume_from_checkpoint", help="'latest' (of OUT/checkpoints; a fresh start if none) or a checkpoint folder."
    )
    group.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Start over in an --output_dir that holds checkpoints of an earlier run (they are deleted) or its export "
        "(OUT/model, replaced once the new one is ready).",
    )
    group.add_argument(
        "--do_eval", action="store_true", help="Only evaluate --model_path on --eval_dir (or --dataset_name)."
    )
    group.add_argument("--push_to_hub", action="store_true", help="Upload OUT/model to --hub_model_id at the end.")
    group.add_argument("--hub_model_id", help="ORG/NAME to upload OUT/model to with --push_to_hub.")
    group.add_argument("--hub_private", action="store_true", help="Create the --hub_model_id repo private.")


def check_arguments(parser, args):
    """Refuse combinations that would fail late or silently do something else; parse --config_overrides."""
    if args.do_eval:
        if not args.model_path or not (args.eval_dir or args.dataset_name):
            parser.error("--do_eval needs --model_path and --eval_dir (or --dataset_name)")
    elif not (args.train_dir or args.dataset_name):
        parser.error("training needs --train_dir (or --dataset_name); use --do_eval to only evaluate")
    if not 0 < args.target_false_positive_rate < 1:
        parser.error(f"--target_false_positive_rate must lie in (0, 1), got {args.target_false_positive_rate}")
    if args.eval_dir and len(args.eval_dir) > 1 and not args.do_eval:
        parser.error("several --eval_dir sets are for --do_eval")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id ORG/NAME")
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_data_arguments(parser.add_argument_group("data"))
    add_model_arguments(parser.add_argument_group("model"))
    add_training_arguments(parser.add_argument_group("training"))
    add_speed_and_memory_arguments(parser.add_argument_group("speed and memory"))
    add_checkpoint_arguments(parser.add_argument_group("checkpoints and export"))
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return args


# Accelerator and output folder


def choose_mixed_precision(requested: str | None, device_type: str, environ=os.environ) -> tuple[str, str]:
    """
    The mixed precision to run in, and why. --mixed_precision wins; then the launcher's setting when it enables mixed
    precision (`accelerate launch` passes its flag or config as ACCELERATE_MIXED_PRECISION, and "no" when it has
    neither, so its "no" says nothing); else the card's bf16 where the device runs it natively.
    """
    if requested:
        return requested, "--mixed_precision"
    launcher_setting = environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if launcher_setting != "no":
        return launcher_setting, "set by accelerate launch / accelerate config"
    if device_type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16", f"default on a GPU with bf16 ({torch.cuda.get_device_name()})"
    return "no", (
        f"default on {device_type.upper()}: bf16 is the default only on a CUDA GPU that supports it, since a CPU "
        "without bf16 units runs it several times slower; --mixed_precision bf16 forces it"
    )


def setup_logging(accelerator):
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file of every checkpoint is noise
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        transformers.utils.logging.set_verbosity_error()


def make_accelerator(args) -> Accelerator:
    # The precision is fixed when the Accelerator is made, so its device is read the way it will pick it: CUDA when
    # there is a GPU, unless told to use the CPU (`accelerate launch --cpu`).
    on_cuda = torch.cuda.is_available() and not parse_flag_from_env("ACCELERATE_USE_CPU")
    mixed_precision, reason = choose_mixed_precision(args.mixed_precision, "cuda" if on_cuda else "cpu")
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=None if args.report_to == "none" or args.do_eval else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "runs")),
        # The DataLoaders pin memory on CUDA, so host-to-device copies can overlap with compute.
        dataloader_config=DataLoaderConfiguration(non_blocking=True),
    )
    setup_logging(accelerator)
    logger.info(f"Mixed precision: {accelerator.mixed_precision} ({reason})")
    return accelerator


def remove_leftovers(output_dir: Path) -> Path | None:
    """
    What a killed run leaves in OUT: staging folders of an export (`.model.tmp-*`) or a checkpoint (`.tmp-*`) and
    half-written files (`.<name>.*.tmp`). An earlier export caught while being replaced (`model/` moved aside to
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
    checkpoints_dir = output_dir / "checkpoints"
    leftovers = [*output_dir.glob(f".{EXPORT_NAME}.tmp-*"), *output_dir.glob(".*.tmp"), *checkpoints_dir.glob(".tmp-*")]
    for leftover in leftovers:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return restored


def prepare_output_dir(args, accelerator) -> Path:
    """
    Create --output_dir and return its checkpoints folder, after removing what a killed run left there, and refusing
    to mix a new run with an earlier run's checkpoints or to replace its export unless asked.
    """
    output_dir = Path(args.output_dir)
    checkpoints_dir = output_dir / "checkpoints"
    if accelerator.is_main_process and output_dir.is_dir() and (restored := remove_leftovers(output_dir)):
        logger.warning(f"Restored {output_dir / EXPORT_NAME} from {restored.name}, left by a run killed replacing it")
    accelerator.wait_for_everyone()
    new_run = not args.do_eval and not args.resume_from_checkpoint
    earlier_run = new_run and complete_checkpoints(checkpoints_dir)
    if earlier_run and not args.overwrite_output_dir:
        raise SystemExit(
            f"{checkpoints_dir} holds checkpoints of an earlier run: continue it with --resume_from_checkpoint "
            "latest, or start over with --overwrite_output_dir"
        )
    if new_run and (output_dir / EXPORT_NAME).exists() and not args.overwrite_output_dir:
        raise SystemExit(
            f"{output_dir / EXPORT_NAME} holds the export of an earlier run: start over with --overwrite_output_dir "
            "(it is replaced once the new export is ready), or choose another --output_dir"
        )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if earlier_run:
            shutil.rmtree(checkpoints_dir)
    accelerator.wait_for_everyone()
    return checkpoints_dir


# Free space under which a failed write is taken for a full disk (torch reports one as "basic_ios::clear: iostream
# error", without the system's reason).
FULL_DISK_BYTES = 1 << 20


@contextmanager
def reporting_full_disk(path: Path, what: str):
    """A write of `what` into `path` that fails on a full disk ends the run with one line saying so."""
    try:
        yield
    except Exception as error:
        existing = next(folder for folder in (path, *path.parents) if folder.exists())
        free = shutil.disk_usage(existing).free
        out_of_space = getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)
        if not (out_of_space or free < FULL_DISK_BYTES):
            raise
        raise SystemExit(
            f"{path}: no space left on the device ({free:,} bytes free) while writing {what}; free some space, then "
            "continue with --resume_from_checkpoint latest"
        ) from None


# Model


def load_model_and_processor(args):
    """
    A new detector from CLIP weights (--init_from, with --config_overrides) or a DFD checkpoint (--model_path), in
    fp32, and its video processor, cropping as --crop asks.
    """
    model, processor = _load_model_and_processor(args)
    if args.crop:
        processor.crop = args.crop
    if processor.crop == "face":
        load_face_detector()  # without the face extra, say so now rather than from a decoding worker
    return model, processor


def _load_model_and_processor(args):
    if args.model_path:
        model = DFDForVideoClassification.from_pretrained(args.model_path, dtype=torch.float32)
        # The data's labels are CLASS_NAMES' indices: a checkpoint that numbers its classes otherwise would be
        # trained and scored on swapped classes.
        expected_labels = dict(enumerate(CLASS_NAMES))
        if model.config.id2label != expected_labels:
            raise ValueError(f"{args.model_path}: labels {model.config.id2label}, expected {expected_labels}")
        try:
            return model, DFDVideoProcessor.from_pretrained(args.model_path)
        except OSError:
            pass  # a checkpoint saved without its processor: build the one its config implies
    else:
        model = DFDForVideoClassification.from_clip(args.init_from, **args.config_overrides)
    return model, processor_for(model.config)


def prepare_model(args, model, accelerator):
    if args.gradient_checkpointing:
        model.set_checkpointed_blocks(args.checkpointed_blocks)
    if args.torch_compile:
        model.compile_blocks()
    if accelerator.mixed_precision == "bf16":
        model.cast_frozen_weights(torch.bfloat16)  # the export is rebuilt in fp32 (see export_model)


# Data


@dataclass
class VideoData:
    """The readable videos of a run, with the row of each in the frame cache."""

    train: datasets.Dataset | None  # None with --do_eval
    evaluation: datasets.Dataset  # the validation videos, or with --do_eval the evaluated ones
    frames: datasets.Dataset
    row_of_video: dict[str, int]
    skipped: int  # unreadable videos, left out

    def cached_videos(self, table: datasets.Dataset) -> CachedVideos:
        return CachedVideos(self.frames, [self.row_of_video[video] for video in table["video"]], list(table["label"]))


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
        tables = load_video_tables(args.eval_dir[0] if args.do_eval else args.train_dir)

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


def load_data(args, accelerator, processor) -> VideoData:
    """The videos to train and validate on (or to evaluate), decoded once into the frame cache."""
    with accelerator.main_process_first():  # the main process decodes, the others then read the cache
        table, validation_table = load_tables(args)
        tables = [table] if validation_table is None else [table, validation_table]
        frames, row_of_video, skipped = decode_videos(tables, FrameCache(args.cache_dir, processor), args)
    table = readable(table, row_of_video)
    if args.do_eval:
        return VideoData(None, table, frames, row_of_video, skipped)
    if validation_table is None:
        table, validation_table = stratified_split(table, args.validation_split_percentage, args.seed)
    else:
        validation_table = readable(validation_table, row_of_video)
    return VideoData(table, validation_table, frames, row_of_video, skipped)


def class_counts(labels) -> dict[str, int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASS_NAMES))
    return {name: int(count) for name, count in zip(CLASS_NAMES, counts)}


def make_eval_dataloader(args, data: VideoData) -> DataLoader:
    return DataLoader(
        data.cached_videos(data.evaluation),
        batch_size=args.per_device_eval_batch_size,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def make_train_dataloader(args, data: VideoData) -> tuple[DataLoader, torch.Generator]:
    """
    The training DataLoader and its sampler's generator. The generator is reseeded every epoch (see main), so the order
    of epoch e depends only on (seed, e), which is what makes a mid-epoch resume exact.
    """
    labels = np.asarray(data.train["label"], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if (counts == 0).any():
        raise ValueError(f"the training data needs both classes, got {class_counts(labels)}")
    dataset = data.cached_videos(data.train)
    generator = torch.Generator().manual_seed(args.seed)
    if args.class_balanced_sampling:  # inverse class frequency: both classes are drawn equally often
        weights = (1.0 / counts[labels]).tolist()
        sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    dataloader = DataLoader(
        dataset,
        sampler=sampler,
        batch_size=args.per_device_train_batch_size,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
        generator=generator,  # otherwise each new iterator draws its worker seed from the global RNG
    )
    return dataloader, generator


# Optimizer and scheduler


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


# Run summary


def describe_run(args, accelerator, model, data: VideoData, max_train_steps: int, num_train_epochs: int) -> dict:
    """What the run trains on and with: logged now, saved at the end in metrics.json and the model card."""
    unwrapped = accelerator.unwrap_model(model)
    effective_batch_size = (
        args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    )
    run = {
        "epochs": num_train_epochs,
        "data": {"train": class_counts(data.train["label"]), "validation": class_counts(data.evaluation["label"])},
        "skipped_videos": data.skipped,
        "window_duration": window_duration(list(data.train["video"]), args.seed),
        "num_processes": accelerator.num_processes,
        "effective_batch_size": effective_batch_size,
        "mixed_precision": accelerator.mixed_precision,
        "hardware": describe_hardware(accelerator),
        "trainable_parameters": unwrapped.num_parameters(only_trainable=True),
        "total_parameters": unwrapped.num_parameters(),
    }
    logger.info(
        f"Training on {len(data.train)} videos {run['data']['train']}, validating on {len(data.evaluation)} "
        f"{run['data']['validation']}, {data.skipped} unreadable skipped; {run['trainable_parameters']:,} of "
        f"{run['total_parameters']:,} parameters trainable; {num_train_epochs} epochs, {max_train_steps} optimizer "
        f"steps of {run['effective_batch_size']} videos ({accelerator.num_processes} processes, precision "
        f"{accelerator.mixed_precision})"
    )
    return run


def describe_hardware(accelerator) -> str:
    if accelerator.device.type == "cuda":
        device = torch.cuda.get_device_name(accelerator.device)
    else:
        device = f"{accelerator.device.type.upper()} ({platform.machine()}, {os.cpu_count()} cores)"
    return f"{accelerator.num_processes} x {device}"


# Checkpoints and resuming


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


def resume(args, accelerator, model, checkpoints_dir: Path) -> dict:
    """
    The trainer state to start from: a new one, or --resume_from_checkpoint's, whose weights, optimizer, scheduler
    and RNG states are loaded too (its position in the data is in the state). log.jsonl starts over from it.
    """
    checkpoint = None
    if args.resume_from_checkpoint == "latest":
        checkpoint = (complete_checkpoints(checkpoints_dir) or [None])[-1]
        if checkpoint is None:
            logger.info(f"No complete checkpoint in {checkpoints_dir}: starting from scratch")
    elif args.resume_from_checkpoint:
        checkpoint = Path(args.resume_from_checkpoint)
        if not (checkpoint / TRAINER_STATE_NAME).is_file():
            raise ValueError(f"{checkpoint}: not a complete checkpoint (no {TRAINER_STATE_NAME})")
    if checkpoint is None:
        state = new_trainer_state()
    else:
        state = load_checkpoint(accelerator, model, checkpoint)
        logger.info(
            f"Resumed from {checkpoint}: epoch {state['epoch']}, batch {state['batch_in_epoch']}, "
            f"step {state['global_step']}"
        )
    if accelerator.is_main_process:  # the log holds exactly the epochs of the state we continue from
        write_log(Path(args.output_dir), state["log_history"])
    return state


def new_trainer_state() -> dict:
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
    }


# Training and evaluation


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
    checkpoints_dir: Path,
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
            save_checkpoint(accelerator, checkpoints_dir, {**state, "epoch": epoch}, args.checkpoints_total_limit)
        if state["global_step"] >= max_train_steps:
            break


@torch.no_grad()
def evaluate_model(model, dataloader, processor, metric, accelerator):
    """
    Metrics over the whole dataset (predictions gathered from every process, in the dataset's order), plus the labels
    and the fake log-odds (fake minus real logit: the softmax's fake probability is their sigmoid).
    """
    model.eval()
    fake_index = accelerator.unwrap_model(model).config.label2id[FAKE_LABEL]
    labels, log_odds, predictions, losses = [], [], [], []
    for batch in dataloader:
        logits = model(pixel_values=normalize_videos(batch["frames"], processor)).logits.float()
        loss = F.cross_entropy(logits, batch["labels"], reduction="none")
        fake_log_odds = logits[:, fake_index] - logits[:, 1 - fake_index]
        gathered = accelerator.gather_for_metrics((batch["labels"], fake_log_odds, logits.argmax(-1), loss))
        for store, values in zip((labels, log_odds, predictions, losses), gathered):
            store.append(values.cpu())
    labels, log_odds, predictions, losses = (
        torch.cat(values).numpy() for values in (labels, log_odds, predictions, losses)
    )
    metrics = metric.compute(predictions=predictions, references=labels, prediction_scores=sigmoid(log_odds))
    metrics["loss"] = float(losses.mean())
    return metrics, labels, log_odds


def window_duration(videos: list[str], seed: int, sample_size: int = 500) -> float | None:
    """
    The median duration of (a seeded sample of) the training videos: a training window spreads `num_frames` frames
    over a whole video, so this is how long a window at inference should last. None without timed videos (frame
    folders).
    """
    rng = np.random.default_rng(seed)
    sample = rng.choice(videos, size=min(sample_size, len(videos)), replace=False) if videos else []
    durations = []
    for video in sample:
        if os.path.isdir(video):
            continue
        try:
            duration = probe_video(video).duration
        except VideoDecodeError:
            continue
        if duration:
            durations.append(duration)
    return float(np.median(durations)) if durations else None


def is_improvement(value: float, best: float | None, metric_name: str) -> bool:
    if best is None or (math.isnan(best) and not math.isnan(value)):
        return True
    if math.isnan(value):
        return False
    return value < best if metric_name in LOWER_IS_BETTER else value > best


def write_log(output_dir: Path, entries: list[dict], append: bool = False):
    """log.jsonl, one JSON line per epoch."""
    lines = "".join(json.dumps(json_ready(entry)) + "\n" for entry in entries)
    if not append:
        write_atomically(output_dir / "log.jsonl", lines)
        return
    with open(output_dir / "log.jsonl", "a", encoding="utf-8") as log_file:
        log_file.write(lines)


def end_epoch(args, accelerator, lr_scheduler, state: dict, epoch: int, metrics: dict, checkpoints_dir: Path):
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
    save_checkpoint(accelerator, checkpoints_dir, checkpoint_state, args.checkpoints_total_limit)


def evaluation_sets(args) -> list[tuple[str, argparse.Namespace]]:
    """(name, arguments that load only this set) per evaluation set: each --eval_dir (named by its folder), or the
    --dataset_name split."""
    if not args.eval_dir:
        return [(args.dataset_name, args)]
    sets, names = [], set()
    for eval_dir in args.eval_dir:
        name = Path(eval_dir).stem or str(eval_dir)
        while name in names:  # test/ of two datasets
            name = f"{name}-{len(names) + 1}"
        names.add(name)
        sets.append((name, argparse.Namespace(**{**vars(args), "eval_dir": [eval_dir]})))
    return sets


def evaluate_only(args, accelerator, model, processor, metric):
    """
    --do_eval: every evaluation set scored by --model_path with its stored calibration and decision threshold, each
    video one window spread over it (its frames as in training). Writes predictions.csv (set, path, true label,
    score, verdict), metrics.json (per set; the threshold-dependent metrics at the stored threshold) and a ROC curve
    per set, and prints the cross-dataset table.
    """
    rule = DecisionRule.from_config(model.config)
    temperature = model.config.calibration_temperature
    model = accelerator.prepare(model)
    output_dir = Path(args.output_dir)
    results, predictions = {}, []
    sets = evaluation_sets(args)
    for name, set_args in sets:
        data = load_data(set_args, accelerator, processor)
        dataloader = accelerator.prepare(make_eval_dataloader(set_args, data))
        _, labels, log_odds = evaluate_model(model, dataloader, processor, metric, accelerator)
        scores = sigmoid(log_odds / temperature)
        verdicts = np.array([rule.decide([score]).fake for score in scores], dtype=np.int64)
        metrics = metric.compute(predictions=verdicts, references=labels, prediction_scores=scores)
        results[name] = {f"eval_{key}": value for key, value in metrics.items()}
        results[name].update(
            eval_samples=len(labels), eval_class_counts=class_counts(labels), skipped_videos=data.skipped
        )
        predictions += [
            {"set": name, "path": video, "label": CLASS_NAMES[label], "score": round(float(score), 6),
             "verdict": CLASS_NAMES[verdict]}
            for video, label, score, verdict in zip(data.evaluation["video"], labels, scores, verdicts)
        ]  # fmt: skip
        if accelerator.is_main_process:
            roc_name = "roc_curve.png" if len(sets) == 1 else f"roc_curve-{name}.png"
            plot_roc_curve(labels, scores, metrics, output_dir / roc_name)
    if accelerator.is_main_process:
        write_json(
            output_dir / "metrics.json",
            {"model": args.model_path, "threshold": rule.threshold, "rule": rule.name, "sets": results},
        )
        write_predictions(output_dir / "predictions.csv", predictions)
        print(cross_dataset_table(results, rule.threshold))


def write_predictions(path: Path, predictions: list[dict]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["set", "path", "label", "score", "verdict"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(predictions)
    write_atomically(path, buffer.getvalue())


CROSS_DATASET_COLUMNS = {
    "eval_roc_auc": "AUC",
    "eval_average_precision": "AP",
    "eval_eer": "EER",
    "eval_balanced_accuracy": "bal. acc.",
    "eval_recall_real": "recall real",
    "eval_recall_fake": "recall fake",
}


def cross_dataset_table(results: dict[str, dict], threshold: float) -> str:
    """One row per evaluation set: threshold-free AUC, AP and EER, then balanced accuracy and per-class recall at the
    stored threshold (the field's protocol: train on one set, test on the others)."""
    width = max(len("set"), *(len(name) for name in results))
    titles = "  ".join(f"{title:>11}" for title in CROSS_DATASET_COLUMNS.values())
    header = f"{'set':<{width}}  {'videos':>6}  {titles}"
    lines = [f"Evaluation at threshold {threshold:.4f}:", header]
    for name, metrics in results.items():
        values = "  ".join(f"{metrics[key]:>11.4f}" for key in CROSS_DATASET_COLUMNS)
        lines.append(f"{name:<{width}}  {metrics['eval_samples']:>6}  {values}")
    return "\n".join(lines)


# Export


def export_model(args, checkpoint: Path):
    """
    The detector to export: a fresh fp32 copy of the source (--init_from / --model_path) with `checkpoint`'s
    trainable weights, all a checkpoint holds. The training copy won't do: bf16 training rounded its frozen backbone.
    """
    model, _ = load_model_and_processor(args)
    model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
    return model


def export_best_checkpoint(args, accelerator, model, processor, metric, eval_dataloader, state: dict, run: dict):
    """
    Evaluate the best checkpoint once more, so that every reported number belongs to the exported weights, then
    export it with its model card, metrics.json and roc_curve.png, all in the export folder, which replaces the
    previous one in one step: a run killed at any point leaves the previous set of files or the new one, not a mix.
    """
    output_dir = Path(args.output_dir)
    best_checkpoint = output_dir / "checkpoints" / state["best_checkpoint"]
    load_checkpoint(accelerator, model, best_checkpoint)
    metrics, labels, log_odds = evaluate_model(model, eval_dataloader, processor, metric, accelerator)
    if not accelerator.is_main_process:
        return
    calibration = calibrate(labels, log_odds, args.target_false_positive_rate)
    for note in calibration.pop("notes"):
        logger.warning(f"Calibration: {note}")
    summary = {
        "best_checkpoint": best_checkpoint.name,
        "best_epoch": state["best_epoch"],
        "metric_for_best_model": args.metric_for_best_model,
        "global_step": state["global_step"],
        "train_runtime": state["train_runtime"],
        **run,
    }
    results = {f"eval_{name}": value for name, value in metrics.items()}
    results.update(eval_samples=len(labels), train_samples=sum(run["data"]["train"].values()), **summary)
    model_to_export = export_model(args, best_checkpoint)
    model_to_export.config.update({**calibration.pop("config"), "window_duration": run["window_duration"]})
    results["calibration"] = calibration
    readme = model_card(args, model_to_export, summary, metrics)
    extra_files = {
        "metrics.json": lambda path: write_json(path, results),
        "roc_curve.png": lambda path: plot_roc_curve(labels, sigmoid(log_odds), metrics, path),
    }
    with reporting_full_disk(output_dir / EXPORT_NAME, "the export"):
        export_dir = save_detector(
            model_to_export, processor, output_dir / EXPORT_NAME, readme=readme, extra_files=extra_files
        )
    logger.info(describe_calibration(calibration))
    logger.info(
        f"Done in {state['train_runtime'] / 60:.1f} min: best {args.metric_for_best_model} "
        f"{metrics[args.metric_for_best_model]:.4f} at epoch {state['best_epoch']} ({best_checkpoint.name}); "
        f"{run['skipped_videos']} unreadable video(s) skipped. Exported to {export_dir}, with its metrics.json and "
        "roc_curve.png"
    )


def describe_calibration(calibration: dict) -> str:
    text = (
        f"Calibration on {calibration['real_videos']} real + {calibration['fake_videos']} fake validation videos: "
        f"temperature {calibration['temperature']:.3f}, ECE {calibration['ece_before']:.4f} -> "
        f"{calibration['ece_after']:.4f}"
    )
    if "threshold" in calibration:
        text += (
            f"; threshold {calibration['threshold']:.4f} at a target false-positive rate of "
            f"{calibration['target_false_positive_rate']:g} (validation: FPR {calibration['false_positive_rate']:.3f}, "
            f"TPR {calibration['true_positive_rate']:.3f})"
        )
    if "eer_threshold" in calibration:
        text += f"; EER threshold {calibration['eer_threshold']:.4f}"
    return text


def describe_decision(config) -> str:
    """The card's paragraph on how the export reaches a verdict (the calibration stored in its config)."""
    windows = (
        f"Videos longer than {1.5 * config.window_duration:.2f} s are tiled with windows of "
        f"{config.window_duration:.2f} s, the median duration of the training videos, each sampled as in training."
        if config.window_duration
        else "Each video is one window, its frames spread over the whole video."
    )
    if config.decision_threshold is None:
        return f"{windows} No decision threshold was calibrated (fewer than 2 real validation videos): 0.5 applies."
    return (
        f"{windows} A video is fake when its top window's fake probability (calibrated with temperature "
        f"{config.calibration_temperature:.3f}) reaches {config.decision_threshold:.4f}, the threshold at the "
        "target false-positive rate on the real validation videos; a video of more windows is held to a higher "
        "threshold, so that long real videos are not flagged more often than short ones. `dfd predict --threshold` "
        "and the Endpoint's `threshold` parameter override it."
    )


def describe_source(args) -> str:
    """Where the detector's weights came from, as the card says it."""
    kind = "fine-tuned from the DFD detector" if args.model_path else "built from the CLIP checkpoint"
    repo = hub_id(args.model_path or args.init_from)
    if repo is None:
        return "fine-tuned from a local DFD checkpoint" if args.model_path else "built from a local CLIP checkpoint"
    return f"{kind} [`{repo}`](https://huggingface.co/{repo})"


def model_card_data(args, metrics: dict) -> ModelCardData:
    """The card's YAML metadata: Hub references only, and a model-index of this run's validation metrics."""
    dataset = hub_id(args.dataset_name)
    return ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="video-classification",
        base_model=hub_id(args.model_path or args.init_from),
        datasets=[dataset] if dataset else None,
        metrics=["accuracy", "roc_auc", "f1", "recall"],
        tags=["deepfake-detection", "video-classification", "clip", "spatiotemporal-adapters"],
        model_name=args.hub_model_id.split("/")[-1] if args.hub_model_id else DEFAULT_MODEL_NAME,
        eval_results=[
            EvalResult(
                task_type="video-classification",
                task_name="Deepfake detection",
                dataset_type=dataset or "videofolder",
                dataset_name=dataset or "local videos",
                dataset_split="validation",
                metric_type=name,
                metric_value=round(metrics[name], 4),
                metric_name=display_name,
            )
            for name, display_name in CARD_METRICS.items()
            if math.isfinite(metrics[name])
        ],
    )


def model_card(args, model, summary: dict, metrics: dict) -> str:
    """README.md of the export: tools/model_card.md filled in with this run's recipe and numbers."""
    config = model.config
    card_data = model_card_data(args, metrics)
    dataset = hub_id(args.dataset_name)
    counts = summary["data"]
    trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
    adapters = (
        f"in {len(config.adapter_layers)} of {config.vision_config.num_hidden_layers} blocks"
        if config.adapter_layers
        else "none (frame-only ablation)"
    )
    precision = {"no": "fp32", "bf16": "bf16 autocast, frozen backbone stored in bf16"}.get(
        summary["mixed_precision"], summary["mixed_precision"]
    )
    if args.gradient_checkpointing:
        precision += ", gradient checkpointing"
    sampling = "WeightedRandomSampler, inverse class-frequency weights"
    if not args.class_balanced_sampling:
        sampling = "uniform shuffle (no class balancing)"
    return MODEL_CARD_TEMPLATE.read_text(encoding="utf-8").format(
        metadata=card_data.to_yaml(),
        model_name=card_data.model_name,
        source=describe_source(args),
        config=config,
        adapters=f"{adapters} (bottleneck {config.adapter_bottleneck}, 3-D kernel {config.adapter_kernel_size})",
        trainable=trainable,
        total=total,
        trainable_share=trainable / total,
        data_source=f"the Hub dataset [`{dataset}`](https://huggingface.co/datasets/{dataset})"
        if dataset
        else "local videos",
        data_rows="\n".join(
            f"| {split} | {counts[split]['real']:,} | {counts[split]['fake']:,} | {sum(counts[split].values()):,} |"
            for split in ("train", "validation")
        ),
        summary=summary,
        args=args,
        batch=f"{args.per_device_train_batch_size} per device x {summary['num_processes']} process(es) x "
        f"{args.gradient_accumulation_steps} accumulation steps = {summary['effective_batch_size']}",
        sampling=sampling,
        precision=precision,
        training_minutes=summary["train_runtime"] / 60,
        metric_rows="\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items()),
        decision=describe_decision(config),
        repo=args.hub_model_id or "path/to/model",
    )


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
    accelerator = make_accelerator(args)
    # Each process gets its own seed (seed + rank) for augmentation and dropout; the model starts from rank 0's
    # weights (DDP broadcasts them) and the sampler has its own generator, the same on every rank.
    set_seed(args.seed, device_specific=True)
    checkpoints_dir = prepare_output_dir(args, accelerator)

    model, processor = load_model_and_processor(args)
    prepare_model(args, model, accelerator)
    with accelerator.main_process_first():
        metric = load_dfd_metrics(keep_in_memory=True)

    if args.do_eval:
        evaluate_only(args, accelerator, model, processor, metric)
        accelerator.end_training()
        return
    data = load_data(args, accelerator, processor)
    eval_dataloader = make_eval_dataloader(args, data)
    train_dataloader, sampler_generator = make_train_dataloader(args, data)

    optimizer = make_optimizer(args, model)
    max_train_steps, num_train_epochs = training_length(args, accelerator, train_dataloader)
    lr_scheduler = make_lr_scheduler(args, optimizer, max_train_steps, accelerator)
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )
    accelerator.register_save_state_pre_hook(keep_only_trainable_weights)
    tracker_config = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}
    accelerator.init_trackers("dfd", config=tracker_config)
    run = describe_run(args, accelerator, model, data, max_train_steps, num_train_epochs)

    state = resume(args, accelerator, model, checkpoints_dir)

    progress_bar = tqdm(
        total=max_train_steps, initial=state["global_step"], unit="step", disable=not accelerator.is_local_main_process
    )
    started_at = time.time() - state["train_runtime"]  # a resumed run counts the time trained before
    for epoch in range(state["epoch"], num_train_epochs):
        if state["global_step"] >= max_train_steps:
            break
        sampler_generator.manual_seed(args.seed + epoch)
        train_one_epoch(
            args,
            accelerator,
            model,
            optimizer,
            lr_scheduler,
            train_dataloader,
            processor,
            state,
            epoch,
            max_train_steps=max_train_steps,
            checkpoints_dir=checkpoints_dir,
            progress_bar=progress_bar,
            started_at=started_at,
        )
        metrics, _, _ = evaluate_model(model, eval_dataloader, processor, metric, accelerator)
        state["train_runtime"] = time.time() - started_at
        end_epoch(args, accelerator, lr_scheduler, state, epoch, metrics, checkpoints_dir)
    progress_bar.close()

    export_best_checkpoint(args, accelerator, model, processor, metric, eval_dataloader, state, run)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        push_export(args, Path(args.output_dir) / EXPORT_NAME)


if __name__ == "__main__":
    main()
