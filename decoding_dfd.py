"""Decoding the frames a caller picks, exactly, from any video: a file, a folder of frame images, or frames in memory.

`read_video` is the one entry point. It picks the frames with a function of the source's `VideoInfo` (probing_dfd.py)
or a list of indices, and decodes only those: frame `i` is the i-th frame in presentation order, bit-identical to
`transformers.video_utils.load_video(path, backend="pyav")`. PyAV's wheels bundle FFmpeg, so users need neither
`torchcodec` nor a system FFmpeg. A file is opened once: probed and decoded through the same container. The decoder
seeks to the keyframe before each run of wanted frames, skips the non-reference frames nobody wants, and shares its
threads between decoders side by side, slice threads or frame threads, as a cost model expects to finish first.
"""

import itertools
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import PIL.Image
import torch

from .probing_dfd import VideoDecodeError, VideoInfo, open_video, probe_container
from .settings_dfd import MAX_FRAME_PIXELS, decoding_threads, max_frame_pixels


FRAME_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class DecodedVideo:
    """
    Decoded frames of one video: `frames[k]` is frame `indices[k]`, shown `timestamps[k]` seconds into the video (NaN
    for sources that do not time their frames: frame folders, frames in memory). `info` is what the source holds.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    info: VideoInfo


FrameTransform = Callable[[np.ndarray], np.ndarray]
"""Applied to each (H, W, 3) uint8 frame as it is decoded, e.g. the processor's resize: only its output is kept."""


def _to_upright_rgb(frame: av.VideoFrame, transform: FrameTransform | None = None) -> np.ndarray:
    """
    RGB pixels of a decoded frame, turned as the rotation metadata asks so faces are upright: a view of the converted
    frame's buffer (what `to_ndarray` would copy; `_Batch.put` copies it once, into its place), or `transform`'s result.
    """
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    rows = np.frombuffer(plane, np.uint8).reshape(rgb.height, plane.line_size)
    array = rows[:, : 3 * rgb.width].reshape(rgb.height, rgb.width, 3)
    quarter_turns = round(frame.rotation / 90) % 4
    array = np.rot90(array, k=quarter_turns) if quarter_turns else array
    return array if transform is None else transform(array)


class _Batch:
    """
    The frames `read_video` returns, filled as they are decoded: each decoded frame is copied once, straight into
    every position of `indices` that asks for it. Decoders working side by side fill different positions.
    """

    def __init__(self, path: str, indices: np.ndarray):
        self.path = path
        self.positions: dict[int, list[int]] = {}
        for position, index in enumerate(indices.tolist()):
            self.positions.setdefault(index, []).append(position)
        self.length = len(indices)
        self.array: np.ndarray | None = None
        self._allocating = threading.Lock()

    def put(self, index: int, pixels: np.ndarray):
        with self._allocating:
            if self.array is None:
                self.array = np.empty((self.length, *pixels.shape), dtype=pixels.dtype)
        if pixels.shape != self.array.shape[1:]:
            raise VideoDecodeError(
                self.path, f"frames change size within the video ({self.array.shape[1:]} then {pixels.shape})"
            )
        for position in self.positions[index]:
            self.array[position] = pixels


class _SeekMissed(Exception):
    """Seeking cannot be trusted for this file, so frames must be counted from the start instead."""


# Demuxers that seek by byte position (e.g. MPEG-TS) may land a keyframe late; retrying from earlier keyframes helps.
_SEEK_ATTEMPTS = 3
# Decoders whose non-reference frames no other frame uses, and which read `skip_frame` anew for every packet (AV1's
# libdav1d reads it once, when it opens). HEVC qualifies per stream, see `_skips_non_reference_frames`.
_CODECS_SKIPPING_NON_REFERENCE_FRAMES = {"h264", "mpeg1video", "mpeg2video", "mpeg4"}


def _skips_non_reference_frames(codec_context) -> bool:
    """
    Whether unwanted non-reference frames can be skipped. HEVC's "sub-layer non-reference" frames may serve higher
    temporal sub-layers, so an HEVC stream qualifies only when its `hvcC` header declares one temporal layer.
    """
    if codec_context.name in _CODECS_SKIPPING_NON_REFERENCE_FRAMES:
        return True
    header = codec_context.extradata or b""
    return codec_context.name == "hevc" and len(header) > 22 and header[0] == 1 and (header[21] >> 3) & 7 == 1


