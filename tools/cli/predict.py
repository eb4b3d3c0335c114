"""`dfd predict`'s command line: label videos real or fake, on one device or split between the processes of
`accelerate launch` (predicting.py does it)."""

import argparse

from ...settings_dfd import DTYPE_CHOICES
from .common import positive_int, probability
from .formats import FORMATTERS
from .inputs import VIDEO_EXTENSIONS


DEFAULT_MODEL = "Arko007/deepfake-detector-dfd-sota"
OUTPUT_FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv"}


def run(args) -> int:
    from .predicting import run  # torch and the model libraries: once the arguments are good

    return run(args)


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
        help="video files, frame folders, globs, and folders searched recursively for video files "
        f"({' '.join(VIDEO_EXTENSIONS)}) and frame folders; a frame folder (one video) directly holds frame images "
        "and neither video files nor subfolders",
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
        choices=DTYPE_CHOICES,
        default="auto",
        help="precision: bf16 autocast, fp32, or int8 (dynamically quantized linear layers, CPU only, no --explain); "
        "auto: DFD_DTYPE when set, else bf16 on GPUs and on CPUs with bf16 units (AVX512-BF16 or AMX), else fp32",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default: 8)")
    parser.add_argument(
        "--windows",
        type=positive_int,
        metavar="N",
        help="N equal time windows per video instead of windows of the training duration (default: the model's "
        "window_duration, else 1); a window never holds fewer than the model's frames per window, so a short video "
        "gets fewer windows than asked, with a warning",
    )
    parser.add_argument("--clips", type=positive_int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument(
        "--threshold",
        type=probability,
        help="fake when the decision rule's score reaches this (for a one-window video), instead of the threshold "
        "calibrated in training (default: the model's decision_threshold, else 0.5)",
    )
    parser.add_argument(
        "--format",
        choices=sorted(FORMATTERS),
        help="output format (default: from the --output extension .json/.jsonl/.csv, else table)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the results to FILE (atomically, at the end) instead of stdout; meanwhile each result is streamed "
        "to FILE.partial.jsonl as it comes, which an interrupted run keeps",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip the videos already scored in --output (its .partial.jsonl journal, or a finished .json/.jsonl "
        "file); videos that failed are tried again. Rerun with the same options",
    )
    parser.add_argument(
        "--plot",
        metavar="DIR",
        help="write a PNG of fake probability over time per video into DIR, named after the video's path relative to "
        "the folder the inputs share (a/x.mp4 -> DIR/a/x.mp4.png)",
    )
    parser.add_argument(
        "--explain",
        metavar="DIR",
        help="for every flagged window (fake probability >= 0.5), write a PNG into DIR of its frames with the regions "
        "that drove the fake score overlaid (integrated gradients: dozens of forward and backward passes per window, "
        "see benchmarks/bench_explain.py)",
    )
    parser.add_argument(
        "--num-workers", type=positive_int, default=2, help="threads decoding the next videos (default: 2)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile each encoder block (pays off on many videos)"
    )
    parser.set_defaults(run=run)
