"""What the indexers share: the result they return, and the one-line error for a folder that is not the named layout."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .manifest import Row


# Compression levels as FaceForensics++ names its folders (`raw` is its lossless c0).
COMPRESSIONS = ("raw", "c23", "c40")
VIDEO_SUFFIX = ".mp4"  # every dataset indexed here ships mp4 files


class LayoutError(ValueError):
    """A folder or file that is not the layout its format names: the message says what was expected and found."""


@dataclass
class Index:
    """An indexed dataset: its rows, and one line for each thing that was left out or moved, and why."""

    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    deduplicated: int = 0  # videos listed in several splits, kept once


def found(root: Path, limit: int = 8) -> str:
    """The visible entries directly in `root`, for an error message (folders end with /)."""
    try:
        entries = sorted(entry for entry in os.listdir(root) if not entry.startswith("."))
    except OSError as error:
        return f"nothing readable ({error.strerror or error})"
    if not entries:
        return "an empty folder"
    names = [name + ("/" if (root / name).is_dir() else "") for name in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(names) + more


def require_folder(root: Path, dataset: str, expected: str):
    """LayoutError unless `root` is a folder; `expected` describes what a `dataset` folder holds."""
    if not root.is_dir():
        what = "a file" if root.exists() else "nothing"
        raise LayoutError(f"{root}: not a {dataset} folder: expected {expected}, found {what}")


def layout_error(root: Path, dataset: str, expected: str) -> LayoutError:
    return LayoutError(f"{root}: not a {dataset} folder: expected {expected}, found {found(root)}")


def require_path(root: Path, relative: str, dataset: str, expected: str) -> Path:
    """`root / relative`, a folder; else LayoutError naming what the deepest existing folder on the way holds."""
    path = root
    for part in Path(relative).parts:
        if not (path / part).is_dir():
            where = "" if path == root else f" in {path.relative_to(root).as_posix()}/"
            raise LayoutError(f"{root}: not a {dataset} folder: expected {expected}, found {found(path)}{where}")
        path = path / part
    return path


def read_json(path: Path, what: str):
    """The JSON value of `path`; LayoutError (one line) when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LayoutError(f"{path}: no such file (expected {what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LayoutError(f"{path}: cannot read {what}: {error}") from None


def child(root: Path, relative: str, where: str) -> Path:
    """`root / relative` for a path an official file names; LayoutError if it would lead out of `root`."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise LayoutError(f"{where}: {relative!r} is not a path inside {root}")
    return root.joinpath(*parts)


def videos_in(folder: Path) -> list[Path]:
    """The visible mp4 files directly in `folder`, sorted."""
    return sorted(
        path for path in folder.iterdir() if path.suffix.lower() == VIDEO_SUFFIX and not path.name.startswith(".")
    )


def left_out(what: str, names: list[str]) -> list[str]:
    """A note for the videos `names` left out (none when there are none), with the first as an example."""
    return [f"{len(names)} {what}, left out (e.g. {names[0]})"] if names else []
