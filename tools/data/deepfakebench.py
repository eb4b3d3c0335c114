"""
DeepfakeBench's dataset JSON (format `deepfakebench`; ROOT is the JSON file), with its pre-extracted frame folders.

Read (github.com/SCLBD/DeepfakeBench: `preprocessing/rearrange.py` writes these files, `training/dataset/
abstract_dataset.py` reads them, `preprocessing/preprocess.py` writes the frames):

    {dataset: {label_name: {"train" | "val" | "test": {video: {"label": label_name, "frames": [...]}}}}}

with one more level, `{"raw" | "c23" | "c40": {video: ...}}`, under each split of the FaceForensics++ family. The
frames of a video are `<folder>/frames/<video>/NNN.png`; the row is that frame folder. Relative frame paths are
resolved against `frames_root` (DeepfakeBench's `rgb_dir`; default: the JSON file's folder). The frames are face
crops (`preprocessing/preprocess.py` aligns the largest face of each frame and crops it at 1.3 times its landmarks'
template): the rows say `crop: face`, so that a model trained on them crops faces when it predicts.

Labels: a label name means what DeepfakeBench's `training/config/train_config.yaml` `label_dict` says it means
(e.g. `FF-DF: 1`, `CelebDFv2_real: 0`, 1 = fake); a name it does not list is an error.

Splits: DeepfakeBench lists some videos in several splits (every DeepFakeDetection video in train, val and test;
Celeb-DF's and DFDC-preview's test videos in val too; the training part of Celeb-DF holds its test videos): such a
video appears once, in the most held-out split that lists it, and the count is reported. (rearrange.py writes DFDC's
`val` as a single video's entry rather than a table of videos; such a split is skipped, with a note.)
"""

import os
from collections import defaultdict
from pathlib import Path

from . import celebdf, dfd, dfdcp, ffpp
from .layout import COMPRESSIONS, Index, LayoutError, read_json
from .manifest import Row
from .splits import most_held_out


OPTIONS = ("compression", "frames_root")
SPLITS = {"train": "train", "val": "validation", "test": "test"}
# training/config/train_config.yaml's label_dict, as names: 0 -> real, 1 -> fake.
LABELS = {
    "DFD_fake": "fake", "DFD_real": "real",
    "FF-SH": "fake", "FF-F2F": "fake", "FF-DF": "fake", "FF-FS": "fake", "FF-NT": "fake", "FF-FH": "fake",
    "FF-real": "real",
    "CelebDFv1_real": "real", "CelebDFv1_fake": "fake", "CelebDFv2_real": "real", "CelebDFv2_fake": "fake",
    "DFDCP_Real": "real", "DFDCP_FakeA": "fake", "DFDCP_FakeB": "fake",
    "DFDC_Fake": "fake", "DFDC_Real": "real",
    "DF_fake": "fake", "DF_real": "real",
    "UADFV_Fake": "fake", "UADFV_Real": "real",
    "roop_Real": "real", "roop_Fake": "fake",
}  # fmt: skip


def identities(dataset: str, video: str) -> list[str]:
    """The identities a video's name shows, read the way its dataset names videos; else the video itself."""
    if dataset in ("FaceForensics++", "FaceShifter") or dataset.startswith("FF-"):
        names = ffpp.identities(video)
    elif dataset == "DeepFakeDetection":
        names = dfd.identities(video)
    elif dataset.startswith("Celeb-DF"):
        names = celebdf.identities(video)
    elif dataset == "DFDCP":
        names = dfdcp.identities(video)
    else:
        names = None
    return names or [video]


def _is_video(entry) -> bool:
    return isinstance(entry, dict) and "frames" in entry


