"""
Data for `train_accelerate.py`: video tables (folders, CSV/JSONL manifests, Hub datasets), a frame cache on disk,
and the video-level augmentation and normalisation applied on the fly.

Every video is decoded once, through `DFDVideoProcessor` (the same decode, sampling and resize as inference), and its
sampled frames are kept as uint8 arrays in memory-mapped Arrow files. Later epochs and later runs read them from there.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from functools import lru_cache, partial
from pathlib import Path

import datasets
import numpy as np
import torch

from ..configuration_dfd import CLASS_NAMES
from ..probing_dfd import VideoDecodeError
from ..settings_dfd import DECODE_THREADS, decoding_threads
from ..faces_dfd import FACE_TRACKING_VERSION, load_face_detector


logger = logging.getLogger(__name__)

# The class names in label order, ("real", "fake") for labels 0 and 1, as the detector's config names them: the folder
# names of a dataset and the names a label column may hold.
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "dev")
# Bump when the layout of the cached frames changes, so old caches are not read with a new meaning.
FRAME_CACHE_VERSION = 2


def parse_label(value, where: str) -> int:
    """0/1 or real/fake (any case) -> 0/1; anything else is an error that names where the label came from."""
    if isinstance(value, str):
        name = value.strip().lower()
        if name in CLASS_NAMES:
            return CLASS_NAMES.index(name)
        if name in ("0", "1"):
            return int(name)
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1):
        return int(value)
    raise ValueError(f"{where}: label must be 0/1 or real/fake, got {value!r}")


def _video_table(videos: list[str], labels: list[int]) -> datasets.Dataset:
    features = datasets.Features({"video": datasets.Value("string"), "label": datasets.ClassLabel(names=CLASS_NAMES)})
    return datasets.Dataset.from_dict({"video": videos, "label": labels}, features=features)


def _scan_class_folders(root: Path) -> datasets.Dataset:
    """root/real/* and root/fake/*: every entry (a video file or a folder of frames) that is not hidden."""
    videos, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        folder = root / name
        if folder.is_dir():
            entries = sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
            videos += [str(entry) for entry in entries]
            labels += [label] * len(entries)
    return _video_table(videos, labels)


def _read_manifest(manifest: Path) -> dict[str, datasets.Dataset]:
    """A CSV or JSON Lines file with columns path (or video), label and optionally split; paths are relative to it."""
    builder = "csv" if manifest.suffix.lower() == ".csv" else "json"
    table = datasets.load_dataset(builder, data_files=str(manifest), split="train")
    video_column = next((name for name in ("path", "video") if name in table.column_names), None)
    if video_column is None or "label" not in table.column_names:
        raise ValueError(f"{manifest}: a manifest needs a 'path' (or 'video') and a 'label' column")
    videos = [str(manifest.parent / path) for path in table[video_column]]
    labels = [parse_label(label, f"{manifest}, row {row + 1}") for row, label in enumerate(table["label"])]
    splits = table["split"] if "split" in table.column_names else ["train"] * len(videos)
    return _group_by_split(videos, labels, splits)


def _split_name(name) -> str:
    """The table name of a split as a manifest, a folder or a Hub dataset names it ("val", "Valid" -> "validation")."""
    name = str(name).strip().lower()
    return "validation" if name in VALIDATION_SPLIT_NAMES else name


def _group_by_split(videos, labels, splits) -> dict[str, datasets.Dataset]:
    names = [_split_name(split) for split in splits]
    tables = {}
    for name in sorted(set(names)):
        rows = [row for row, row_name in enumerate(names) if row_name == name]
        tables[name] = _video_table([videos[row] for row in rows], [labels[row] for row in rows])
    return tables


def load_video_tables(source: str | os.PathLike) -> dict[str, datasets.Dataset]:
    """
    Split name -> table (`video` path, `label` 0/1) from a local source:

    - a folder with `real/` and `fake/` subfolders (one split, "train"), or with `train/` and `validation/` (or
      `val/`) subfolders that each hold `real/` and `fake/`;
    - a CSV or JSONL manifest with columns path, label and optionally split (train / validation / test).
    """
    source = Path(source)
    if source.is_file():
        return _read_manifest(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder or manifest")
    if any((source / name).is_dir() for name in CLASS_NAMES):
        return {"train": _scan_class_folders(source)}
    tables = {}
    for folder in sorted(path for path in source.iterdir() if path.is_dir()):
        if any((folder / name).is_dir() for name in CLASS_NAMES):
            tables[_split_name(folder.name)] = _scan_class_folders(folder)
    if not tables:
        raise ValueError(f"{source}: expected real/ and fake/ subfolders (or train/ and validation/ holding them)")
    return tables


def load_hub_video_tables(
    name: str, config_name: str | None, video_column: str | None, label_column: str, files_dir: Path
) -> dict[str, datasets.Dataset]:
    """
    Split name -> table from a Hub (or local `load_dataset`) dataset whose videos are paths or a `Video` column.
    Videos stored as bytes in the dataset are written once under `files_dir`, since decoding reads files.
    """
    splits = datasets.load_dataset(name, config_name)
    tables = {}
    for split, table in splits.items():
        column = video_column or next((c for c in ("video", "path") if c in table.column_names), None)
        if column is None or label_column not in table.column_names:
            raise ValueError(f"{name} [{split}]: needs a video (or path) column and a {label_column!r} column")
        if isinstance(table.features[column], datasets.Video):
            table = table.cast_column(column, datasets.Video(decode=False))
        videos = [_materialize_video(value, files_dir) for value in table[column]]
        label_feature = table.features[label_column]
        # A ClassLabel stores indices into its own names (often alphabetical: fake=0, real=1): go through the name.
        raw_labels = [
            label_feature.int2str(label) if isinstance(label_feature, datasets.ClassLabel) else label
            for label in table[label_column]
        ]
        labels = [parse_label(label, f"{name} [{split}], row {row + 1}") for row, label in enumerate(raw_labels)]
        tables[_split_name(split)] = _video_table(videos, labels)
    return tables


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


def stratified_split(table: datasets.Dataset, validation_percentage: float, seed: int):
    """(train, validation): a seeded split that keeps the class ratio and holds out at least one video per class."""
    num_validation = max(len(CLASS_NAMES), round(len(table) * validation_percentage / 100))
    if len(table) - num_validation < len(CLASS_NAMES):
        raise ValueError(f"{len(table)} readable videos are too few to hold out a validation split")
    splits = table.train_test_split(test_size=num_validation, stratify_by_column="label", seed=seed)
    return splits["train"], splits["test"]


def _file_identity(path: str):
    """What tells a changed video from an unchanged one: size and mtime (of each frame image, for a frame folder)."""
    try:
        if os.path.isdir(path):
            return sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in os.scandir(path))
        status = os.stat(path)
        return [status.st_size, status.st_mtime_ns]
    except OSError:
        return None  # missing: decoding will report it, and a file that appears later gets a new key


def _decode_video(example, processor, decode_threads: int | None = None):
    """
    datasets.map function: the resized uint8 frames (T, 3, S, S) of one video, or the one-line reason it failed.
    decode_threads: this worker process's share of the CPUs for decoding (the processor has no argument for it).
    """
    if decode_threads is not None:
        os.environ[DECODE_THREADS] = str(decode_threads)
    try:
        pixel_values = processor(videos=example["video"], do_rescale=False, do_normalize=False, return_tensors="pt")
        return {"frames": pixel_values["pixel_values"][0].numpy(), "error": None}
    except VideoDecodeError as error:  # already one line naming the video and the reason
        return {"frames": None, "error": str(error)}


class FrameCache:
    """
    The sampled, resized frames of every video seen so far, in shards (folders of Arrow files) under
    `cache_dir/frames-<T>x<H>x<W>-<settings>/`. A video's key is its absolute path plus size and mtime, so an edited
    or replaced file is decoded again. Failures are cached too (with their reason), so a corrupt file is not retried
    on every run. A shard becomes visible only once completely written (staging dir + rename).
    """

    def __init__(self, cache_dir: str | os.PathLike, processor):
        size = processor.size
        settings = {
            "version": FRAME_CACHE_VERSION,
            "num_frames": processor.num_frames,
            "size": [size.height, size.width],
            "resample": int(processor.resample),
            "do_resize": processor.do_resize,
            "do_center_crop": processor.do_center_crop,
            "crop_size": dict(processor.crop_size) if processor.do_center_crop else None,
        }
        if processor.crop != "frame":
            # Only then, so that the caches of whole frames written before face crops existed stay valid. The
            # detector that runs here (its fallback where the named one is not installed) and its library's version.
            detector = load_face_detector(processor.face_detector)
            settings["crop"] = {
                "crop": processor.crop,
                "face_margin": processor.face_margin,
                "face_choice": processor.face_choice,
                "detector": detector.settings,
                "library": detector.library,
                "tracking": FACE_TRACKING_VERSION,
            }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.directory = Path(cache_dir) / f"frames-{processor.num_frames}x{size.height}x{size.width}-{digest}"
        self.processor = processor
        self.features = datasets.Features(
            {
                "key": datasets.Value("string"),
                "frames": datasets.Array4D(shape=(processor.num_frames, 3, size.height, size.width), dtype="uint8"),
                "error": datasets.Value("string"),
            }
        )

    @staticmethod
    def video_key(video: str) -> str:
        path = os.path.abspath(video)
        return hashlib.sha256(json.dumps([path, _file_identity(path)]).encode()).hexdigest()

    def _open(self) -> tuple[datasets.Dataset | None, dict[str, int]]:
        shards = sorted(self.directory.glob("shard-*")) if self.directory.is_dir() else []
        if not shards:
            return None, {}
        frames = datasets.concatenate_datasets(
            [datasets.Dataset.from_file(str(table)) for shard in shards for table in sorted(shard.glob("*.arrow"))]
        )
        row_of_key = {}
        for row, key in enumerate(frames["key"]):
            row_of_key.setdefault(key, row)
        return frames, row_of_key

    def _decode(self, videos: list[str], keys: list[str], num_proc: int | None, cache_file: Path) -> datasets.Dataset:
        # Worker processes share the CPUs; decoding in this process may use them all.
        decode_threads = max(1, decoding_threads() // num_proc) if num_proc else None
        return datasets.Dataset.from_dict({"key": keys, "video": videos}).map(
            partial(_decode_video, processor=self.processor, decode_threads=decode_threads),
            remove_columns=["video"],
            features=self.features,
            num_proc=num_proc,
            # A row is T x 3 x S x S bytes (5.3 MB at 12x384x384): flush often to keep memory flat.
            writer_batch_size=8,
            cache_file_name=str(cache_file),
            new_fingerprint=hashlib.sha256("".join(keys).encode()).hexdigest()[:16],
            desc="Decoding videos into the frame cache",
        )

    @staticmethod
    def _staging_prefix(pid: int) -> str:
        return f".tmp-shard-{socket.gethostname()}-{pid}-"

    def remove_leftovers(self):
        """
        Staging folders of decodes killed before they finished. The cache is shared by runs, so only those whose
        process is gone (on this machine) are removed; another run's decode in progress keeps its folder.
        """
        for staging in self.directory.glob(".tmp-shard-*") if self.directory.is_dir() else []:
            owner = staging.name.removeprefix(".tmp-shard-").rsplit("-", 2)
            if len(owner) == 3 and owner[1].isdigit():
                if not staging.name.startswith(self._staging_prefix(int(owner[1]))):
                    continue  # another machine's (a cache on a shared file system)
                try:
                    os.kill(int(owner[1]), 0)
                    continue  # still running
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue  # running, as another user
            shutil.rmtree(staging, ignore_errors=True)

    def _decode_new_shard(self, videos: list[str], keys: list[str], num_proc: int | None):
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=self._staging_prefix(os.getpid()), dir=self.directory))
        try:
            parallel = num_proc if num_proc and num_proc > 1 and len(videos) > 1 else None
            try:
                decoded = self._decode(videos, keys, parallel, staging / "decoded.arrow")
            except RuntimeError as error:
                if parallel is None:
                    raise
                # Seen on a 16-core GPU host with num_proc=8 after the model was loaded: a worker process died
                # without a Python error. Decoding in this process works, only slower.
                logger.warning(f"Parallel decoding failed ({error}); decoding in the main process instead")
                decoded = self._decode(videos, keys, None, staging / "serial.arrow")
            # The files `map` wrote become the shard as they are: writing the frames a second time would need twice
            # the disk space at its peak.
            shard = staging / "shard"
            shard.mkdir()
            for table in decoded.cache_files:
                Path(table["filename"]).rename(shard / Path(table["filename"]).name)
            shard.rename(self.directory / f"shard-{uuid.uuid4().hex}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def lookup(self, videos: list[str], num_proc: int | None = None):
        """
        Decode whatever is not cached yet, then return (frames dataset in numpy format, row of each video in it or
        None when unreadable, the one-line reasons of the unreadable ones).
        """
        keys = [self.video_key(video) for video in videos]
        self.remove_leftovers()
        frames, row_of_key = self._open()
        new = {key: video for key, video in zip(keys, videos) if key not in row_of_key}
        if new:
            self._decode_new_shard(list(new.values()), list(new.keys()), num_proc)
            frames, row_of_key = self._open()
        errors = frames.select_columns(["error"]).to_dict()["error"] if frames is not None else []
        rows, failures = [], []
        for key in keys:
            row = row_of_key[key]
            if errors[row] is None:
                rows.append(row)
            else:
                rows.append(None)
                failures.append(errors[row])
        # dtype: datasets' numpy format would otherwise widen uint8 to int64 (8x the memory per batch).
        return frames.select_columns(["frames"]).with_format("numpy", dtype=np.uint8), rows, failures


class CachedVideos(torch.utils.data.Dataset):
    """The videos of a video table read from the frame cache: {"frames": uint8 (T, 3, S, S), "labels": 0 or 1}."""

    def __init__(self, frames: datasets.Dataset, rows: list[int], labels: list[int]):
        self.frames, self.rows, self.labels = frames, rows, labels

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return {"frames": self.frames[self.rows[index]]["frames"], "labels": self.labels[index]}


def augment_videos(frames: torch.Tensor, brightness: float) -> torch.Tensor:
    """
    Random horizontal flip (p=0.5) and brightness jitter (factor in [1 - b, 1 + b], as torchvision's ColorJitter) of
    uint8 videos (B, T, 3, H, W), returned as floats in [0, 255]. Each video gets one draw for all its frames: a
    per-frame flip or flicker would be a temporal artifact for the adapters to learn instead of the fake.
    The draws come from torch's global RNG, which `set_seed` seeds and `save_state`/`load_state` restore.
    """
    batch_size = frames.shape[0]
    flip = (torch.rand(batch_size) < 0.5).view(-1, 1, 1, 1, 1).to(frames.device)
    factor = torch.empty(batch_size).uniform_(1 - brightness, 1 + brightness).view(-1, 1, 1, 1, 1)
    frames = torch.where(flip, frames.flip(-1), frames).float()
    return (frames * factor.to(frames.device)).clamp(0, 255)


def normalize_videos(frames: torch.Tensor, processor) -> torch.Tensor:
    """
    uint8 (or [0, 255] float) videos (B, T, 3, H, W) -> model input, with the processor's own rescale factor, mean and
    std: the cache holds the processor's resized frames, so this finishes exactly what `processor(videos)` does.
    """
    mean, std = _channel_constants((tuple(processor.image_mean), tuple(processor.image_std)), frames.device)
    return (frames.float() * processor.rescale_factor - mean) / std


@lru_cache
def _channel_constants(values: tuple[tuple[float, ...], ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-channel constants as (1, 1, 3, 1, 1) tensors on `device`, copied there once rather than every batch (each
    copy from host memory would make the host wait for the GPU)."""
    return tuple(torch.tensor(value, device=device).view(1, 1, -1, 1, 1) for value in values)
