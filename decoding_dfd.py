"""Video decoding for the deepfake detector: exact frames of any video file, frame folder or array, through PyAV.

PyAV's wheels bundle FFmpeg, so users need neither `torchcodec` nor a system FFmpeg. The processor
(processing_dfd.py), `dfd predict`, the Endpoints handler and training all decode through this file, and
`sample_frame_indices` is the one sampling rule: `num_frames` frames spread evenly over the whole video, as the model
was trained.
"""

import itertools
import math
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import PIL.Image
import torch


FRAME_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# FFmpeg demuxers that read one self-contained stream of bytes. Playlists and lists (concat, HLS, DASH, SDP/RTP),
# image sequences (image2) and devices open other files or URLs named inside the input, so they are not here.
ALLOWED_CONTAINER_FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "flv", "mpegts", "mpeg", "ogg", "asf", "nut", "ivf",
    "h264", "hevc", "m4v", "mpegvideo", "gif", "yuv4mpegpipe",
)
_OPEN_OPTIONS = {
    "format_whitelist": ",".join(ALLOWED_CONTAINER_FORMATS),
    "protocol_whitelist": "file",  # what a demuxer may open: nothing but the file it was given
    "enable_drefs": "0",  # mov/mp4 data references to other files (FFmpeg's default, made explicit)
}
MAX_FRAME_PIXELS_VARIABLE = "DFD_MAX_FRAME_PIXELS"
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320  # 8K UHD


def environment_number(name: str, default, kind: type = int, minimum=1):
    """
    The number in the environment variable `name` (`default` when unset or empty), refused on one line that names
    the variable when it is not a finite `kind` of at least `minimum`. Every DFD_* setting is read through here.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value != value or value in (float("inf"), float("-inf")) or value < minimum:
        noun = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name}={text!r} is not valid: it must be {noun} of at least {minimum:g}")
    return value


def environment_flag(name: str) -> bool:
    """An on/off environment variable: "1" (on), "0" or unset/empty (off); anything else is refused, naming it."""
    text = os.environ.get(name, "").strip()
    if text not in ("", "0", "1"):
        raise ValueError(f"{name}={text!r} is not valid: it must be 1 (on) or 0 (off)")
    return text == "1"


def max_frame_pixels() -> int:
    """Pixels a frame may have (`DFD_MAX_FRAME_PIXELS`, default 8K): larger frames are refused before decoding."""
    return environment_number(MAX_FRAME_PIXELS_VARIABLE, DEFAULT_MAX_FRAME_PIXELS)


class VideoDecodeError(ValueError):
    """A video file or frame folder that cannot be read, reported on one line as `<path>: <reason>`."""

    def __init__(self, path: str | os.PathLike, reason: str):
        # Keeping both parts in `args` lets the error cross process boundaries (e.g. DataLoader workers) intact.
        super().__init__(str(path), " ".join(str(reason).split()))
        self.path, self.reason = self.args

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """
    Indices of `num_frames` frames spread evenly from the first to the last frame, as in the model card's reference
    `np.linspace(0, total - 1, num_frames, dtype=int)`. Shorter videos repeat frames evenly instead of failing.
    """
    if total_frames < 1:
        raise ValueError(f"A video needs at least one frame, got total_frames={total_frames}.")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    return np.linspace(0, total_frames - 1, num_frames).astype(np.int64)


@dataclass
class VideoInfo:
    """
    What a video file holds, read from its container's index (mp4) or its packets without decoding it (where the
    rotation is not in an mp4 track header, the first frame is decoded: PyAV exposes it on frames only).

    Frame `i` is the i-th frame in presentation order, the order in which `container.decode(video=0)` yields them.
    """

    path: str
    total_frames: int
    fps: float | None
    duration: float | None
    width: int
    height: int
    rotation: int
    """Counter-clockwise degrees the frames are turned by for display; `width`/`height` are after that turn."""
    timestamps: np.ndarray
    """Presentation time of every frame, in seconds from the first frame."""
    keyframe_indices: np.ndarray
    """Frames a decoder can start from, i.e. where seeking lands."""
    frame_pts: np.ndarray | None
    """Presentation timestamp of every frame in the stream's time base; `None` when the container has none."""
    slices: int = 1
    """Slices the first frame is coded in (H.264; 1 otherwise): FFmpeg's slice threads decode them side by side."""


