"""
Score whole videos with a DFD detector: time windows tiling each video at the training density, one decoding pass,
batched forward passes, and the decision rule stored with the model (`DecisionRule`).

Shared by `dfd predict`, the web page (`dfd serve`) and the Endpoints handler (handler.py). Like the Hub files, it
imports its siblings relatively (the decoder, decoding_dfd.py), so it runs the same from the installed package and
from an exported model folder, where the handler loads it through transformers' custom-code loader.
"""

import functools
import itertools
import math
import os
import statistics
import warnings
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
    video_file,
)


FAKE_LABEL = "fake"
DEFAULT_THRESHOLD = 0.5
# A video up to this many window durations long is one window: the model card's sampling of the whole video.
ONE_WINDOW_UP_TO = 1.5


def _logit(probability: float) -> float:
    return math.log(probability) - math.log1p(-probability)


def _sigmoid(log_odds: float) -> float:
    return 1 / (1 + math.exp(-log_odds))


@dataclass(frozen=True)
class Decision:
    """A video's verdict: `fake` when `score` reaches `threshold`; `flagged` lists the windows that reach it."""

    fake: bool
    score: float
    threshold: float
    flagged: list[int]


@dataclass(frozen=True)
class DecisionRule:
    """
    The decision rule stored with a model (its config's `decision_threshold`, `decision_top_k`, `real_log_odds`),
    the one that the pipeline, `dfd predict`, the Endpoints handler and the web page apply.

    A video's score is the mean fake probability of its `top_k` most suspicious windows (1: its top window, so a short
    fake stretch is not averaged away by the real rest). It is fake when the score reaches the threshold for its
    number of windows: `threshold` for one window; for n windows, the threshold at which a real video of n windows
    has the false-alarm chance that a one-window real video has at `threshold` (see `threshold_for`).
    """

    threshold: float = DEFAULT_THRESHOLD
    top_k: int = 1
    real_log_odds: dict | None = None

    @classmethod
    def from_config(cls, config, threshold: float | None = None) -> "DecisionRule":
        """The config's rule; `threshold` (e.g. `dfd predict --threshold`) replaces its stored threshold."""
        if threshold is not None and not 0 < threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        stored = getattr(config, "decision_threshold", None)
        return cls(
            threshold=threshold if threshold is not None else stored if stored is not None else DEFAULT_THRESHOLD,
            top_k=getattr(config, "decision_top_k", 1),
            real_log_odds=getattr(config, "real_log_odds", None),
        )

    def describe(self) -> str:
        return "top window" if self.top_k == 1 else f"mean of the top {self.top_k} windows"

    def threshold_for(self, num_windows: int) -> float:
        """
        The threshold a video of `num_windows` windows is held to. Each window of a real video is a chance of a false
        alarm: with a per-window false-positive rate p at `threshold` (from a normal fit of real windows' log-odds),
        n windows get the per-window rate 1 - (1 - p) ** (1 / n), so that the per-video rate stays p. Windows of one
        video are positively correlated, which makes this conservative. The top-k mean never exceeds the top window,
        so the bound holds for every k.
        """
        if num_windows <= 1 or not self.real_log_odds or not self.real_log_odds.get("std"):
            return self.threshold
        mean, std = self.real_log_odds["mean"], self.real_log_odds["std"]
        standard = statistics.NormalDist()
        per_window = standard.cdf(-(_logit(self.threshold) - mean) / std)
        if not 0 < per_window < 1:
            return self.threshold
        per_window = -math.expm1(math.log1p(-per_window) / num_windows)
        if per_window <= 0:
            return self.threshold
        return max(self.threshold, _sigmoid(mean - std * standard.inv_cdf(per_window)))

    def decide(self, fake_probabilities) -> Decision:
        """The verdict on a video from its windows' (calibrated) fake probabilities, in time order."""
        fake = np.asarray(fake_probabilities, dtype=np.float64)
        threshold = self.threshold_for(len(fake))
        score = float(np.sort(fake)[-self.top_k :].mean())
        flagged = [int(index) for index in np.flatnonzero(fake >= threshold)]
        return Decision(score >= threshold, score, threshold, flagged)


