"""Score whole videos with a DFD detector: time windows tiling each video, one decoding pass, batched forward passes.

Shared by `dfd predict`, the web page (`dfd serve`) and the Endpoints handler (handler.py). Like the Hub files, it
imports its siblings relatively (the decoder, decoding_dfd.py), so it runs the same from the installed package and
from an exported model folder, where the handler loads it through transformers' custom-code loader.
"""

import functools
import http.client
import itertools
import math
import os
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from .decoding_dfd import (
    VideoDecodeError,
    VideoInfo,
    decode_video,
    decoding_threads,
    probe_video,
    read_video,
    sample_frame_indices,
)


FAKE_LABEL = "fake"


@dataclass
class WindowScore:
    """One time window of `num_frames` evenly spaced frames, the time (s) of each and its class probabilities."""

    timestamps: list[float | None]
    scores: dict[str, float]

    @property
    def start(self) -> float | None:
        return self.timestamps[0]

    @property
    def end(self) -> float | None:
        return self.timestamps[-1]


@dataclass
class VideoPrediction:
    """
    A video's verdict. `scores` averages the windows' class probabilities and `label` is their argmax, so one
    window gives exactly the model card's prediction; `windows` are in time order.
    """

    path: str
    label: str
    scores: dict[str, float]
    most_suspicious_window: int
    duration: float | None
    windows: list[WindowScore]

    @property
    def fake_probability(self) -> float:
        return self.scores[FAKE_LABEL]

    @property
    def max_fake_probability(self) -> float:
        return self.windows[self.most_suspicious_window].scores[FAKE_LABEL]

    def to_dict(self) -> dict:
        suspicious = self.windows[self.most_suspicious_window]
        return {
            "path": self.path,
            "label": self.label,
            "fake_probability": self.fake_probability,
            "max_fake_probability": self.max_fake_probability,
            "most_suspicious": {
                "start": suspicious.start,
                "end": suspicious.end,
                "window": self.most_suspicious_window,
            },
            "scores": self.scores,
            "duration": self.duration,
            "windows": [
                {
                    "start": window.start,
                    "end": window.end,
                    "fake_probability": window.scores[FAKE_LABEL],
                    "timestamps": window.timestamps,
                }
                for window in self.windows
            ],
        }


@dataclass
class VideoError:
    """A video that could not be scored, and why in one line (a VideoDecodeError's `reason`, without the path)."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.reason}

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class _PreparedVideo:
    path: str
    pixel_values: torch.Tensor  # (num_windows, num_frames, 3, size, size)
    timestamps: np.ndarray  # (num_windows, num_frames) seconds, NaN where the file does not time its frames
    duration: float | None


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it (as the model was trained), fp32 elsewhere (bf16 is slow on most CPUs)."""
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def window_frame_indices(total_frames: int, num_frames: int, num_windows: int) -> np.ndarray:
    """
    (num_windows, num_frames) frame indices: the video is cut into `num_windows` equal consecutive windows, each
    sampled evenly, so the windows tile the whole video and one window is the model card's sampling.
    """
    if num_windows < 1:
        raise ValueError(f"num_windows must be at least 1, got {num_windows}.")
    bounds = np.linspace(0, total_frames, num_windows + 1).round().astype(np.int64)
    starts = np.minimum(bounds[:-1], total_frames - 1)
    lengths = np.maximum(bounds[1:] - starts, 1)
    return np.stack([start + sample_frame_indices(length, num_frames) for start, length in zip(starts, lengths)])


DOWNLOAD_TIMEOUT_SECONDS = 30
DEFAULT_MAX_INPUT_BYTES = 100_000_000
DEFAULT_MAX_DURATION_SECONDS = 600.0
DEFAULT_MAX_WINDOWS = 32


def _environment(name: str, default, kind):
    return field(default_factory=lambda: kind(os.environ.get(name, default)))