@dataclass
class DecodedVideo:
    """Decoded frames of one video: `frames[k]` is frame `indices[k]`, shown `timestamps[k]` seconds into the video."""

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray | None
    fps: float | None
    duration: float | None
    """As `probe_video` measures it; `None` for inputs that carry no timing (frame folders, images, arrays)."""
    total_frames: int


_FORMAT_REFUSED = (
    "not a self-contained video file: playlists, concat lists, image sequences and other formats that can name "
    "other files or URLs are refused"
)


@contextmanager
def _open_video(
    path: str | os.PathLike, threads: int, thread_type: str = "AUTO"
) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """
    Open a video file and its video stream, turning every way it can fail into a `VideoDecodeError`. `threads`: how
    many threads FFmpeg decodes with, as `thread_type` (FRAME, SLICE, or AUTO: frame threads where the codec has them).

    Every video is opened here, and only as the one file it is: through FFmpeg's `file` protocol (so a name like
    `concat:a|b` or `data:...` is a file name, not a protocol), with demuxers limited to `ALLOWED_CONTAINER_FORMATS`
    and no protocol for them to open anything else with.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        # `max_pixels` stops the decoders FFmpeg runs while opening (to learn the stream's parameters) from
        # allocating a frame above the limit; the limit is then reported from the header below.
        container = av.open(
            "file:" + os.path.abspath(path),
            container_options=_OPEN_OPTIONS,
            options={"max_pixels": str(max_frame_pixels())},
            metadata_errors="replace",  # tags in a broken or foreign encoding are no reason to refuse the frames
        )
    except av.ArgumentError as err:  # what FFmpeg answers when the probed format is not on the allow-list
        raise VideoDecodeError(path, _FORMAT_REFUSED) from err
    except av.FFmpegError as err:
        raise VideoDecodeError(path, f"not a video FFmpeg can read ({err.strerror})") from err
    with container:
        if container.format.name not in ALLOWED_CONTAINER_FORMATS:
            raise VideoDecodeError(path, _FORMAT_REFUSED)
        streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams:
            raise VideoDecodeError(path, "no video stream")
        stream = streams[0]
        if stream.codec_context is None:
            raise VideoDecodeError(path, "video codec not supported by this FFmpeg build")
        pixels, limit = stream.codec_context.width * stream.codec_context.height, max_frame_pixels()
        if pixels > limit:  # checked on the container's header, before any frame is decoded
            raise VideoDecodeError(
                path,
                f"frames of {stream.codec_context.width}x{stream.codec_context.height} ({pixels:,} pixels) are above "
                f"the limit of {limit:,} pixels per frame ({MAX_FRAME_PIXELS_VARIABLE})",
            )
        stream.codec_context.thread_type = thread_type
        stream.codec_context.thread_count = threads
        try:
            yield container, stream
        except av.FFmpegError as err:
            raise VideoDecodeError(path, f"corrupt or truncated video ({err.strerror})") from err


_MP4_FORMAT = "mov,mp4,m4a,3gp,3g2,mj2"
# A sample table larger than this is not read into memory: the packets are scanned instead.
_MAX_MOOV_BYTES = 1 << 28


def _mp4_boxes(data, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each ISO-BMFF box in `data[start:end]`; a box that overflows raises."""
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise ValueError(f"box {kind!r} at {position} overflows its parent")
        yield kind, position + header, position + size
        position += size


def _read_moov(file, file_size: int) -> bytes:
    """The `moov` box of an mp4 file (at its start or end), found by walking the top-level box headers."""
    position = 0
    while position + 8 <= file_size:
        file.seek(position)
        header = file.read(16)
        size, kind = struct.unpack_from(">I4s", header)
        if size == 1:
            size = struct.unpack_from(">Q", header, 8)[0]
        elif size == 0:
            size = file_size - position
        if size < 8 or position + size > file_size:
            break
        if kind == b"moov":
            if size > _MAX_MOOV_BYTES:
                break
            file.seek(position)
            return file.read(size)
        position += size
    raise ValueError("no complete moov box")