def _decode_from_here(container, stream, wanted_pts: set[int]) -> Iterator[av.VideoFrame]:
    """
    Decode on from the container's position, skipping the frames no other frame refers to unless they are wanted:
    nothing depends on such frames (B-frames, mostly), so the wanted ones come out bit-identical, sooner.
    """
    codec = stream.codec_context
    skip_unwanted = _skips_non_reference_frames(codec)
    for packet in container.demux(stream):
        if skip_unwanted:
            codec.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        yield from packet.decode()


def _frame_index(info: VideoInfo, pts: int | None) -> int | None:
    """The frame a decoded frame's timestamp identifies (`frame_pts` is sorted), or `None` when no frame has it."""
    if pts is None:
        return None
    index = int(np.searchsorted(info.frame_pts, pts))
    return index if index < info.total_frames and info.frame_pts[index] == pts else None


def _seek_to_keyframe(container, stream, info: VideoInfo, keyframe_position: int, wanted_pts):
    """Frames decoded from a seek that starts at or before keyframe `info.keyframe_indices[keyframe_position]`."""
    keyframe = info.keyframe_indices[keyframe_position]
    for position in range(keyframe_position, max(keyframe_position - _SEEK_ATTEMPTS, -1), -1):
        container.seek(int(info.frame_pts[info.keyframe_indices[position]]), stream=stream, backward=True)
        frames = _decode_from_here(container, stream, wanted_pts)
        first_frame = next(frames, None)
        first_index = None if first_frame is None else _frame_index(info, first_frame.pts)
        if first_index is not None and first_index <= keyframe:
            return itertools.chain([first_frame], frames)
    raise _SeekMissed


def _decode_with_seeking(
    info: VideoInfo,
    wanted: list[int],
    batch: _Batch,
    threads: int,
    thread_type: str = "AUTO",
    transform: FrameTransform | None = None,
    opened: tuple | None = None,
):
    """
    Decode the `wanted` frames (ascending), identified by their presentation timestamp. Whenever a keyframe lies
    between the decoder's position and the next wanted frame, seek to that keyframe instead of decoding up to it.
    """
    wanted_pts = {int(info.frame_pts[index]) for index in wanted}
    with nullcontext(opened) if opened else open_video(info.path, threads, thread_type) as (container, stream):
        if opened and not stream.codec_context.is_open:
            stream.codec_context.thread_type, stream.codec_context.thread_count = thread_type, threads
        frames = _decode_from_here(container, stream, wanted_pts)
        # The probe read packets from a container it hands over: seeking to the first keyframe comes first.
        next_index = -1 if opened else 0
        for target in wanted:
            keyframe_position = np.searchsorted(info.keyframe_indices, target, side="right") - 1
            if keyframe_position >= 0 and info.keyframe_indices[keyframe_position] > next_index:
                frames = _seek_to_keyframe(container, stream, info, keyframe_position, wanted_pts)
            for frame in frames:
                index = _frame_index(info, frame.pts)
                if index is None or index > target:
                    # The decoder skipped or retimed frames, so timestamps no longer identify them.
                    raise _SeekMissed
                next_index = index + 1
                if index == target:
                    batch.put(target, _to_upright_rgb(frame, transform))
                    break
            else:
                raise VideoDecodeError(info.path, f"truncated: frame {target} of {info.total_frames} cannot be decoded")


def _keyframe_runs(info: VideoInfo, wanted) -> tuple[list[np.ndarray], np.ndarray]:
    """
    The `wanted` frames (ascending, distinct) cut into runs decoded from one keyframe on, and each run's cost: the
    frames a decoder goes through from that keyframe (or the first frame, when no keyframe precedes) to the run's end.
    """
    wanted = np.asarray(wanted, dtype=np.int64)
    starts = np.concatenate([[0], info.keyframe_indices])
    start = starts[np.searchsorted(starts, wanted, side="right") - 1]
    first_of_run = np.flatnonzero(np.diff(start, prepend=-1))
    runs = np.split(wanted, first_of_run[1:])
    cost = np.array([run[-1] - run_start + 1 for run, run_start in zip(runs, start[first_of_run])], dtype=np.float64)
    return runs, cost


