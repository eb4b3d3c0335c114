"""
The manifest: a plain CSV with one row per video, `path,label,split,group,method,dataset,crop`, and the one reader and
writer of it (`dfd data index` writes it, training reads it).

- path: a video file or a folder of frame images; relative to the manifest's folder, or absolute.
- label: `real` or `fake`, spelled out (any case). 0/1 flags are refused: datasets disagree on what 1 means (Celeb-DF's
  test list flags 1 = real, DFDC's labels.csv 1 = fake), and copying one into a manifest silently inverts an
  evaluation.
- split: `train`, `validation`, `test`, or `excluded` (kept for the record, never used: a fake whose identities fell
  in different splits).
- group: the identities (or source video) the row depends on, several joined by `+`; rows of one group belong in one
  split.
- method: how the video was made, as its dataset names it (`original` for real videos).
- dataset: the dataset it comes from.
- crop: what its frames show: `frame` (whole frames, as recorded) or `face` (face crops made before it was stored,
  e.g. DeepfakeBench's preprocessed frames). A model trained on face crops must crop faces when it predicts.

Only `path` and `label` are required, so a hand-written `label,path` CSV is a manifest: a missing `split` makes every
row `train`, a missing `crop` every row `frame`. A manifest is CSV only; JSON files are refused.
"""

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..files import write_atomically


LABELS = ("real", "fake")
SPLITS = ("train", "validation", "test", "excluded")
CROPS = ("frame", "face")
COLUMNS = ("path", "label", "split", "group", "method", "dataset", "crop")
REQUIRED_COLUMNS = ("path", "label")
DEFAULTS = {"split": "train", "crop": "frame"}  # of a column a manifest leaves out, or a cell it leaves empty


class ManifestError(ValueError):
    """A manifest (or rows about to become one) that cannot be used: the message names the file and the row."""


@dataclass(frozen=True)
class Row:
    """One video of a manifest. `path` is absolute once read or indexed."""

    path: str
    label: str
    split: str
    group: str = ""
    method: str = ""
    dataset: str = ""
    crop: str = "frame"

    @property
    def identities(self) -> list[str]:
        """The identities of `group`, in order (a fake's target first)."""
        return [identity for identity in self.group.split("+") if identity]


def check_row(row: Row, where: str):
    """ManifestError naming `where` unless the row's label, split and crop are spelled as a manifest spells them."""
    if not row.path:
        raise ManifestError(f"{where}: empty path")
    if row.label not in LABELS:
        hint = (
            " (write real or fake: datasets disagree on what 1 means; Celeb-DF's test list writes 1 for real, DFDC's "
            "labels.csv 1 for fake)"
        )
        raise ManifestError(
            f"{where}: label must be real or fake, got {row.label!r}{hint if row.label in ('0', '1') else ''}"
        )
    if row.split not in SPLITS:
        raise ManifestError(f"{where}: split must be one of {', '.join(SPLITS)}, got {row.split!r}")
    if row.crop not in CROPS:
        raise ManifestError(f"{where}: crop must be one of {', '.join(CROPS)}, got {row.crop!r}")


def _unique_path(path: str) -> str:
    # Two spellings of one file (a/../b, a link) are one video listed twice.
    return os.path.realpath(path)


def check_rows(rows: list[Row], where: str, positions: list[int] | None = None):
    """Every row well-formed and every path listed once; `positions` are the rows' line numbers in a file."""
    first_seen = {}
    for index, row in enumerate(rows):
        position = positions[index] if positions else index + 1
        check_row(row, f"{where}, row {position}")
        key = _unique_path(row.path)
        if key in first_seen:
            raise ManifestError(f"{where}, row {position}: {row.path} is already listed in row {first_seen[key]}")
        first_seen[key] = position
    if not rows:
        raise ManifestError(f"{where}: no videos")


def _relative(path: str, folder: Path) -> str:
    """`path` relative to `folder` when it lies below it (the manifest moves with its data), else absolute."""
    path = os.path.abspath(path)
    folder = os.path.abspath(folder)
    return os.path.relpath(path, folder) if os.path.commonpath([path, folder]) == folder else path


def write_manifest(path: str | os.PathLike, rows: Iterable[Row]) -> Path:
    """Write `rows` (checked first) as a manifest CSV, atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    rows = list(rows)
    check_rows(rows, str(path))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    folder = path.absolute().parent
    for row in rows:
        writer.writerow(
            [_relative(row.path, folder), row.label, row.split, row.group, row.method, row.dataset, row.crop]
        )
    return write_atomically(path, text.getvalue())


def read_manifest(path: str | os.PathLike) -> list[Row]:
    """
    The rows of a manifest CSV, paths made absolute (relative ones are relative to the manifest's folder).
    ManifestError names the file and the row of the first problem: a missing column, a label other than real/fake, an
    unknown split, an empty path, or a path listed twice. Whether each video exists is left to whoever decodes it.
    """
    path = Path(path)
    if path.suffix.lower() in (".json", ".jsonl"):
        raise ManifestError(
            f"{path}: a manifest is a CSV file with columns {','.join(COLUMNS)} (only path and label are required); "
            "JSON is not read"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: cannot read it as UTF-8 text ({error})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise ManifestError(
                f"{path}: a manifest needs the columns {','.join(COLUMNS)} (only path and label are required); "
                f"missing {', '.join(missing)} in the header {','.join(header)!r}"
            )
        columns = {name: header.index(name) for name in COLUMNS if name in header}
        folder = path.absolute().parent
        rows, positions = [], []
        for values in reader:
            if not any(value.strip() for value in values):
                continue  # blank line
            position = reader.line_num
            if len(values) != len(header):
                raise ManifestError(f"{path}, row {position}: {len(values)} fields, the header has {len(header)}")
            fields = {name: values[column].strip() for name, column in columns.items()}
            fields.update({name: fields.get(name) or default for name, default in DEFAULTS.items()})
            fields["label"] = fields["label"].lower()
            video = fields["path"]
            rows.append(Row(**{**fields, "path": os.path.normpath(folder / video) if video else ""}))
            positions.append(position)
    except csv.Error as error:
        raise ManifestError(f"{path}, row {reader.line_num}: not CSV ({error})") from None
    check_rows(rows, str(path), positions)
    return rows
