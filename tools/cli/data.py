"""`dfd data index`: a dataset as downloaded -> a manifest CSV with its official splits, or splits by identity."""

import argparse
import os
from collections import Counter
from pathlib import Path

from ..data import FORMATS, LABELS, SPLITS, index, leakage, write_manifest
from ..data import dfd as dfd_format
from ..data.ffpp import METHODS
from .common import CommandError, UsageError


def method_list(text: str) -> tuple[str, ...]:
    methods = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if "DeepFakeDetection" in methods:
        raise argparse.ArgumentTypeError("DeepFakeDetection, with its actors, is the dfd format")
    unknown = [name for name in methods if name not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(METHODS)}, got {text!r}")
    return methods


def split_table(rows) -> list[str]:
    counts = Counter((row.split, row.label) for row in rows)
    lines = [f"  {'split':<12}{'real':>8}{'fake':>8}{'total':>8}"]
    for split in SPLITS:
        real, fake = (counts[split, label] for label in LABELS)
        if real + fake or split != "excluded":
            lines.append(f"  {split:<12}{real:>8}{fake:>8}{real + fake:>8}")
    return lines


def run(args) -> int:
    options = {"compression": args.compression, "methods": args.methods, "seed": args.seed}
    options["frames_root"] = args.frames_root
    taken = FORMATS[args.format].OPTIONS
    given = [f"--{name}" for name, value in options.items() if value is not None and name not in taken]
    if given:
        raise UsageError(f"{args.format} does not take {', '.join(given)}")
    output = Path(args.output)
    if output.is_dir() or (output.exists() and not args.overwrite):
        raise CommandError(f"{output}: already exists (pass --overwrite to replace it)")
    try:
        indexed = index(args.format, args.root, **options)
        rows = indexed.rows
        write_manifest(output, rows)
    except ValueError as error:
        raise CommandError(str(error)) from None
    datasets = ", ".join(sorted({row.dataset for row in rows}))
    print(f"{datasets} ({args.format}) from {args.root}: {len(rows)} videos")
    print("\n".join(split_table(rows)))
    excluded = sum(row.split == "excluded" for row in rows)
    print(f"excluded: {excluded} videos whose identities fell in different splits (kept in the manifest, never used)")
    print(f"deduplicated: {indexed.deduplicated} videos listed in several splits, kept once")
    scene = dfd_format.scene if args.format == "dfd" else None
    for split in ("validation", "test"):
        if any(row.split == split for row in rows):
            print(f"{split}: {leakage(rows, split, scene).describe()}")
    for note in indexed.notes:
        print(f"note: {note}")
    print(f"wrote {output}")
    return 0


def add_parser(subparsers, parent: argparse.ArgumentParser):
    parser = subparsers.add_parser(
        "data", parents=[parent], help="index datasets as downloaded into manifests", description=__doc__
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    formats = "\n".join(f"  {name:<14}{module.__doc__.strip().splitlines()[0]}" for name, module in FORMATS.items())
    command = commands.add_parser(
        "index",
        parents=[parent],
        help="write a manifest of a dataset as downloaded",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write a manifest (path,label,split,group,method,dataset) of a dataset in its official layout, reading "
            "labels and splits from its official files. Where a dataset has no official split (DFD, DFDC's "
            "training parts) or no validation split (Celeb-DF, DFDC-preview), one is made by identity: no actor or "
            "source video in two splits, a fake whose two identities fall in different splits kept as 'excluded'. "
            "Training takes the manifest (or FORMAT:ROOT) as --train_dir, --validation_dir or --eval_dir.\n\n"
            f"formats:\n{formats}"
        ),
    )
    command.add_argument("format", choices=FORMATS, metavar="FORMAT", help=f"one of {', '.join(FORMATS)}")
    command.add_argument("root", metavar="ROOT", help="the dataset's folder (deepfakebench: its dataset JSON file)")
    command.add_argument("--output", required=True, metavar="MANIFEST.csv")
    command.add_argument(
        "--compression", choices=["raw", "c23", "c40"], help="ffpp, dfd, deepfakebench: the level (default c23)"
    )
    command.add_argument(
        "--methods", type=method_list, help=f"ffpp: comma-separated, of {','.join(METHODS)} (default: all five)"
    )
    command.add_argument("--seed", type=int, help="dfd, celebdf, dfdc, dfdcp: seed of the identity split (default 0)")
    command.add_argument(
        "--frames_root",
        type=os.path.abspath,
        metavar="DIR",
        help="deepfakebench: where its relative frame paths start (its rgb_dir; default: the JSON file's folder)",
    )
    command.add_argument("--overwrite", action="store_true", help="replace MANIFEST.csv if it exists")
    command.set_defaults(run=run)
