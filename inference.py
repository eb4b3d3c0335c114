"""Score whole videos with a DFD detector: time windows tiling each video, one decoding pass, batched forward passes.

Shared by `dfd predict`, the web page (`dfd serve`) and the Endpoints handler (handler.py). Like the Hub files, it
imports its siblings relatively (the decoder, decoding_dfd.py), so it runs the same from the installed package and
from an exported model folder, where the handler loads it through transformers' custom-code loader.
"""

import functools
import itertools
import math
import os
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
    environment_flag,  # the handler reads DFD_ALLOW_LOCAL_PATHS through this module
    environment_number,
    frames_to_decode,
    probe_video,
    read_video,
    sample_frame_indices,
)
from .fetching_dfd import (  # fetch and is_url: the handler and the web page take them from here
    DEFAULT_MAX_INPUT_BYTES,
    MAX_INPUT_BYTES_VARIABLE,
    check_input_size,
    fetch,
    is_url,
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


DEFAULT_MAX_DURATION_SECONDS = 600.0
DEFAULT_MAX_WINDOWS = 32
DEFAULT_MAX_DECODED_FRAMES = 10_000


def _environment(name: str, default, kind):
    return field(default_factory=lambda: environment_number(name, default, kind))


@dataclass
class Limits:
    """
    What one request may ask of a server (the Endpoints handler, the web page): a video's bytes and seconds, how
    many windows (every window's frames are held in memory), and how many frames decoding them takes (the CPU work,
    which the duration does not bound: a single-keyframe video must be decoded up to each wanted frame). Defaults come
    from DFD_MAX_INPUT_BYTES, DFD_MAX_DURATION_SECONDS, DFD_MAX_WINDOWS and DFD_MAX_DECODED_FRAMES; a ValueError names
    the limit a video passes.
    """

    max_input_bytes: int = _environment(MAX_INPUT_BYTES_VARIABLE, DEFAULT_MAX_INPUT_BYTES, int)
    max_duration: float = _environment("DFD_MAX_DURATION_SECONDS", DEFAULT_MAX_DURATION_SECONDS, float)
    max_windows: int = _environment("DFD_MAX_WINDOWS", DEFAULT_MAX_WINDOWS, int)
    max_decoded_frames: int = _environment("DFD_MAX_DECODED_FRAMES", DEFAULT_MAX_DECODED_FRAMES, int)

    def check_size(self, size: int):
        check_input_size(size, self.max_input_bytes)

    def check_decoding(self, info: VideoInfo, indices: np.ndarray):
        needed = frames_to_decode(info, indices)
        if needed > self.max_decoded_frames:
            raise ValueError(
                f"the requested frames take decoding {needed:,} frames, above the {self.max_decoded_frames:,} frame "
                "limit (DFD_MAX_DECODED_FRAMES)"
            )

    def check_duration(self, info: VideoInfo):
        if info.duration is not None and info.duration > self.max_duration:
            raise ValueError(
                f"the video lasts {info.duration:.1f} s, above the {self.max_duration:g} s limit "
                "(DFD_MAX_DURATION_SECONDS)"
            )


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

    def __init__(
        self, model, processor, device="cpu", dtype=torch.float32, batch_size=8, num_workers=2, limits=None
    ):
        self.limits = limits  # a server's `Limits`: refuses videos that take too many frames to decode
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
        """
        Decode every window's frames in one pass over the file, resized as they come, then normalise them with the
        processor. Whatever fails for this video (decoding, a limit, memory) becomes its one-line `VideoError`.
        """
        probed = isinstance(video, VideoInfo)
        path = video.path if probed else str(video)
        num_frames = self.processor.num_frames
        try:
            # Processors saved before `resize_frame` existed resize after decoding, as they always did.
            resize = getattr(self.processor, "resize_frame", None)
            if not probed and os.path.isdir(path):  # a frame folder: its images in name order, untimed
                decoded = decode_video(
                    path, lambda total: window_frame_indices(total, num_frames, num_windows).reshape(-1), resize
                )
            else:
                info = video if probed else probe_video(path)
                indices = window_frame_indices(info.total_frames, num_frames, num_windows)
                if self.limits is not None:
                    self.limits.check_decoding(info, indices)
                decoded = read_video(info, indices=indices.reshape(-1), threads=self.decoding_threads, transform=resize)
            windows = list(decoded.frames.reshape(num_windows, num_frames, *decoded.frames.shape[1:]))
            pixel_values = self.processor(windows, do_sample_frames=False, return_tensors="pt")["pixel_values"]
        except VideoDecodeError as error:
            return VideoError(path, error.reason)
        except Exception as error:  # MemoryError included: one video never stops a batch
            reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}".rstrip(": ")
            return VideoError(path, " ".join(reason.split()))
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


