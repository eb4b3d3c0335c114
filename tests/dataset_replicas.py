"""
Fixtures: tiny replicas of the field's datasets as downloaded, with their real folder and file names and their split
files in the official formats (FF++'s pairs are pairs of its real split files). Videos are 8-frame 32x32 synthetic
clips (`dfd.tools.synthetic_videos`): a real one pans smoothly, a fake one jumps, so a model can learn them.

Each fixture returns a `Replica`: the root (for DeepfakeBench, its dataset JSON) and, per video path relative to the
root, its class and the split its official files give it (None where the dataset has no official split for it).
"""

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfd.tools.synthetic_videos import TextureSettings, texture_clip, write_video


CLIP = TextureSettings(size=32, num_frames=8)
# Pairs from FaceForensics++'s dataset/splits/{train,val,test}.json.
FFPP_PAIRS = {
    "train": [["071", "054"], ["087", "081"], ["881", "856"]],
    "val": [["720", "672"], ["939", "115"]],
    "test": [["953", "974"], ["012", "026"]],
}
FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter")
# DeepFakeDetection's scene names.
DFD_SCENES = ("exit_phone_room", "kitchen_pan", "podium_speech_happy", "secret_conversation", "meeting_serious")
DFD_ACTORS = [f"{number:02d}" for number in (1, 2, 3, 4, 6, 7, 9, 11, 12, 13, 15, 18)]


@dataclass
class Replica:
    root: Path
    videos: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # relative path -> (label, split)

    def count(self, label=None, split=None) -> int:
        return sum((label in (None, lab)) and (split in (None, spl)) for lab, spl in self.videos.values())


