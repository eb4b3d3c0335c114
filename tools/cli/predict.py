"""`dfd predict`: label videos real or fake, on one device or split between the processes of `accelerate launch`."""

import argparse
import glob
import os
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from ...inference import VideoError, VideoScorer, default_dtype
from ..files import write_atomically
from ..loading import load_detector
from ..plots import write_plot
from .common import CommandError, UsageError, positive_int, probability
from .formats import FORMATTERS


DEFAULT_MODEL = "Arko007/deepfake-detector-dfd-sota"
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


def expand_inputs(patterns: list[str]) -> list[str | VideoError]:
    """
    Video paths from files, folders (searched recursively for video extensions) and glob patterns, in the order
    given, without duplicates. An input that names nothing becomes a `VideoError` in its place.
    """
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


def resolve_device(name: str, state: PartialState) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        return state.device if state.device.type == "cuda" else torch.device("cuda")
    return state.device  # accelerate's pick: this process's GPU under `accelerate launch`, else the best available


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return default_dtype(device)
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[name]


def load_scorer(args, device: torch.device) -> VideoScorer:
    try:
        model, processor = load_detector(args.model)
    except OSError as error:
        raise CommandError(f"--model {args.model}: {error}") from None
    if args.compile:
        model.compile_blocks()
    dtype = resolve_dtype(args.dtype, device)
    return VideoScorer(model, processor, device, dtype, args.batch_size, args.num_workers, threshold=args.threshold)


def score_share(state: PartialState, scorer: VideoScorer, videos: list[tuple[int, str]], args) -> dict[int, dict]:
    """This process's share of `videos` ((input index, path) pairs), scored: input index -> record. Writes the plots."""
    plot_names = plot_file_names([path for _, path in videos]) if args.plot else None
    scored = {}
    with state.split_between_processes(list(range(len(videos)))) as positions:
        progress = tqdm(
            total=len(positions), unit="video", file=sys.stderr, disable=len(videos) <= 1 or not state.is_main_process
        )
        paths = [videos[position][1] for position in positions]
        for position, result in zip(positions, scorer.predict(paths, args.windows) if paths else ()):
            record = result.to_dict()
            if isinstance(result, VideoError):
                tqdm.write(f"error: {result}", file=sys.stderr)
            elif args.plot:
                write_plot(record, Path(args.plot) / plot_names[position])
            scored[videos[position][0]] = record
            progress.update()
        progress.close()
    return scored


def write_results(records: list[dict], args):
    output_format = args.format or {".json": "json", ".csv": "csv"}.get(Path(args.output or "").suffix, "table")
    text = FORMATTERS[output_format](records)
    if args.output:
        write_atomically(args.output, text)
    else:
        sys.stdout.write(text)


def run(args) -> int:
    if args.device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Launched processes on the CPU: hide the GPUs before anything initialises CUDA, since accelerate's barriers
        # name a GPU per process even for CPU (gloo) runs and fail with fewer GPUs than processes.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
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
    scored = {}
    if videos:
        with state.main_process_first():  # the first load copies the model's code into the modules cache
            scorer = load_scorer(args, device)
        scored = score_share(state, scorer, videos, args)
    scored = dict(gather_object(list(scored.items())))
    records = [scored.get(index) or entry.to_dict() for index, entry in enumerate(entries)]
    if state.is_main_process:
        write_results(records, args)
    # A launcher stops every process as soon as one exits with an error: keep them all alive until the result is out.
    state.wait_for_everyone()
    return 1 if any("error" in record for record in records) else 0


def add_parser(subparsers, parent: argparse.ArgumentParser):
    parser = subparsers.add_parser(
        "predict",
        parents=[parent],
        help="label videos real or fake",
        description=(
            "Label videos real or fake. Each video is tiled with time windows as long as the model's training videos "
            "(its config's window_duration; a video up to 1.5 times that long is one window, the model card's "
            "sampling); a window samples its part of the video evenly with the model's number of frames (12). A "
            "video is fake when its top window's calibrated fake probability reaches the model's threshold (held "
            "higher for more windows, so long real videos are not flagged more often than short ones). Reports the "
            "verdict, that score, the threshold, the flagged windows' time ranges and the mean over the windows. "
            "Runs on several GPUs under `accelerate launch`."
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
        "--model", default=DEFAULT_MODEL, help=f"local folder or Hub repo id of a detector (default: {DEFAULT_MODEL})"
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
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default: 8)")
    parser.add_argument(
        "--windows",
        "--clips",
        dest="windows",
        type=positive_int,
        metavar="N",
        help="N equal time windows per video instead of windows of the training duration (default: the model's "
        "window_duration, else 1); --clips is its earlier name",
    )
    parser.add_argument(
        "--threshold",
        type=probability,
        help="fake when the decision rule's score reaches this (for a one-window video), instead of the threshold "
        "calibrated in training (default: the model's decision_threshold, else 0.5)",
    )
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
    parser.set_defaults(run=run)
