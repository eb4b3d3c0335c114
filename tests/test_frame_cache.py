"""The frame cache on real mp4 files: the processor's frames, decoded once (failures too), keyed by file identity, and
the staging folders of dead decodes removed (only theirs)."""

import os
import socket
import subprocess
import sys
import time

import torch

from dfd.configuration_dfd import DFDConfig
from dfd.tools.export import processor_for
from dfd.tools.train.frame_cache import FrameCache
from dfd.tools.train.transforms import normalize_videos
from training_fixtures import video_frames


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
