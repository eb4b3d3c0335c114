"""The one result schema: what a video's prediction is, and how every surface writes it.

`VideoPrediction.to_dict()` is the record: `dfd predict --format json` writes it, the web page's API returns it, and
the pipeline and the Endpoint answer with `classification()`, transformers' list of labels whose first entry carries
the same record. Words keep one meaning everywhere:

- `label`: the verdict by the model's decision rule (decision_dfd.py), "real" or "fake";
- `score`: the probability of the `label` beside it (transformers' meaning: real's is 1 - fake's);
- `fake_score`: what the rule compared with `threshold`, the calibrated fake probability of the top window (the mean
  of the top k with `decision_top_k`);
- `fake_probability`: one window's calibrated fake probability.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from .decision_dfd import FAKE_LABEL, DecisionRule


def seconds(value) -> float | None:
    """A time for a record: rounded to the microsecond, None where there is none (NaN, untimed sources)."""
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


@dataclass
class WindowResult:
    """
    One time window of a video: its distinct frames (`frames`, in order; a video shorter than a window repeats frames)
    shown at `timestamps` seconds, and its calibrated fake probability. `positions` (not part of the record) says
    where each distinct frame first sits in the window's row of `pixel_values`.
    """

    window: int
    frames: list[int]
    timestamps: list[float | None]
    fake_probability: float
    positions: list[int] = field(default_factory=list, repr=False, compare=False)

    @property
    def start(self) -> float | None:
        return self.timestamps[0]

    @property
    def end(self) -> float | None:
        return self.timestamps[-1]

    def to_dict(self) -> dict:
        return {
            "window": self.window,
            "start": self.start,
            "end": self.end,
            "fake_probability": self.fake_probability,
            "frames": self.frames,
            "timestamps": self.timestamps,
        }


@dataclass
class VideoPrediction:
    """
    A video's verdict under the model's `DecisionRule`: `label`, the `fake_score` the rule compared with `threshold`
    (the threshold for this video's number of windows), and the windows that reach it (`flagged_windows`). `windows`
    are in time order. `pixel_values` (not part of the record) are the windows the model saw, kept when a scorer is
    asked to, for explanations and thumbnails.
    """

    path: str
    label: str
    fake_score: float
    threshold: float
    rule: str
    flagged_windows: list[int]
    duration: float | None
    windows: list[WindowResult]
    notes: list[str] = field(default_factory=list)
    pixel_values: object = field(default=None, repr=False, compare=False)

    @property
    def score(self) -> float:
        """The probability of `label`: the fake score for a fake verdict, its complement for a real one."""
        return self.fake_score if self.label == FAKE_LABEL else 1 - self.fake_score

    @property
    def most_suspicious_window(self) -> int:
        return int(np.argmax([window.fake_probability for window in self.windows]))

    def to_dict(self) -> dict:
        """The record."""
        probabilities = [window.fake_probability for window in self.windows]
        suspicious = self.windows[self.most_suspicious_window]
        return {
            "path": self.path,
            "label": self.label,
            "score": self.score,
            "fake_score": self.fake_score,
            "threshold": self.threshold,
            "rule": self.rule,
            "flagged_windows": [
                {
                    "window": index,
                    "start": self.windows[index].start,
                    "end": self.windows[index].end,
                    "fake_probability": self.windows[index].fake_probability,
                }
                for index in self.flagged_windows
            ],
            "mean_fake_probability": float(np.mean(probabilities)),
            "max_fake_probability": float(np.max(probabilities)),
            "most_suspicious": {"window": suspicious.window, "start": suspicious.start, "end": suspicious.end},
            "duration": self.duration,
            "windows": [window.to_dict() for window in self.windows],
            "notes": list(self.notes),
        }

    def classification(self, labels: list[str], top_k: int | None = None) -> list[dict]:
        """
        The answer of the pipeline and the Endpoint, in transformers' form: `[{"label", "score"}, ...]`, the verdict
        first (the rule's, so not always the label with the higher score) with the whole record beside it, then the
        other label with its probability. `top_k` keeps that many entries.
        """
        record = self.to_dict()
        record.pop("path")
        (other,) = [label for label in labels if label != self.label]
        entries = [record, {"label": other, "score": 1 - self.score}]
        return entries[:top_k] if top_k else entries


@dataclass
class VideoError:
    """A video that could not be scored, and why in one line (a VideoDecodeError's `reason`, without the path)."""

    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.reason}

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def predict_video(
    path: str,
    metadata,
    logits,
    temperature: float,
    rule: DecisionRule,
    labels: list[str],
) -> VideoPrediction:
    """
    A video's prediction from its windows' logits, in the order of `metadata.windows` (processing_dfd's
    `DFDVideoMetadata`): calibrated with the model's `temperature`, then judged by `rule`.
    """
    if FAKE_LABEL not in labels or len(labels) != 2:
        raise ValueError(f"The model's labels {labels} are not two classes with a '{FAKE_LABEL}' one.")
    logits = np.asarray(logits, dtype=np.float64).reshape(len(metadata.windows), len(labels))
    scaled = logits / temperature
    probabilities = np.exp(scaled - np.logaddexp.reduce(scaled, axis=1, keepdims=True))
    fake = probabilities[:, labels.index(FAKE_LABEL)]
    windows = []
    for window, fake_probability in zip(metadata.windows, fake.tolist()):
        # A window of a video with fewer frames than it samples repeats frames: each frame is listed once.
        first = np.sort(np.unique(window.frames_indices, return_index=True)[1]).tolist()
        windows.append(
            WindowResult(
                window=window.window,
                frames=[window.frames_indices[position] for position in first],
                timestamps=[window.timestamps[position] for position in first],
                fake_probability=fake_probability,
                positions=first,
            )
        )
    decision = rule.decide(fake.tolist())
    (real_label,) = [label for label in labels if label != FAKE_LABEL]
    return VideoPrediction(
        path=path,
        label=FAKE_LABEL if decision.fake else real_label,
        fake_score=decision.score,
        threshold=decision.threshold,
        rule=rule.name,
        flagged_windows=decision.flagged,
        duration=seconds(metadata.duration),
        windows=windows,
        notes=list(metadata.notes or []),
    )


__all__ = ["VideoError", "VideoPrediction", "WindowResult", "predict_video", "seconds"]