class _Writer:
    def __init__(self, root: Path, seed: int):
        self.root, self.rng = root, np.random.default_rng(seed)

    def clip(self, label: str) -> np.ndarray:
        return texture_clip(self.rng, label == "fake", CLIP)

    def video(self, relative: str, label: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_video(path, self.clip(label))

    def frames(self, relative_folder: str, label: str) -> list[str]:
        folder = self.root / relative_folder
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for number, frame in enumerate(self.clip(label)):
            Image.fromarray(frame).save(folder / f"{number:03d}.png")
            names.append(f"{relative_folder}/{number:03d}.png")
        return names

    def name(self, length=10) -> str:
        return "".join(self.rng.choice(list(string.ascii_lowercase), length))


def build_ffpp(root: Path) -> tuple[Replica, Replica]:
    """FaceForensics++ (youtube sequences, five methods, split files in splits/) and DeepFakeDetection, in one root."""
    writer, ffpp, dfd = _Writer(root, 0), Replica(root), Replica(root)
    splits = {"train": "train", "val": "validation", "test": "test"}
    for name, pairs in FFPP_PAIRS.items():
        (root / "splits").mkdir(parents=True, exist_ok=True)
        (root / "splits" / f"{name}.json").write_text(json.dumps(pairs, indent=2))
        for target, source in pairs:
            for sequence in (target, source):
                relative = f"original_sequences/youtube/c23/videos/{sequence}.mp4"
                writer.video(relative, "real")
                ffpp.videos[relative] = ("real", splits[name])
            for method in FFPP_METHODS:
                for first, second in ((target, source), (source, target)):
                    relative = f"manipulated_sequences/{method}/c23/videos/{first}_{second}.mp4"
                    writer.video(relative, "fake")
                    ffpp.videos[relative] = ("fake", splits[name])
    # DeepFakeDetection: every actor in every scene; each recording faked with the faces of two other actors.
    for index, actor in enumerate(DFD_ACTORS):
        for number, scene in enumerate(DFD_SCENES):
            relative = f"original_sequences/actors/c23/videos/{actor}__{scene}.mp4"
            writer.video(relative, "real")
            dfd.videos[relative] = ("real", None)
            for step in (1, 5):
                source = DFD_ACTORS[(index + step + number) % len(DFD_ACTORS)]
                experiment = writer.name(8).upper()
                relative = (
                    f"manipulated_sequences/DeepFakeDetection/c23/videos/{actor}_{source}__{scene}__{experiment}.mp4"
                )
                writer.video(relative, "fake")
                dfd.videos[relative] = ("fake", None)
    return ffpp, dfd


def build_celebdf(root: Path) -> Replica:
    writer, replica = _Writer(root, 1), Replica(root)
    tested = {"Celeb-real/id5_0001.mp4", "Celeb-real/id4_0000.mp4", "YouTube-real/00005.mp4"}
    tested |= {
        "Celeb-synthesis/id5_id1_0001.mp4",
        "Celeb-synthesis/id4_id2_0000.mp4",
        "Celeb-synthesis/id3_id5_0001.mp4",
    }
    identities = [f"id{number}" for number in range(6)]
    for number, target in enumerate(identities):
        for clip in ("0000", "0001"):
            replica.videos[f"Celeb-real/{target}_{clip}.mp4"] = ("real", None)
            for step in (1, 4):
                source = identities[(number + step + int(clip)) % len(identities)]
                replica.videos[f"Celeb-synthesis/{target}_{source}_{clip}.mp4"] = ("fake", None)
    for clip in range(6):
        replica.videos[f"YouTube-real/{clip:05d}.mp4"] = ("real", None)
    assert tested <= set(replica.videos)
    lines = []
    for relative, (label, _) in replica.videos.items():
        writer.video(relative, label)
        if relative in tested:
            replica.videos[relative] = (label, "test")
            lines.append(f"{1 if label == 'real' else 0} {relative}")  # the list's flag: 1 = real
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")
    return replica


def build_dfdc(root: Path) -> Replica:
    """Two training parts (metadata.json: label, split, original) and the test set (test/labels.csv, 1 = fake)."""
    writer, replica = _Writer(root, 2), Replica(root)
    for part in range(2):
        metadata = {}
        for _ in range(5):
            original = f"{writer.name()}.mp4"
            metadata[original] = {"label": "REAL", "split": "train", "original": None}
            for _ in range(2):
                metadata[f"{writer.name()}.mp4"] = {"label": "FAKE", "split": "train", "original": original}
        for name, entry in metadata.items():
            label = entry["label"].lower()
            relative = f"dfdc_train_part_{part}/{name}"
            writer.video(relative, label)
            replica.videos[relative] = (label, None)
        (root / f"dfdc_train_part_{part}" / "metadata.json").write_text(json.dumps(metadata))
    lines = ["filename,label"]
    for number in range(6):
        label = "fake" if number % 2 else "real"
        name = f"{writer.name()}.mp4"
        writer.video(f"test/{name}", label)
        replica.videos[f"test/{name}"] = (label, "test")
        lines.append(f"{name},{1 if label == 'fake' else 0}")
    (root / "test" / "labels.csv").write_text("\n".join(lines) + "\n")
    return replica


def build_dfdcp(root: Path) -> Replica:
    """dataset.json keyed by video path (label real/fake, set train/test), videos nested by actor and recording."""
    writer, replica, metadata = _Writer(root, 3), Replica(root), {}
    actors = ["643049", "1224068", "1255229", "1003254", "2004567", "1955256", "1300001", "1777312"]
    for number, actor in enumerate(actors):
        official = "test" if number >= 6 else "train"
        for recording in ("A", "B"):
            key = f"original_videos/{actor}/{actor}_{recording}_001.mp4"
            metadata[key] = {"label": "real", "set": official}
            partner = actors[(number + 1) % 6 if number < 6 else 6 + (number + 1) % 2]
            method = "method_A" if recording == "A" else "method_B"
            key = f"{method}/{actor}/{actor}_{recording}/{partner}_{actor}_{recording}_001.mp4"
            metadata[key] = {"label": "fake", "set": official}
    for key, entry in metadata.items():
        writer.video(key, entry["label"])
        replica.videos[key] = (entry["label"], entry["set"] if entry["set"] == "test" else None)
    (root / "dataset.json").write_text(json.dumps(metadata, indent=1))
    return replica


def build_deepfakebench(root: Path) -> Replica:
    """
    DeepfakeBench's layout for Celeb-DF-v2 (rearrange.py: every video in train, the test list in val and test too) and
    DeepFakeDetection (every video in train, val and test, under a compression level), frames under rgb/, the videos
    beside their frames/ folders, and the JSONs merged into one file (ROOT).
    """
    writer, replica = _Writer(root / "rgb", 4), Replica(root / "dataset_json" / "DeepfakeBench.json")
    celeb = {
        "CelebDFv2_real": {"train": {}, "val": {}, "test": {}},
        "CelebDFv2_fake": {"train": {}, "val": {}, "test": {}},
    }
    videos = {
        "Celeb-real": ["id0_0000", "id1_0000", "id2_0000", "id3_0000"],
        "YouTube-real": ["00000", "00001"],
        "Celeb-synthesis": ["id0_id1_0000", "id1_id2_0000", "id2_id3_0000", "id3_id0_0000"],
    }
    tested = {"id3_0000", "00001", "id3_id0_0000"}
    for folder, names in videos.items():
        label = "fake" if folder == "Celeb-synthesis" else "real"
        for name in names:
            writer.video(f"Celeb-DF-v2/{folder}/{name}.mp4", label)
            frames = writer.frames(f"Celeb-DF-v2/{folder}/frames/{name}", label)
            entry = {"label": f"CelebDFv2_{label}", "frames": frames}
            for split in ("train", "val", "test") if name in tested else ("train",):
                celeb[entry["label"]][split][name] = entry
            replica.videos[f"Celeb-DF-v2/{folder}/frames/{name}"] = (label, "test" if name in tested else "train")
    tables = {"DFD_real": {}, "DFD_fake": {}}
    for name, label in (
        ("01__kitchen_pan", "real"),
        ("02__kitchen_pan", "real"),
        ("01_02__kitchen_pan__YVGY8LOK", "fake"),
    ):
        folder = "original_sequences/actors" if label == "real" else "manipulated_sequences/DeepFakeDetection"
        frames = writer.frames(f"FaceForensics++/{folder}/c23/frames/{name}", label)
        tables[f"DFD_{label}"][name] = {"label": f"DFD_{label}", "frames": frames}
        replica.videos[f"FaceForensics++/{folder}/c23/frames/{name}"] = (label, "test")
    dfd = {name: {split: {"c23": table} for split in ("train", "val", "test")} for name, table in tables.items()}
    replica.root.parent.mkdir(parents=True)
    replica.root.write_text(json.dumps({"Celeb-DF-v2": celeb, "DeepFakeDetection": dfd}))
    return replica


@pytest.fixture(scope="session")
def ffpp_replicas(tmp_path_factory) -> tuple[Replica, Replica]:
    """(FaceForensics++, DeepFakeDetection), one FaceForensics++ download folder."""
    return build_ffpp(tmp_path_factory.mktemp("FaceForensics++"))


@pytest.fixture(scope="session")
def celebdf_replica(tmp_path_factory) -> Replica:
    return build_celebdf(tmp_path_factory.mktemp("Celeb-DF-v2"))


@pytest.fixture(scope="session")
def dfdc_replica(tmp_path_factory) -> Replica:
    return build_dfdc(tmp_path_factory.mktemp("DFDC"))


@pytest.fixture(scope="session")
def dfdcp_replica(tmp_path_factory) -> Replica:
    return build_dfdcp(tmp_path_factory.mktemp("DFDCP"))


@pytest.fixture(scope="session")
def deepfakebench_replica(tmp_path_factory) -> Replica:
    return build_deepfakebench(tmp_path_factory.mktemp("DeepfakeBench"))
