"""
Inference Endpoints handler: POST a video, get the detector's verdict in transformers' form.

    {"inputs": "<base64 video> | data:video/mp4;base64,... | https://host/video.mp4",
     "parameters": {"windows": 8, "threshold": 0.9, "top_k": 2}}

The answer is the pipeline's (pipeline_dfd.py): `[{"label": verdict, "score": ..., "fake_score": ...,
"threshold": ..., "flagged_windows": [...], "windows": [...], ...}, {"label": other, "score": ...}]`, the verdict
by the model's decision rule first with the whole record of results_dfd.py beside it; `score` is the probability of
its label. By default a video is tiled with windows of the duration the model was trained on (at most
`DFD_MAX_WINDOWS`); `windows` asks for that many equal windows (`clips`: its deprecated name), `threshold` (in (0, 1))
replaces the model's threshold, `top_k` keeps that many entries. Any other parameter is refused, naming the accepted
ones.

Every input passes the one gate (inputs_dfd.py) under the server's `Limits`: size (`DFD_MAX_INPUT_BYTES`), duration
(`DFD_MAX_DURATION_SECONDS`), windows (`DFD_MAX_WINDOWS`), decoding work (`DFD_MAX_DECODED_FRAMES`), frame size
(`DFD_MAX_FRAME_PIXELS`); URLs are fetched from public addresses only within `DFD_DOWNLOAD_SECONDS`. A path on the
endpoint is read only when `DFD_ALLOW_LOCAL_PATHS=1` (or `allow_local_paths=True`), e.g. for a mounted volume;
otherwise it is refused with the same line whether it exists or not. Raw bodies (`video/mp4`,
`application/octet-stream`) reach the handler as bytes through the serving container (serving_dfd.py), which also
takes `parameters` as query arguments and batches the windows of concurrent requests with `parse`, the scorer's
`prepare`, `forward` and `conclude`, and `answer`.

The Endpoints toolkit imports this file as a top-level module from the model folder, with nothing of ours installed.
So it imports no sibling directly: the model, the processor and the scorer (scoring_dfd.py and what it imports) load
through transformers' custom-code loader from the same folder.
"""

import importlib
import math
import sys
from pathlib import Path

import torch
from transformers import AutoModelForVideoClassification, AutoVideoProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module


PARAMETERS = ("windows", "threshold", "top_k", "clips")
# How much of a refused value an error shows: enough to recognise it, never a whole video sent by mistake.
SHOWN_CHARACTERS = 40


def _shown(value) -> str:
    """`repr(value)`, shortened to `SHOWN_CHARACTERS`."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARACTERS else f"{text[: SHOWN_CHARACTERS - 5]}...{text[-2:]}"


def _whole_number(parameters: dict, name: str) -> int | None:
    """`parameters[name]` as a whole number from 1, or None when absent or null."""
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"parameter '{name}' must be a whole number of at least 1, got {_shown(value)}")
    return value


def parse_parameters(parameters) -> dict:
    """The request's `parameters`, checked: unknown names and bad values are refused on one line naming them."""
    parameters = {} if parameters is None else parameters
    if not isinstance(parameters, dict):
        raise ValueError(f"'parameters' must be a JSON object, got {type(parameters).__name__}")
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        names = ", ".join(map(_shown, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        raise ValueError(f"unknown parameter(s) {names}; accepted: {', '.join(PARAMETERS[:3])}")
    windows, clips = _whole_number(parameters, "windows"), _whole_number(parameters, "clips")
    threshold = parameters.get("threshold")
    if threshold is not None:
        if isinstance(threshold, str):
            try:
                threshold = float(threshold)
            except ValueError:
                pass
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
            raise ValueError(f"parameter 'threshold' must be a number in (0, 1), got {_shown(parameters['threshold'])}")
    return {"windows": windows or clips, "threshold": threshold, "top_k": _whole_number(parameters, "top_k")}


def hub_module(path: str, name: str):
    """
    The Hub file `name` (e.g. "settings_dfd") of the model folder `path`, from the package transformers loads the
    scorer (scoring_dfd.py and what it imports) in: one copy of each class.
    """
    scoring = sys.modules[get_class_from_dynamic_module("scoring_dfd.VideoScorer", path).__module__]
    return importlib.import_module(f"{scoring.__name__.rpartition('.')[0]}.{name}")


class EndpointHandler:
    """
    The Endpoints toolkit's entry: `EndpointHandler(path)(request)`. `batch_size`: windows per forward pass;
    `num_workers`: videos decoded at once (the scorer's).
    """

    def __init__(
        self,
        path: str = "",
        allow_local_paths: bool | None = None,
        limits=None,
        batch_size: int = 8,
        num_workers: int = 2,
    ):
        path = path or str(Path(__file__).resolve().parent)
        scoring, settings, inputs = (hub_module(path, name) for name in ("scoring_dfd", "settings_dfd", "inputs_dfd"))
        # Every DFD_* setting is read (and a bad value refused, naming it) before the model loads.
        self.allow_local_paths = settings.allow_local_paths() if allow_local_paths is None else allow_local_paths
        self.limits = limits or inputs.Limits()
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype = scoring.default_dtype(device)
        model = AutoModelForVideoClassification.from_pretrained(path, trust_remote_code=True)
        processor = AutoVideoProcessor.from_pretrained(path, trust_remote_code=True)
        self.scorer = scoring.VideoScorer(
            model,
            processor,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            num_workers=num_workers,
            limits=self.limits,
            local_paths=self.allow_local_paths,
            base64_text=True,
        )
        self.video_error = scoring.VideoError
        config = self.scorer.model.config
        self.labels = [config.id2label[index] for index in range(config.num_labels)]

    def parse(self, data) -> tuple[object, dict]:
        """
        A request's video and its checked parameters (`parse_parameters`, and `windows` within the limits); a
        ValueError names what is wrong, never showing the video.
        """
        if not isinstance(data, dict):
            raise ValueError(f"the request body must be a JSON object with 'inputs', got {type(data).__name__}")
        parameters = parse_parameters(data.get("parameters"))
        if parameters["windows"] is not None:
            try:
                self.limits.check_windows(parameters["windows"])
            except ValueError as error:
                raise ValueError(f"parameter 'windows': {error}") from None
        if "inputs" not in data or data["inputs"] is None:
            raise ValueError("the request has no 'inputs' (a base64-encoded video, a data: URL or an http(s) URL)")
        return data["inputs"], parameters

    def answer(self, prediction, parameters: dict) -> list[dict]:
        """The response to a request whose video was scored (`prediction`), or the ValueError saying why it was not."""
        if isinstance(prediction, self.video_error):  # its reason, never the input itself
            raise ValueError(f"'inputs': {prediction.reason}")
        return prediction.classification(self.labels, parameters["top_k"])

    def __call__(self, data: dict) -> list[dict]:
        video, parameters = self.parse(data)
        (prediction,) = self.scorer.predict([video], parameters["windows"], parameters["threshold"])
        return self.answer(prediction, parameters)