def _split_at_keyframes(info: VideoInfo, wanted: list[int], groups: int) -> list[list[int]]:
    """
    Split the `wanted` frames (ascending) into at most `groups` groups of about equal decoding cost, cut only where a
    keyframe lies in between, so decoders working side by side never decode the same frames twice.
    """
    runs, cost = _keyframe_runs(info, wanted)
    # Each run joins the group its middle falls in when the total cost is cut into `groups` equal parts.
    group_of_run = np.minimum((np.cumsum(cost) - cost / 2) * groups // cost.sum(), groups - 1).astype(int)
    grouped = [[] for _ in range(groups)]
    for run, group in zip(runs, group_of_run):
        grouped[group].extend(run.tolist())
    return [group for group in grouped if group]


def frames_to_decode(info: VideoInfo, indices: Sequence[int]) -> int:
    """
    How many frames a decoder goes through to reach `indices`: from the keyframe before each run of wanted frames (or
    the first frame) to the run's last frame, since frames between keyframes can only be decoded in order. This, not
    the duration, is the work a request asks for (a long single-keyframe video costs every frame up to the last wanted).
    """
    wanted = np.unique(np.asarray(indices, dtype=np.int64))
    if info.frame_pts is None:  # decoded in order from the start
        return int(wanted[-1]) + 1
    return int(_keyframe_runs(info, wanted)[1].sum())


# The share of their cores that one decoder's threads keep busy: frame threads wait on each other's reference frames
# and, after every seek, first refill a pipeline of one frame per extra thread; slice threads wait for a frame's
# slowest slice. Measured by decoding whole 1080p videos with each (benchmarks/RESULTS.md, "Decoding").
_FRAME_THREAD_EFFICIENCY = 0.6
_SLICE_THREAD_EFFICIENCY = 0.75


def _decoding_time(info: VideoInfo, wanted: list[int], threads: int) -> tuple[float, str]:
    """
    What one decoder with `threads` threads takes to reach the `wanted` frames, in single-thread frame times, and the
    kind of threads (FFmpeg's `thread_type`) that takes the least.
    """
    runs, cost = _keyframe_runs(info, wanted)
    if threads == 1:
        return float(cost.sum()), "SLICE"
    by_frame = cost.sum() / (threads * _FRAME_THREAD_EFFICIENCY) + len(runs) * (threads - 1)
    if info.slices == 1:
        return by_frame, "FRAME"
    by_slice = cost.sum() / (min(threads, info.slices) * _SLICE_THREAD_EFFICIENCY)
    return (by_slice, "SLICE") if by_slice <= by_frame else (by_frame, "FRAME")


def _plan_decoders(info: VideoInfo, wanted: list[int], threads: int) -> list[tuple[list[int], str]]:
    """
    The `wanted` frames split between decoders that share `threads` equally, with the kind of threads each uses, as
    the cost model expects to finish first: side by side when the keyframe runs divide evenly (decoders never wait on
    each other), fewer decoders with more threads each when they do not (a long run between two keyframes, say) or
    when frames are cut into slices that threads decode together. Ties go to more decoders.
    """
    best, best_time = None, float("inf")
    for decoders in range(threads, 0, -1):
        groups = _split_at_keyframes(info, wanted, decoders)
        plans = [(group, *_decoding_time(info, group, threads // len(groups))) for group in groups]
        finish = max(time for _, time, _ in plans)
        if finish < best_time:
            best, best_time = [(group, thread_type) for group, _, thread_type in plans], finish
    return best


def _decode_side_by_side(
    info: VideoInfo,
    wanted: list[int],
    batch: _Batch,
    threads: int,
    transform: FrameTransform | None = None,
    opened: tuple | None = None,
):
    """
    Share `threads` between decoders that each take runs of the `wanted` frames starting at different keyframes, side
    by side: PyAV lets go of the GIL while FFmpeg decodes, and frames after different keyframes do not depend on each
    other, so this can use the cores better than one decoder's own threads. `_plan_decoders` decides how many. The
    first decoder uses the `opened` container (the probe's) when its decoder can still take the threads planned, or
    was opened, as the probe opens it, with the one thread planned.
    """
    plan = _plan_decoders(info, wanted, threads)
    share = threads // len(plan)
    if opened and opened[1].codec_context.is_open and share != 1:
        opened = None

    def decode(position: int):
        group, thread_type = plan[position]
        _decode_with_seeking(info, group, batch, share, thread_type, transform, opened if position == 0 else None)

    if len(plan) == 1:
        decode(0)
        return
    with ThreadPoolExecutor(len(plan), thread_name_prefix="dfd-decode") as pool:
        list(pool.map(decode, range(len(plan))))


def _decode_in_order(
    info: VideoInfo, wanted: list[int], batch: _Batch, threads: int, transform: FrameTransform | None = None
):
    """Decode from the start and count frames, keeping only the `wanted` ones (ascending)."""
    wanted_set = set(wanted)
    found, decoded_count = 0, 0
    with open_video(info.path, threads) as (container, stream):
        for frame in container.decode(stream):
            if decoded_count in wanted_set:
                batch.put(decoded_count, _to_upright_rgb(frame, transform))
                found += 1
                if found == len(wanted):
                    return
            decoded_count += 1
    raise VideoDecodeError(info.path, f"truncated: only {decoded_count} of {info.total_frames} frames can be decoded")


Indices = Sequence[int] | Callable[[VideoInfo], Sequence[int]]
"""Which frames to keep: indices (they may repeat or be unsorted), or a function of the source's `VideoInfo` that
returns them (and may refuse the video by raising), so that a file is opened once."""


def read_video(
    video, indices: Indices, threads: int | None = None, transform: FrameTransform | None = None
) -> DecodedVideo:
    """
    The frames `indices` picks of one video, in the order asked. `video` is a path to a video file or a folder of
    frame images (in natural name order), a `VideoInfo` that `probe_video` returned, a list of PIL images, or a
    (T, H, W, C) / (T, C, H, W) numpy array or torch tensor (uint8, or floats in [0, 1]).

    `threads`: how many threads decode a file (default: `decoding_threads()`); callers decoding several videos at once
    give each a share. `transform` is applied to each frame as it is decoded (the processor passes its resize), so that
    memory grows with the output, not the video's resolution; a frame that several indices repeat is decoded and
    transformed once.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}.")
    threads = threads or decoding_threads()
    if isinstance(video, VideoInfo):
        return _read(video, _choose(indices, video), threads, transform)
    if isinstance(video, (str, os.PathLike)):
        path = os.fspath(video)
        if os.path.isdir(path):
            return _read_frame_folder(Path(path), indices, transform)
        with open_video(path, threads=1) as (container, stream):
            info, reusable = probe_container(path, container, stream)
            opened = (container, stream) if reusable else None
            return _read(info, _choose(indices, info), threads, transform, opened)
    return _read_frames_in_memory(video, indices, transform)


def _choose(indices: Indices, info: VideoInfo) -> np.ndarray:
    chosen = np.asarray(indices(info) if callable(indices) else indices)
    if chosen.ndim != 1 or chosen.size == 0 or not np.issubdtype(chosen.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty sequence of integers, got {chosen!r}.")
    if chosen.min() < 0 or chosen.max() >= info.total_frames:
        raise IndexError(f"{info.path}: frame indices must lie in [0, {info.total_frames}), got {chosen.tolist()}.")
    return chosen.astype(np.int64)


def _read(
    info: VideoInfo, indices: np.ndarray, threads: int, transform: FrameTransform | None, opened: tuple | None = None
) -> DecodedVideo:
    wanted = sorted(set(indices.tolist()))
    batch = _Batch(info.path, indices)
    if info.frame_pts is None:
        _decode_in_order(info, wanted, batch, threads, transform)
    else:
        try:
            _decode_side_by_side(info, wanted, batch, threads, transform, opened)
        except _SeekMissed:
            _decode_in_order(info, wanted, batch, threads, transform)
    return DecodedVideo(frames=batch.array, indices=indices, timestamps=info.timestamps[indices], info=info)


def _untimed_info(path: str, total_frames: int, height: int, width: int) -> VideoInfo:
    """What a source without timing holds: frames in order, each a keyframe, no times."""
    return VideoInfo(
        path=path,
        total_frames=total_frames,
        fps=None,
        duration=None,
        width=width,
        height=height,
        rotation=0,
        timestamps=np.full(total_frames, np.nan),
        keyframe_indices=np.arange(total_frames),
        frame_pts=None,
    )


def _natural_sort_key(path: Path) -> tuple[list, str]:
    """Sort `frame_2.png` before `frame_10.png`; zero-padded names keep their plain alphabetical order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)], path.name


def frame_images(folder: Path) -> list[Path]:
    """The frame images of a frame folder, in natural name order; a `VideoDecodeError` when there are none."""
    try:
        entries = list(folder.iterdir())
        images = [entry for entry in entries if entry.suffix.lower() in FRAME_IMAGE_EXTENSIONS and entry.is_file()]
    except OSError as err:  # e.g. no permission to list the folder
        raise VideoDecodeError(folder, f"cannot list the folder ({err.strerror})") from err
    if not entries:
        raise VideoDecodeError(folder, "empty folder")
    if not images:
        raise VideoDecodeError(folder, f"no frame images ({', '.join(FRAME_IMAGE_EXTENSIONS)}) in folder")
    return sorted(images, key=_natural_sort_key)


def _read_frame_folder(folder: Path, indices: Indices, transform: FrameTransform | None) -> DecodedVideo:
    """Frames stored as one image per file; only the chosen images are opened, each checked for size first."""
    images = frame_images(folder)
    width, height = _image_size(images[0])
    info = _untimed_info(str(folder), len(images), height, width)
    chosen = _choose(indices, info)
    frames = {}
    for index in sorted(set(chosen.tolist())):
        if _image_size(images[index]) != (width, height):
            raise VideoDecodeError(folder, "frame images differ in size")
        try:
            with PIL.Image.open(images[index]) as image:
                frame = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError) as err:  # PIL reports unreadable or truncated images with these
            raise VideoDecodeError(images[index], f"not a readable image ({_image_error(err)})") from err
        frames[index] = frame if transform is None else transform(frame)
    stacked = np.stack([frames[index] for index in chosen.tolist()])
    return DecodedVideo(frames=stacked, indices=chosen, timestamps=info.timestamps[chosen], info=info)


def _image_error(error: Exception) -> str:
    """Why an image cannot be read: a failed system call's `strerror` (e.g. "Permission denied"), else PIL's reason."""
    return getattr(error, "strerror", None) or str(error)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of a frame image, from its header; refused when above `DFD_MAX_FRAME_PIXELS`."""
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError) as err:
        raise VideoDecodeError(path, f"not a readable image ({_image_error(err)})") from err
    limit = max_frame_pixels()
    if width * height > limit:
        raise VideoDecodeError(
            path,
            f"{width}x{height} ({width * height:,} pixels) is above the limit of {limit:,} pixels per frame "
            f"({MAX_FRAME_PIXELS})",
        )
    return width, height


def _rgb_uint8(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 from frames with 1 (gray), 3 (RGB) or 4 (RGBA, alpha dropped) channels, first or last."""
    if frames.ndim != 4:
        raise ValueError(f"A video array must have 4 dimensions (frames, height, width, channels): {frames.shape}.")
    if frames.shape[-1] not in (1, 3, 4):
        if frames.shape[1] not in (1, 3, 4):
            raise ValueError(f"Cannot find the channel axis (1, 3 or 4 channels) of a video of shape {frames.shape}.")
        frames = frames.transpose(0, 2, 3, 1)
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating) or frames.min() < 0 or frames.max() > 1:
            raise ValueError(f"Video arrays must be uint8, or floats in [0, 1]; got {frames.dtype}.")
        frames = np.round(frames * 255).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = frames.repeat(3, axis=-1)
    return np.ascontiguousarray(frames[..., :3])


