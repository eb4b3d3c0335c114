"""
Decoding 12 evenly spaced frames: the package's seek-aware `read_video` against the decoders a user would pick
instead, on generated test videos: transformers' `load_video(backend="pyav")`, and, when installed, torchcodec (exact
and approximate seeking), decord and OpenCV (seeking by frame number). A peer that is not installed is skipped with a
line saying so; the peers are never dependencies of the package. To install them (torchcodec also needs FFmpeg's
shared libraries, e.g. Debian's `apt-get install ffmpeg`) in a separate environment:

    pip install -r benchmarks/requirements-peers.txt
    python benchmarks/bench_decode.py [--json decode.json] [--quick] [--repeats 5] [--videos a2,c]

Every contender starts from the file name: opening it and counting its frames is part of what it costs (what a user
pays for 12 frames of a video they have not seen), and it picks the frames with `sample_frame_indices` from its own
count. Its RGB uint8 frames are compared with the package's for bit-identity; a peer that fails on a video is reported
with its error, not timed. Peers decode with their multi-threaded settings, as the package does. The contenders run
in turns; the table gives the minimum and the median time of each, and each peer's time divided by the package's
(below 1: the peer is faster).

The videos are written once with the package's `write_video` (smooth panning content) into benchmarks/.cache (or
$DFD_BENCHMARK_CACHE); the 10-minute one takes a few minutes to encode on 2 cores. The h264 ones use libx264 crf 23;
most, the 4K (d) too, with preset ultrafast and x264's slice threads (PyAV's defaults: no B-frames, two slices per
frame); (a'') is encoded as the ffmpeg command line does by default (preset medium: B-frames, one slice per frame), as
most downloaded or exported videos are. (e) is VP9 in WebM (libvpx realtime), (f) HEVC in mp4 (x265 ultrafast:
B-frames, closed GOP).
"""

import importlib
import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from transformers.video_utils import load_video

from common import (
    CACHE_DIR,
    base_parser,
    format_table,
    goal,
    interleaved_times,
    parse_arguments,
    report,
)
from dfd.decoding_dfd import read_video
from dfd.probing_dfd import probe_video
from dfd.processing_dfd import sample_frame_indices
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
    codec: str = "libx264"
    extension: str = "mp4"
    options: dict = field(default_factory=dict)
    """Encoder options for codecs other than libx264 (whose settings are `preset` and `slice_threads`)."""

    @property
    def filename(self) -> str:
        preset = "" if self.preset == "ultrafast" else f"_{self.preset}"
        slices = "" if self.slice_threads else "_one_slice"
        codec = "" if self.codec == "libx264" else f"_{self.codec}"
        return (
            f"{self.name}_{self.width}x{self.height}_{self.seconds:g}s_{self.fps}fps_gop{self.keyframe_interval}"
            f"{preset}{slices}{codec}.{self.extension}"
        )


# Fast encoder settings that still make every keyframe exactly `keyframe_interval` frames after the last.
X265_OPTIONS = {"preset": "ultrafast", "crf": "28", "x265-params": "scenecut=0:no-open-gop=1:log-level=error"}
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"}

