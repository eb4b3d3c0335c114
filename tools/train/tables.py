"""
Video tables: (video path, label) rows by split, from a folder of real/ and fake/ videos, a CSV or JSON Lines
manifest, or a Hub dataset. Everything here only lists and checks; nothing is decoded.
"""

import hashlib
import os
import uuid
from pathlib import Path

import datasets
import numpy as np

from ...configuration_dfd import CLASS_NAMES
from .errors import TrainingError


# What a manifest, a folder or a Hub dataset may call its validation split.
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")
# The datasets builder that reads each kind of manifest.
MANIFEST_BUILDERS = {".csv": "csv", ".jsonl": "json", ".json": "json"}


def parse_label(value, where: str) -> int:
    """0/1 or real/fake (any case) -> 0/1; anything else is an error that names where the label came from."""
    if isinstance(value, str):
        name = value.strip().lower()
        if name in CLASS_NAMES:
            return CLASS_NAMES.index(name)
        if name in ("0", "1"):
            return int(name)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1):
        return int(value)
    raise TrainingError(f"{where}: label must be 0/1 or real/fake, got {value!r}")


def split_name(name) -> str:
    """The table name of a split as a manifest, a folder or a Hub dataset names it ("val", "Valid" -> "validation")."""
    name = str(name).strip().lower()
    return "validation" if name in VALIDATION_SPLIT_NAMES else name


def _video_table(videos: list[str], labels: list[int]) -> datasets.Dataset:
    features = datasets.Features({"video": datasets.Value("string"), "label": datasets.ClassLabel(names=CLASS_NAMES)})
    return datasets.Dataset.from_dict({"video": videos, "label": labels}, features=features)


def _scan_class_folders(root: Path) -> datasets.Dataset:
    """root/real/* and root/fake/*: every entry (a video file or a folder of frames) that is not hidden."""
    videos, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        folder = root / name
        if folder.is_dir():
            entries = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
            videos += [str(entry) for entry in entries]
            labels += [label] * len(entries)
    return _video_table(videos, labels)


def _group_by_split(videos, labels, splits) -> dict[str, datasets.Dataset]:
    names = [split_name(split) for split in splits]
    tables = {}
    for name in sorted(set(names)):
        rows = [row for row, row_name in enumerate(names) if row_name == name]
        tables[name] = _video_table([videos[row] for row in rows], [labels[row] for row in rows])
    return tables


def _read_manifest(manifest: Path) -> dict[str, datasets.Dataset]:
    """A CSV or JSON Lines file with columns path (or video), label and optionally split; paths are relative to it."""
    builder = MANIFEST_BUILDERS.get(manifest.suffix.lower())
    if builder is None:
        raise TrainingError(
            f"{manifest}: not a folder nor a manifest; a manifest is a .csv or .jsonl file with columns path, label "
            "and optionally split"
        )
    try:
        table = datasets.load_dataset(builder, data_files=str(manifest), split="train")
    except Exception as error:  # noqa: BLE001 - the reader's many parse errors all mean the same to the user
        raise TrainingError(f"{manifest}: not a readable {builder.upper()} manifest ({error})") from error
    video_column = next((name for name in ("path", "video") if name in table.column_names), None)
    if video_column is None or "label" not in table.column_names:
        raise TrainingError(f"{manifest}: a manifest needs a 'path' (or 'video') and a 'label' column")
    videos = [str(manifest.parent / path) for path in table[video_column]]
    labels = [parse_label(label, f"{manifest}, row {row + 1}") for row, label in enumerate(table["label"])]
    splits = table["split"] if "split" in table.column_names else ["train"] * len(videos)
    return _group_by_split(videos, labels, splits)