_IDENTITY_MATRIX = (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _matrix_rotation(matrix: tuple[int, ...]) -> float | None:
    """Counter-clockwise degrees of an mp4 display matrix, as FFmpeg's `av_display_rotation_get` reads it."""
    scale = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if not all(scale):
        return None
    return -math.degrees(math.atan2(matrix[1] / scale[1], matrix[0] / scale[0]))


@dataclass
class _Mp4Track:
    sizes: np.ndarray
    offsets: np.ndarray
    """Composition offsets: presentation minus decoding time of each sample (0 without a `ctts` box)."""
    keyframes: np.ndarray
    rotation: float | None
    """From the track header's display matrix; `None` when the movie header's matrix also turns the frames."""


def _mp4_sample_table(path: str, track_id: int) -> _Mp4Track | None:
    """
    Sizes, composition offsets and keyframes (sample positions) of track `track_id`, read from the mp4's `stsz`,
    `ctts` and `stss` boxes, and its rotation; `None` when the track has no such table, or no `stss` (then FFmpeg
    finds keyframes by parsing each packet, which only demuxing reproduces).
    """
    with open(path, "rb") as file:
        moov = _read_moov(file, os.fstat(file.fileno()).st_size)

    def child(start, end, kind):
        return next(((s, e) for k, s, e in _mp4_boxes(moov, start, end) if k == kind), None)

    boxes = 8 if moov[:4] != b"\0\0\0\1" else 16, len(moov)
    movie_header, movie_matrix = child(*boxes, b"mvhd"), None
    if movie_header is not None:
        movie_matrix = struct.unpack_from(">9i", moov, movie_header[0] + (48 if moov[movie_header[0]] else 36))
    for kind, start, end in _mp4_boxes(moov, *boxes):
        header = child(start, end, b"tkhd") if kind == b"trak" else None
        if header is None:
            continue
        version = moov[header[0]]
        if struct.unpack_from(">I", moov, header[0] + (20 if version == 1 else 12))[0] != track_id:
            continue
        matrix = struct.unpack_from(">9i", moov, header[0] + (52 if version == 1 else 40))
        rotation = _matrix_rotation(matrix) if movie_matrix == _IDENTITY_MATRIX else None
        table = start, end
        for kind in (b"mdia", b"minf", b"stbl"):
            table = table and child(*table, kind)
        sizes_box = table and child(*table, b"stsz")
        if sizes_box is None:
            return None
        sample_size, count = struct.unpack_from(">II", moov, sizes_box[0] + 4)
        if sample_size:
            sizes = np.full(count, sample_size, dtype=np.int64)
        else:
            sizes = np.frombuffer(moov, ">u4", count, sizes_box[0] + 12).astype(np.int64)
        keyframes_box = child(*table, b"stss")
        if keyframes_box is None:
            return None
        (entries,) = struct.unpack_from(">I", moov, keyframes_box[0] + 4)
        keyframes = np.frombuffer(moov, ">u4", entries, keyframes_box[0] + 8).astype(np.int64) - 1
        offsets_box = child(*table, b"ctts")
        if offsets_box is None:
            return _Mp4Track(sizes, np.zeros(count, dtype=np.int64), keyframes, rotation)
        (entries,) = struct.unpack_from(">I", moov, offsets_box[0] + 4)
        runs = np.frombuffer(moov, ">i4", 2 * entries, offsets_box[0] + 8).reshape(entries, 2).astype(np.int64)
        if runs[:, 0].min(initial=0) < 0 or runs[:, 0].sum() != count:
            return None
        return _Mp4Track(sizes, np.repeat(runs[:, 1], runs[:, 0]), keyframes, rotation)
    return None


def _packets_from_index(path: str, container, stream) -> tuple[list, list, float | None] | None:
    """
    Presentation timestamps and keyframe flags of every packet, in decoding order, and the rotation the track header
    gives (`None`: unknown), from the container's own index
    instead of demuxing the file: FFmpeg's mp4 index gives each sample's decoding time, position, size and keyframe
    flag, and the `ctts` box adds what turns decoding times into presentation times. Used only when the two agree
    sample for sample (same count, sizes and keyframes), no sample is marked to be discarded (edit lists that hide
    frames), every sample lies within the file (not truncated), offsets are not negative and timestamps are distinct;
    `None` sends the caller to the exact scan.
    """
    if container.format.name != _MP4_FORMAT:
        return None
    try:
        table = _mp4_sample_table(path, stream.id)
    except (ValueError, struct.error, OSError):
        return None
    entries = stream.index_entries
    if table is None or len(entries) != len(table.sizes) or not len(entries):
        return None
    index = np.array([(e.timestamp, e.pos, e.size, e.is_keyframe, e.is_discard) for e in entries], dtype=np.int64)
    if not np.array_equal(index[:, 2], table.sizes) or not np.array_equal(np.flatnonzero(index[:, 3]), table.keyframes):
        return None
    if table.offsets.min() < 0 or index[:, 4].any():
        return None
    if (index[:, 1] + index[:, 2]).max() > os.path.getsize(path):
        return None
    presentation_pts = index[:, 0] + table.offsets
    if len(np.unique(presentation_pts)) != len(presentation_pts):
        return None
    return presentation_pts.tolist(), index[:, 3].astype(bool).tolist(), table.rotation


def _first_frame(packets: Iterator[av.Packet]) -> tuple[list, av.VideoFrame | None]:
    """Decode `packets` until the first frame comes out: the packets read on the way, and the frame."""
    head = []
    for packet in packets:
        # The last (empty) packet flushes the decoder, so even a one-frame video yields its frame.
        frame = next(iter(packet.decode()), None)
        if packet.size:
            head.append(packet)
        if frame is not None:
            return head, frame
    return head, None


def _h264_slices(codec_context, packet: av.Packet) -> int:
    """
    Slices in the H.264 frame `packet` holds, counted from its NAL unit headers (length-prefixed as in mp4 and mkv,
    or after start codes as in raw and MPEG-TS streams); 1 for other codecs.
    """
    if codec_context.name != "h264":
        return 1
    data, extradata = bytes(packet), codec_context.extradata or b""
    if extradata[:1] == b"\x01" and len(extradata) > 4:  # avcC: NAL units prefixed with their length
        length_size, units, position = (extradata[4] & 3) + 1, [], 0
        while position + length_size < len(data):
            length = int.from_bytes(data[position : position + length_size], "big")
            units.append(data[position + length_size : position + length_size + 1])
            position += length_size + length
    else:
        units = [unit[:1] for unit in data.split(b"\x00\x00\x01")[1:]]
    return max(1, sum(1 for unit in units if unit and unit[0] & 0x1F in (1, 5)))  # coded slices (non-IDR, IDR)


def _scan_packets(packets) -> tuple[list, list, int]:
    """Presentation timestamps and keyframe flags of the shown packets, and how many packets were read."""
    presentation_pts, is_keyframe, demuxed = [], [], 0
    for packet in packets:
        if packet.size == 0:
            continue
        demuxed += 1
        if packet.is_discard:
            # Marked by the container (e.g. an edit list) to be decoded as a reference but never shown.
            continue
        presentation_pts.append(packet.pts)
        is_keyframe.append(packet.is_keyframe)
    return presentation_pts, is_keyframe, demuxed


def probe_video(path: str | os.PathLike, index: bool = True) -> VideoInfo:
    """
    Count the frames of a video file and time them exactly, decoding at most the first frame: from the container's
    own index where it is complete and consistent (mp4), else by demuxing every packet. `index=False` always demuxes
    (both give the same answer; the tests hold them to it).
    """
    path = os.fspath(path)
    with _open_video(path, threads=1) as (container, stream):
        return _probe(path, container, stream, index)[0]


def _probe(path: str, container, stream, index: bool = True) -> tuple[VideoInfo, bool]:
    """
    `probe_video` on an open file, and whether the same container can then decode the frames by seeking, instead of
    the file being opened again (FFmpeg decodes frames to open it). Its decoder stays unopened, so that it can take
    any threads, when the index gives everything.
    """
    # What the container's own index promises; a file cut short delivers fewer packets than that.
    indexed_packets = len(stream.index_entries)
    indexed = _packets_from_index(path, container, stream) if index else None
    packets = container.demux(stream)
    first_packet = next((packet for packet in packets if packet.size), None)
    slices = 1 if first_packet is None else _h264_slices(stream.codec_context, first_packet)
    packets = itertools.chain([first_packet] if first_packet else [], packets)
    from_index = indexed is not None and indexed[2] is not None and getattr(first_packet, "pts", None) == indexed[0][0]
    if from_index:
        # Nothing to decode: the track header gives the rotation.
        presentation_pts, is_keyframe, rotation = indexed
        demuxed_packets = indexed_packets
    else:
        # One thread: with more, FFmpeg decodes several packets ahead before the first frame comes out.
        head, first = _first_frame(packets)
        rotation = None if first is None else first.rotation
        if indexed is not None and [packet.pts for packet in head] == indexed[0][: len(head)]:
            presentation_pts, is_keyframe, _ = indexed
            demuxed_packets = indexed_packets
        else:
            presentation_pts, is_keyframe, demuxed_packets = _scan_packets(itertools.chain(head, packets))
    time_base = stream.time_base
    rate = stream.average_rate or stream.guessed_rate
    width, height = stream.codec_context.width, stream.codec_context.height

    if demuxed_packets < indexed_packets:
        raise VideoDecodeError(
            path, f"truncated: the container indexes {indexed_packets} frames but only {demuxed_packets} can be read"
        )
    if not presentation_pts:
        raise VideoDecodeError(path, "the video stream has no frames")
    if rotation is None:
        raise VideoDecodeError(path, "no frame could be decoded")

    total_frames = len(presentation_pts)
    fps = float(rate) if rate else None
    frame_pts = None
    if time_base is not None and None not in presentation_pts and len(set(presentation_pts)) == total_frames:
        order = np.argsort(presentation_pts, kind="stable")
        frame_pts = np.asarray(presentation_pts, dtype=np.int64)[order]
        keyframe_indices = np.flatnonzero(np.asarray(is_keyframe)[order])
        timestamps = (frame_pts - frame_pts[0]).astype(np.float64) * float(time_base)
        duration = timestamps[-1] + (1 / fps if fps else 0.0)
    else:
        # Without presentation timestamps the only reliable order is the decoder's, so frames are counted, not timed.
        keyframe_indices = np.flatnonzero(is_keyframe)
        timestamps = np.arange(total_frames) / fps if fps else np.full(total_frames, np.nan)
        duration = total_frames / fps if fps else None

    rotation = 90 * round(rotation / 90) % 360
    if rotation in (90, 270):
        width, height = height, width
    info = VideoInfo(
        path=path,
        total_frames=total_frames,
        fps=fps,
        duration=duration,
        width=width,
        height=height,
        rotation=rotation,
        timestamps=timestamps,
        keyframe_indices=keyframe_indices,
        frame_pts=frame_pts,
        slices=slices,
    )
    # The decoder that reuses the container seeks to the first keyframe before anything: it must be the first frame.
    return info, frame_pts is not None and keyframe_indices[0] == 0


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
# FFmpeg's own cap on the threads it picks: more decoders than this mostly hold more frames in memory.
_MAX_DEFAULT_THREADS = 16
DECODE_THREADS_VARIABLE = "DFD_DECODE_THREADS"


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
    with nullcontext(opened) if opened else _open_video(info.path, threads, thread_type) as (container, stream):
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
                raise VideoDecodeError(
                    info.path, f"truncated: frame {target} of {info.total_frames} cannot be decoded"
                )


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


def decoding_threads() -> int:
    """
    How many threads `read_video` decodes with by default: `DFD_DECODE_THREADS` when set (e.g. a container's CPU quota,
    which the CPU count does not show, or a worker process's share), else one per CPU this process may run on
    (`taskset` may allow fewer than the machine has), at most 16.
    """
    threads = environment_number(DECODE_THREADS_VARIABLE, None)
    if threads is not None:
        return threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, _MAX_DEFAULT_THREADS)