FLAG_THRESHOLD = 0.5


def flagged_windows(prediction: VideoPrediction) -> list[int]:
    """The windows a reviewer should look at: those whose fake probability reaches the threshold."""
    return [index for index, window in enumerate(prediction.windows) if window.scores[FAKE_LABEL] >= FLAG_THRESHOLD]


def most_suspicious(prediction: VideoPrediction) -> list[int]:
    return [prediction.most_suspicious_window]


@dataclass
class WindowExplanation:
    """
    Where one window's fake evidence lies. `heatmaps[t, i, j]` is the share of the window's evidence for "fake" that
    patch (i, j) of frame t carries (non-negative, summing to 1 over the window, or all zero when nothing in the
    window points to fake), on the model's patch grid; `frames` are the very pixels the model saw.
    """

    window: int
    timestamps: list[float | None]
    fake_probability: float
    frames: np.ndarray  # (num_frames, height, width, 3) uint8
    heatmaps: np.ndarray  # (num_frames, grid_height, grid_width) float32

    @property
    def frame_shares(self) -> np.ndarray:
        """Each frame's share of the window's fake evidence: which frames drove the score."""
        return self.heatmaps.sum(axis=(1, 2))


@dataclass
class VideoExplanation:
    prediction: VideoPrediction
    windows: list[WindowExplanation]


EXPLANATION_METHODS = ("integrated_gradients", "gradient_x_input", "attention_rollout")


