"""
Scoring many videos with the pipeline's own pieces, and the precision a detector runs in.

`VideoScorer` is a loop over `DFDVideoClassificationPipeline`'s steps, not a second path: worker threads run
`preprocess` (the processor: the gate, decoding, windows) ahead of the model, windows of consecutive videos share
`forward` batches, and `predict_video` (calibration and the decision rule) judges each video. A video that fails
becomes its one-line `VideoError` and the others go on. `dfd predict`, the Endpoint and the web page score through it.
"""

import itertools
import os
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import torch

from .inputs_dfd import video_file
from .pipeline_dfd import DFDVideoClassificationPipeline, collate_windows
from .results_dfd import VideoError, VideoPrediction
from .settings_dfd import DTYPE, decoding_threads, dtype_name


# The precisions a scorer runs in, by the names `dfd predict --dtype` and DFD_DTYPE take. int8 is fp32 with every
# nn.Linear dynamically quantized (`quantize_linear_layers`), on the CPU only.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.qint8}


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


def default_dtype(device: torch.device, name: str = "auto") -> torch.dtype:
    """
    The precision to run on `device`: `name` (fp32, bf16, int8) when given; for "auto", DFD_DTYPE when set, else bf16
    where the device computes it natively (GPUs that support it, as the model was trained, and CPUs with bf16 units,
    see `cpu_has_bf16`), fp32 elsewhere.
    """
    if name == "auto":
        name = dtype_name()
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"the precision must be auto, {', '.join(DTYPES)}; got {name!r} ({DTYPE})")
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


def describe_error(error: BaseException) -> str:
    """
    One line for an error a video caused: a `VideoDecodeError`'s reason (read by name: a processor loaded with the
    model's own code raises its own copy of the class), a ValueError's message, else its type and message.
    """
    if isinstance(getattr(error, "reason", None), str):
        return error.reason
    reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}".rstrip(": ")
    return " ".join(reason.split()) or type(error).__name__