def _videos(table, compression: str, where: str, notes: list[str]) -> dict:
    """The {video: entry} table of one split, through its compression level when it has them."""
    if not isinstance(table, dict):
        raise LayoutError(f"{where}: expected a table of videos, got {type(table).__name__}")
    if _is_video(table):
        notes.append(f"{where}: a single unnamed video's entry, not a table of videos, skipped")
        return {}
    if table and all(key in COMPRESSIONS for key in table):
        if compression not in table:
            raise LayoutError(f"{where}: no {compression} videos; the levels are {', '.join(table)} (--compression)")
        table = table[compression]
    for video, entry in table.items():
        if not _is_video(entry):
            raise LayoutError(f'{where}: {video}: expected {{"label": ..., "frames": [...]}}, got {entry!r:.80}')
    return table


def _frame_folder(frames, frames_root: Path, where: str) -> Path | None:
    if not isinstance(frames, list) or not all(isinstance(frame, str) for frame in frames):
        raise LayoutError(f"{where}: expected a list of frame paths, got {frames!r:.80}")
    folders = {os.path.dirname(frame) for frame in frames}
    if len(folders) > 1:
        raise LayoutError(f"{where}: frames in several folders ({', '.join(sorted(folders)[:2])}, ...)")
    return frames_root / folders.pop() if folders else None


def index(json_file: Path, compression: str = "c23", frames_root: Path | None = None) -> Index:
    json_file = Path(json_file)
    if not json_file.is_file():
        raise LayoutError(
            f"{json_file}: not a DeepfakeBench dataset JSON: expected its file (e.g. preprocessing/dataset_json/"
            f"Celeb-DF-v2.json), found {'a folder' if json_file.is_dir() else 'nothing'}"
        )
    frames_root = Path(frames_root) if frames_root else json_file.parent
    data = read_json(json_file, "a DeepfakeBench dataset JSON")
    if not isinstance(data, dict) or not all(isinstance(labels, dict) for labels in data.values()):
        raise LayoutError(f"{json_file}: expected {{dataset: {{label_name: {{split: {{video: ...}}}}}}}}")
    listings = defaultdict(list)  # frame folder -> [(split, label, group, method, dataset)]
    notes, empty, missing = [], [], []
    for dataset, labels in data.items():
        for label_name, splits in labels.items():
            where = f"{json_file.name}: {dataset}/{label_name}"
            if not isinstance(splits, dict):
                raise LayoutError(f'{where}: expected {{"train": ..., "val": ..., "test": ...}}')
            for split_name, table in splits.items():
                if split_name not in SPLITS:
                    raise LayoutError(f"{where}: unknown split {split_name!r} (DeepfakeBench's are train, val, test)")
                for video, entry in _videos(table, compression, f"{where}/{split_name}", notes).items():
                    label = LABELS.get(entry.get("label"))
                    if label is None:
                        raise LayoutError(
                            f"{where}/{split_name}: {video}: label {entry.get('label')!r} is not one that "
                            "DeepfakeBench's training/config/train_config.yaml label_dict names"
                        )
                    folder = _frame_folder(entry["frames"], frames_root, f"{where}/{split_name}: {video}")
                    if folder is None:
                        empty.append(video)
                        continue
                    method = "original" if label == "real" else entry["label"]
                    group = "+".join(identities(dataset, video))
                    listings[os.path.normpath(folder)].append((SPLITS[split_name], label, group, method, dataset))
    rows = []
    for folder, listed in listings.items():
        if len({label for _, label, *_ in listed}) > 1:
            raise LayoutError(f"{json_file.name}: {folder} is listed as both real and fake")
        if not os.path.isdir(folder):
            missing.append(folder)
            continue
        _, label, group, method, dataset = listed[0]
        split = most_held_out(split for split, *_ in listed)
        rows.append(Row(folder, label, split, group, method, dataset, crop="face"))
    deduplicated = sum(len({split for split, *_ in listed}) > 1 for listed in listings.values())
    if deduplicated:
        notes.append(f"{deduplicated} videos listed in several splits, each kept once in the most held-out of them")
    if empty:
        notes.append(f"{len(empty)} videos without frames, left out (e.g. {empty[0]})")
    if missing:
        notes.append(
            f"{len(missing)} frame folders not on disk, left out (e.g. {missing[0]}; relative frame paths are read "
            f"from {frames_root}: --frames_root sets it)"
        )
    return Index(rows, notes, deduplicated)
