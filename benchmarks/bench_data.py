"""
Training data pipeline throughput: the training script's frame cache (uint8 frames in memory-mapped Arrow) read by
DataLoader workers, then the video augmentation and normalisation it applies on the training device; and the cost of
`--augment robust` (noise, downscale-upscale, blur, re-compression on each video, in the workers) per batch.

    .venv/bin/python benchmarks/bench_data.py [--json data.json] [--quick] [--workers 0,1,2]

The cache is filled once from generated videos (benchmarks/.cache). Goal: feed >= 80 videos/s with 16 workers.
"""

import time
from pathlib import Path

from torch.utils.data import DataLoader

from bench_decode import VideoSpec, ensure_video
from common import (
    CACHE_DIR,
    base_parser,
    format_table,
    goal,
    parse_arguments,
    report,
    resolve_device,
    synchronize,
)
from dfd.configuration_dfd import DFDConfig
from dfd.tools.export import processor_for
from dfd.tools.train.data import CachedVideos
from dfd.tools.train.frame_cache import FrameCache
from dfd.tools.train.transforms import RobustAugmentation, augment_videos, normalize_videos


BRIGHTNESS_JITTER = 0.2


def cached_videos(cache_dir: Path, num_videos: int, config: DFDConfig):
    """`num_videos` generated 2-second videos, decoded for `config` into the frame cache if not there yet."""
    specs = [VideoSpec(f"video{index:03d}", "training video", 320, 240, 2, 30, 60) for index in range(num_videos)]
    videos = [str(ensure_video(spec, cache_dir / "videos", quiet=True)) for spec in specs]
    processor = processor_for(config)
    frames, rows, failures = FrameCache(cache_dir / "frame_cache", processor).lookup(videos)
    if failures:
        raise RuntimeError(f"generated videos failed to decode: {failures}")
    return CachedVideos(frames, rows, [index % 2 for index in range(num_videos)]), processor


def throughput(dataset, processor, num_workers, batch_size, passes, device, augment, robust=False) -> dict:
    """
    Videos per second over `passes` timed epochs, after one untimed epoch that starts the workers. `augment`: the
    recipe's flip and brightness on `device`; `robust`: --augment robust's degradations in the Dataset (the workers).
    """
    dataset.augment = RobustAugmentation() if robust else None
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )

    def epoch() -> int:
        videos = 0
        for batch in loader:
            frames = batch["frames"].to(device, non_blocking=True)
            if augment:
                frames = normalize_videos(augment_videos(frames, BRIGHTNESS_JITTER), processor)
            videos += len(frames)
        synchronize(device)
        return videos

    epoch()
    start = time.perf_counter()
    videos = sum(epoch() for _ in range(passes))
    seconds = time.perf_counter() - start
    return {
        "workers": num_workers,
        "augment_on": str(device) if augment else "-",
        "robust": robust,
        "videos_per_s": videos / seconds,
        "videos_per_s_per_worker": videos / seconds / max(1, num_workers),
        "ms_per_batch": seconds / (videos / batch_size) * 1000,
    }


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="auto", help="Where augmentation runs: cuda, cpu or auto.")
    parser.add_argument("--workers", default="0,1,2", help="Comma-separated DataLoader worker counts.")
    parser.add_argument("--num-videos", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--passes", type=int, default=2, help="Timed epochs over the cached videos per measurement.")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR / "data")
    args = parse_arguments(parser, argv)

    device = resolve_device(args.device)
    worker_counts = [int(count) for count in args.workers.split(",")]
    num_videos, image_size, passes = (4, 32, 1) if args.quick else (args.num_videos, 384, args.passes)
    batch_size = 2 if args.quick else args.batch_size
    config = DFDConfig(image_size=image_size)  # the released detector's 12 frames
    dataset, processor = cached_videos(args.cache_dir, num_videos, config)

    rows = []
    for num_workers in worker_counts:
        for augment in (False, True):
            rows.append(throughput(dataset, processor, num_workers, batch_size, passes, device, augment))
        rows.append(throughput(dataset, processor, num_workers, batch_size, passes, device, False, robust=True))

    # Training augments on the GPU (train_accelerate.py), so the workers' job is the loader rate; the rows with
    # augmentation on the CPU show why it must not move into the workers.
    loader_rows = [row for row in rows if row["augment_on"] == "-" and not row["robust"] and row["workers"] <= 16]
    best = max(loader_rows, key=lambda row: row["videos_per_s"])
    note = f"{best['workers']} worker(s); more workers only help a slower reader"
    goals = [goal("videos/s fed with <= 16 workers", best["videos_per_s"], ">= 80", best["videos_per_s"] >= 80, note)]

    columns = ["workers", "augment_on", "robust", "videos_per_s", "videos_per_s_per_worker", "ms_per_batch"]
    title = f"Frame cache -> DataLoader, {num_videos} videos, {config.num_frames} x {image_size}^2, batch {batch_size}"
    return report(
        args,
        "data",
        device,
        [
            format_table(title, columns, rows),
        ],
        goals,
        rows=rows,
    )


if __name__ == "__main__":
    main()