def _decode_in_order(
    info: VideoInfo, wanted: list[int], batch: _Batch, threads: int, transform: FrameTransform | None = None
):
    """Decode from the start and count frames, keeping only the `wanted` ones (ascending)."""
    wanted_set = set(wanted)
    found, decoded_count = 0, 0
    with _open_video(info.path, threads) as (container, stream):
        for frame in container.decode(stream):
            if decoded_count in wanted_set:
                batch.put(decoded_count, _to_upright_rgb(frame, transform))
                found += 1
                if found == len(wanted):
                    return
            decoded_count += 1
    raise VideoDecodeError(info.path, f"truncated: only {decoded_count} of {info.total_frames} frames can be decoded")


def read_video(
    video: str | os.PathLike | VideoInfo,
    indices: Sequence[int] | Callable[[VideoInfo], Sequence[int]] | None = None,
    num_frames: int = 12,
    threads: int | None = None,
    transform: FrameTransform | None = None,
) -> DecodedVideo:
    """
    Decode only the requested frames of a video file, in the requested order (indices may repeat or be unsorted).

    `video` is a path, or the `VideoInfo` that `probe_video` returned for it (callers that needed the frame count to
    choose `indices`). Given a path, the file is opened once: probed from its index where it has one, and decoded by
    the same container.
    Frame `i` is the i-th frame in presentation order, so the pixels are bit-identical to those of
    `transformers.video_utils.load_video(path, backend="pyav")` for the same indices. Only the requested frames are
    kept in memory, and the decoder skips ahead by seeking to keyframes, so long videos stay cheap.
    `indices` defaults to `sample_frame_indices(total_frames, num_frames)`; a function of the probed `VideoInfo`
    chooses them once the file is open (and may refuse it by raising), so that a file is opened once.
    `threads`: how many threads decode (default: `decoding_threads()`). The wanted frames are shared between up to this
    many decoders that start at different keyframes and work side by side; callers that decode several videos at once
    give each a share.
    `transform` is applied to each frame as it is decoded (the processor passes its resize), so that memory grows with
    the output, not the video's resolution; a frame that several indices repeat is decoded and transformed once.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}.")
    threads = threads or decoding_threads()

    def choose(info: VideoInfo) -> Sequence[int]:
        if indices is None:
            return sample_frame_indices(info.total_frames, num_frames)
        return indices(info) if callable(indices) else indices

    if isinstance(video, VideoInfo):
        return _read(video, choose(video), threads, transform)
    return _read_file(os.fspath(video), choose, threads, transform)


def _read_file(
    path: str, choose: Callable[[VideoInfo], Sequence[int]], threads: int, transform: FrameTransform | None
) -> DecodedVideo:
    """Probe and decode a file through one open container: `choose(info)` picks the frames."""
    with _open_video(path, threads=1) as (container, stream):
        info, reusable = _probe(path, container, stream)
        return _read(info, choose(info), threads, transform, (container, stream) if reusable else None)


def _read(
    info: VideoInfo, indices, threads: int, transform: FrameTransform | None, opened: tuple | None = None
) -> DecodedVideo:
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be a non-empty sequence of integers, got {indices!r}.")
    if indices.min() < 0 or indices.max() >= info.total_frames:
        raise IndexError(f"{info.path}: frame indices must lie in [0, {info.total_frames}), got {indices.tolist()}.")
    wanted = sorted(set(indices.tolist()))
    batch = _Batch(info.path, indices)
    if info.frame_pts is None:
        _decode_in_order(info, wanted, batch, threads, transform)
    else:
        try:
            _decode_side_by_side(info, wanted, batch, threads, transform, opened)
        except _SeekMissed:
            _decode_in_order(info, wanted, batch, threads, transform)
    return DecodedVideo(
        frames=batch.array,
        indices=indices.astype(np.int64),
        timestamps=info.timestamps[indices],
        fps=info.fps,
        duration=info.duration,
        total_frames=info.total_frames,
    )


def _natural_sort_key(path: Path) -> tuple[list, str]:
    """Sort `frame_2.png` before `frame_10.png`; zero-padded names keep their plain alphabetical order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)], path.name


