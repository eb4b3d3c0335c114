"""
The DFDC preview dataset (format `dfdcp`), with its official train/test sets and a validation split carved by actor.

Read (the preview release as DeepfakeBench's `preprocessing/rearrange.py` and SelfBlendedImages read it):

- `dataset.json`: `{"<path>": {"label": "real" | "fake", "set": "train" | "test", ...}}`, each key a video's path
  relative to ROOT: `original_videos/<actor>/<actor>_<recording>_<clip>.mp4` for real videos, and
  `method_A/<target>/<target>_<recording>/<file>.mp4` (or `method_B/...`) for fakes, nested one folder per target
  actor and one per recording.

Labels and sets come from `dataset.json`. Identities come from the paths: the actor folder after `original_videos/`
or `method_X/`, and for a fake also the actor ids its file name starts with (`<source>_<target>_...`). Validation
(10%) is carved from the `train` set by actor, so no actor is in both.
"""

from pathlib import Path, PurePosixPath

from .layout import Index, LayoutError, child, layout_error, left_out, read_json, require_folder
from .manifest import Row
from .splits import split_by_identity


DATASET = "DFDC-preview"
METADATA = "dataset.json"
OPTIONS = ("seed",)
SHARES = {"validation": 0.1}
LABELS = ("real", "fake")
SETS = ("train", "test")


def identities(key: str) -> list[str]:
    """The actors a video path (a `dataset.json` key) or file name shows: its actor folder, then leading actor ids."""
    parts = PurePosixPath(key).parts
    actors = [parts[1]] if len(parts) > 2 and parts[1].isdigit() else []
    for token in PurePosixPath(key).stem.split("_"):
        if not token.isdigit() or len(token) < 4:  # a clip number (`001`) ends the actor ids
            break
        actors.append(token)
    return list(dict.fromkeys(actors)) or [PurePosixPath(key).stem]


def index(root: Path, seed: int = 0) -> Index:
    expected = f"{METADATA} with original_videos/, method_A/ and method_B/ (the DFDC preview release)"
    require_folder(root, DATASET, expected)
    if not (root / METADATA).is_file():
        raise layout_error(root, DATASET, expected)
    path = root / METADATA
    metadata = read_json(path, 'an object like {"method_A/.../x.mp4": {"label": "fake", "set": "train"}}')
    if not isinstance(metadata, dict):
        raise LayoutError(f"{path}: expected an object keyed by video path, got {type(metadata).__name__}")
    rows, missing = [], []
    for key, entry in metadata.items():
        label, official = (entry.get("label"), entry.get("set")) if isinstance(entry, dict) else (None, None)
        if label not in LABELS or official not in SETS:
            raise LayoutError(
                f"{path}: {key}: expected a label real or fake and a set train or test, got {entry!r:.100}"
            )
        video = child(root, key, str(path))
        if not video.is_file():
            missing.append(key)
            continue
        method = "original" if label == "real" else PurePosixPath(key).parts[0]
        rows.append(Row(str(video), label, official, "+".join(identities(key)), method, DATASET))
    notes = left_out(f"videos listed in {METADATA} but not on disk", missing)
    train = split_by_identity([row for row in rows if row.split == "train"], SHARES, seed)
    return Index(train + [row for row in rows if row.split == "test"], notes)
