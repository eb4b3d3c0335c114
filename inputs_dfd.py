"""The one input gate: a video given any way a surface takes it becomes a local file, within one set of limits.

The processor (and so the pipeline and `dfd predict`), the Endpoints handler, the serving container and the web page
all turn their inputs into files through `video_file`, and hold a request to `Limits`. Inputs are hostile: a URL is
fetched only from public addresses within a deadline and a size cap (fetching_dfd.py); bytes and base64 are size-capped
before they are decoded; a path on a server's own disk is refused, with the same line whether it exists or not,
unless the operator allows it (`DFD_ALLOW_LOCAL_PATHS=1`).
"""

import base64
import binascii
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from .decoding_dfd import frames_to_decode
from .fetching_dfd import fetch, is_url
from .probing_dfd import VideoDecodeError, VideoInfo
from .settings_dfd import (
    ALLOW_LOCAL_PATHS,
    MAX_DECODED_FRAMES,
    MAX_DURATION_SECONDS,
    MAX_INPUT_BYTES,
    MAX_WINDOWS,
    max_decoded_frames,
    max_duration_seconds,
    max_input_bytes,
    max_windows,
)


LOCAL_PATHS_REFUSED = f"paths on the server are refused unless {ALLOW_LOCAL_PATHS}=1"
# A base64 video is longer than any path; shorter text may be a path, which a server must not look up.
MAX_PATH_LENGTH = 4096
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/\-_=]")


@dataclass
class Limits:
    """
    What one request may ask of a server (the Endpoint, the web page): a video's bytes and seconds, how many windows
    (every window's frames are held in memory), and how many frames decoding them takes (the CPU work, which the
    duration does not bound: a single-keyframe video must be decoded up to each wanted frame). Defaults come from
    DFD_MAX_INPUT_BYTES, DFD_MAX_DURATION_SECONDS, DFD_MAX_WINDOWS and DFD_MAX_DECODED_FRAMES; a `VideoDecodeError`
    names the limit a video passes. Local use (`dfd predict`, the pipeline) has no limits but the download size cap.
    """

    max_input_bytes: int = field(default_factory=max_input_bytes)
    max_duration: float = field(default_factory=max_duration_seconds)
    max_windows: int = field(default_factory=max_windows)
    max_decoded_frames: int = field(default_factory=max_decoded_frames)

    def check_size(self, size: int):
        if size > self.max_input_bytes:
            raise ValueError(
                f"the video is {size:,} bytes, above the {self.max_input_bytes:,} byte limit ({MAX_INPUT_BYTES})"
            )

    def check_duration(self, info: VideoInfo):
        if info.duration is not None and info.duration > self.max_duration:
            raise VideoDecodeError(
                info.path,
                f"the video lasts {info.duration:.1f} s, above the {self.max_duration:g} s limit "
                f"({MAX_DURATION_SECONDS})",
            )

    def check_windows(self, windows: int):
        if windows > self.max_windows:
            raise ValueError(f"{windows} windows asked, above the limit of {self.max_windows} ({MAX_WINDOWS})")

    def check_decoding(self, info: VideoInfo, indices: np.ndarray):
        """The duration, then the frames that decoding `indices` takes; called once the video is probed."""
        self.check_duration(info)
        needed = frames_to_decode(info, np.asarray(indices).reshape(-1))
        if needed > self.max_decoded_frames:
            raise VideoDecodeError(
                info.path,
                f"the requested frames take decoding {needed:,} frames, above the {self.max_decoded_frames:,} frame "
                f"limit ({MAX_DECODED_FRAMES})",
            )


def base64_video(encoded: str) -> bytes:
    """
    The bytes of a base64 video in any common spelling: standard or URL-safe alphabet, wrapped in lines (as the
    `base64` tool writes it), with or without its `=` padding, or a `data:video/mp4;base64,...` URL.
    """
    if encoded.startswith("data:"):
        if "," not in encoded:
            raise ValueError("a data: URL without a comma before its base64 video")
        encoded = encoded.split(",", 1)[1]
    encoded = "".join(encoded.split())
    if not encoded or _NOT_BASE64.search(encoded):
        raise ValueError("not base64")
    encoded = encoded.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None


def _describe(source) -> str:
    """How an error names an input: a URL or path as given, never a temporary file of ours."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<video bytes>"
    if isinstance(source, str) and (len(source) > MAX_PATH_LENGTH or source.startswith("data:")):
        return "<base64 video>"
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<video>"


@contextmanager
def video_file(
    source,
    local_paths: bool = True,
    base64_text: bool = False,
    limits: Limits | None = None,
) -> Iterator[str]:
    """
    A local file holding the video `source`; temporary copies are deleted afterwards. `source` is an http(s) URL
    (fetched: public addresses only, one deadline, the size cap), a video file's bytes, a `data:` URL, a path (only
    with `local_paths`; otherwise refused without looking at the disk), or with `base64_text` base64 text (JSON
    bodies). `limits` caps the size (default: `DFD_MAX_INPUT_BYTES` for what is downloaded or sent, nothing for local
    files). Raises `VideoDecodeError` naming the input as the caller gave it: the URL, `<video bytes>`, the path.
    """
    name = _describe(source)
    cap = limits.check_size if limits is not None else Limits(max_input_bytes=max_input_bytes()).check_size
    try:
        local_path, data = _local_path_or_data(source, local_paths, base64_text, cap)
        if local_path is not None and limits is not None and os.path.isfile(local_path):
            cap(os.path.getsize(local_path))
    except ValueError as error:
        raise VideoDecodeError(name, str(error)) from None
    if local_path is not None:
        yield local_path
        return
    with tempfile.NamedTemporaryFile(suffix=".video") as file:
        try:
            if data is None:
                fetch(source, file, cap)
            else:
                cap(len(data))
                file.write(data)
                file.flush()
        except ValueError as error:
            raise VideoDecodeError(name, str(error)) from None
        try:
            yield file.name
        except VideoDecodeError as error:
            if error.path != file.name:
                raise
            raise VideoDecodeError(name, error.reason) from None


def _local_path_or_data(source, local_paths: bool, base64_text: bool, cap) -> tuple[str | None, bytes | None]:
    """(a local path to read as it is, or the video's bytes, or neither: a URL to fetch); ValueError says why not."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None, source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise ValueError(f"a video must be a path, an http(s) URL or bytes, got {type(source).__name__}")
    if is_url(source):
        return None, None
    path_like = len(source) <= MAX_PATH_LENGTH and not source.startswith("data:")
    if path_like and local_paths and (not base64_text or os.path.isfile(source)):
        return source, None
    if path_like and not base64_text:
        raise ValueError(LOCAL_PATHS_REFUSED)
    if path_like and not local_paths and source.startswith(("/", "~", ".", "\\")):
        # No video's base64 starts with "/" (it would take a first byte of 0xFC or more): refused without looking
        # at the disk, so the answer says nothing about which files exist.
        raise ValueError(f"a path: {LOCAL_PATHS_REFUSED}")
    cap(len(source) * 3 // 4)  # before decoding, so an oversized request costs no memory
    if source.startswith("data:"):
        return None, base64_video(source)
    try:
        return None, base64_video(source)
    except ValueError:
        kinds = "an http(s) URL, an existing file, nor" if local_paths else "an http(s) URL nor"
        refused = "" if local_paths else f" ({LOCAL_PATHS_REFUSED})"
        raise ValueError(f"neither {kinds} base64-encoded video{refused}") from None


__all__ = ["LOCAL_PATHS_REFUSED", "Limits", "base64_video", "is_url", "video_file"]