def _read_frame_folder(
    folder: Path, sample_indices: Callable[[int], Sequence[int]], transform: FrameTransform | None = None
) -> DecodedVideo:
    """Frames stored as one image per file, in name order; only the sampled images are opened."""
    try:
        entries = list(folder.iterdir())
        images = [entry for entry in entries if entry.suffix.lower() in FRAME_IMAGE_EXTENSIONS and entry.is_file()]
    except OSError as err:  # e.g. no permission to list the folder
        raise VideoDecodeError(folder, f"cannot list the folder ({err.strerror})") from err
    if not entries:
        raise VideoDecodeError(folder, "empty folder")
    images.sort(key=_natural_sort_key)
    if not images:
        raise VideoDecodeError(folder, f"no frame images ({', '.join(FRAME_IMAGE_EXTENSIONS)}) in folder")
    indices = np.asarray(sample_indices(len(images)), dtype=np.int64)
    frames, sizes, limit = {}, set(), max_frame_pixels()
    for index in sorted(set(indices.tolist())):
        try:
            with PIL.Image.open(images[index]) as image:
                if image.width * image.height > limit:  # read from the header, before decoding
                    raise VideoDecodeError(
                        images[index],
                        f"{image.width}x{image.height} ({image.width * image.height:,} pixels) is above the limit "
                        f"of {limit:,} pixels per frame ({MAX_FRAME_PIXELS_VARIABLE})",
                    )
                frame = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError) as err:  # PIL reports unreadable or truncated images with these
            # A failed system call's `strerror` (e.g. "Permission denied") says why without repeating the path.
            reason = getattr(err, "strerror", None) or err
            raise VideoDecodeError(images[index], f"not a readable image ({reason})") from err
        sizes.add(frame.shape)
        frames[index] = frame if transform is None else transform(frame)
    if len(sizes) > 1:
        raise VideoDecodeError(folder, "frame images differ in size")
    return DecodedVideo(
        frames=np.stack([frames[index] for index in indices.tolist()]),
        indices=indices,
        timestamps=None,
        fps=None,
        duration=None,
        total_frames=len(images),
    )


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
    return isinstance(video, (list, tuple)) and len(video) > 0 and all(isinstance(f, PIL.Image.Image) for f in video)


