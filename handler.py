"""
Inference Endpoints handler: POST a video, get `[{"label": ..., "score": ...}]` sorted by score.

Request body:

    {"inputs": "<base64 video> | https://host/video.mp4 | /path/on/the/endpoint.mp4",
     "parameters": {"top_k": 2, "windows": 8}}

A path on the endpoint is read only when `DFD_ALLOW_LOCAL_PATHS=1` is set (or `allow_local_paths=True` is given to
the constructor), e.g. for videos on a mounted volume; otherwise it is refused, so that callers cannot probe which
files the server holds.

A raw video body (Content-Type: video/mp4) arrives as bytes and works too. `score` is the class probability averaged
over `windows` time windows of 12 evenly spaced frames that tile the video (default 1 window: the model card's
sampling; `clips` is the parameter's earlier name). With `windows`, each entry also holds
`"windows": [{"start": s, "end": s, "score": p}, ...]`, that class's probability per window with the times (s) of the
window's first and last frame.

Limits, refused with a ValueError that names them: inputs above `DFD_MAX_INPUT_BYTES` bytes (default 100 MB) or
`DFD_MAX_DURATION_SECONDS` seconds (default 600), and more than `DFD_MAX_WINDOWS` windows (default 32, as every
window's frames are held in memory), read from the environment or given to the constructor (`inference.Limits`, which
the web page applies too).

The Endpoints toolkit imports this file as a top-level module from the model folder, with nothing of ours installed.
So it imports no sibling directly: the model and processor load through the Auto classes with `trust_remote_code`,
and the scorer (inference.py, with the decoder it imports, decoding_dfd.py) through the same custom-code loader, from
the same folder. The installed package (`dfd.handler`) behaves alike on any exported folder.
"""

import base64
import binascii
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForVideoClassification, AutoVideoProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module


LOCAL_PATHS_REFUSED = "paths on the endpoint are refused unless DFD_ALLOW_LOCAL_PATHS=1"


class EndpointHandler:
    def __init__(
        self,
        path: str = "",
        max_input_bytes: int | None = None,
        max_duration: float | None = None,
        max_windows: int | None = None,
        allow_local_paths: bool | None = None,
    ):
        if allow_local_paths is None:
            allow_local_paths = os.environ.get("DFD_ALLOW_LOCAL_PATHS") == "1"
        self.allow_local_paths = allow_local_paths
        path = path or str(Path(__file__).resolve().parent)
        model = AutoModelForVideoClassification.from_pretrained(path, trust_remote_code=True)
        processor = AutoVideoProcessor.from_pretrained(path, trust_remote_code=True)
        self.inference = sys.modules[get_class_from_dynamic_module("inference.VideoScorer", path).__module__]
        given = {"max_input_bytes": max_input_bytes, "max_duration": max_duration, "max_windows": max_windows}
        self.limits = self.inference.Limits(**{name: value for name, value in given.items() if value})
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.inference.default_dtype(device)
        self.scorer = self.inference.VideoScorer(model, processor, device=device, dtype=dtype)

    def __call__(self, data: dict) -> list[dict]:
        parameters = data.get("parameters") or {}
        windows_given = "windows" in parameters or "clips" in parameters  # `clips`: the earlier name
        num_windows = int(parameters.get("windows", parameters.get("clips", 1)))
        top_k = int(parameters.get("top_k", len(self.scorer.labels)))
        if num_windows < 1 or top_k < 1:
            raise ValueError(f"parameters 'windows' and 'top_k' must be at least 1, got {parameters}")
        if num_windows > self.limits.max_windows:
            raise ValueError(
                f"'windows' is {num_windows}, above the limit of {self.limits.max_windows} (DFD_MAX_WINDOWS)"
            )
        if "inputs" not in data:
            raise ValueError("the request has no 'inputs' (a base64-encoded video, an http(s) URL or a path)")

        with self._video_file(data["inputs"]) as path:
            try:
                info = self.inference.probe_video(path)
            except self.inference.VideoDecodeError as error:  # its reason, not the temporary file's name
                raise ValueError(f"cannot read the video: {error.reason}") from None
            self.limits.check_duration(info)
            (prediction,) = self.scorer.predict([info], num_windows)  # probed once: the scorer reuses `info`
        if isinstance(prediction, self.inference.VideoError):
            raise ValueError(f"cannot read the video: {prediction.reason}")

        ranked = sorted(prediction.scores.items(), key=lambda item: item[1], reverse=True)[:top_k]
        results = [{"label": label, "score": score} for label, score in ranked]
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
        if isinstance(inputs, str) and inputs.startswith(("http://", "https://")):
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
            encoded = inputs.split(",", 1)[1] if inputs.startswith("data:") else inputs  # data:video/mp4;base64,...
            self.limits.check_size(len(encoded) * 3 // 4)  # before decoding, so an oversized request costs no memory
            try:
                inputs = base64.b64decode(encoded, validate=True)
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