@dataclass
class WindowScore:
    """One time window of `num_frames` evenly spaced frames: the times (s) of its distinct frames, its probabilities."""

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
    A video's verdict under the model's `DecisionRule`: `label`, the `score` the rule compared with `threshold` (the
    threshold for this video's number of windows), and the windows that reach it (`flagged_windows`). `windows`
    are in time order, with calibrated probabilities.
    """

    path: str
    label: str
    score: float
    threshold: float
    rule: str
    flagged_windows: list[int]
    duration: float | None
    windows: list[WindowScore]

    @property
    def mean_fake_probability(self) -> float:
        return float(np.mean([window.scores[FAKE_LABEL] for window in self.windows]))

    @property
    def most_suspicious_window(self) -> int:
        return int(np.argmax([window.scores[FAKE_LABEL] for window in self.windows]))

    @property
    def max_fake_probability(self) -> float:
        return self.windows[self.most_suspicious_window].scores[FAKE_LABEL]

    def to_dict(self) -> dict:
        suspicious = self.windows[self.most_suspicious_window]
        return {
            "path": self.path,
            "label": self.label,
            "score": self.score,
            "threshold": self.threshold,
            "rule": self.rule,
            "flagged_windows": [
                {
                    "window": index,
                    "start": self.windows[index].start,
                    "end": self.windows[index].end,
                    "fake_probability": self.windows[index].scores[FAKE_LABEL],
                }
                for index in self.flagged_windows
            ],
            "mean_fake_probability": self.mean_fake_probability,
            "max_fake_probability": self.max_fake_probability,
            "most_suspicious": {
                "start": suspicious.start,
                "end": suspicious.end,
                "window": self.most_suspicious_window,
            },
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

    def classification(self, labels: list[str]) -> list[dict]:
        """
        The answer of the pipeline and the Endpoint: the verdict first (the rule's, so not always the label with the
        higher score), then the other of the two `labels`. Fake's score is the score the rule used, real's its
        complement; the verdict also holds the `threshold`, the `flagged_windows` and the `mean_score`.
        """
        (real_label,) = [label for label in labels if label != FAKE_LABEL]
        scores = {FAKE_LABEL: self.score, real_label: 1 - self.score}
        other = real_label if self.label == FAKE_LABEL else FAKE_LABEL
        verdict = {
            "label": self.label,
            "score": scores[self.label],
            "threshold": self.threshold,
            "flagged_windows": [
                {
                    "start": self.windows[index].start,
                    "end": self.windows[index].end,
                    "score": self.windows[index].scores[FAKE_LABEL],
                }
                for index in self.flagged_windows
            ],
            "mean_score": self.mean_fake_probability,
        }
        return [verdict, {"label": other, "score": scores[other]}]


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
    indices: np.ndarray  # (num_windows, num_frames) frame indices
    timestamps: np.ndarray  # (num_windows, num_frames) seconds, NaN where the file does not time its frames
    duration: float | None


# The precisions a scorer runs in, by the names `dfd predict --dtype` and DFD_DTYPE take. int8 is fp32 with every
# nn.Linear dynamically quantized (`quantize_linear_layers`), on the CPU only.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.qint8}
DTYPE_VARIABLE = "DFD_DTYPE"


def cpu_has_bf16() -> bool:
    """
    Whether the CPU computes bf16 natively (AVX512-BF16 or AMX units). Without them bf16 matrix products are emulated,
    several times slower than fp32 (benchmarks/bench_inference.py). False when this torch has no probe for them.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        try:
            if getattr(torch.cpu, probe)():
                return True
        except (AttributeError, RuntimeError):
            continue
    return False


def default_dtype(device: torch.device) -> torch.dtype:
    """
    The precision to run on `device` when none is asked for (`dfd predict --dtype auto`, the Endpoints handler, the
    web page): DFD_DTYPE when set to fp32, bf16 or int8; else bf16 where the device computes it natively (GPUs that
    support it, as the model was trained, and CPUs with bf16 units, see `cpu_has_bf16`), fp32 elsewhere.
    """
    name = os.environ.get(DTYPE_VARIABLE, "").strip() or "auto"
    if name not in ("auto", *DTYPES):
        raise ValueError(f"{DTYPE_VARIABLE}={name!r} is not valid: it must be auto, {', '.join(DTYPES)}")
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else torch.float32


def quantize_linear_layers(model: torch.nn.Module) -> torch.nn.Module:
    """
    `model` (in place) with every nn.Linear dynamically quantized to int8: int8 weights, activations quantized per
    batch, fp32 everywhere else; CPU only. torch.ao.quantization is deprecated in favour of torchao, an extra
    dependency, but works from torch 2.11 to 2.14; its deprecation warnings are not the user's business.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


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


def windows_at_training_density(duration: float | None, window_duration: float | None) -> int:
    """
    How many windows tile a video of `duration` seconds so that each lasts about `window_duration`, the duration a
    training window covered: frames then lie as far apart as the model saw in training. A video up to 1.5 windows
    long (or of unknown duration, or for a model without `window_duration`) is one window.
    """
    if not window_duration or not duration or duration <= ONE_WINDOW_UP_TO * window_duration:
        return 1
    return max(1, round(duration / window_duration))


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
        self,
        model,
        processor,
        device="cpu",
        dtype=torch.float32,
        batch_size=8,
        num_workers=2,
        limits=None,
        threshold=None,
    ):
        self.limits = limits  # a server's `Limits`: refuses videos that take too many frames to decode
        self.device = torch.device(device)
        if dtype == torch.qint8 and self.device.type != "cpu":
            raise ValueError(f"int8 (dynamic quantization) runs on the CPU only, not on {self.device.type}")
        self.model = model.eval().to(device)
        if dtype == torch.qint8:
            self.model = quantize_linear_layers(self.model)
        self.processor = processor
        self.dtype = dtype
        self.batch_size = batch_size
        self.num_workers = num_workers
        # The decode workers share the CPUs: each video gets its part of read_video's threads.
        self.decoding_threads = max(1, decoding_threads() // num_workers)
        self.labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
        if FAKE_LABEL not in self.labels or len(self.labels) != 2:
            raise ValueError(f"The model's labels {self.labels} are not two classes with a '{FAKE_LABEL}' one.")
        self.rule = DecisionRule.from_config(model.config, threshold)
        self.temperature = getattr(model.config, "calibration_temperature", 1.0)
        self.window_duration = getattr(model.config, "window_duration", None)

    def precision(self):
        """
        The context the model runs in: bf16 autocast over the fp32 weights (the mixed precision the model was trained
        in; bf16 weights are a little faster on a CPU but move the logits further: benchmarks/bench_inference.py), plain
        fp32 for fp32 and int8.
        """
        if self.dtype in (torch.float32, torch.qint8):
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def windows_for(
        self, duration: float | None, num_windows: int | None = None, max_windows: int | None = None
    ) -> int:
        """
        `num_windows` when given, else as many as tile a video of `duration` seconds at the training density; at most
        `max_windows`.
        """
        count = num_windows or windows_at_training_density(duration, self.window_duration)
        return min(count, max_windows) if max_windows else count

    def predict(
        self,
        videos: Iterable,
        num_windows: int | None = None,
        max_windows: int | None = None,
        threshold: float | None = None,
    ) -> Iterator[VideoPrediction | VideoError]:
        """
        A `VideoPrediction` or a `VideoError` for every video, in order. A bad video never stops the rest. A video is
        a path (a video file or a frame folder), or the `VideoInfo` that `probe_video` returned for it, so that a
        caller who checked it first (the handler checks the duration) does not have the file demuxed again.
        `num_windows`: windows per video instead of the training density's (see `windows_for`), `max_windows` caps
        them (a server's memory limit), and `threshold` replaces the model's decision threshold.
        """
        rule = self.rule if threshold is None else DecisionRule.from_config(self.model.config, threshold)
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="decode")
        try:
            waiting, waiting_windows = [], 0
            prepare = functools.partial(self._prepare, num_windows=num_windows, max_windows=max_windows)
            for prepared in _prefetch(pool, prepare, videos, 2 * self.num_workers):
                waiting.append(prepared)
                waiting_windows += len(prepared.pixel_values) if isinstance(prepared, _PreparedVideo) else 0
                if waiting_windows >= self.batch_size:
                    yield from self._score(waiting, rule)
                    waiting, waiting_windows = [], 0
            yield from self._score(waiting, rule)
        finally:
            # Stopped early (Ctrl-C, an error, a caller that stops reading): queued decodes are dropped and running
            # ones are not waited for, so the caller can go on (or exit) at once.
            pool.shutdown(wait=False, cancel_futures=True)

    def _prepare(
        self, video, num_windows: int | None = None, max_windows: int | None = None
    ) -> _PreparedVideo | VideoError:
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
                num_windows = self.windows_for(None, num_windows, max_windows)
                decoded = decode_video(
                    path, lambda total: window_frame_indices(total, num_frames, num_windows).reshape(-1), resize
                )
            else:

                def choose(info: VideoInfo) -> np.ndarray:
                    nonlocal num_windows
                    num_windows = self.windows_for(info.duration, num_windows, max_windows)
                    indices = window_frame_indices(info.total_frames, num_frames, num_windows)
                    if self.limits is not None:
                        self.limits.check_decoding(info, indices)
                    return indices.reshape(-1)

                decoded = read_video(video, indices=choose, threads=self.decoding_threads, transform=resize)
            windows = list(decoded.frames.reshape(num_windows, num_frames, *decoded.frames.shape[1:]))
            pixel_values = self.processor(windows, do_sample_frames=False, return_tensors="pt")["pixel_values"]
        except VideoDecodeError as error:
            return VideoError(path, error.reason)
        except Exception as error:  # MemoryError included: one video never stops a batch
            reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}".rstrip(": ")
            return VideoError(path, " ".join(reason.split()))
        timestamps = np.full(len(decoded.indices), np.nan) if decoded.timestamps is None else decoded.timestamps
        shape = (num_windows, num_frames)
        return _PreparedVideo(
            path, pixel_values, decoded.indices.reshape(shape), timestamps.reshape(shape), decoded.duration
        )

    @torch.inference_mode()
    def _score(
        self, prepared: list[_PreparedVideo | VideoError], rule: DecisionRule
    ) -> Iterator[VideoPrediction | VideoError]:
        videos = [video for video in prepared if isinstance(video, _PreparedVideo)]
        probabilities = iter(())
        if videos:
            pixel_values = torch.cat([video.pixel_values for video in videos])
            batches = []
            with self.precision():
                for batch in pixel_values.split(self.batch_size):
                    logits = self.model(pixel_values=batch.to(self.device)).logits
                    batches.append((logits.float() / self.temperature).softmax(-1).cpu())
            probabilities = iter(torch.cat(batches).split([len(video.pixel_values) for video in videos]))
        for video in prepared:
            yield video if isinstance(video, VideoError) else self._summarise(video, next(probabilities), rule)

    def _summarise(self, video: _PreparedVideo, probabilities: torch.Tensor, rule: DecisionRule) -> VideoPrediction:
        windows = []
        for window, window_probabilities in enumerate(probabilities.tolist()):
            # A window of a video with fewer frames than it samples repeats frames: each frame's time is listed once.
            first = np.unique(video.indices[window], return_index=True)[1]
            times = [_seconds(video.timestamps[window][position]) for position in np.sort(first)]
            windows.append(WindowScore(times, dict(zip(self.labels, window_probabilities))))
        decision = rule.decide(probabilities[:, self.labels.index(FAKE_LABEL)].tolist())
        (real_label,) = [label for label in self.labels if label != FAKE_LABEL]
        return VideoPrediction(
            path=video.path,
            label=FAKE_LABEL if decision.fake else real_label,
            score=decision.score,
            threshold=decision.threshold,
            rule=rule.describe(),
            flagged_windows=decision.flagged,
            duration=_seconds(video.duration),
            windows=windows,
        )


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
        self.choose = choose or (lambda prediction: prediction.flagged_windows)
        self.mean = torch.tensor(scorer.processor.image_mean).view(3, 1, 1)
        self.std = torch.tensor(scorer.processor.image_std).view(3, 1, 1)

    def explain(
        self, videos: Iterable, num_windows: int | None = None, max_windows: int | None = None
    ) -> Iterator[VideoExplanation | VideoError]:
        """
        A `VideoExplanation` (or the `VideoError`) per video, in order; videos and windows as `VideoScorer.predict`
        takes them, scored by the model's decision rule.
        """
        for video in videos:
            prepared = self.scorer._prepare(video, num_windows, max_windows)
            if isinstance(prepared, VideoError):
                yield prepared
                continue
            prediction = next(self.scorer._score([prepared], self.scorer.rule))
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
        model = self.scorer.model
        with self.scorer.precision():
            logits = model(pixel_values=pixel_values).logits.float()
        fake = self.scorer.labels.index(FAKE_LABEL)
        others = torch.cat([logits[:, :fake], logits[:, fake + 1 :]], dim=1)
        return logits[:, fake] - others.logsumexp(dim=1)

    def _attributions(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Signed attribution of every patch (batch, frames, h, w) to the fake log-odds."""
        if self.scorer.dtype == torch.qint8:
            raise ValueError(f"{self.method} needs gradients, which int8 layers do not pass: explain in fp32 or bf16")
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
