"""
The Deepfake Detection Challenge dataset (format `dfdc`): its training parts, split by source video, and its test set.

Read (the competition's data description, and the layout DeepfakeBench's `preprocessing/rearrange.py` and
SelfBlendedImages read):

- `dfdc_train_part_<N>/metadata.json` (directly in ROOT or in ROOT/train/), beside the part's videos:
  `{"<video>.mp4": {"label": "REAL" | "FAKE", "split": "train", "original": "<video>.mp4" | null}}`; a fake names the
  real video it was made from;
- the test set, `test/labels.csv` (or ROOT/labels.csv when ROOT is that folder): columns `filename,label`, where
  label 1 = fake and 0 = real (the competition's convention: the probability that a video is FAKE), with the videos
  beside it (or in its videos/).

The training parts have no validation split: one (10%) is carved by source video, so no `original` (with its fakes)
is in both. The test set is the test split. Either part may be indexed alone.
"""

import csv
from pathlib import Path

from .layout import Index, LayoutError, child, layout_error, left_out, read_json, require_folder
from .manifest import Row
from .splits import split_by_identity


DATASET = "DFDC"
OPTIONS = ("seed",)
SHARES = {"validation": 0.1}
METADATA_LABELS = {"REAL": "real", "FAKE": "fake"}
TEST_LABELS = {"0": "real", "1": "fake"}  # labels.csv, as the competition scores it


def _parts(root: Path) -> list[Path]:
    if (root / "metadata.json").is_file():
        return [root]
    parts = [*root.glob("dfdc_train_part_*"), *root.glob("train/dfdc_train_part_*")]
    return sorted(part for part in parts if (part / "metadata.json").is_file())


def _test_folder(root: Path) -> Path | None:
    return next((folder for folder in (root / "test", root) if (folder / "labels.csv").is_file()), None)


def _training_rows(part: Path, missing: list[str]) -> list[Row]:
    path = part / "metadata.json"
    metadata = read_json(path, 'an object like {"x.mp4": {"label": "FAKE", "original": "y.mp4"}}')
    if not isinstance(metadata, dict):
        raise LayoutError(f"{path}: expected an object keyed by video file name, got {type(metadata).__name__}")
    rows = []
    for name, entry in metadata.items():
        label = METADATA_LABELS.get(entry.get("label")) if isinstance(entry, dict) else None
        original = entry.get("original") if isinstance(entry, dict) else None
        if label is None or (label == "fake") != isinstance(original, str):
            raise LayoutError(
                f"{path}: {name}: expected label REAL (original null) or FAKE (with the original video), got "
                f"{entry!r:.100}"
            )
        video = child(part, name, str(path))
        if not video.is_file():
            missing.append(f"{part.name}/{name}")
            continue
        group = Path(original if label == "fake" else name).stem
        rows.append(Row(str(video), label, "train", group, "original" if label == "real" else "unknown", DATASET))
    return rows


def _test_rows(folder: Path, missing: list[str]) -> list[Row]:
    path = folder / "labels.csv"
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            table = list(csv.DictReader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LayoutError(f"{path}: cannot read the test labels: {error}") from None
    rows = []
    for number, entry in enumerate(table, 2):
        name, flag = (entry.get("filename") or "").strip(), (entry.get("label") or "").strip()
        if not name or flag not in TEST_LABELS:
            raise LayoutError(f"{path}, row {number}: expected columns filename,label with label 0 or 1, got {entry}")
        beside = child(folder, name, f"{path}, row {number}")
        video = next((video for video in (beside, folder / "videos" / beside.name) if video.is_file()), None)
        if video is None:
            missing.append(f"{folder.name}/{name}")
            continue
        label = TEST_LABELS[flag]
        method = "original" if label == "real" else "unknown"
        rows.append(Row(str(video), label, "test", Path(name).stem, method, DATASET))
    return rows


def index(root: Path, seed: int = 0) -> Index:
    expected = "dfdc_train_part_<N>/ folders with metadata.json (in ROOT or ROOT/train/) or the test set's labels.csv"
    require_folder(root, DATASET, expected)
    parts, test = _parts(root), _test_folder(root)
    if not parts and test is None:
        raise layout_error(root, DATASET, expected)
    missing = []
    training = [row for part in parts for row in _training_rows(part, missing)]
    testing = _test_rows(test, missing) if test else []
    notes = left_out("videos listed in metadata.json or labels.csv but not on disk", missing)
    if not parts:
        notes.append("no training parts (dfdc_train_part_<N>/): the test set only")
    if test is None:
        notes.append("no test set (test/labels.csv): the training parts only")
    return Index(split_by_identity(training, SHARES, seed) + testing if training else testing, notes)
