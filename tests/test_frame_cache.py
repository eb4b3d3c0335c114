"""The frame cache on real mp4 files: the processor's frames, decoded once (failures too), keyed by file identity;
the staging folders of dead decodes removed (only theirs); and filled by two processes, each decoding its share, on a
shared or an unshared disk."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import torch

from dfd.configuration_dfd import DFDConfig
from dfd.tools.export import processor_for
from dfd.tools.train.frame_cache import FrameCache
from dfd.tools.train.transforms import normalize_videos
from training_fixtures import TWO_CPU_PROCESSES, TWO_CPU_PROCESSES_ENVIRONMENT, video_frames


def test_cache_frames_match_the_processor_and_are_reused(tmp_path, make_video):
    processor = processor_for(DFDConfig(image_size=48, num_frames=4))
    video = str(make_video("video.mp4", video_frames("real", 1)))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"garbage")
    cache = FrameCache(tmp_path / "cache", processor)

    frames, rows, failures = cache.lookup([video, str(corrupt)])
    assert rows[1] is None and len(failures) == 1 and failures[0].startswith(f"{corrupt}: ")
    cached = torch.from_numpy(frames[rows[0]]["frames"])
    assert cached.dtype == torch.uint8 and cached.shape == (4, 3, 48, 48)
    # Normalising the cached frames on the fly gives exactly what the processor gives at inference.
    expected = processor(videos=video, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(normalize_videos(cached[None], processor), expected, atol=1e-5, rtol=0)

    assert len(list(cache.directory.glob("shard-*"))) == 1
    cache.lookup([video, str(corrupt)])
    assert len(list(cache.directory.glob("shard-*"))) == 1, "a cached video (or failure) was decoded again"
    os.utime(video, ns=(time.time_ns(), time.time_ns() + 10**9))  # an edited file gets a new key
    _, rows, _ = cache.lookup([video])
    assert len(list(cache.directory.glob("shard-*"))) == 2 and rows[0] is not None


def test_frame_cache_removes_staging_folders_of_dead_decodes_only(tmp_path, tiny_detector_dir):
    cache = FrameCache(tmp_path, processor_for(DFDConfig.from_pretrained(tiny_detector_dir)))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    host = socket.gethostname()
    dead = cache.directory / f".tmp-shard-{host}-{dead_pid}-a1b2c3"
    alive = cache.directory / f".tmp-shard-{host}-{os.getpid()}-d4e5f6"
    elsewhere = cache.directory / f".tmp-shard-another-host-{dead_pid}-g7h8"
    older = cache.directory / ".tmp-shard-x9y8z7"  # named before staging folders carried their owner
    for folder in (dead, alive, elsewhere, older):
        (folder / "shard").mkdir(parents=True)
    cache.remove_dead_staging()
    assert sorted(path.name for path in cache.directory.iterdir()) == sorted([alive.name, elsewhere.name])


# Run by each of two processes: fill one shared cache, then (as two machines of one process each, whose caches are
# not shared) one cache each; write what each decoded and could read into report<process>.json.
FILL = """
import json, os, sys
from types import SimpleNamespace
from accelerate import PartialState
from dfd.configuration_dfd import DFDConfig
from dfd.tools.export import processor_for
from dfd.tools.train.frame_cache import FrameCache, fill

folder, *videos = sys.argv[1:]
state = PartialState(cpu=True)
processor = processor_for(DFDConfig(image_size=32, num_frames=4))
shared = FrameCache(os.path.join(folder, "shared"), processor)
decoded = fill(shared, videos, state, num_proc=1)
readable = sum(row is not None for row in shared.read(videos)[1])
os.environ["LOCAL_WORLD_SIZE"] = "1"
machine = SimpleNamespace(
    process_index=state.process_index, num_processes=2, local_process_index=0,
    wait_for_everyone=state.wait_for_everyone,
)
unshared = FrameCache(os.path.join(folder, f"machine{state.process_index}"), processor)
report = {"decoded": decoded, "readable": readable, "decoded_unshared": fill(unshared, videos, machine, num_proc=1)}
with open(os.path.join(folder, f"report{state.process_index}.json"), "w") as file:
    json.dump(report, file)
"""


def cached(cache, videos):
    frames, rows, failures = cache.lookup(videos)
    return [None if row is None else frames[row]["frames"] for row in rows], failures


def test_two_processes_each_decode_their_share_and_make_the_one_process_cache(tmp_path, make_video):
    """Each of two processes decodes about half of a shared cache, and both read all of it; on unshared disks each
    ends with all. Either way the frames (and the failure) are the one-process cache's."""
    videos = [str(make_video(f"v{index}.mp4", video_frames(("real", "fake")[index % 2], index))) for index in range(6)]
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video")
    videos.append(str(tmp_path / "corrupt.mp4"))
    (tmp_path / "fill.py").write_text(FILL)
    result = subprocess.run(
        [*TWO_CPU_PROCESSES, str(tmp_path / "fill.py"), str(tmp_path / "caches"), *videos],
        env={**os.environ, **TWO_CPU_PROCESSES_ENVIRONMENT}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads((tmp_path / "caches" / f"report{process}.json").read_text()) for process in (0, 1)]
    assert [report["decoded"] for report in reports] == [4, 3]  # every second of the 7 videos
    assert [report["readable"] for report in reports] == [6, 6]
    assert [report["decoded_unshared"] for report in reports] == [7, 7]  # its share, then the other's

    processor = processor_for(DFDConfig(image_size=32, num_frames=4))
    reference_frames, reference_failures = cached(FrameCache(tmp_path / "one", processor), videos)
    for name in ("shared", "machine0", "machine1"):
        cache = FrameCache(tmp_path / "caches" / name, processor)
        shards = sorted(cache.directory.glob("shard-*"))
        frames, failures = cached(cache, videos)
        assert sorted(cache.directory.glob("shard-*")) == shards, "a video was decoded again"
        assert failures == reference_failures and len(failures) == 1
        for got, expected in zip(frames, reference_frames):
            assert (got is None and expected is None) or np.array_equal(got, expected)