def is_frame_list(video) -> bool:
    """A list of PIL images: one video, one image per frame."""
    return isinstance(video, (list, tuple)) and len(video) > 0 and all(isinstance(f, PIL.Image.Image) for f in video)


def _read_frames_in_memory(video, indices: Indices, transform: FrameTransform | None) -> DecodedVideo:
    """A list of PIL images, or a numpy array or torch tensor of frames; only the chosen frames are converted."""
    if is_frame_list(video):
        total = len(video)
        info = _untimed_info("<frames>", total, video[0].height, video[0].width)
        chosen = _choose(indices, info)
        picked = {index: np.asarray(video[index].convert("RGB")) for index in set(chosen.tolist())}
    elif isinstance(video, (np.ndarray, torch.Tensor)):
        if isinstance(video, torch.Tensor):
            video = video.detach().cpu()
            video = (video.float() if video.is_floating_point() else video).numpy()
        if video.ndim != 4:
            _rgb_uint8(video)  # raises with the shape
        channels_first = video.shape[-1] not in (1, 3, 4) and video.shape[1] in (1, 3, 4)
        height, width = video.shape[2:4] if channels_first else video.shape[1:3]
        info = _untimed_info("<frames>", len(video), height, width)
        chosen = _choose(indices, info)
        distinct = sorted(set(chosen.tolist()))
        picked = dict(zip(distinct, _rgb_uint8(video[distinct])))
    else:
        raise TypeError(
            "A video must be a path to a video file or a frame folder, a list of PIL images, or a (T, H, W, C) / "
            f"(T, C, H, W) numpy array or torch tensor; got {type(video).__name__}."
        )
    if transform is not None:
        picked = {index: transform(frame) for index, frame in picked.items()}
    frames = np.stack([picked[index] for index in chosen.tolist()])
    return DecodedVideo(frames=frames, indices=chosen, timestamps=info.timestamps[chosen], info=info)


__all__ = ["DecodedVideo", "FRAME_IMAGE_EXTENSIONS", "frame_images", "frames_to_decode", "is_frame_list", "read_video"]
