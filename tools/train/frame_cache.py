"""
The frame cache: every video decoded once, through `DFDVideoProcessor` (the same decode, sampling and resize as
inference), its sampled frames kept as uint8 arrays in memory-mapped Arrow files that later epochs and later runs read.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from functools import partial
from pathlib import Path

import datasets
import numpy as np

from ...faces_dfd import FACE_TRACKING_VERSION, load_face_detector
from ...probing_dfd import VideoDecodeError
from ...settings_dfd import decoding_threads


logger = logging.getLogger(__name__)

# Bump when the layout of the cached frames changes, so old caches are not read with a new meaning.
FRAME_CACHE_VERSION = 2


def _file_identity(path: str):
    """What tells a changed video from an unchanged one: size and mtime (of each frame image, for a frame folder)."""
    try:
        if os.path.isdir(path):
            return sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in os.scandir(path))
        status = os.stat(path)
        return [status.st_size, status.st_mtime_ns]
    except OSError:
        return None  # missing: decoding will report it, and a file that appears later gets a new key


def _decode_video(example, processor, decode_threads: int):
    """
    datasets.map function: the resized uint8 frames (T, 3, S, S) of one video, or the one-line reason it failed.
    decode_threads: this decoder's share of the process's CPUs.
    """
    try:
        pixel_values = processor(
            videos=example["video"], decode_threads=decode_threads, do_rescale=False, do_normalize=False,
            return_tensors="pt",
        )  # fmt: skip
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

    def __init__(self, cache_dir: str | os.PathLike, processor, cpu_threads: int | None = None):
        """`cpu_threads`: the decoding threads this process may use in all (default: `decoding_threads()`)."""
        self.cpu_threads = cpu_threads or decoding_threads()
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
        # The worker processes (or this one) share this process's part of the CPUs.
        decode_threads = max(1, self.cpu_threads // (num_proc or 1))
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

    def remove_dead_staging(self):
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

    def missing(self, videos: list[str]) -> list[str]:
        """The videos of `videos` (each once, in order) that the cache holds neither frames nor a failure for."""
        _, row_of_key = self._open()
        videos_of_key = {}
        for video in videos:
            videos_of_key.setdefault(self.video_key(video), video)
        return [video for key, video in videos_of_key.items() if key not in row_of_key]

    def decode(self, videos: list[str], num_proc: int | None = None):
        """Decode `videos` into one new shard (nothing for none), with `num_proc` worker processes."""
        if videos:
            self._decode_new_shard(videos, [self.video_key(video) for video in videos], num_proc)

    def read(self, videos: list[str]):
        """
        (frames dataset, row of each video in it or None when unreadable, the one-line reasons of the unreadable
        ones); every video must be cached. The frames dataset is unformatted: `lookup` shows how to read it as uint8.
        """
        frames, row_of_key = self._open()
        errors = frames.select_columns(["error"]).to_dict()["error"] if frames is not None else []
        rows, failures = [], []
        for video in videos:
            row = row_of_key[self.video_key(video)]
            if errors[row] is None:
                rows.append(row)
            else:
                rows.append(None)
                failures.append(errors[row])
        return frames.select_columns(["frames"]), rows, failures

    def lookup(self, videos: list[str], num_proc: int | None = None):
        """
        Decode whatever is not cached yet (in this process and its `num_proc` workers), then return (frames dataset in
        numpy format, row of each video in it or None when unreadable, the one-line reasons of the unreadable ones).
        """
        self.remove_dead_staging()
        self.decode(self.missing(videos), num_proc)
        frames, rows, failures = self.read(videos)
        # dtype: datasets' numpy format would otherwise widen uint8 to int64 (8x the memory per batch).
        return frames.with_format("numpy", dtype=np.uint8), rows, failures


def processes_on_this_machine(state) -> int:
    """The run's processes on this machine (torchrun's LOCAL_WORLD_SIZE), which share its CPUs and, maybe, its disk."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))


def fill(cache: FrameCache, videos: list[str], state, num_proc: int | None) -> int:
    """
    Decode the videos `cache` lacks, each process of a (multi-process, maybe multi-machine) run its share, so that
    decoding scales with processes; returns how many this process decoded. `state`: accelerate's PartialState (or
    Accelerator). Every process must call it with the same videos.

    The processes list what is missing between two barriers, so that they all see the same list, and take every
    N-th video of it. A cache that is not shared by every machine (a local disk) is then still missing the other
    machines' shares: each machine's processes decode those as well, so the result is complete either way (and
    only a shared file system makes decoding scale across machines).
    """
    cache.remove_dead_staging()
    state.wait_for_everyone()
    missing = cache.missing(videos)
    state.wait_for_everyone()
    share = missing[state.process_index :: state.num_processes]
    cache.decode(share, num_proc)
    state.wait_for_everyone()
    still_missing = cache.missing(videos)[state.local_process_index :: processes_on_this_machine(state)]
    cache.decode(still_missing, num_proc)
    state.wait_for_everyone()
    return len(share) + len(still_missing)
