"""The `dfd` command: score videos from a terminal, start a checkpoint from CLIP, import a legacy checkpoint.

    dfd predict clip.mp4 videos/ "more/*.mov" --clips 8 --format json --output results.json --plot plots/
    dfd init --clip openai/clip-vit-large-patch14 --output checkpoints/dfd-init
    dfd convert best_model.pt --output checkpoints/dfd-converted --clip openai/clip-vit-large-patch14

Errors are printed as one line (`--debug` shows the traceback). Exit status: 0 on success, 1 on failure (for
`predict`: when any input could not be scored; the others are still scored and written), 2 on usage errors.
"""

import argparse
import csv
import glob
import io
import json
import math
import os
import re
import sys
from pathlib import Path

from . import demo
from .export import check_config_overrides, processor_for, save_detector
from .files import write_atomically
from .plots import write_plot


DEFAULT_MODEL = "Arko007/deepfake-detector-dfd-sota"
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


class CommandError(Exception):
    """A failure the user can act on, printed as `error: <message>` with exit status `exit_code`."""

    exit_code = 1


class UsageError(CommandError):
    exit_code = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"adapter_layers\": [20, 21, 22, 23]}'")
    return value


def refuse_to_overwrite(output: Path, overwrite: bool):
    """A checkpoint folder is the user's work: replace it only when asked to."""
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise CommandError(f"{output}: already exists (pass --overwrite to replace it)")


# ---------------------------------------------------------------------------------------------------------------
# dfd predict
# ---------------------------------------------------------------------------------------------------------------