# Keyframes every 2 s for the "ordinary" videos, the usual setting of streaming encoders; (b) is the long-GOP case.
# (a') shows how the gain grows with shorter GOPs: phone cameras typically put a keyframe every second.
VIDEOS = [
    VideoSpec("a_1080p_30s", "(a) 1080p, 30 s, keyframe every 2 s", 1920, 1080, 30, 30, 60),
    VideoSpec("a1_1080p_30s_gop30", "(a') 1080p, 30 s, keyframe every 1 s", 1920, 1080, 30, 30, 30),
    VideoSpec(
        "a2_1080p_30s_medium",
        "(a'') 1080p, 30 s, keyframe every 2 s, ffmpeg's default encoding",
        1920,
        1080,
        30,
        30,
        60,
        preset="medium",
        slice_threads=False,
    ),
    VideoSpec("b_1080p_long_gop", "(b) 1080p, 30 s, keyframe every 300 frames", 1920, 1080, 30, 30, 300),
    VideoSpec("c_360p_10min", "(c) 360p, 10 min, keyframe every 2 s", 640, 360, 600, 30, 60),
    VideoSpec("d_4k_10s", "(d) 4K h264, 10 s, keyframe every 2 s", 3840, 2160, 10, 30, 60),
    VideoSpec(
        "e_vp9_1080p_10s",
        "(e) VP9 1080p (WebM), 10 s, keyframe every 2 s",
        1920,
        1080,
        10,
        30,
        60,
        codec="libvpx-vp9",
        extension="webm",
        options=VP9_OPTIONS,
    ),
    VideoSpec(
        "f_hevc_1080p_10s",
        "(f) HEVC 1080p, 10 s, keyframe every 2 s",
        1920,
        1080,
        10,
        30,
        60,
        codec="libx265",
        options=X265_OPTIONS,
    ),
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
    for spec, size in zip(
        VIDEOS,
        [
            (320, 180, 4),
            (320, 180, 4),
            (320, 180, 4),
            (320, 180, 10),
            (160, 96, 20),
            (640, 360, 2),
            (320, 180, 4),
            (320, 180, 4),
        ],
    )
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
    staging = path.with_name(f".{path.name}.partial.{spec.extension}")  # the extension picks the container
    start = time.perf_counter()
    write_video(
        staging,
        panning_frames(spec),
        fps=spec.fps,
        codec=spec.codec,
        gop=spec.keyframe_interval,
        crf=23,
        preset=spec.preset,
        slice_threads=spec.slice_threads,
        options=spec.options,
    )
    staging.replace(path)
    if not quiet:
        print(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return path


Decoder = Callable[[Path], np.ndarray]
"""Opens a video file, counts its frames and returns the `NUM_FRAMES` evenly spaced ones, (N, H, W, 3) RGB uint8."""


def package_frames(path: Path) -> np.ndarray:
    return read_video(path, lambda info: sample_frame_indices(info.total_frames, NUM_FRAMES)).frames


def load_video_frames(path: Path) -> np.ndarray:
    def same_indices(metadata, **kwargs):
        return sample_frame_indices(metadata.total_num_frames, NUM_FRAMES)

    return load_video(str(path), backend="pyav", sample_indices_fn=same_indices)[0]


def torchcodec_decoder(seek_mode: str) -> Decoder:
    from torchcodec.decoders import VideoDecoder

    def decode(path: Path) -> np.ndarray:
        # 0 threads: FFmpeg picks as many as it would for a single decoder (torchcodec's default is 1).
        decoder = VideoDecoder(str(path), seek_mode=seek_mode, dimension_order="NHWC", num_ffmpeg_threads=0)
        indices = sample_frame_indices(decoder.metadata.num_frames, NUM_FRAMES)
        return decoder.get_frames_at(indices.tolist()).data.numpy()

    return decode


def decord_frames(path: Path) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    return reader.get_batch(sample_frame_indices(len(reader), NUM_FRAMES).tolist()).asnumpy()


def opencv_frames(path: Path) -> np.ndarray:
    import cv2

    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise RuntimeError("cannot open the file")
        frames = []
        for index in sample_frame_indices(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), NUM_FRAMES).tolist():
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            read, frame = capture.read()
            if not read:
                raise RuntimeError(f"frame {index} cannot be read")
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))  # OpenCV decodes to BGR
        return np.stack(frames)
    finally:
        capture.release()


def first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"[:200]


# The peers, each with the module it needs; the package is timed against every one that imports.
PEERS = {
    "load_video (pyav)": ("transformers", lambda: load_video_frames),
    "torchcodec exact": ("torchcodec", lambda: torchcodec_decoder("exact")),
    "torchcodec approximate": ("torchcodec", lambda: torchcodec_decoder("approximate")),
    "decord": ("decord", lambda: decord_frames),
    "OpenCV (seek by frame)": ("cv2", lambda: opencv_frames),
}


def installed_peers() -> tuple[dict[str, Decoder], dict[str, str]]:
    """The peers that can run here, and why each other one cannot (printed once)."""
    peers, skipped = {}, {}
    for name, (module, make_decoder) in PEERS.items():
        try:
            if importlib.util.find_spec(module) is None:
                raise ImportError(f"{module} is not installed")
            # Importing checks more than presence: torchcodec loads FFmpeg's shared libraries.
            importlib.import_module(module)
            peers[name] = make_decoder()
        except Exception as err:  # noqa: BLE001 - any reason a peer cannot load skips it, with the reason
            skipped[name] = first_line(err)
            print(f"skipped {name}: {skipped[name]} (pip install -r benchmarks/requirements-peers.txt)")
    return peers, skipped


PROBE = "package: probe_video alone"


def benchmark_video(spec: VideoSpec, path: Path, peers: dict[str, Decoder], repeats: int) -> dict:
    total_frames = probe_video(path).total_frames
    contenders = {"package": package_frames, **peers}
    # One untimed run each: the frames to compare, and the file in the page cache for every contender alike.
    frames, errors = {}, {}
    for name, decode in contenders.items():
        try:
            frames[name] = decode(path)
        except Exception as err:  # noqa: BLE001 - a peer failing on a video is a result, not a crash
            if name == "package":
                raise
            errors[name] = first_line(err)
    timed = {name: (lambda decode=decode: decode(path)) for name, decode in contenders.items() if name in frames}
    # The package's first step on its own: how much of its time indexing the file takes, before any seek.
    timed[PROBE] = lambda: probe_video(path)
    times = interleaved_times(timed, repeats, warmup=0)
    package_min, package_median = min(times["package"]), float(np.median(times["package"]))
    results = []
    for name in ["package", PROBE, *peers]:
        if name in errors:
            results.append({"contender": name, "error": errors[name]})
            continue
        minimum, median = min(times[name]), float(np.median(times[name]))
        results.append(
            {
                "contender": name,
                "min_s": minimum,
                "median_s": median,
                "ratio_min": minimum / package_min,
                "ratio_median": median / package_median,
                # The package's own frames are the reference.
                "identical": None
                if name in ("package", PROBE)
                else frames[name].shape == frames["package"].shape
                and bool(np.array_equal(frames[name], frames["package"])),
            }
        )
    return {
        "video": spec.description,
        "file": spec.filename,
        "total_frames": total_frames,
        "indices": sample_frame_indices(total_frames, NUM_FRAMES).tolist(),
        "package_s": package_min,
        "package_median_s": package_median,
        "contenders": results,
    }