def _name(video) -> str:
    """How results name a video: a path or URL as given; other inputs by kind, never by content."""
    if isinstance(video, (str, os.PathLike)):
        text = os.fspath(video)
        return text if len(text) <= 4096 and not text.startswith("data:") else "<base64 video>"
    return "<video bytes>" if isinstance(video, (bytes, bytearray, memoryview)) else "<video>"


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
    Predicts videos with a loaded detector and its processor, through the detector's pipeline.

    `num_workers` threads decode (PyAV releases the GIL) the next videos while the model runs, each with its share of
    the decoding threads; forward passes take up to `batch_size` windows, of one video or several. Peak host memory
    grows with `num_workers` x windows per video x frames per window. Every video passes the input gate
    (inputs_dfd.video_file) first: `limits` (a server's `inputs_dfd.Limits`) caps its size, windows and decoding
    work; `local_paths` says whether paths on this machine are read (a server refuses them unless its operator allows
    them), `base64_text` whether text that is neither a URL nor a path is base64 video (JSON bodies). `threshold`
    replaces the model's decision threshold.
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
        local_paths=True,
        base64_text=False,
    ):
        device = torch.device(device)
        if dtype == torch.qint8 and device.type != "cpu":
            raise ValueError(f"int8 (dynamic quantization) runs on the CPU only, not on {device.type}")
        model = model.eval()
        if dtype == torch.qint8:
            model = quantize_linear_layers(model)
        self.pipeline = DFDVideoClassificationPipeline(model=model, video_processor=processor, device=device)
        self.model, self.processor, self.device, self.dtype = self.pipeline.model, processor, device, dtype
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.decode_threads = max(1, decoding_threads() // num_workers)
        self.limits = limits
        self.threshold = threshold
        self.local_paths = local_paths
        self.base64_text = base64_text
        self.pipeline._sanitize_parameters(threshold=threshold)  # a bad threshold is refused now, not per video

    def precision(self):
        """
        The context the model runs in: bf16 autocast over the fp32 weights (the mixed precision the model was trained
        in; bf16 weights are a little faster on a CPU but move the logits further: benchmarks/bench_inference.py),
        plain fp32 for fp32 and int8.
        """
        if self.dtype in (torch.float32, torch.qint8):
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, video, windows: int | None = None, local_paths: bool | None = None) -> list[dict] | VideoError:
        """
        `preprocess`'s window items of one video, or the `VideoError` saying why it cannot be scored. The video passes
        the gate here, under this scorer's rules (`local_paths` replaces its rule on paths for this video).
        """
        local_paths = self.local_paths if local_paths is None else local_paths
        try:
            with video_file(video, local_paths, self.base64_text, self.limits) as path:
                items = list(
                    self.pipeline.preprocess(
                        path, windows=windows, limits=self.limits, decode_threads=self.decode_threads
                    )
                )
        except Exception as error:  # MemoryError included: one video never stops a batch
            return VideoError(_name(video), describe_error(error))
        for item in items:
            item["source"] = _name(video)
        return items

    def forward(self, items: list[dict]) -> list[dict]:
        """The model's outputs for window items of any videos, in order, `batch_size` windows per pass."""
        outputs = []
        with self.precision():
            for start in range(0, len(items), self.batch_size):
                batch = self.pipeline.forward(collate_windows(items[start : start + self.batch_size]))
                keys = [key for key in batch if key != "logits"]
                outputs += [
                    {"logits": logits, **{key: batch[key][index] for key in keys}}
                    for index, logits in enumerate(batch["logits"])
                ]
        return outputs

    def predict(
        self,
        videos: Iterable,
        windows: int | None = None,
        threshold: float | None = None,
        keep_pixel_values: bool = False,
        local_paths: bool | None = None,
    ) -> Iterator[VideoPrediction | VideoError]:
        """
        A `VideoPrediction` or a `VideoError` for every video (a path, URL or bytes, through the gate), in order.
        `windows`: equal windows per video instead of the training density's; `threshold` replaces this scorer's;
        `keep_pixel_values` keeps each prediction's windows as the model saw them (`prediction.pixel_values`);
        `local_paths` replaces this scorer's rule on paths for these videos.
        """
        threshold = self.threshold if threshold is None else threshold
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="decode")
        try:
            waiting, waiting_windows = [], 0
            prepare = lambda video: self.prepare(video, windows, local_paths)  # noqa: E731
            for prepared in _prefetch(pool, prepare, videos, 2 * self.num_workers):
                waiting.append(prepared)
                waiting_windows += 0 if isinstance(prepared, VideoError) else len(prepared)
                if waiting_windows >= self.batch_size:
                    yield from self._judge(waiting, threshold, keep_pixel_values)
                    waiting, waiting_windows = [], 0
            yield from self._judge(waiting, threshold, keep_pixel_values)
        finally:
            # Stopped early (Ctrl-C, an error, a caller that stops reading): queued decodes are dropped and running
            # ones are not waited for, so the caller can go on (or exit) at once.
            pool.shutdown(wait=False, cancel_futures=True)

    def _judge(self, prepared: list, threshold, keep_pixel_values: bool) -> Iterator[VideoPrediction | VideoError]:
        items = [item for video in prepared if not isinstance(video, VideoError) for item in video]
        outputs = iter(self.forward(items))
        for video in prepared:
            if isinstance(video, VideoError):
                yield video
                continue
            yield self.conclude(video, list(itertools.islice(outputs, len(video))), threshold, keep_pixel_values)

    def conclude(
        self, items: list[dict], outputs: list[dict], threshold: float | None = None, keep_pixel_values: bool = False
    ) -> VideoPrediction | VideoError:
        """
        One video's prediction from its window `items` (`prepare`'s) and their `outputs` (`forward`'s, in order):
        calibration and the decision rule, at `threshold` (default: this scorer's); a failure is its `VideoError`.
        """
        threshold = self.threshold if threshold is None else threshold
        try:
            prediction = self.pipeline.predict_video(outputs, threshold)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, it concerns this video only
            return VideoError(items[0]["source"], describe_error(error))
        if keep_pixel_values:
            prediction.pixel_values = torch.cat([item["pixel_values"] for item in items])
        return prediction


__all__ = ["DTYPES", "VideoScorer", "cpu_has_bf16", "default_dtype", "describe_error", "quantize_linear_layers"]