def expand_inputs(patterns: list[str]) -> list:
    """
    Video paths from files, folders (searched recursively for video extensions) and glob patterns, in the order
    given, without duplicates. An input that names nothing becomes a `VideoError` in its place.
    """
    from ..inference import VideoError

    entries, seen = [], set()

    def add(path: str):
        if path not in seen:
            seen.add(path)
            entries.append(path)

    def add_folder(folder: str):
        # Hidden files are skipped: partial downloads, macOS `._name.mp4` metadata files.
        videos = sorted(
            str(path)
            for path in Path(folder).rglob("*")
            if path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".") and path.is_file()
        )
        if not videos:
            entries.append(VideoError(folder, f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in folder"))
        for video in videos:
            add(video)

    for pattern in patterns:
        if os.path.isdir(pattern):
            add_folder(pattern)
        elif os.path.exists(pattern):
            add(pattern)
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                entries.append(VideoError(pattern, "no file matches this pattern"))
            for match in matches:
                add_folder(match) if os.path.isdir(match) else add(match)
        else:
            entries.append(VideoError(pattern, "file not found"))
    return entries


def plot_file_names(videos: list[str]) -> list[str]:
    """`<stem>.png` for every video; videos sharing a stem get `<stem>-2.png`, `<stem>-3.png`, ..."""
    names, counts = [], {}
    for video in videos:
        stem = Path(video).stem
        counts[stem] = counts.get(stem, 0) + 1
        names.append(f"{stem}.png" if counts[stem] == 1 else f"{stem}-{counts[stem]}.png")
    return names


def _time_range(start, end) -> str:
    return "-" if start is None or end is None else f"{start:.2f}-{end:.2f}s"


def format_table(records: list[dict], num_clips: int) -> str:
    header = ["video", "label", "fake_prob", "frames"]
    if num_clips > 1:
        header += ["max_fake_prob", "most_suspicious"]
    rows = [header]
    for record in records:
        if "error" in record:
            rows.append([record["path"], "error", record["error"]])  # the reason spans the remaining columns
            continue
        clips = record["clips"]
        frames = sum(len(clip["timestamps"]) for clip in clips)
        span = _time_range(clips[0]["start"], clips[-1]["end"])
        row = [record["path"], record["label"], f"{record['fake_probability']:.4f}", f"{frames} @ {span}"]
        if num_clips > 1:
            suspicious = record["most_suspicious"]
            row += [f"{record['max_fake_probability']:.4f}", _time_range(suspicious["start"], suspicious["end"])]
        rows.append(row)
    widths = [
        max(len(row[column]) for row in rows if len(row) == len(header) or column < 2) for column in range(len(header))
    ]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)


def format_json(records: list[dict], num_clips: int) -> str:
    return json.dumps(records, indent=2) + "\n"


CSV_COLUMNS = [
    "path",
    "label",
    "fake_probability",
    "max_fake_probability",
    "suspicious_start",
    "suspicious_end",
    "duration",
    "num_clips",
    "timestamps",
    "error",
]


def format_csv(records: list[dict], num_clips: int) -> str:
    """One row per video; `timestamps` lists every sampled frame (all clips, in time order), space-separated."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        if "error" in record:
            writer.writerow(record)
            continue
        times = [time for clip in record["clips"] for time in clip["timestamps"]]
        writer.writerow(
            {
                "path": record["path"],
                "label": record["label"],
                "fake_probability": record["fake_probability"],
                "max_fake_probability": record["max_fake_probability"],
                "suspicious_start": record["most_suspicious"]["start"],
                "suspicious_end": record["most_suspicious"]["end"],
                "duration": record["duration"],
                "num_clips": len(record["clips"]),
                "timestamps": " ".join("" if time is None else f"{time:g}" for time in times),
            }
        )
    return buffer.getvalue()


FORMATTERS = {"table": format_table, "json": format_json, "csv": format_csv}


def resolve_device(name: str, state):
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        return state.device if state.device.type == "cuda" else torch.device("cuda")
    return state.device  # accelerate's pick: this process's GPU under `accelerate launch`, else the best available


def resolve_dtype(name: str, device):
    import torch

    from ..inference import default_dtype

    if name == "auto":
        return default_dtype(device)
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def run_predict(args) -> int:
    if args.device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Launched processes on the CPU: hide the GPUs before anything initialises CUDA, since accelerate's barriers
        # name a GPU per process even for CPU (gloo) runs and fail with fewer GPUs than processes.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    from ..inference import VideoError, VideoScorer

    # Under `accelerate launch` (or torchrun), every process scores its share of the videos and the main one writes
    # the merged result. Without GPUs, processes talk through gloo, which PartialState only picks with cpu=True.
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    entries = expand_inputs(args.paths)
    videos = [(index, entry) for index, entry in enumerate(entries) if isinstance(entry, str)]
    if state.is_main_process:
        for entry in entries:
            if isinstance(entry, VideoError):
                print(f"error: {entry}", file=sys.stderr)

    device = resolve_device(args.device, state)
    dtype = resolve_dtype(args.dtype, device)
    if videos:
        with state.main_process_first():  # the first load copies the model's code into the modules cache
            try:
                model = AutoModelForVideoClassification.from_pretrained(args.model, trust_remote_code=True)
                processor = AutoVideoProcessor.from_pretrained(args.model, trust_remote_code=True)
            except OSError as error:  # not found, offline and not cached, no weights, ...
                raise CommandError(f"--model {args.model}: {error}") from None
        if args.compile:
            model.compile_blocks()
        scorer = VideoScorer(model, processor, device, dtype, args.batch_size, args.num_workers)
    plot_names = plot_file_names([path for _, path in videos]) if args.plot else None

    scored = {}  # input index -> record, for this process's share
    with state.split_between_processes(list(range(len(videos)))) as positions:
        progress = tqdm(
            total=len(positions), unit="video", file=sys.stderr, disable=len(videos) <= 1 or not state.is_main_process
        )
        paths = [videos[position][1] for position in positions]
        for position, result in zip(positions, scorer.predict(paths, args.clips) if paths else ()):
            record = result.to_dict()
            if isinstance(result, VideoError):
                tqdm.write(f"error: {result}", file=sys.stderr)
            elif args.plot:
                write_plot(record, Path(args.plot) / plot_names[position])
            scored[videos[position][0]] = record
            progress.update()
        progress.close()
    scored = dict(gather_object(list(scored.items())))
    records = [scored.get(index) or entry.to_dict() for index, entry in enumerate(entries)]

    if state.is_main_process:
        output_format = args.format or {".json": "json", ".csv": "csv"}.get(Path(args.output or "").suffix, "table")
        text = FORMATTERS[output_format](records, args.clips)
        if args.output:
            write_atomically(args.output, text)
        else:
            sys.stdout.write(text)
    # A launcher stops every process as soon as one exits with an error: keep them all alive until the result is out.
    state.wait_for_everyone()
    return 1 if any("error" in record for record in records) else 0


def add_predict_parser(subparsers, parent):
    parser = subparsers.add_parser(
        "predict",
        parents=[parent],
        help="label videos real or fake",
        description=(
            "Label videos real or fake. Each video is cut into --clips equal segments; a clip samples its segment "
            "evenly with the model's number of frames (12), so one clip is the model card's sampling. A video's "
            "fake probability is the mean over its clips; with several clips the maximum and the most suspicious "
            "clip's time range are reported too. Runs on several GPUs under `accelerate launch`."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="video files, globs, and folders searched recursively for video files "
        f"({' '.join(VIDEO_EXTENSIONS)}); a folder of frame images is not read as one video",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"Hub repo id or local folder of a detector (default: {DEFAULT_MODEL})"
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: the GPU (one per process under accelerate launch) when there is one, else the CPU",
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="autocast precision; auto: bf16 on CUDA, fp32 elsewhere",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="clips per forward pass (default: 8)")
    parser.add_argument("--clips", type=positive_int, default=1, help="clips per video (default: 1)")
    parser.add_argument(
        "--format",
        choices=sorted(FORMATTERS),
        help="output format (default: from the --output extension .json/.csv, else table)",
    )
    parser.add_argument("--output", metavar="FILE", help="write the results to FILE (atomically) instead of stdout")
    parser.add_argument("--plot", metavar="DIR", help="write a PNG of fake probability over time per video into DIR")
    parser.add_argument(
        "--num-workers", type=positive_int, default=2, help="threads decoding the next videos (default: 2)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile each encoder block (pays off on many videos)"
    )
    parser.set_defaults(run=run_predict)


# ---------------------------------------------------------------------------------------------------------------
# dfd init / dfd convert
# ---------------------------------------------------------------------------------------------------------------


def check_overrides(overrides: dict):
    """`dfd.tools.export.check_config_overrides`, reported as a usage error (exit status 2)."""
    try:
        check_config_overrides(overrides)
    except ValueError as error:
        raise UsageError(f"--config-overrides: {error}") from None


def export_detector(model, output: Path) -> Path:
    """The model plus the processor its config implies, as a Hub-ready folder (see `dfd.tools.export.save_detector`)."""
    return save_detector(model, processor_for(model.config), output)


def describe(model) -> str:
    return f"{model.num_parameters():,} parameters, {model.num_parameters(only_trainable=True):,} trainable"


def run_init(args) -> int:
    from ..modeling_dfd import DFDForVideoClassification

    output = Path(args.output)
    refuse_to_overwrite(output, args.overwrite)
    check_overrides(args.config_overrides)
    model = DFDForVideoClassification.from_clip(args.clip, **args.config_overrides)
    export_detector(model, output)
    print(f"saved an untrained detector to {output} ({describe(model)})")
    print(f"train it with: accelerate launch train_accelerate.py --model_path {output} ...")
    return 0


def add_init_parser(subparsers, parent):
    parser = subparsers.add_parser(
        "init",
        parents=[parent],
        help="start a detector from a CLIP checkpoint",
        description=(
            "Write an untrained detector (CLIP vision backbone, adapters at identity, new classifier) with its "
            "processor config, ready for train_accelerate.py --model_path."
        ),
    )
    parser.add_argument(
        "--clip", required=True, help="CLIP checkpoint: Hub id (e.g. openai/clip-vit-large-patch14) or local folder"
    )
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument(
        "--config-overrides",
        type=json_object,
        default={},
        metavar="JSON",
        help='DFDConfig arguments, e.g. \'{"image_size": 224, "adapter_layers": [20, 21, 22, 23]}\'',
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(run=run_init)


# Wrappers that training code adds in front of parameter names: DataParallel/DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Parts of a full CLIPModel that a vision-only detector has no use for.
NOT_VISION = ("text_model.", "text_projection", "visual_projection", "logit_scale")


def load_legacy_state_dict(path: str) -> dict:
    """Tensors of a checkpoint saved with torch.save, loaded with `weights_only=True` so no code is ever run."""
    import torch

    if not os.path.isfile(path):
        raise CommandError(f"{path}: file not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsupported:
            raise CommandError(
                f"{path}: refused: unpickling it would run code ({unsupported.group(1)}); only tensors and plain "
                "containers are loaded (weights_only=True)"
            ) from None
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise CommandError(f"{path}: not a PyTorch checkpoint loadable with weights_only=True ({reason})") from None
    if not isinstance(checkpoint, dict):
        checkpoint = {}
    for key in ("model_state_dict", "state_dict"):  # a training checkpoint, as in the model card's usage
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    tensors = {
        key: value for key, value in checkpoint.items() if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise CommandError(f"{path}: holds no state dict (expected tensors, or a dict with 'model_state_dict')")
    return tensors


POSITION_EMBEDDING = "dfd.embeddings.position_embedding.weight"


def is_square_grid(position_embeddings) -> bool:
    """A CLIP position table: (1 + g*g, hidden), one CLS position and a g x g patch grid."""
    num_patches = len(position_embeddings) - 1
    return position_embeddings.ndim == 2 and math.isqrt(num_patches) ** 2 == num_patches


def map_legacy_state_dict(legacy: dict, target: dict) -> tuple[dict, list[str], list[str]]:
    """
    Rename legacy tensors to the detector's names: `dfd.<CLIP vision name>` for the backbone (from keys like
    `clip.vision_model.*`, `vision_model.*`, `backbone.*`), and the detector's own names (adapters, `classifier.*`)
    after any wrapper prefix. A tensor is used only where its shape fits (position embeddings are resized to the
    detector's patch grid). Returns (state dict to load, names of the tensors used, names ignored).
    """
    from ..modeling_dfd import resize_position_embeddings

    mapped, used, ignored = {}, [], []
    for key, tensor in legacy.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if any(part in name for part in NOT_VISION):
            ignored.append(key)
            continue
        if "vision_model." in name:
            name = name.rsplit("vision_model.", 1)[1]
        parts = name.split(".")
        # Drop leading module names (`backbone.`, `model.`, ...) until the rest is a detector or backbone name.
        candidates = [".".join(parts[start:]) for start in range(len(parts))]
        target_name = next(
            (
                candidate
                for rest in candidates
                for candidate in (rest, f"dfd.{rest}")
                if candidate in target and candidate not in mapped
            ),
            None,
        )
        if target_name is None:
            ignored.append(key)
            continue
        expected = target[target_name].shape
        if target_name == POSITION_EMBEDDING and is_square_grid(tensor) and tensor.shape[1] == expected[1]:
            tensor = resize_position_embeddings(tensor, math.isqrt(expected[0] - 1))
        if tensor.shape != expected:
            ignored.append(key)
            continue
        mapped[target_name] = tensor
        used.append(key)
    return mapped, used, ignored


def run_convert(args) -> int:
    output = Path(args.output)
    refuse_to_overwrite(output, args.overwrite)
    legacy = load_legacy_state_dict(args.checkpoint)  # first: a refused file fails before any model is built
    check_overrides(args.config_overrides)

    import torch

    from ..configuration_dfd import DFDConfig
    from ..modeling_dfd import DFDForVideoClassification

    if args.clip:
        model = DFDForVideoClassification.from_clip(args.clip, **args.config_overrides)
    else:
        config_path = Path(args.config) if args.config else None
        if config_path is not None and config_path.is_dir():
            config_path = config_path / "config.json"
        values = json.loads(config_path.read_text()) if config_path else {}
        model = DFDForVideoClassification(DFDConfig(**{**values, **args.config_overrides}))
    target = model.state_dict()
    mapped, used, ignored = map_legacy_state_dict(legacy, target)
    if not used:
        raise CommandError(f"{args.checkpoint}: none of its {len(legacy)} tensors is a CLIP vision or detector weight")
    missing = [name for name in target if name not in mapped]
    adapters_missing = [name for name in missing if ".adapter." in name]
    classifier_missing = [name for name in missing if name.startswith("classifier.")]
    backbone_missing = [name for name in missing if name not in adapters_missing + classifier_missing]
    if backbone_missing and not args.clip:
        raise CommandError(
            f"{args.checkpoint}: {len(backbone_missing)} backbone weights are missing (e.g. {backbone_missing[0]}); "
            "pass --clip to take them from a CLIP checkpoint"
        )
    if classifier_missing and not args.new_head:
        # E.g. the card's original head, an MLP (classifier.0, classifier.3), which the detector's Linear cannot take.
        raise CommandError(
            f"{args.checkpoint}: no classifier fits the detector's ({', '.join(classifier_missing)}), so it would "
            "predict at random; pass --new-head to convert anyway, then train the new head"
        )
    with torch.no_grad():
        model.load_state_dict(mapped, strict=False)
    export_detector(model, output)
    print(f"used {len(used)} tensors, ignored {len(ignored)}, missing {len(missing)}")
    for kind, names in (
        ("ignored", ignored),
        ("missing, taken from the CLIP checkpoint", backbone_missing),
        ("missing, adapters starting at identity", adapters_missing),
        ("missing, a NEW classifier that must be trained before use", classifier_missing),
    ):
        if names:
            print(f"  {kind}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}")
    print(f"saved the converted detector to {output} ({describe(model)})")
    return 0


def add_convert_parser(subparsers, parent):
    parser = subparsers.add_parser(
        "convert",
        parents=[parent],
        help="import a legacy best_model.pt / pytorch_model.bin",
        description=(
            "Import a checkpoint saved with torch.save (a dict with 'model_state_dict', or a bare state dict) into a "
            "Hub-ready detector folder. It is loaded with torch.load(weights_only=True): files that need code to "
            "unpickle are refused. CLIP vision weights are mapped by name (clip.vision_model.*, vision_model.*, "
            "backbone.*, ...); adapters and classifier are kept when their names and shapes match the detector's. A "
            "classifier that does not fit (e.g. the original MLP head, classifier.0/classifier.3) is refused unless "
            "--new-head is given."
        ),
    )
    parser.add_argument("checkpoint", help="the legacy checkpoint file")
    parser.add_argument("--output", required=True, metavar="DIR")
    architecture = parser.add_mutually_exclusive_group()
    architecture.add_argument(
        "--clip", help="CLIP checkpoint (Hub id or folder) that defines the backbone and fills weights the file lacks"
    )
    architecture.add_argument(
        "--config", help="config.json (or a folder holding one) of the detector to build; default: the card's ViT-L/14"
    )
    parser.add_argument("--config-overrides", type=json_object, default={}, metavar="JSON", help="DFDConfig arguments")
    parser.add_argument(
        "--new-head",
        action="store_true",
        help="convert even when the file's classifier does not fit the detector's (e.g. an MLP head): the head starts "
        "new and the detector must be trained before use",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(run=run_convert)


# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    debug_help = "show full tracebacks and library warnings"
    parser = argparse.ArgumentParser(prog="dfd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Every command takes --debug too; SUPPRESS keeps `dfd --debug predict ...` from being reset by the command.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_predict_parser(subparsers, parent)
    add_init_parser(subparsers, parent)
    add_convert_parser(subparsers, parent)
    demo_parser = subparsers.add_parser(
        "demo",
        parents=[parent],
        help="train and compare two tiny detectors on synthetic videos, offline",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
        hub_logging.set_verbosity_error()  # e.g. the retries of an offline download
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return error.exit_code if isinstance(error, CommandError) else 1


if __name__ == "__main__":
    sys.exit(main())