@dataclass
class Limits:
    """
    What one request may ask of a server (the Endpoints handler, the web page): a video's bytes and seconds, and how
    many windows (every window's frames are held in memory). Defaults come from DFD_MAX_INPUT_BYTES,
    DFD_MAX_DURATION_SECONDS and DFD_MAX_WINDOWS; a ValueError names the limit a video passes.
    """

    max_input_bytes: int = _environment("DFD_MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES, int)
    max_duration: float = _environment("DFD_MAX_DURATION_SECONDS", DEFAULT_MAX_DURATION_SECONDS, float)
    max_windows: int = _environment("DFD_MAX_WINDOWS", DEFAULT_MAX_WINDOWS, int)

    def check_size(self, size: int):
        if size > self.max_input_bytes:
            raise ValueError(
                f"the video is {size:,} bytes, above the {self.max_input_bytes:,} byte limit (DFD_MAX_INPUT_BYTES)"
            )

    def check_duration(self, info: VideoInfo):
        if info.duration is not None and info.duration > self.max_duration:
            raise ValueError(
                f"the video lasts {info.duration:.1f} s, above the {self.max_duration:g} s limit "
                "(DFD_MAX_DURATION_SECONDS)"
            )


def fetch(url: str, file, check_size) -> None:
    """
    Stream an http(s) `url` into the binary `file`. `check_size(bytes)` is called with the declared and the received
    size and raises to stop a download that grows too large. A failed download raises ValueError saying why. The one
    fetcher of everything that takes URLs (the Endpoints handler, the web app).
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError("not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit():
                check_size(int(declared))
            received = 0
            while chunk := response.read(1 << 20):
                received += len(chunk)
                check_size(received)
                file.write(chunk)
    except urllib.error.HTTPError as error:
        raise ValueError(f"cannot download: HTTP {error.code} {error.reason}") from None
    except (OSError, http.client.HTTPException) as error:  # unreachable hosts, timeouts, dropped connections
        raise ValueError(f"cannot download: {getattr(error, 'reason', None) or error}") from None
    file.flush()


def _seconds(value) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _prefetch(pool: ThreadPoolExecutor, function, items: Iterable, depth: int) -> Iterator:
    """`map(function, items)` in order, with up to `depth` calls running ahead in `pool`."""
    items = iter(items)
    running = deque(pool.submit(function, item) for item in itertools.islice(items, depth))
    while running:
        result = running.popleft().result()
        running.extend(pool.submit(function, item) for item in itertools.islice(items, 1))
        yield result


class VideoScorer:
    """
    Predicts videos with a loaded detector and its processor.

    Worker threads decode (PyAV releases the GIL) and preprocess the next videos while the model runs; windows of
    consecutive videos share forward passes of up to `batch_size` windows. Peak host memory grows with
    `num_workers` x windows per video x frames per window x the videos' resolution, since a video's frames are
    decoded in one pass.
    """

    def __init__(self, model, processor, device="cpu", dtype=torch.float32, batch_size=8, num_workers=2):
        self.model = model.eval().to(device)
        self.processor = processor
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.num_workers = num_workers
        # The decode workers share the CPUs: each video gets its part of read_video's threads.
        self.decoding_threads = max(1, decoding_threads() // num_workers)
        self.labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
        if FAKE_LABEL not in self.labels:
            raise ValueError(f"The model's labels {self.labels} have no '{FAKE_LABEL}' class.")

    def predict(self, videos: Iterable, num_windows: int = 1) -> Iterator[VideoPrediction | VideoError]:
        """
        A `VideoPrediction` or a `VideoError` for every video, in order. A bad video never stops the rest. A video is
        a path (a video file or a frame folder), or the `VideoInfo` that `probe_video` returned for it, so that a
        caller who checked it first (the handler checks the duration) does not have the file demuxed again.
        """
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="decode")
        try:
            waiting, waiting_windows = [], 0
            prepare = functools.partial(self._prepare, num_windows=num_windows)
            for prepared in _prefetch(pool, prepare, videos, 2 * self.num_workers):
                waiting.append(prepared)
                waiting_windows += len(prepared.pixel_values) if isinstance(prepared, _PreparedVideo) else 0
                if waiting_windows >= self.batch_size:
                    yield from self._score(waiting)
                    waiting, waiting_windows = [], 0
            yield from self._score(waiting)
        finally:
            # Stopped early (Ctrl-C, an error, a caller that stops reading): queued decodes are dropped and running
            # ones are not waited for, so the caller can go on (or exit) at once.
            pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, video, num_windows: int) -> _PreparedVideo | VideoError:
        """Decode every window's frames in one pass over the file, then resize and normalise them with the processor."""
        probed = isinstance(video, VideoInfo)
        path = video.path if probed else str(video)
        num_frames = self.processor.num_frames
        try:
            if not probed and os.path.isdir(path):  # a frame folder: its images in name order, untimed
                decoded = decode_video(
                    path, lambda total: window_frame_indices(total, num_frames, num_windows).reshape(-1)
                )
            else:
                info = video if probed else probe_video(path)
                indices = window_frame_indices(info.total_frames, num_frames, num_windows)
                decoded = read_video(info, indices=indices.reshape(-1), threads=self.decoding_threads)
        except VideoDecodeError as error:  # anything else is a bug or a bad argument: let it raise
            return VideoError(path, error.reason)
        windows = list(decoded.frames.reshape(num_windows, num_frames, *decoded.frames.shape[1:]))
        pixel_values = self.processor(windows, do_sample_frames=False, return_tensors="pt")["pixel_values"]
        timestamps = np.full(len(decoded.indices), np.nan) if decoded.timestamps is None else decoded.timestamps
        return _PreparedVideo(path, pixel_values, timestamps.reshape(num_windows, num_frames), decoded.duration)

    @torch.inference_mode()
    def _score(self, prepared: list[_PreparedVideo | VideoError]) -> Iterator[VideoPrediction | VideoError]:
        videos = [video for video in prepared if isinstance(video, _PreparedVideo)]
        probabilities = iter(())
        if videos:
            pixel_values = torch.cat([video.pixel_values for video in videos])
            mixed_precision = self.dtype != torch.float32
            batches = []
            with torch.autocast(self.device.type, dtype=self.dtype) if mixed_precision else nullcontext():
                for batch in pixel_values.split(self.batch_size):
                    logits = self.model(pixel_values=batch.to(self.device)).logits
                    batches.append(logits.float().softmax(-1).cpu())
            probabilities = iter(torch.cat(batches).split([len(video.pixel_values) for video in videos]))
        for video in prepared:
            yield video if isinstance(video, VideoError) else self._summarise(video, next(probabilities))

    def _summarise(self, video: _PreparedVideo, probabilities: torch.Tensor) -> VideoPrediction:
        mean = probabilities.mean(dim=0)
        fake = probabilities[:, self.labels.index(FAKE_LABEL)]
        windows = []
        for window, window_probabilities in enumerate(probabilities.tolist()):
            times = [_seconds(time) for time in video.timestamps[window].tolist()]
            windows.append(WindowScore(times, dict(zip(self.labels, window_probabilities))))
        return VideoPrediction(
            path=video.path,
            label=self.labels[int(mean.argmax())],
            scores=dict(zip(self.labels, mean.tolist())),
            most_suspicious_window=int(fake.argmax()),
            duration=_seconds(video.duration),
            windows=windows,
        )
