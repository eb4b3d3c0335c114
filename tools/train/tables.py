"""
The videos a run reads, as manifest rows (`dfd.tools.data.Row`) by split, from each kind of source: a manifest or
`FORMAT:ROOT` (read by `dfd.tools.data`, the one manifest reader), a folder of real/ and fake/ videos, or a Hub
dataset. Everything here only lists and checks; nothing is decoded.
"""

import hashlib
import os
import uuid
from pathlib import Path

import datasets

from ...configuration_dfd import CLASS_NAMES
from ..data import LABELS, LayoutError, ManifestError, Row, SplitError, resolve
from ..export import hub_id
from .errors import TrainingError


# What a folder or a Hub dataset may call its validation split (a manifest spells it `validation`).
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")

Splits = dict[str, list[Row]]  # split name -> its rows


def split_name(name) -> str:
    """The split a folder or a Hub dataset names ("val", "Valid" -> "validation")."""
    name = str(name).strip().lower()
    return "validation" if name in VALIDATION_SPLIT_NAMES else name


def by_split(rows: list[Row]) -> Splits:
    """`rows` grouped by split, in order; `excluded` rows (kept by a manifest for the record) are never used."""
    splits = {}
    for row in rows:
        if row.split != "excluded":
            splits.setdefault(row.split, []).append(row)
    return splits


def _class_folder_rows(root: Path, split: str) -> list[Row]:
    """root/real/* and root/fake/*: every entry (a video file or a folder of frames) that is not hidden."""
    rows = []
    for label in CLASS_NAMES:
        folder = root / label
        if folder.is_dir():
            entries = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
            rows += [Row(str(entry.absolute()), label, split) for entry in entries]
    return rows


def _folder_splits(root: Path) -> Splits:
    if any((root / name).is_dir() for name in CLASS_NAMES):
        return {"train": _class_folder_rows(root, "train")}
    splits = {}
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        if any((folder / name).is_dir() for name in CLASS_NAMES):
            splits[split_name(folder.name)] = _class_folder_rows(folder, split_name(folder.name))
    if not splits:
        raise TrainingError(f"{root}: expected real/ and fake/ subfolders (or train/ and validation/ holding them)")
    return splits


def load_splits(source: str | os.PathLike) -> Splits:
    """
    Split name -> rows of a local source:

    - a manifest (`dfd data index` writes one; a `label,path` CSV with real/fake labels is one too) or `FORMAT:ROOT`,
      a dataset as downloaded indexed on the fly (`dfd.tools.data.resolve`);
    - a folder with `real/` and `fake/` subfolders (one split, "train"), or with `train/` and `validation/` (or
      `val/`) subfolders that each hold `real/` and `fake/`. Its rows have no identity groups.
    """
    if Path(source).is_dir():
        return _folder_splits(Path(source))
    try:
        splits = by_split(resolve(source))
    except (ManifestError, LayoutError, SplitError) as error:
        raise TrainingError(str(error)) from None
    if not splits:
        raise TrainingError(f"{source}: every video is excluded")
    return splits


def _label_name(value, feature, where: str) -> str:
    """A Hub dataset's label as real/fake: its ClassLabel's name, or a real/fake string. Bare 0/1 are refused."""
    if isinstance(feature, datasets.ClassLabel):
        value = feature.int2str(value)  # a ClassLabel's indices are its own (often alphabetical: fake=0, real=1)
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return value.strip().lower()
    hint = ""
    if not isinstance(value, str) and value in (0, 1):
        hint = " (bare 0/1 mean different things in different datasets: cast the column to ClassLabel(names=...))"
    raise TrainingError(f"{where}: label must be real or fake, got {value!r}{hint}")


def load_hub_splits(
    name: str, config_name: str | None, video_column: str | None, label_column: str, files_dir: Path
) -> Splits:
    """
    Split name -> rows of a Hub (or local `load_dataset`) dataset whose videos are paths or a `Video` column, and
    whose labels are real/fake names (strings, or a ClassLabel's). Videos stored as bytes in the dataset are written
    once under `files_dir`, since decoding reads files.
    """
    try:
        tables = datasets.load_dataset(name, config_name)
    except (OSError, datasets.exceptions.DatasetsError) as error:  # not found, offline, unreadable files
        raise TrainingError(f"--dataset_name {name}: {error}") from error
    splits = {}
    for split, table in tables.items():
        column = video_column or next((c for c in ("video", "path") if c in table.column_names), None)
        if column is None or label_column not in table.column_names:
            raise TrainingError(f"{name} [{split}]: needs a video (or path) column and a {label_column!r} column")
        if isinstance(table.features[column], datasets.Video):
            table = table.cast_column(column, datasets.Video(decode=False))
        feature = table.features[label_column]
        videos = [_materialize_video(value, files_dir) for value in table[column]]
        labels = [
            _label_name(label, feature, f"{name} [{split}], row {row + 1}")
            for row, label in enumerate(table[label_column])
        ]
        dataset = hub_id(name) or Path(name).name  # a local dataset's folder name: no local path in the card
        splits[split_name(split)] = [
            Row(video, label, split_name(split), dataset=dataset) for video, label in zip(videos, labels)
        ]
    return splits


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


def choose_split(splits: Splits, requested: str | None, source: str) -> str:
    """The split to evaluate: `requested` (e.g. --eval_split), else the first of test, validation and train."""
    if requested is None:
        return next(name for name in ("test", "validation", "train", *splits) if name in splits)
    if split_name(requested) not in splits:
        raise TrainingError(f"{source}: no {requested!r} split (it has: {', '.join(sorted(splits))})")
    return split_name(requested)
