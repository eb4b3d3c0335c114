"""Opening and probing video files: what a file holds (frames, times, keyframes, rotation), before any decoding.

Every video is opened by `open_video`, and only as the self-contained file it is (FFmpeg's `file` protocol, an
allow-list of container formats, a cap on frame size read from the header). `probe_video` counts and times the frames
exactly: from an mp4's own index (`stsz`/`ctts`/`stss`, read by a small box parser and checked sample for sample
against FFmpeg's index) where it is complete and consistent, else by demuxing every packet. decoding_dfd.py decodes
the frames a caller picks from the `VideoInfo` this returns.
"""

import itertools
import math
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import numpy as np

from .settings_dfd import MAX_FRAME_PIXELS, max_frame_pixels


# FFmpeg demuxers that read one self-contained stream of bytes. Playlists and lists (concat, HLS, DASH, SDP/RTP),
# image sequences (image2) and devices open other files or URLs named inside the input, so they are not here.
ALLOWED_CONTAINER_FORMATS = (
    "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska,webm",
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "ogg",
    "asf",
    "nut",
    "ivf",
    "h264",
    "hevc",
    "m4v",
    "mpegvideo",
    "gif",
    "yuv4mpegpipe",
)
_OPEN_OPTIONS = {
    "format_whitelist": ",".join(ALLOWED_CONTAINER_FORMATS),
    "protocol_whitelist": "file",  # what a demuxer may open: nothing but the file it was given
    "enable_drefs": "0",  # mov/mp4 data references to other files (FFmpeg's default, made explicit)
}


class VideoDecodeError(ValueError):
    """A video file or frame folder that cannot be read, reported on one line as `<path>: <reason>`."""

    def __init__(self, path: str | os.PathLike, reason: str):
        # Keeping both parts in `args` lets the error cross process boundaries (e.g. DataLoader workers) intact.
        super().__init__(str(path), " ".join(str(reason).split()))
        self.path, self.reason = self.args

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


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


_FORMAT_REFUSED = (
    "not a self-contained video file: playlists, concat lists, image sequences and other formats that can name "
    "other files or URLs are refused"
)


@contextmanager
def open_video(
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
                f"the limit of {limit:,} pixels per frame ({MAX_FRAME_PIXELS})",
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
    with open_video(path, threads=1) as (container, stream):
        return probe_container(path, container, stream, index)[0]


def probe_container(path: str, container, stream, index: bool = True) -> tuple[VideoInfo, bool]:
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


__all__ = ["ALLOWED_CONTAINER_FORMATS", "VideoDecodeError", "VideoInfo", "open_video", "probe_container", "probe_video"]
