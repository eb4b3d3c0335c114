"""
Decoding 12 evenly spaced frames: the package's seek-aware `read_video` against transformers'
`load_video(backend="pyav")` and against decoding every frame with PyAV, on generated test videos.

    .venv/bin/python benchmarks/bench_decode.py [--json decode.json] [--quick]

The videos are written once with the package's `write_video` (libx264, crf 23, smooth panning content) into
benchmarks/.cache; the 10-minute one takes a few minutes to encode on 2 cores. Most use preset ultrafast with
x264's slice threads (PyAV's defaults: no B-frames, two slices per frame); (a'') is encoded as the ffmpeg command
line does by default (preset medium: B-frames, one slice per frame), as most downloaded or exported videos are.
"""

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import numpy as np
import torch
from torch.nn import functional as F
from transformers.video_utils import load_video

from common import (
    CACHE_DIR,
    base_parser,
    format_table,
    goal,
    measure_interleaved,
    parse_arguments,
    report,
)
from dfd.decoding_dfd import probe_video, read_video, sample_frame_indices
from dfd.tools.synthetic_videos import write_video


NUM_FRAMES = 12


@dataclass
class VideoSpec:
    name: str
    description: str
    width: int
    height: int
    seconds: float
    fps: int
    keyframe_interval: int
    preset: str = "ultrafast"
    slice_threads: bool = True

    @property
    def filename(self) -> str:
        preset = "" if self.preset == "ultrafast" else f"_{self.preset}"
        slices = "" if self.slice_threads else "_one_slice"
        return (
            f"{self.name}_{self.width}x{self.height}_{self.seconds:g}s_{self.fps}fps_gop{self.keyframe_interval}"
            f"{preset}{slices}.mp4"
        )


# Keyframes every 2 s for the "ordinary" videos, the usual setting of streaming encoders; (b) is the long-GOP case.
# (a') shows how the gain grows with shorter GOPs: phone cameras typically put a keyframe every second.
VIDEOS = [
    VideoSpec("a_1080p_30s", "(a) 1080p, 30 s, keyframe every 2 s", 1920, 1080, 30, 30, 60),
    VideoSpec("a1_1080p_30s_gop30", "(a') 1080p, 30 s, keyframe every 1 s", 1920, 1080, 30, 30, 30),
    VideoSpec(
        "a2_1080p_30s_medium",
        "(a'') 1080p, 30 s, keyframe every 2 s, ffmpeg's default encoding",
        1920, 1080, 30, 30, 60, preset="medium", slice_threads=False,
    ),
    VideoSpec("b_1080p_long_gop", "(b) 1080p, 30 s, keyframe every 300 frames", 1920, 1080, 30, 30, 300),
    VideoSpec("c_360p_10min", "(c) 360p, 10 min, keyframe every 2 s", 640, 360, 600, 30, 60),
]


def quick_stand_in(spec: VideoSpec, width: int, height: int, seconds: float) -> VideoSpec:
    """The same kind of video, small and short, so `--quick` checks the script in seconds."""
    label = spec.description.split()[0]
    gop = spec.keyframe_interval
    return replace(
        spec,
        description=f"{label} quick stand-in: {width}x{height}, {seconds:g} s, keyframe every {gop} frames",
        width=width,
        height=height,
        seconds=seconds,
    )


# (b)'s stand-in keeps all 12 wanted frames in one keyframe stretch, as its long GOP does; (c)'s spans ten.
QUICK_VIDEOS = [
    quick_stand_in(spec, *size)
    for spec, size in zip(VIDEOS, [(320, 180, 4), (320, 180, 4), (320, 180, 4), (320, 180, 10), (160, 96, 20)])
]


def panning_frames(spec: VideoSpec):
    """Yield `seconds * fps` frames of a smooth, detailed texture panned slowly, so the encoder's motion search works
    as on camera footage (static noise would be unrealistically expensive, flat colour unrealistically cheap)."""
    generator = torch.Generator().manual_seed(0)
    margin = max(spec.width, spec.height) // 4
    height, width = spec.height + 2 * margin, spec.width + 2 * margin
    coarse = torch.rand(1, 3, height // 32 + 2, width // 32 + 2, generator=generator)
    texture = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0] * 200 + 28
    texture += torch.randn(3, height, width, generator=generator) * 6
    texture = texture.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    num_frames = int(spec.seconds * spec.fps)
    for index in range(num_frames):
        phase = 2 * np.pi * index / (spec.fps * 20)  # one loop every 20 s
        top = int(margin * (1 + np.sin(phase)))
        left = int(margin * (1 + np.sin(2 * phase + 1)))
        yield np.ascontiguousarray(texture[top : top + spec.height, left : left + spec.width])