def decode_video(
    video, sample_indices: Callable[[int], Sequence[int]], transform: FrameTransform | None = None
) -> DecodedVideo:
    """
    Decode one video of any supported kind, keeping the frames `sample_indices(total_frames)` picks. `transform`: see
    `read_video`; frames given in memory (images, arrays) are returned as they are.
    """
    if isinstance(video, (str, os.PathLike)):
        if os.path.isdir(video):
            return _read_frame_folder(Path(video), sample_indices, transform)
        return _read_file(
            os.fspath(video), lambda info: sample_indices(info.total_frames), decoding_threads(), transform
        )
    if is_frame_list(video):
        indices = np.asarray(sample_indices(len(video)), dtype=np.int64)
        frames = np.stack([np.asarray(video[index].convert("RGB")) for index in indices.tolist()])
    elif isinstance(video, (np.ndarray, torch.Tensor)):
        if isinstance(video, torch.Tensor):
            video = video.detach().cpu()
            video = (video.float() if video.is_floating_point() else video).numpy()
        indices = np.asarray(sample_indices(len(video)), dtype=np.int64)
        # Indexing copies; frames already picked by the caller (do_sample_frames=False) are taken as they are.
        frames = _rgb_uint8(video if np.array_equal(indices, np.arange(len(video))) else video[indices])
    else:
        raise TypeError(
            "A video must be a path to a video file or a frame folder, a list of PIL images, or a (T, H, W, C) / "
            f"(T, C, H, W) numpy array or torch tensor; got {type(video).__name__}."
        )
    return DecodedVideo(
        frames=frames, indices=indices, timestamps=None, fps=None, duration=None, total_frames=len(video)
    )


def load_video_frames(video, num_frames: int = 12) -> np.ndarray:
    """
    `num_frames` evenly sampled RGB frames, (num_frames, H, W, 3) uint8, of one video given as any of:

    - a path (`str` or `Path`) to a video file in any container/codec FFmpeg reads; rotation metadata is honoured;
    - a path to a folder of frame images (png, jpg, jpeg, bmp, webp), in natural name order;
    - a list of PIL images (any mode; converted to RGB);
    - a numpy array or torch tensor of shape (T, H, W, C) or (T, C, H, W) with 1, 3 or 4 channels, either uint8 or
      floating point in [0, 1] (the torchvision convention; floats in [0, 255] are rejected rather than guessed).
    """
    return decode_video(video, lambda total_frames: sample_frame_indices(total_frames, num_frames)).frames


__all__ = [
    "DecodedVideo",
    "VideoDecodeError",
    "VideoInfo",
    "decode_video",
    "decoding_threads",
    "environment_flag",
    "environment_number",
    "frames_to_decode",
    "is_frame_list",
    "load_video_frames",
    "max_frame_pixels",
    "probe_video",
    "read_video",
    "sample_frame_indices",
]
