"""
FaceForensics++ (format `ffpp`), as its download script writes it, with its official split.

Read (from github.com/ondyari/FaceForensics: `dataset/README.md` and the download script's `DATASETS`):

- `original_sequences/youtube/<compression>/videos/<sequence>.mp4`: the 1000 real sequences, named `000` to `999`;
- `manipulated_sequences/<method>/<compression>/videos/<target>_<source>.mp4`: each method's fakes, the face of
  sequence `<source>` put into sequence `<target>` (both orders of every pair exist);
- `train.json`, `val.json`, `test.json` (the repository's `dataset/splits/`, which the download does not include:
  copy them into ROOT/ or ROOT/splits/): lists of pairs like `["071", "054"]`. A pair's two sequences and its two fakes
  belong to the pair's split (720 / 140 / 140 sequences).

`<compression>` is `raw` (lossless), `c23` or `c40`. DeepFakeDetection, which the same download puts beside these
(`actors`, `DeepFakeDetection`), is the `dfd` format. A row's group is its sequence, or `<target>+<source>`.
"""

import re
from pathlib import Path

from .layout import Index, LayoutError, found, left_out, read_json, require_folder, require_path, videos_in
from .manifest import Row


DATASET = "FaceForensics++"
METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
SPLIT_FILES = {"train": "train.json", "validation": "val.json", "test": "test.json"}
OPTIONS = ("compression", "methods")
REAL_NAME = re.compile(r"\d{3}")
FAKE_NAME = re.compile(r"(\d{3})_(\d{3})")


def identities(name: str) -> list[str] | None:
    """The sequences a FaceForensics++ video name depends on (`000` -> [000], `000_003` -> [000, 003]), else None."""
    if REAL_NAME.fullmatch(name):
        return [name]
    match = FAKE_NAME.fullmatch(name)
    return list(match.groups()) if match else None


def _split_folder(root: Path) -> Path:
    for folder in (root, root / "splits"):
        if all((folder / name).is_file() for name in SPLIT_FILES.values()):
            return folder
    raise LayoutError(
        f"{root}: FaceForensics++'s split files {', '.join(SPLIT_FILES.values())} (dataset/splits/ in "
        f"github.com/ondyari/FaceForensics) are not in ROOT/ or ROOT/splits/: copy them there"
    )


def read_pairs(root: Path) -> dict[frozenset, str]:
    """{frozenset of a pair's two sequences: split} from the official split files."""
    folder = _split_folder(root)
    pairs = {}
    for split, name in SPLIT_FILES.items():
        path = folder / name
        listed = read_json(path, 'a list of sequence pairs like ["071", "054"]')
        if not isinstance(listed, list):
            raise LayoutError(f'{path}: expected a list of sequence pairs like ["071", "054"], got {listed!r:.60}')
        for pair in listed:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
                raise LayoutError(f'{path}: expected pairs of sequence names like ["071", "054"], got {pair!r:.60}')
            key = frozenset(pair)
            if pairs.setdefault(key, split) != split:
                raise LayoutError(f"{path}: pair {pair} is also in the {pairs[key]} split")
    return pairs


def index(root: Path, compression: str = "c23", methods: tuple[str, ...] | None = None) -> Index:
    """Rows of the real sequences and the fakes of `methods` (default: all five, skipping any not downloaded)."""
    expected = (
        f"original_sequences/youtube/{compression}/videos/ and manipulated_sequences/<method>/{compression}/videos/ "
        "(the FaceForensics++ download script's layout)"
    )
    require_folder(root, DATASET, expected)
    real_folder = require_path(root, f"original_sequences/youtube/{compression}/videos", DATASET, expected)
    pairs = read_pairs(root)
    split_of = {sequence: split for pair, split in pairs.items() for sequence in pair}
    notes = []
    sources = [(real_folder, "original")]
    for method in methods or METHODS:
        folder = root / "manipulated_sequences" / method / compression / "videos"
        if folder.is_dir():
            sources.append((folder, method))
        elif methods:
            raise LayoutError(
                f"{root}: no {method} fakes at {compression}: expected {folder.relative_to(root).as_posix()}/, found "
                f"{found(root / 'manipulated_sequences')} in manipulated_sequences/"
            )
        else:
            notes.append(f"{method}: not downloaded at {compression} (no {folder.relative_to(root).as_posix()}/)")
    rows, unnamed, unlisted = [], [], []
    for folder, method in sources:
        for video in videos_in(folder):
            sequences = identities(video.stem)
            if sequences is None or (method == "original") != (len(sequences) == 1):
                unnamed.append(video.name)
                continue
            split = split_of.get(sequences[0]) if len(sequences) == 1 else pairs.get(frozenset(sequences))
            if split is None:
                unlisted.append(video.name)
                continue
            label = "real" if method == "original" else "fake"
            rows.append(Row(str(video), label, split, "+".join(sequences), method, DATASET))
    notes += left_out("videos not named <sequence> or <target>_<source>", unnamed)
    notes += left_out("videos of sequences or pairs the split files do not list", unlisted)
    return Index(rows, notes)
