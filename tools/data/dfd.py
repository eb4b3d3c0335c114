"""
DeepFakeDetection (format `dfd`), Google and Jigsaw's actor videos as FaceForensics++ distributes them, split by actor.

Read (from github.com/ondyari/FaceForensics `dataset/README.md`, "Original/Manipulated sequence filenames", and the
download script's `DeepFakeDetection_original` and `DeepFakeDetection` datasets):

- `original_sequences/actors/<compression>/videos/<actor>__<scene>.mp4`: 363 real videos of 28 paid actors in 16
  scenes, e.g. `01__exit_phone_room.mp4`;
- `manipulated_sequences/DeepFakeDetection/<compression>/videos/<target>_<source>__<scene>__<id>.mp4`: 3068 fakes,
  the face of actor `<source>` put onto actor `<target>`'s video of `<scene>` (`<id>`: 8 characters telling repeated
  pairings apart), e.g. `01_02__exit_phone_room__YVGY8LOK.mp4`.

DFD has no official split, and its actors recur in every scene: a plain stratified split validates on actors (and
actor-scene recordings) it trained on. Here actors are split 70/15/15 into train, validation and test; a real video
goes with its actor, a fake with its two actors when they share a split, and is `excluded` when they do not.
"""

import re
from pathlib import Path

from .layout import Index, left_out, require_folder, require_path, videos_in
from .manifest import Row
from .splits import split_by_identity


DATASET = "DeepFakeDetection"
METHOD = "DeepFakeDetection"
OPTIONS = ("compression", "seed")
SHARES = {"validation": 0.15, "test": 0.15}
REAL_NAME = re.compile(r"(\d+)__(\w+)")
FAKE_NAME = re.compile(r"(\d+)_(\d+)__(\w+)__(\w+)")


def _parse(name: str) -> tuple[list[str], str] | None:
    """(actors, scene) of a DFD video name, the fake's target first; None when the name is not DFD's."""
    if match := REAL_NAME.fullmatch(name):
        return [match[1]], match[2]
    if match := FAKE_NAME.fullmatch(name):
        return [match[1], match[2]], match[3]
    return None


def identities(name: str) -> list[str] | None:
    """The actors of a DFD video name (`01__exit_phone_room` -> [01]; `01_02__...__ID` -> [01, 02]), else None."""
    parsed = _parse(name)
    return parsed[0] if parsed else None


def scene(row: Row) -> str:
    """The scene of a DFD row (from its file or folder name), for measuring actor-and-scene leakage."""
    parsed = _parse(Path(row.path).stem)
    return parsed[1] if parsed else ""


def index(root: Path, compression: str = "c23", seed: int = 0) -> Index:
    expected = (
        f"original_sequences/actors/{compression}/videos/ and manipulated_sequences/DeepFakeDetection/{compression}/"
        "videos/ (the FaceForensics++ download script's DeepFakeDetection_original and DeepFakeDetection)"
    )
    require_folder(root, DATASET, expected)
    sources = [
        (require_path(root, f"original_sequences/actors/{compression}/videos", DATASET, expected), "real"),
        (
            require_path(root, f"manipulated_sequences/DeepFakeDetection/{compression}/videos", DATASET, expected),
            "fake",
        ),
    ]
    rows, unnamed = [], []
    for folder, label in sources:
        for video in videos_in(folder):
            actors = identities(video.stem)
            if actors is None or (label == "real") != (len(actors) == 1):
                unnamed.append(video.name)
                continue
            method = "original" if label == "real" else METHOD
            rows.append(Row(str(video), label, "train", "+".join(actors), method, DATASET))
    notes = left_out("videos not named <actor>__<scene> or <target>_<source>__<scene>__<id>", unnamed)
    return Index(split_by_identity(rows, SHARES, seed), notes)