def load_video_tables(source: str | os.PathLike) -> dict[str, datasets.Dataset]:
    """
    Split name -> table (`video` path, `label` 0/1) from a local source:

    - a folder with `real/` and `fake/` subfolders (one split, "train"), or with `train/` and `validation/` (or
      `val/`) subfolders that each hold `real/` and `fake/`;
    - a CSV or JSONL manifest with columns path, label and optionally split (train / validation / test).
    """
    source = Path(source)
    if source.is_file():
        return _read_manifest(source)
    if not source.is_dir():
        raise TrainingError(f"{source}: no such folder or manifest")
    if any((source / name).is_dir() for name in CLASS_NAMES):
        return {"train": _scan_class_folders(source)}
    tables = {}
    for folder in sorted(path for path in source.iterdir() if path.is_dir()):
        if any((folder / name).is_dir() for name in CLASS_NAMES):
            tables[split_name(folder.name)] = _scan_class_folders(folder)
    if not tables:
        raise TrainingError(f"{source}: expected real/ and fake/ subfolders (or train/ and validation/ holding them)")
    return tables


def load_hub_video_tables(
    name: str, config_name: str | None, video_column: str | None, label_column: str, files_dir: Path
) -> dict[str, datasets.Dataset]:
    """
    Split name -> table from a Hub (or local `load_dataset`) dataset whose videos are paths or a `Video` column.
    Videos stored as bytes in the dataset are written once under `files_dir`, since decoding reads files.
    """
    try:
        splits = datasets.load_dataset(name, config_name)
    except (OSError, datasets.exceptions.DatasetsError) as error:  # not found, offline, unreadable files
        raise TrainingError(f"--dataset_name {name}: {error}") from error
    tables = {}
    for split, table in splits.items():
        column = video_column or next((c for c in ("video", "path") if c in table.column_names), None)
        if column is None or label_column not in table.column_names:
            raise TrainingError(f"{name} [{split}]: needs a video (or path) column and a {label_column!r} column")
        if isinstance(table.features[column], datasets.Video):
            table = table.cast_column(column, datasets.Video(decode=False))
        videos = [_materialize_video(value, files_dir) for value in table[column]]
        label_feature = table.features[label_column]
        # A ClassLabel stores indices into its own names (often alphabetical: fake=0, real=1): go through the name.
        raw_labels = [
            label_feature.int2str(label) if isinstance(label_feature, datasets.ClassLabel) else label
            for label in table[label_column]
        ]
        labels = [parse_label(label, f"{name} [{split}], row {row + 1}") for row, label in enumerate(raw_labels)]
        tables[split_name(split)] = _video_table(videos, labels)
    return tables


def _materialize_video(value, files_dir: Path) -> str:
    """A path column value, or a `Video(decode=False)` dict {path, bytes}, as a local file path."""
    if isinstance(value, str):
        return value
    if value.get("path") and os.path.exists(value["path"]):
        return value["path"]
    if value.get("bytes") is None:
        return value.get("path") or ""
    data = value["bytes"]
    suffix = Path(value.get("path") or "video.mp4").suffix
    target = files_dir / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
    if not target.exists():
        files_dir.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".tmp-{uuid.uuid4().hex}{suffix}")
        staging.write_bytes(data)
        staging.rename(target)
    return str(target)


def choose_split(tables: dict[str, datasets.Dataset], requested: str | None, source: str) -> datasets.Dataset:
    """The table of split `requested` (e.g. --eval_split), else the first of test, validation and train."""
    if requested is None:
        return tables[next(name for name in ("test", "validation", "train", *tables) if name in tables)]
    if split_name(requested) not in tables:
        raise TrainingError(f"{source}: no {requested!r} split (it has: {', '.join(sorted(tables))})")
    return tables[split_name(requested)]


def stratified_split(table: datasets.Dataset, validation_percentage: float, seed: int):
    """(train, validation): a seeded split that keeps the class ratio and holds out at least one video per class."""
    num_validation = max(len(CLASS_NAMES), round(len(table) * validation_percentage / 100))
    if len(table) - num_validation < len(CLASS_NAMES):
        raise TrainingError(f"{len(table)} readable videos are too few to hold out a validation split")
    splits = table.train_test_split(test_size=num_validation, stratify_by_column="label", seed=seed)
    return splits["train"], splits["test"]
