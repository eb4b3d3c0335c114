"""
Filling the training frame cache with 1 and N processes, as train_accelerate.py does under `accelerate launch`: each
process decodes its share of the videos (`dfd.tools.train.frame_cache.fill`), its decoding threads the machine's CPUs
divided among the processes. Reports each process's decode rate (videos/s), the wall time of the fill, and the bytes
the cache keeps per video, from which the README's DFDC-scale figures follow.

    .venv/bin/python benchmarks/bench_frame_cache.py [--json cache.json] [--quick] [--processes 1,2] [--num-videos 16]

The processes are CPU processes over gloo (`accelerate launch --multi_gpu` with ACCELERATE_USE_CPU), started fresh for
every count on an empty cache. The videos are `--num-videos` links to one generated video per kind (in
benchmarks/.cache; the cache keys videos by path, so each link is decoded), FaceForensics++-like (480p) and DFDC-like
(1080p), 10 s at 30 fps with a keyframe every 2 s.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench_decode import VideoSpec, ensure_video
from common import CACHE_DIR, base_parser, format_table, parse_arguments, report


SPECS = [
    VideoSpec("ffpp_like", "FaceForensics++-like, 480p", 854, 480, 10, 30, 60),
    VideoSpec("dfdc_like", "DFDC-like, 1080p", 1920, 1080, 10, 30, 60),
]
QUICK_SPEC = VideoSpec("tiny", "tiny, 160x120", 160, 120, 1, 30, 30)
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no"]  # fmt: skip


def worker(cache_dir: str, image_size: int, videos: list[str]):
    """One process of the launch: fill the cache, write what it decoded and how long it took beside the cache."""
    from accelerate import PartialState

    from dfd.configuration_dfd import DFDConfig
    from dfd.settings_dfd import decoding_threads
    from dfd.tools.export import processor_for
    from dfd.tools.train.frame_cache import FrameCache, fill

    state = PartialState(cpu=True)
    processor = processor_for(DFDConfig(image_size=image_size))  # the released detector's 12 frames
    threads = max(1, decoding_threads() // state.num_processes)  # train_accelerate.py's share on one machine
    cache = FrameCache(cache_dir, processor, cpu_threads=threads)
    start = time.perf_counter()
    decoded = fill(cache, videos, state, num_proc=None)
    seconds = time.perf_counter() - start
    report = {"process": state.process_index, "decoded": decoded, "seconds": seconds, "threads": threads}
    Path(f"{cache_dir}-process{state.process_index}.json").write_text(json.dumps(report))


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def fill_with(processes: int, videos: list[Path], cache_dir: Path, image_size: int) -> dict:
    shutil.rmtree(cache_dir, ignore_errors=True)
    for earlier in cache_dir.parent.glob(f"{cache_dir.name}-process*.json"):
        earlier.unlink()
    mode = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--cpu", "--num_processes", "1"]
    command = [*LAUNCH, "--num_cpu_threads_per_process", "1", *mode, __file__, "--worker", str(cache_dir),
               str(image_size), *map(str, videos)]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(
        command, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=3600
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{processes} process(es) failed:\n{result.stderr[-3000:]}")
    reports = [json.loads(path.read_text()) for path in cache_dir.parent.glob(f"{cache_dir.name}-process*.json")]
    fill_seconds = max(entry["seconds"] for entry in reports)
    return {
        "processes": processes,
        "threads_per_process": reports[0]["threads"],
        "decoded_per_process": ", ".join(
            str(entry["decoded"]) for entry in sorted(reports, key=lambda e: e["process"])
        ),
        "videos_per_s_per_process": sum(entry["decoded"] / entry["seconds"] for entry in reports) / len(reports),
        "videos_per_s": len(videos) / fill_seconds,
        "fill_s": fill_seconds,
        "launch_s": wall,
        "cache_mb_per_video": folder_bytes(cache_dir) / len(videos) / 1e6,
    }


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="Comma-separated process counts.")
    parser.add_argument("--num-videos", type=int, default=16)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR / "frame_cache_fill")
    args = parse_arguments(parser, argv)

    specs, num_videos, image_size = ([QUICK_SPEC], 4, 32) if args.quick else (SPECS, args.num_videos, 384)
    counts = [int(count) for count in args.processes.split(",")]
    rows = []
    for spec in specs:
        source = ensure_video(spec, CACHE_DIR / "videos", quiet=True)
        links = CACHE_DIR / "links" / spec.name
        shutil.rmtree(links, ignore_errors=True)
        links.mkdir(parents=True)
        videos = []
        for index in range(num_videos):
            (links / f"{index:03d}.mp4").symlink_to(source)
            videos.append(links / f"{index:03d}.mp4")
        for processes in counts:
            rows.append({"videos": spec.description, **fill_with(processes, videos, args.cache_dir, image_size)})
    columns = ["videos", "processes", "threads_per_process", "decoded_per_process", "videos_per_s_per_process",
               "videos_per_s", "fill_s", "cache_mb_per_video"]  # fmt: skip
    title = f"Frame cache fill, {num_videos} videos each, 12 x {image_size}^2, {os.cpu_count()} CPUs"
    return report(args, "frame_cache", torch.device("cpu"), [format_table(title, columns, rows)], [], rows=rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], int(sys.argv[3]), sys.argv[4:])
    else:
        main()
