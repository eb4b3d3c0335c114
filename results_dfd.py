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
class FaceResult:
    """
    One face followed through a window (processor's `crop="face"`): its calibrated fake probability, and per distinct
    frame of the window its box (`[x0, y0, x1, y1]` in the decoded frame's pixels; None where the frame was kept whole)
    and where the box came from (`sources`: "face" detected there, "neighbours" carried from nearby frames of the same
    shot, "frame" the whole frame).
    """

    face: int
    fake_probability: float
    boxes: list[list[float] | None]
    sources: list[str]

    def to_dict(self) -> dict:
        return {
            "face": self.face,
            "fake_probability": self.fake_probability,
            "boxes": self.boxes,
            "sources": self.sources,
        }


@dataclass
class WindowResult:
    """
    One time window of a video: its distinct frames (`frames`, in order; a video shorter than a window repeats frames)
    shown at `timestamps` seconds, and its calibrated fake probability: with face crops, that of its most suspicious
    face (`faces` lists each, most suspicious first). `row` and `positions` (not part of the record) say which row of
    `pixel_values` that is, and where each distinct frame first sits in it.
    """

    window: int
    frames: list[int]
    timestamps: list[float | None]
    fake_probability: float
    faces: list[FaceResult] = field(default_factory=list)
    face_sources: list[str] | None = None
    """With face crops, where each distinct frame's crop came from in the row that decides the window ("frame" for
    every frame of a window without a face); None without face crops."""
    row: int = field(default=0, repr=False, compare=False)
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
            "faces": [face.to_dict() for face in self.faces],
            "face_sources": self.face_sources,
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
        most_suspicious = {"window": suspicious.window, "start": suspicious.start, "end": suspicious.end}
        if suspicious.faces:  # the face that drove the verdict, and where it is in each frame
            face = suspicious.faces[0]
            most_suspicious.update(face=face.face, boxes=face.boxes, face_sources=face.sources)
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
            "most_suspicious": most_suspicious,
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
    A video's prediction from the logits of its rows, in the order of `metadata.windows` (processing_dfd's
    `DFDVideoMetadata`: one row per window, or per face in it with face crops): calibrated with the model's
    `temperature`, then judged by `rule` over the rows, each of which is a chance of a false alarm. A window's fake
    probability is that of its most suspicious face.
    """
    if FAKE_LABEL not in labels or len(labels) != 2:
        raise ValueError(f"The model's labels {labels} are not two classes with a '{FAKE_LABEL}' one.")
    rows = metadata.windows
    logits = np.asarray(logits, dtype=np.float64).reshape(len(rows), len(labels))
    scaled = logits / temperature
    probabilities = np.exp(scaled - np.logaddexp.reduce(scaled, axis=1, keepdims=True))
    fake = probabilities[:, labels.index(FAKE_LABEL)]
    windows, window_of_row = [], []
    for number in dict.fromkeys(row.window for row in rows):  # windows in order, each with its rows
        members = [index for index, row in enumerate(rows) if row.window == number]
        window_of_row += [len(windows)] * len(members)
        windows.append(_window_result(rows, members, fake))
    decision = rule.decide(fake.tolist())
    (real_label,) = [label for label in labels if label != FAKE_LABEL]
    return VideoPrediction(
        path=path,
        label=FAKE_LABEL if decision.fake else real_label,
        fake_score=decision.score,
        threshold=decision.threshold,
        rule=rule.name,
        flagged_windows=sorted({window_of_row[row] for row in decision.flagged}),
        duration=seconds(metadata.duration),
        windows=windows,
        notes=list(metadata.notes or []),
    )


def _window_result(rows, members: list[int], fake: np.ndarray) -> WindowResult:
    """One window from its rows (`members`, indices into `rows`): its most suspicious face decides."""
    members = sorted(members, key=lambda index: -fake[index])
    first = rows[members[0]]
    # A window of a video with fewer frames than it samples repeats frames: each frame is listed once.
    positions = np.sort(np.unique(first.frames_indices, return_index=True)[1]).tolist()

    def per_frame(values):
        return None if values is None else [values[position] for position in positions]

    faces = [
        FaceResult(
            face=rows[index].face,
            fake_probability=float(fake[index]),
            boxes=per_frame(rows[index].face_boxes) or [None] * len(positions),
            sources=per_frame(rows[index].face_sources) or [],
        )
        for index in members
        if getattr(rows[index], "face", None) is not None
    ]
    return WindowResult(
        window=first.window,
        frames=per_frame(first.frames_indices),
        timestamps=per_frame(first.timestamps),
        fake_probability=float(fake[members[0]]),
        faces=faces,
        face_sources=per_frame(first.face_sources),
        row=members[0],
        positions=positions,
    )


__all__ = ["FaceResult", "VideoError", "VideoPrediction", "WindowResult", "predict_video", "seconds"]