class VideoExplainer:
    """
    Shows which frames and regions drove a video's fake score, window by window, for the windows `choose` picks
    (default: the flagged ones). Videos are decoded, prepared and scored by `scorer`, as for a plain prediction.

    Methods (benchmarks/bench_explain.py measures how faithful each is and what it costs):
    - `integrated_gradients` (default): gradients of the fake log-odds with respect to `pixel_values`, averaged along
      the straight path from a blank video (the processor's mean colour) to the video, times the difference; summed
      over each patch's pixels and channels, keeping what points to fake. Costs `steps` forward and backward passes.
    - `gradient_x_input`: the same with one gradient at the video itself (one pass; gradients saturate where the
      model is sure).
    - `attention_rollout`: the CLS token's attention propagated back through the blocks (each averaged over heads,
      half kept as the residual path) and through each adapter's spatiotemporal neighbourhood; class-agnostic.
    """

    def __init__(self, scorer: VideoScorer, method: str = EXPLANATION_METHODS[0], steps: int = 16, choose=None):
        if method not in EXPLANATION_METHODS:
            raise ValueError(f"method must be one of {', '.join(EXPLANATION_METHODS)}, got {method!r}")
        self.scorer = scorer
        self.method = method
        self.steps = steps
        self.choose = choose or flagged_windows
        self.mean = torch.tensor(scorer.processor.image_mean).view(3, 1, 1)
        self.std = torch.tensor(scorer.processor.image_std).view(3, 1, 1)

    def explain(self, videos: Iterable, num_windows: int = 1) -> Iterator[VideoExplanation | VideoError]:
        """A `VideoExplanation` (or the `VideoError`) per video, in order; videos as `VideoScorer.predict` takes."""
        for video in videos:
            prepared = self.scorer._prepare(video, num_windows)
            if isinstance(prepared, VideoError):
                yield prepared
                continue
            prediction = next(self.scorer._score([prepared]))
            windows = []
            for window in self.choose(prediction):
                pixel_values = prepared.pixel_values[window]
                windows.append(
                    WindowExplanation(
                        window=window,
                        timestamps=prediction.windows[window].timestamps,
                        fake_probability=prediction.windows[window].scores[FAKE_LABEL],
                        frames=self._frames(pixel_values),
                        heatmaps=self.heatmaps(pixel_values[None])[0].numpy(),
                    )
                )
            yield VideoExplanation(prediction, windows)

    def heatmaps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, frames, grid_height, grid_width) evidence shares of a batch of windows' `pixel_values`."""
        if self.method == "attention_rollout":
            evidence = self._attention_rollout(pixel_values)
        else:
            evidence = self._attributions(pixel_values).clamp(min=0)
        total = evidence.sum(dim=(1, 2, 3), keepdim=True)
        return torch.where(total > 0, evidence / total.clamp(min=1e-30), torch.zeros_like(evidence)).float()

    def _fake_log_odds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model, device = self.scorer.model, self.scorer.device
        mixed_precision = self.scorer.dtype != torch.float32
        with torch.autocast(device.type, dtype=self.scorer.dtype) if mixed_precision else nullcontext():
            logits = model(pixel_values=pixel_values).logits.float()
        fake = self.scorer.labels.index(FAKE_LABEL)
        others = torch.cat([logits[:, :fake], logits[:, fake + 1 :]], dim=1)
        return logits[:, fake] - others.logsumexp(dim=1)

    def _attributions(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Signed attribution of every patch (batch, frames, h, w) to the fake log-odds."""
        pixel_values = pixel_values.to(self.scorer.device, torch.float32)
        baseline = torch.zeros_like(pixel_values)  # normalised zero: the processor's mean colour
        steps = 1 if self.method == "gradient_x_input" else self.steps
        alphas = [1.0] if steps == 1 else [(step + 0.5) / steps for step in range(steps)]
        gradients = torch.zeros_like(pixel_values)
        for alpha in alphas:
            path_point = (baseline + alpha * (pixel_values - baseline)).requires_grad_()
            (gradient,) = torch.autograd.grad(self._fake_log_odds(path_point).sum(), path_point)
            gradients += gradient / len(alphas)
        attribution = (gradients * (pixel_values - baseline)).sum(dim=2)  # (batch, frames, H, W)
        return self._per_patch(attribution).cpu()

    def _per_patch(self, pixel_map: torch.Tensor) -> torch.Tensor:
        patch = self.scorer.model.config.vision_config.patch_size
        batch, frames, height, width = pixel_map.shape
        grid_height, grid_width = height // patch, width // patch
        pixel_map = pixel_map[..., : grid_height * patch, : grid_width * patch]
        return pixel_map.reshape(batch, frames, grid_height, patch, grid_width, patch).sum(dim=(3, 5))

    @torch.no_grad()
    def _attention_rollout(self, pixel_values: torch.Tensor) -> torch.Tensor:
        model = self.scorer.model
        implementation = model.config._attn_implementation
        model.set_attn_implementation("eager")  # only the eager attention returns its weights
        try:
            outputs = model(pixel_values=pixel_values.to(self.scorer.device), output_attentions=True)
        finally:
            model.set_attn_implementation(implementation)
        batch, frames, _, height, width = pixel_values.shape
        patch = model.config.vision_config.patch_size
        grid = (height // patch, width // patch)
        layers = model.base_model.encoder.layers
        # Relevance of every token, starting at the CLS tokens that the video feature averages.
        relevance = torch.zeros(batch * frames, outputs.attentions[0].shape[-1], device=self.scorer.device)
        relevance[:, 0] = 1 / frames
        for layer, attention in zip(reversed(layers), reversed(outputs.attentions)):
            identity = torch.eye(attention.shape[-1], device=attention.device)
            attention = 0.5 * attention.float().mean(dim=1) + 0.5 * identity
            relevance = torch.einsum("bi,bij->bj", relevance, attention / attention.sum(-1, keepdim=True))
            if layer.adapter is not None:
                relevance = self._through_adapter(relevance, layer.adapter, frames, grid)
        return relevance[:, 1:].reshape(batch, frames, *grid).cpu()

    @staticmethod
    def _through_adapter(relevance, adapter, frames, grid):
        """Half the patch relevance stays (the residual), half spreads evenly over the adapter's conv neighbourhood."""
        kernel = adapter.conv.kernel_size
        patches = relevance[:, 1:].reshape(-1, 1, frames, *grid)
        spread = torch.nn.functional.avg_pool3d(
            patches, kernel, stride=1, padding=tuple(size // 2 for size in kernel), count_include_pad=False
        )
        mixed = relevance.clone()
        mixed[:, 1:] = (0.5 * patches + 0.5 * spread).reshape(len(relevance), -1)
        return mixed

    def _frames(self, pixel_values: torch.Tensor) -> np.ndarray:
        frames = (pixel_values.float() * self.std + self.mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        return frames.permute(0, 2, 3, 1).numpy()
