"""
Inference Endpoints handler: POST a video, get `[{"label": ..., "score": ...}]` sorted by score.

Request body:

    {"inputs": "<base64 video> | https://host/video.mp4 | /path/on/the/endpoint.mp4",
     "parameters": {"top_k": 2, "windows": 8, "threshold": 0.9}}

A path on the endpoint is read only when `DFD_ALLOW_LOCAL_PATHS=1` is set (or `allow_local_paths=True` is given to
the constructor), e.g. for videos on a mounted volume; otherwise it is refused, so that callers cannot probe which
files the server holds.

A raw video body (Content-Type: video/mp4) arrives as bytes and works too. The answer is the verdict first (the
model's decision rule, see inference.DecisionRule: fake when its top window's calibrated fake probability reaches the
model's threshold for that many windows), then the other label: `[{"label": verdict, "score": ..., "threshold": t,
"flagged_windows": [{"start": s, "end": s, "score": p}, ...], "mean_score": m}, {"label": other, "score": ...}]`,
where fake's score is the score the rule used and real's its complement. By default the video is tiled with windows
of the duration the model was trained on (at most `DFD_MAX_WINDOWS`); `windows` asks for that many instead (`clips`
is its earlier name), and then each entry also holds `"windows": [{"start": s, "end": s, "score": p}, ...]`, that
class's probability per window with the times (s) of the window's first and last frame. `threshold` (in (0, 1))
replaces the model's threshold.

Limits, refused with a ValueError that names them: inputs above `DFD_MAX_INPUT_BYTES` bytes (default 100 MB) or
`DFD_MAX_DURATION_SECONDS` seconds (default 600), frames above `DFD_MAX_FRAME_PIXELS` pixels (checked before
decoding), more than `DFD_MAX_WINDOWS` windows (default 32, as every window's frames are held in memory) and more than
`DFD_MAX_DECODED_FRAMES` frames to decode (the CPU work), read from the environment or given to the constructor
(`inference.Limits`, which the web page applies too). URLs are fetched by fetching_dfd.py: http(s) to public
addresses only, every redirect checked, one deadline (`DFD_DOWNLOAD_SECONDS`). The decoder opens only self-contained
video files, never a playlist or list that names other files.

Every parameter and the body's shape are checked, with a ValueError naming what is wrong: `windows`/`clips` and
`top_k` are whole numbers of at least 1 (null: the default), `threshold` a number in (0, 1). Base64 may be standard
or URL-safe, wrapped in lines and unpadded.

The Endpoints toolkit imports this file as a top-level module from the model folder, with nothing of ours installed.
So it imports no sibling directly: the model and processor load through the Auto classes with `trust_remote_code`,
and the scorer (inference.py, with the decoder and fetcher it imports, decoding_dfd.py and fetching_dfd.py) through
the same custom-code loader, from the same folder. The installed package (`dfd.handler`) behaves alike on any
exported folder.
"""

import base64
import binascii
import math
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForVideoClassification, AutoVideoProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module


LOCAL_PATHS_REFUSED = "paths on the endpoint are refused unless DFD_ALLOW_LOCAL_PATHS=1"
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/\-_=]")


