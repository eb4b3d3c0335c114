"""Every `DFD_*` environment setting, read and checked in one place.

A setting is read when it is used, so a server picks up its environment at start and a test can set one for a call.
A bad value is refused with one line that names the variable and what it must be.
"""

import os


def environment_number(name: str, default, kind: type = int, minimum=1):
    """
    The number in the environment variable `name` (`default` when unset or empty), refused on one line that names
    the variable when it is not a finite `kind` of at least `minimum`.
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


def environment_choice(name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when unset or empty); anything else is refused, naming the variable."""
    text = os.environ.get(name, "").strip() or choices[0]
    if text not in choices:
        raise ValueError(f"{name}={text!r} is not valid: it must be {', '.join(choices)}")
    return text


DECODE_THREADS = "DFD_DECODE_THREADS"
MAX_FRAME_PIXELS = "DFD_MAX_FRAME_PIXELS"
MAX_INPUT_BYTES = "DFD_MAX_INPUT_BYTES"
DOWNLOAD_SECONDS = "DFD_DOWNLOAD_SECONDS"
MAX_DURATION_SECONDS = "DFD_MAX_DURATION_SECONDS"
MAX_WINDOWS = "DFD_MAX_WINDOWS"
MAX_DECODED_FRAMES = "DFD_MAX_DECODED_FRAMES"
ALLOW_LOCAL_PATHS = "DFD_ALLOW_LOCAL_PATHS"
DTYPE = "DFD_DTYPE"
SERVE_BATCH_SIZE = "DFD_SERVE_BATCH_SIZE"
SERVE_BATCH_WAIT_MS = "DFD_SERVE_BATCH_WAIT_MS"
SERVE_MAX_QUEUE = "DFD_SERVE_MAX_QUEUE"
SERVE_REQUEST_SECONDS = "DFD_SERVE_REQUEST_SECONDS"

DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320  # 8K UHD
DEFAULT_MAX_INPUT_BYTES = 100_000_000
DEFAULT_DOWNLOAD_SECONDS = 60.0
DEFAULT_MAX_DURATION_SECONDS = 600.0
DEFAULT_MAX_WINDOWS = 32
DEFAULT_MAX_DECODED_FRAMES = 10_000
# FFmpeg's own cap on the threads it picks: more decoders than this mostly hold more frames in memory.
MAX_DEFAULT_DECODE_THREADS = 16
DTYPE_CHOICES = ("auto", "fp32", "bf16", "int8")
DEFAULT_SERVE_BATCH_SIZE = 8
DEFAULT_SERVE_BATCH_WAIT_MS = 5.0
DEFAULT_SERVE_MAX_QUEUE = 16
DEFAULT_SERVE_REQUEST_SECONDS = 120.0


def decoding_threads() -> int:
    """
    Threads a video is decoded with: `DFD_DECODE_THREADS` when set (e.g. a container's CPU quota, which the CPU count
    does not show, or a worker process's share), else one per CPU this process may run on, at most 16.
    """
    threads = environment_number(DECODE_THREADS, None)
    if threads is not None:
        return threads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, MAX_DEFAULT_DECODE_THREADS)


def max_frame_pixels() -> int:
    """Pixels a frame may have (`DFD_MAX_FRAME_PIXELS`, default 8K): larger frames are refused before decoding."""
    return environment_number(MAX_FRAME_PIXELS, DEFAULT_MAX_FRAME_PIXELS)


def max_input_bytes() -> int:
    """Bytes of one video given as bytes, base64 or a URL (`DFD_MAX_INPUT_BYTES`, default 100 MB)."""
    return environment_number(MAX_INPUT_BYTES, DEFAULT_MAX_INPUT_BYTES)


def download_seconds() -> float:
    """Seconds one download may take in all, redirects included (`DFD_DOWNLOAD_SECONDS`, default 60)."""
    return environment_number(DOWNLOAD_SECONDS, DEFAULT_DOWNLOAD_SECONDS, float, minimum=0.001)


def max_duration_seconds() -> float:
    """Seconds a video sent to a server may last (`DFD_MAX_DURATION_SECONDS`, default 600)."""
    return environment_number(MAX_DURATION_SECONDS, DEFAULT_MAX_DURATION_SECONDS, float)


def max_windows() -> int:
    """Windows one request to a server may ask for (`DFD_MAX_WINDOWS`, default 32): each is held in memory."""
    return environment_number(MAX_WINDOWS, DEFAULT_MAX_WINDOWS)


def max_decoded_frames() -> int:
    """Frames decoding one request's video may take (`DFD_MAX_DECODED_FRAMES`, default 10,000): its CPU work."""
    return environment_number(MAX_DECODED_FRAMES, DEFAULT_MAX_DECODED_FRAMES)


def allow_local_paths() -> bool:
    """Whether a server reads paths on its own disk (`DFD_ALLOW_LOCAL_PATHS=1`); off by default."""
    return environment_flag(ALLOW_LOCAL_PATHS)


def dtype_name() -> str:
    """The precision asked for by `DFD_DTYPE`: auto (the default), fp32, bf16 or int8."""
    return environment_choice(DTYPE, DTYPE_CHOICES)


def serve_batch_size() -> int:
    """Windows the serving container runs in one forward pass, from any requests (`DFD_SERVE_BATCH_SIZE`, default 8)."""
    return environment_number(SERVE_BATCH_SIZE, DEFAULT_SERVE_BATCH_SIZE)


def serve_batch_wait_ms() -> float:
    """
    Milliseconds the serving container waits for more windows once one is ready, to fill a batch
    (`DFD_SERVE_BATCH_WAIT_MS`, default 5; 0: no waiting).
    """
    return environment_number(SERVE_BATCH_WAIT_MS, DEFAULT_SERVE_BATCH_WAIT_MS, float, minimum=0)


def serve_max_queue() -> int:
    """Requests the serving container holds at once; more are answered 503 (`DFD_SERVE_MAX_QUEUE`, default 16)."""
    return environment_number(SERVE_MAX_QUEUE, DEFAULT_SERVE_MAX_QUEUE)


def serve_request_seconds() -> float:
    """Seconds a request may take in the serving container, waiting included (`DFD_SERVE_REQUEST_SECONDS`, 120)."""
    return environment_number(SERVE_REQUEST_SECONDS, DEFAULT_SERVE_REQUEST_SECONDS, float, minimum=0.001)


__all__ = [
    "allow_local_paths",
    "decoding_threads",
    "download_seconds",
    "dtype_name",
    "environment_flag",
    "environment_number",
    "max_decoded_frames",
    "max_duration_seconds",
    "max_frame_pixels",
    "max_input_bytes",
    "max_windows",
    "serve_batch_size",
    "serve_batch_wait_ms",
    "serve_max_queue",
    "serve_request_seconds",
]
