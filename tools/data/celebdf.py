"""
Celeb-DF v1 and v2 (format `celebdf`), with the official test list and a validation split carved by identity.

Read (from github.com/yuezunli/celeb-deepfakeforensics, `Celeb-DF-v1/README.md` and `Celeb-DF-v2/README.md`, "Dataset
Structure"):

- `Celeb-real/id<N>_<clip>.mp4`: celebrity videos (real), e.g. `id0_0000.mp4`;
- `YouTube-real/<clip>.mp4`: more real videos from YouTube, no identity named;
- `Celeb-synthesis/id<T>_id<S>_<clip>.mp4`: fakes, celebrity `<S>`'s face put onto `Celeb-real/id<T>_<clip>.mp4`;
- `List_of_testing_videos.txt`: the test split, one `<flag> <folder>/<file>` a line, e.g. `1 YouTube-real/00170.mp4`.
  The flag is 1 for real and 0 for fake, the opposite of the detector's labels: labels are taken from the folders,
  and a flag that disagrees with its folder is an error.

The rest is the training part; a validation split (10%) is carved from it by identity (`id<N>`; a YouTube video is its
own), so no celebrity is in both.
"""

import re
from pathlib import Path

from .layout import Index, LayoutError, layout_error, left_out, require_folder, videos_in
from .manifest import Row
from .splits import split_by_identity


DATASET = "Celeb-DF"
FOLDERS = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}
TEST_LIST = "List_of_testing_videos.txt"
TEST_FLAGS = {"1": "real", "0": "fake"}  # as List_of_testing_videos.txt writes them
OPTIONS = ("seed",)
SHARES = {"validation": 0.1}
REAL_NAME = re.compile(r"(id\d+)_\d+")
FAKE_NAME = re.compile(r"(id\d+)_(id\d+)_\d+")


def identities(name: str) -> list[str] | None:
    """The celebrities of a Celeb-DF video name (`id0_0000` -> [id0], `id0_id16_0000` -> [id0, id16]), else None."""
    if match := REAL_NAME.fullmatch(name):
        return [match[1]]
    if match := FAKE_NAME.fullmatch(name):
        return [match[1], match[2]]
    return None


def read_test_list(path: Path) -> set[str]:
    """The `<folder>/<file>` entries of the test list, each flag checked against its folder's class."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LayoutError(f"{path}: cannot read the test list: {error}") from None
    listed = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        folder = fields[1].split("/")[0] if len(fields) == 2 else ""
        if len(fields) != 2 or fields[0] not in TEST_FLAGS or folder not in FOLDERS:
            raise LayoutError(
                f"{path}, line {number}: expected '<1 or 0> <{'|'.join(FOLDERS)}>/<file>.mp4', got {line.strip()!r}"
            )
        if TEST_FLAGS[fields[0]] != FOLDERS[folder]:
            raise LayoutError(
                f"{path}, line {number}: flag {fields[0]} says {TEST_FLAGS[fields[0]]} (the list writes 1 = real, "
                f"0 = fake) but {folder}/ holds {FOLDERS[folder]} videos: {fields[1]}"
            )
        listed.add(fields[1])
    return listed


def index(root: Path, seed: int = 0) -> Index:
    expected = f"{', '.join(f'{name}/' for name in FOLDERS)} and {TEST_LIST} (the Celeb-DF release)"
    require_folder(root, DATASET, expected)
    if not all((root / name).is_dir() for name in FOLDERS) or not (root / TEST_LIST).is_file():
        raise layout_error(root, DATASET, expected)
    listed = read_test_list(root / TEST_LIST)
    rows, unnamed = [], []
    for folder, label in FOLDERS.items():
        for video in videos_in(root / folder):
            if folder == "YouTube-real":
                group = f"{folder}/{video.stem}"
            elif (names := identities(video.stem)) and (len(names) == 1) == (label == "real"):
                group = "+".join(names)
            else:
                unnamed.append(f"{folder}/{video.name}")
                continue
            split = "test" if f"{folder}/{video.name}" in listed else "train"
            method = "original" if label == "real" else folder
            rows.append(Row(str(video), label, split, group, method, DATASET))
    on_disk = {f"{Path(row.path).parent.name}/{Path(row.path).name}" for row in rows}
    notes = left_out(f"videos listed in {TEST_LIST} but not on disk", sorted(listed - on_disk))
    notes += left_out("videos not named id<N>_<clip> (real) or id<T>_id<S>_<clip> (fake)", unnamed)
    test = [row for row in rows if row.split == "test"]
    train = split_by_identity([row for row in rows if row.split == "train"], SHARES, seed)
    return Index(train + test, notes)