def _whole_number(parameters: dict, name: str, default: int, maximum: int | None = None) -> int:
    """`parameters[name]` as a whole number from 1 (to `maximum`), or `default` when absent or null."""
    value = parameters.get(name)
    if value is None:
        return default
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdecimal():
        number = int(value)
    if number is None or number < 1:
        raise ValueError(f"parameter '{name}' must be a whole number of at least 1, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"'{name}' is {number}, above the limit of {maximum} (DFD_MAX_WINDOWS)")
    return number


def _base64_video(encoded: str) -> bytes:
    """
    The bytes of a base64 video in any common spelling: standard or URL-safe alphabet, wrapped in lines (as the
    `base64` tool writes it), with or without its `=` padding.
    """
    encoded = "".join(encoded.split())
    if not encoded or _NOT_BASE64.search(encoded):
        raise binascii.Error("not base64")
    encoded = encoded.rstrip("=").replace("-", "+").replace("_", "/")
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


class EndpointHandler:
    def __init__(
        self,
        path: str = "",
        max_input_bytes: int | None = None,
        max_duration: float | None = None,
        max_windows: int | None = None,
        allow_local_paths: bool | None = None,
    ):
        path = path or str(Path(__file__).resolve().parent)
        self.inference = sys.modules[get_class_from_dynamic_module("inference.VideoScorer", path).__module__]
        # Every DFD_* setting is read (and a bad value refused, naming it) before the model loads.
        if allow_local_paths is None:
            allow_local_paths = self.inference.environment_flag("DFD_ALLOW_LOCAL_PATHS")
        self.allow_local_paths = allow_local_paths
        given = {"max_input_bytes": max_input_bytes, "max_duration": max_duration, "max_windows": max_windows}
        self.limits = self.inference.Limits(**{name: value for name, value in given.items() if value})
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.inference.default_dtype(device)  # DFD_DTYPE, else what the device computes natively
        model = AutoModelForVideoClassification.from_pretrained(path, trust_remote_code=True)
        processor = AutoVideoProcessor.from_pretrained(path, trust_remote_code=True)
        self.scorer = self.inference.VideoScorer(model, processor, device=device, dtype=dtype, limits=self.limits)

    def __call__(self, data: dict) -> list[dict]:
        if not isinstance(data, dict):
            raise ValueError(f"the request body must be a JSON object with 'inputs', got {type(data).__name__}")
        parameters = data.get("parameters")
        parameters = {} if parameters is None else parameters
        if not isinstance(parameters, dict):
            raise ValueError(f"'parameters' must be a JSON object, got {type(parameters).__name__}")
        # `clips`: the parameter's earlier name
        name = "windows" if parameters.get("windows") is not None or parameters.get("clips") is None else "clips"
        windows_given = parameters.get(name) is not None
        num_windows = _whole_number(parameters, name, 1, maximum=self.limits.max_windows)
        top_k = _whole_number(parameters, "top_k", len(self.scorer.labels))
        threshold = parameters.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1
        ):
            raise ValueError(f"parameter 'threshold' must be a number in (0, 1), got {threshold!r}")
        if "inputs" not in data:
            raise ValueError("the request has no 'inputs' (a base64-encoded video, an http(s) URL or a path)")

        with self._video_file(data["inputs"]) as path:
            try:
                info = self.inference.probe_video(path)
            except self.inference.VideoDecodeError as error:  # its reason, not the temporary file's name
                raise ValueError(f"cannot read the video: {error.reason}") from None
            self.limits.check_duration(info)
            # Probed once: the scorer reuses `info`. Without `windows`, the training density's, up to the limit.
            (prediction,) = self.scorer.predict(
                [info],
                num_windows if windows_given else None,
                max_windows=self.limits.max_windows,
                threshold=threshold,
            )
        if isinstance(prediction, self.inference.VideoError):
            raise ValueError(f"cannot read the video: {prediction.reason}")

        results = prediction.classification(self.scorer.labels)[:top_k]
        if windows_given:
            for result in results:
                result["windows"] = [
                    {"start": window.start, "end": window.end, "score": window.scores[result["label"]]}
                    for window in prediction.windows
                ]
        return results

    @contextmanager
    def _video_file(self, inputs):
        """A local file holding the video, whichever way it was sent; temporary copies are deleted afterwards."""
        if self.inference.is_url(inputs):
            with tempfile.NamedTemporaryFile(suffix=".video") as file:
                self.inference.fetch(inputs, file, self.limits.check_size)
                yield file.name
            return
        may_be_path = isinstance(inputs, str) and len(inputs) < 4096  # a base64 video is longer
        if may_be_path and self.allow_local_paths and os.path.isfile(inputs):
            self.limits.check_size(os.path.getsize(inputs))
            yield inputs
            return
        if may_be_path and not self.allow_local_paths and inputs.startswith("/"):
            # No video's base64 starts with "/" (it would take a first byte of 0xFC or more). Refused without looking
            # at the filesystem, so that the answer says nothing about which files exist.
            raise ValueError(f"'inputs' is a path: {LOCAL_PATHS_REFUSED}")
        if isinstance(inputs, str):
            encoded = inputs
            if inputs.startswith("data:"):  # data:video/mp4;base64,...
                if "," not in inputs:
                    raise ValueError("'inputs' is a data: URL without a comma before its base64 video")
                encoded = inputs.split(",", 1)[1]
            self.limits.check_size(len(encoded) * 3 // 4)  # before decoding, so an oversized request costs no memory
            try:
                inputs = _base64_video(encoded)
            except (binascii.Error, ValueError):
                if self.allow_local_paths:
                    raise ValueError(
                        "'inputs' is neither an http(s) URL, an existing file, nor base64-encoded video"
                    ) from None
                raise ValueError(
                    f"'inputs' is neither an http(s) URL nor base64-encoded video ({LOCAL_PATHS_REFUSED})"
                ) from None
        if not isinstance(inputs, (bytes, bytearray)):
            raise ValueError(f"'inputs' must be a string or bytes, got {type(inputs).__name__}")
        self.limits.check_size(len(inputs))
        with tempfile.NamedTemporaryFile(suffix=".video") as file:
            file.write(inputs)
            file.flush()
            yield file.name