def ensure_video(spec: VideoSpec, cache_dir: Path, quiet: bool = False) -> Path:
    """Encode the test video unless the cache already holds it (written to a temporary name, then renamed)."""
    path = cache_dir / spec.filename
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial.mp4")
    start = time.perf_counter()
    write_video(
        staging,
        panning_frames(spec),
        fps=spec.fps,
        gop=spec.keyframe_interval,
        crf=23,
        preset=spec.preset,
        slice_threads=spec.slice_threads,
    )
    staging.replace(path)
    if not quiet:
        print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return path


def decode_every_frame(path: Path, indices: np.ndarray) -> np.ndarray:
    """The plain PyAV loop: decode the whole video (threaded, like the package decoder), keep the wanted frames."""
    wanted = set(indices.tolist())
    kept = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                kept[index] = frame.to_ndarray(format="rgb24")
    return np.stack([kept[index] for index in indices.tolist()])


def benchmark_video(spec: VideoSpec, path: Path, repeats: int) -> dict:
    total_frames = probe_video(path).total_frames
    indices = sample_frame_indices(total_frames, NUM_FRAMES)

    def same_indices(metadata, **kwargs):
        return sample_frame_indices(metadata.total_num_frames, NUM_FRAMES)

    decoders = {
        "package": lambda: read_video(path, num_frames=NUM_FRAMES).frames,
        "load_video": lambda: load_video(str(path), backend="pyav", sample_indices_fn=same_indices)[0],
        "every_frame": lambda: decode_every_frame(path, indices),
    }
    # One untimed run each: the frames to compare, and the file in the page cache for every decoder alike.
    frames = {name: decode() for name, decode in decoders.items()}
    seconds = measure_interleaved(decoders, repeats, warmup=0)
    return {
        "video": spec.description,
        "file": spec.filename,
        "total_frames": total_frames,
        "indices": indices.tolist(),
        "package_s": seconds["package"],
        "load_video_s": seconds["load_video"],
        "every_frame_s": seconds["every_frame"],
        "speedup_vs_load_video": seconds["load_video"] / seconds["package"],
        "speedup_vs_every_frame": seconds["every_frame"] / seconds["package"],
        "identical_to_load_video": bool(np.array_equal(frames["package"], frames["load_video"])),
        "identical_to_every_frame": bool(np.array_equal(frames["package"], frames["every_frame"])),
    }


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="Where the generated test videos live.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per decoder (best reported).")
    args = parse_arguments(parser, argv)
    specs = QUICK_VIDEOS if args.quick else VIDEOS
    repeats = 1 if args.quick else args.repeats

    rows = [benchmark_video(spec, ensure_video(spec, args.cache_dir), repeats) for spec in specs]
    by_name = {spec.name: row for spec, row in zip(specs, rows)}
    goals = [
        goal(
            f"read_video >= 3x load_video on {name}",
            by_name[name]["speedup_vs_load_video"],
            ">= 3",
            by_name[name]["speedup_vs_load_video"] >= 3,
        )
        for name in ("a_1080p_30s", "a2_1080p_30s_medium", "c_360p_10min")
    ]
    goals.append(
        goal(
            "bit-identical frames for the same indices",
            None,
            "all videos",
            all(row["identical_to_load_video"] and row["identical_to_every_frame"] for row in rows),
        )
    )
    columns = [
        "video",
        "total_frames",
        "package_s",
        "load_video_s",
        "every_frame_s",
        "speedup_vs_load_video",
        "speedup_vs_every_frame",
        "identical_to_load_video",
        "identical_to_every_frame",
    ]
    return report(
        args,
        "decode",
        torch.device("cpu"),
        [
            format_table(f"Decoding {NUM_FRAMES} frames (best of {repeats})", columns, rows),
        ],
        goals,
        videos=[asdict(spec) for spec in specs],
        rows=rows,
    )


if __name__ == "__main__":
    main()
