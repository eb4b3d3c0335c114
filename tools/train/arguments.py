"""
The command line of `train_accelerate.py`: every option with the card's recipe as its default, and the checks that
refuse, before anything loads, a combination that would fail late or silently do something else.
"""

import argparse
import os
from pathlib import Path

import datasets
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..argument_types import json_object, positive_int, probability
from ..data import source_path
from ..export import check_config_overrides, hub_id
from .card import CARD_METRICS


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The script's docstring as written, and each option's default after its help (unless it has none)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """A usage error is one line: the usage of some fifty options would bury it (`--help` lists them)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_data_arguments(group):
    group.add_argument(
        "--train_dir",
        help="Training data: a manifest CSV (`dfd data index FORMAT ROOT --output M.csv` writes one from a dataset as "
        "downloaded; a hand-written label,path CSV with real/fake labels is one too), FORMAT:ROOT (the same, indexed "
        "on the fly, e.g. ffpp:/data/FaceForensics++), or a folder with real/ and fake/ subfolders (video files or "
        "frame folders). A manifest's train split is trained on and its validation split validated on.",
    )
    group.add_argument(
        "--validation_dir",
        help="Validation data, same forms as --train_dir (its validation split, else its only one). Default: the "
        "training data's validation split, else one held out of the training videos (see "
        "--validation_split_percentage).",
    )
    group.add_argument(
        "--eval_dir",
        nargs="+",
        help="Evaluation sets, same forms as --train_dir (each its --eval_split): scored by --model_path with "
        "--do_eval, or after training by the exported checkpoint. Several sets (and with --do_eval --dataset_name) "
        "give a cross-dataset table, a row per set and per method of a set with several.",
    )
    group.add_argument(
        "--dataset_name",
        help="A Hub dataset (or local load_dataset path) with a video/path column and a label column, instead of "
        "--train_dir (or, with --do_eval, as one more evaluation set).",
    )
    group.add_argument("--dataset_config_name", help="Configuration of --dataset_name.")
    group.add_argument("--video_column", help="Column of --dataset_name holding videos. Default: 'video', else 'path'.")
    group.add_argument("--label_column", default="label", help="Column of --dataset_name holding the labels.")
    group.add_argument(
        "--eval_split",
        help="Split evaluated by --do_eval, in every evaluation set. Default: test, else validation, else train.",
    )
    group.add_argument(
        "--validation_split_percentage",
        type=float,
        default=10.0,
        help="Share of the training videos held out to validate on when no validation split is given: by identity "
        "group when the rows have groups (a manifest's group column: no actor or source video on both sides), else "
        "a plain stratified split (folders of real/ and fake/).",
    )
    group.add_argument(
        "--allow_overlap",
        action="store_true",
        help="Train even when the training, validation and evaluation sets share videos or identity groups (refused "
        "by default: a detector scored on faces it trained on can score well by recognising them). What they share "
        "is recorded in metrics.json and the model card.",
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
        help="Processes decoding videos into the frame cache on each machine, shared among the run's processes "
        "there; every process of the run decodes its share of the videos.",
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
        type=json_object,
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
    group.add_argument(
        "--augment",
        choices=("card", "robust"),
        default="card",
        help="card: horizontal flip and brightness jitter, one draw per video (the recipe). robust: also, each with "
        "probability 0.5, noise, downscale-upscale, blur and re-compression (H.264 at CRF 23 to 40, FaceForensics++'s "
        "c23 to c40, or JPEG at quality 30 to 90), in the DataLoader workers (benchmarks/bench_data.py: its cost).",
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
        type=probability,
        default=0.05,
        help="Share of real validation videos the exported decision threshold may call fake (per video, under the "
        "decision rule); stored in the export's config.json with the fitted calibration temperature.",
    )
    group.add_argument("--logging_steps", type=positive_int, default=10, help="Log the loss every N steps.")
    group.add_argument(
        "--report_to", default="tensorboard", help="Accelerate trackers: tensorboard, wandb, all, none, ..."
    )
    group.add_argument(
        "--debug",
        action="store_true",
        help="Show the traceback of an error the run reports (by default one line: what, and what to do).",
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
        "needs several times the GPU memory without it (benchmarks/bench_train_step.py measures it).",
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
        "--resume_from_checkpoint",
        help="'latest' (of OUT/checkpoints; a fresh start if none) or a checkpoint folder. The batch settings "
        "(--per_device_train_batch_size, --gradient_accumulation_steps, processes) must be the checkpoint's.",
    )
    group.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Start over in an --output_dir that holds checkpoints of an earlier run (they are deleted) or its export "
        "(OUT/model, replaced once the new one is ready).",
    )
    group.add_argument(
        "--do_eval", action="store_true", help="Only evaluate --model_path on --eval_dir (and/or --dataset_name)."
    )
    group.add_argument(
        "--push_to_hub",
        action="store_true",
        help="Upload OUT/model to --hub_model_id at the end; the credentials and the repo name are checked before "
        "training.",
    )
    group.add_argument("--hub_model_id", help="ORG/NAME to upload OUT/model to with --push_to_hub.")
    group.add_argument("--hub_private", action="store_true", help="Create the --hub_model_id repo private.")


def missing_local_path(name: str | None, hub_allowed: bool) -> bool:
    """A path (or FORMAT:ROOT's ROOT) that is not on this machine, and (when a Hub id would do) does not read as one."""
    return bool(name) and not os.path.exists(source_path(name)) and not (hub_allowed and hub_id(name))


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """Refuse combinations that would fail late or silently do something else, before anything loads."""
    if args.do_eval:
        if not args.model_path or not (args.eval_dir or args.dataset_name):
            parser.error("--do_eval needs --model_path and --eval_dir (and/or --dataset_name)")
    elif not (args.train_dir or args.dataset_name):
        parser.error("training needs --train_dir (or --dataset_name); use --do_eval to only evaluate")
    elif args.train_dir and args.dataset_name:
        parser.error("--train_dir and --dataset_name are two sources of training data: give one")
    elif args.eval_split and not args.eval_dir:
        parser.error("--eval_split picks the split of each --eval_dir: give --eval_dir")
    for option in ("train_dir", "validation_dir"):
        if missing_local_path(getattr(args, option), hub_allowed=False):
            parser.error(f"--{option} {getattr(args, option)}: no such folder, manifest or dataset root")
    for eval_dir in args.eval_dir or ():
        if missing_local_path(eval_dir, hub_allowed=False):
            parser.error(f"--eval_dir {eval_dir}: no such folder, manifest or dataset root")
    for option in ("model_path", "init_from"):
        if missing_local_path(getattr(args, option), hub_allowed=True):
            parser.error(f"--{option} {getattr(args, option)}: no such folder (nor a Hub id ORG/NAME)")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id ORG/NAME")
    if args.hub_model_id:
        try:
            validate_repo_id(args.hub_model_id)
        except HFValidationError as error:
            parser.error(f"--hub_model_id: {error}")
    if args.config_overrides and args.model_path:
        # A checkpoint's weights are shaped by its config: overriding it on load would drop or misfit weights.
        parser.error(
            "--config_overrides can't reshape a --model_path checkpoint; start a new shape with --init_from "
            "(or `dfd init --config-overrides`)"
        )
    args.config_overrides = args.config_overrides or {}
    try:
        check_config_overrides(args.config_overrides)
    except ValueError as error:
        parser.error(f"--config_overrides: {error}")


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="train_accelerate.py", description=description, formatter_class=HelpFormatter)
    add_data_arguments(parser.add_argument_group("data"))
    add_model_arguments(parser.add_argument_group("model"))
    add_training_arguments(parser.add_argument_group("training"))
    add_speed_and_memory_arguments(parser.add_argument_group("speed and memory"))
    add_checkpoint_arguments(parser.add_argument_group("checkpoints and export"))
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    return args