def ratio_cell(result: dict) -> str:
    """The peer's time over the package's, `minimum / median`, flagged when its frames differ or it failed."""
    if "error" in result:
        return "error"
    cell = f"{result['ratio_min']:.2f} / {result['ratio_median']:.2f}"
    return cell if result["identical"] else f"{cell} (frames differ)"


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="Where the generated test videos live.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per contender (min and median reported).")
    parser.add_argument(
        "--videos",
        help="Only these videos, by the start of their name before '_', comma-separated (e.g. a2,c): a, a1, a2, b, "
        "c, d, e, f for (a), (a'), (a''), (b) ... (f).",
    )
    args = parse_arguments(parser, argv)
    specs = QUICK_VIDEOS if args.quick else VIDEOS
    if args.videos:
        chosen = set(args.videos.split(","))
        unknown = chosen - {spec.name.split("_")[0] for spec in specs}
        if unknown:
            parser.error(f"unknown videos {sorted(unknown)}")
        specs = [spec for spec in specs if spec.name.split("_")[0] in chosen]
    repeats = 1 if args.quick else args.repeats

    machine_load = os.getloadavg()[0]
    peers, skipped = installed_peers()
    rows = [benchmark_video(spec, ensure_video(spec, args.cache_dir), peers, repeats) for spec in specs]
    load_average_at_end = os.getloadavg()[0]
    by_name = {spec.name: row for spec, row in zip(specs, rows)}

    def peer_result(row: dict, peer: str) -> dict:
        return next(result for result in row["contenders"] if result["contender"] == peer)

    goals = [
        goal(
            f"read_video >= 3x load_video on {name}",
            peer_result(by_name[name], "load_video (pyav)")["ratio_min"],
            ">= 3",
            peer_result(by_name[name], "load_video (pyav)")["ratio_min"] >= 3,
        )
        for name in ("a_1080p_30s", "a2_1080p_30s_medium", "c_360p_10min")
        if name in by_name
    ]
    for peer in peers:
        timed = [(row["video"].split()[0], peer_result(row, peer)) for row in rows]
        timed = [(label, result) for label, result in timed if "error" not in result]
        if not timed:
            continue
        slowest = min(timed, key=lambda labelled: labelled[1]["ratio_min"])
        goals.append(
            goal(
                f"{peer} time / read_video's, every video (min)",
                slowest[1]["ratio_min"],
                ">= 1",
                slowest[1]["ratio_min"] >= 1,
                f"lowest on {slowest[0]}",
            )
        )
    differing = [
        f"{result['contender']} on {row['video'].split()[0]}"
        for row in rows
        for result in row["contenders"]
        if result.get("identical") is False
    ]
    goals.append(
        goal(
            "bit-identical to every peer that decodes the video",
            None,
            "all videos",
            not differing,
            "differs: " + ", ".join(differing) if differing else "",
        )
    )
    detail_rows = [
        {"video": row["video"], "total_frames": row["total_frames"], **result}
        for row in rows
        for result in row["contenders"]
    ]
    detail_columns = ["video", "total_frames", "contender", "min_s", "median_s", "ratio_min", "ratio_median"]
    summary_rows = [
        {"video": row["video"], **{result["contender"]: ratio_cell(result) for result in row["contenders"]}}
        for row in rows
    ]
    return report(
        args,
        "decode",
        torch.device("cpu"),
        [
            format_table(
                f"Decoding {NUM_FRAMES} frames: seconds, min and median of {repeats} interleaved runs",
                detail_columns + ["identical", "error"],
                detail_rows,
            ),
            format_table(
                "Each peer's time / the package's: ratio of the minima / of the medians (below 1: the peer is "
                f"faster); load average {machine_load:.1f} at the start, {load_average_at_end:.1f} at the end",
                ["video", *peers],
                summary_rows,
            ),
        ],
        goals,
        videos=[asdict(spec) for spec in specs],
        skipped_peers=skipped,
        load_average_at_end=load_average_at_end,
        rows=rows,
    )


if __name__ == "__main__":
    main()
