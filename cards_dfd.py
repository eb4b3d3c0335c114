"""
What the web page (page_dfd.py) shows, as HTML: the progress of a run, the batch summary, and one card per video
with its verdict in plain words and colour, the fake score and what the threshold means, the suspicious time range,
the timeline, the frames the model saw and the report to download.

Pictures and reports travel inside the HTML (data: URLs), so the page keeps no files of its own. Everything a user
gave (file names, URLs) and every error line is escaped. A Hub file: the Space renders its page from the model repo.
"""

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .decision_dfd import FAKE_LABEL
from .plots_dfd import clock
from .settings_dfd import ALLOW_LOCAL_PATHS, MAX_DECODED_FRAMES, MAX_DURATION_SECONDS, MAX_INPUT_BYTES, MAX_WINDOWS


NOT_CHECKED = "not checked: the run was stopped first"
# The setting a refusal names -> what a moderator can do about it.
REMEDIES = {
    MAX_DECODED_FRAMES: "Check it in fewer parts (Options), or cut a shorter clip.",
    MAX_DURATION_SECONDS: "Cut a shorter clip.",
    MAX_INPUT_BYTES: "Upload a smaller file, or a shorter clip.",
    MAX_WINDOWS: "Check it in fewer parts (Options).",
    ALLOW_LOCAL_PATHS: "Upload the file instead of typing its path.",
}


@dataclass
class Progress:
    """Where a run stands: video `position` (from 0) of `total`, what is being done to it, its windows checked."""

    position: int
    total: int
    name: str
    step: str
    done: int = 0
    windows: int = 0

    @property
    def fraction(self) -> float:
        return (self.position + (self.done / self.windows if self.windows else 0)) / self.total


@dataclass
class Thumbnail:
    """A frame the model saw (a JPEG), its index in the video and its time (None for a source without timing)."""

    jpeg: bytes
    frame: int
    time: float | None


@dataclass
class VideoReport:
    """
    One video's outcome on the page: its record (results_dfd.py's, `path` the name the user gave) or the one line
    saying why it was not scored (`stopped`: the run ended first), and its pictures: timelines and explanations as
    (wide, narrow) PNGs for screens of each size.
    """

    name: str
    record: dict | None = None
    error: str | None = None
    stopped: bool = False
    one_part_threshold: float | None = None  # the model's threshold for a video checked as one part
    thumbnails: list[Thumbnail] = field(default_factory=list)
    timelines: tuple[bytes, bytes] | None = None
    explanations: tuple[bytes, bytes] | None = None

    def to_dict(self) -> dict:
        """The API's answer for this video: the record, or `{"path", "error"}`."""
        if self.record is not None:
            return self.record
        return {"path": self.name, "error": NOT_CHECKED if self.stopped else self.error}

    @property
    def kind(self) -> str:
        if self.record is None:
            return "stopped" if self.stopped else "error"
        return "fake" if self.record["label"] == FAKE_LABEL else "real"


VERDICTS = {  # words first, colour (CSS) second
    "fake": "⚠ Likely fake",
    "real": "✓ Likely real",
    "error": "✕ Not checked",
    "stopped": "■ Not checked",
}
_UNSAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _data_url(content: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _percent(probability: float) -> str:
    return f"{probability:.0%}"


def time_range(window: dict) -> str:
    """A window of the record in a person's words: 0:12.0-0:17.0, or its number when the source has no timing."""
    if window["start"] is None or window["end"] is None:
        return f"part {window['window'] + 1}"
    return f"{clock(window['start'])}–{clock(window['end'])}"


def suspicious_ranges(record: dict) -> list[str]:
    """The flagged windows' times, runs of consecutive windows merged into one range."""
    runs = []
    for window in record["flagged_windows"]:
        if runs and runs[-1][-1]["window"] == window["window"] - 1:
            runs[-1].append(window)
        else:
            runs.append([window])
    return [time_range({**run[0], "end": run[-1]["end"]}) for run in runs]


def threshold_sentence(record: dict, one_part_threshold: float | None = None) -> str:
    """What the fake score is compared with, and why this video's threshold is higher than a short one's, if it is."""
    score = "how fake its most suspicious part looks"
    if record["rule"] != "top window":
        score = "the average of how fake its most suspicious parts look"
    sentence = (
        f"The fake score is {score}; the model flags a video at {_percent(record['threshold'])} or more, a threshold "
        "set so that few real videos reach it"
    )
    if one_part_threshold is not None and _percent(record["threshold"]) != _percent(one_part_threshold):
        sentence += (
            f", raised from {_percent(one_part_threshold)} for a one-part video because each of its "
            f"{len(record['windows'])} parts is another chance of a false alarm"
        )
    return sentence + "."


def report_file_name(name: str) -> str:
    stem = _UNSAFE_FILE_NAME.sub("_", Path(name.split("?")[0].rstrip("/")).name).strip("._") or "video"
    return f"{stem}.json"


def render_progress(progress: Progress) -> str:
    """The running line: which video, what is being done to it, and bars for the run and for the video's windows."""
    within, step = "", progress.step
    if progress.windows:
        step += f" ({progress.done} of {_count(progress.windows, 'part')} done)"
        within = (
            f'<progress class="dfd-video-progress" max="{progress.windows}" value="{progress.done}" '
            f'aria-label="Parts of {_e(progress.name)} checked">{progress.done} of {progress.windows}</progress>'
        )
    return (
        '<div class="dfd-progress" role="status" aria-live="polite">'
        f"<p>Video {progress.position + 1} of {progress.total}: <strong>{_e(progress.name)}</strong>: "
        f"{_e(step)}</p>"
        f'<progress class="dfd-run-progress" max="1" value="{progress.fraction:.3f}" aria-label="Videos checked">'
        f"{progress.fraction:.0%}</progress>{within}</div>"
    )


def render_notice(text: str) -> str:
    """A line about the run as a whole: waiting, nothing to do, done, stopped."""
    return f'<div class="dfd-progress dfd-notice" role="status" aria-live="polite"><p>{_e(text)}</p></div>'


def render_summary(reports: list[VideoReport], total: int) -> str:
    """The batch at a glance: how many videos look fake, real or were not checked, each named with its outcome."""
    if not reports:
        return ""
    counts = {kind: sum(report.kind == kind for report in reports) for kind in VERDICTS}
    not_checked = counts["error"] + counts["stopped"]
    if counts["fake"]:
        headline = f"{counts['fake']} of {_count(total, 'video')} likely fake"
    elif len(reports) < total:
        headline = "No video likely fake so far"
    else:
        headline = "No video likely fake" if counts["real"] else "No video could be checked"
    chips = [
        f'<span class="dfd-chip dfd-{kind}">{_e(VERDICTS[kind])}: {count}</span>'
        for kind, count in (("fake", counts["fake"]), ("real", counts["real"]), ("error", not_checked))
        if count
    ]
    if len(reports) < total:
        chips.append(f'<span class="dfd-chip">still to check: {total - len(reports)}</span>')
    lines = []
    for number, report in enumerate(reports):
        if report.record is None:
            details = report.to_dict()["error"]
        else:
            details = f"fake score {_percent(report.record['fake_score'])}"
            if report.kind == "fake":
                details += f", suspicious at {', '.join(suspicious_ranges(report.record))}"
        lines.append(
            f'<li><span class="dfd-chip dfd-{report.kind}">{_e(VERDICTS[report.kind])}</span> '
            f'<a href="#dfd-video-{number + 1}">{_e(report.name)}</a>: {_e(details)}</li>'
        )
    return (
        f'<section class="dfd-summary dfd-{"fake" if counts["fake"] else "real" if counts["real"] else "error"}" '
        f'aria-label="Summary"><h2>{_e(headline)}</h2><p class="dfd-chips">{"".join(chips)}</p>'
        f"<ul>{''.join(lines)}</ul></section>"
    )


def render_cards(reports: list[VideoReport]) -> str:
    return "".join(render_card(report, number + 1) for number, report in enumerate(reports))


def render_card(report: VideoReport, number: int) -> str:
    """One video: verdict, score and threshold, where, then the timeline, the frames, the evidence and the report."""
    title = f"dfd-video-{number}-title"
    parts = [
        f'<section class="dfd-card dfd-{report.kind}" id="dfd-video-{number}" aria-labelledby="{title}">',
        (
            f'<h3 id="{title}"><span class="dfd-badge">{_e(VERDICTS[report.kind])}</span> '
            f'<span class="dfd-name">{_e(report.name)}</span></h3>'
        ),
    ]
    if report.record is None:
        reason = report.to_dict()["error"]
        remedy = next((text for setting, text in REMEDIES.items() if setting in reason), "")
        parts.append(f'<p class="dfd-reason">{_e(reason)}</p>')
        if remedy:
            parts.append(f'<p class="dfd-remedy">{_e(remedy)}</p>')
        return "".join(parts) + "</section>"
    record = report.record
    most = record["windows"][record["most_suspicious"]["window"]]
    parts.append(
        f'<p class="dfd-score"><strong>Fake score {_percent(record["fake_score"])}</strong>. '
        f"{_e(threshold_sentence(record, report.one_part_threshold))}</p>"
    )
    if report.kind == "fake":
        ranges = suspicious_ranges(record)
        parts.append(
            f'<p class="dfd-where">Suspicious: <strong>{_e(", ".join(ranges))}</strong> '
            f"({len(record['flagged_windows'])} of {_count(len(record['windows']), 'part')} flagged)</p>"
        )
    else:
        parts.append(
            f'<p class="dfd-where">Most suspicious part: <strong>{_e(time_range(most))}</strong> '
            f"({_percent(most['fake_probability'])}, below the threshold)</p>"
        )
    if report.timelines:
        parts.append(_timeline(report))
    if report.thumbnails:
        parts.append(_frames(report, most))
    if report.explanations:
        wide, narrow = report.explanations
        alt = (
            f"The frames of {report.name} at {time_range(most)}, with the regions that drove the fake score tinted red"
        )
        parts.append(
            '<figure class="dfd-explanation"><picture>'
            f'<source media="(max-width: 640px)" srcset="{_data_url(narrow, "image/png")}">'
            f'<img src="{_data_url(wide, "image/png")}" alt="{_e(alt)}">'
            "</picture><figcaption>Where the evidence for fake lies in the most suspicious part: tinted red, outlined "
            "where strongest; the percentage is each frame's share of it.</figcaption></figure>"
        )
    for note in record.get("notes", []):
        parts.append(f'<p class="dfd-note">Note: {_e(note)}</p>')
    report_json = json.dumps(record, indent=2).encode("utf-8")
    parts.append(
        f'<p><a class="dfd-report" download="{_e(report_file_name(report.name))}" '
        f'href="{_data_url(report_json, "application/json")}">Download the report on {_e(report.name)} (JSON)</a></p>'
    )
    return "".join(parts) + "</section>"


def _timeline(report: VideoReport) -> str:
    record = report.record
    wide, narrow = report.timelines
    flagged = len(record["flagged_windows"])
    top = record["windows"][record["most_suspicious"]["window"]]
    alt = (
        f"Fake probability of each part of {report.name} over time: highest {_percent(top['fake_probability'])} at "
        f"{time_range(top)}; threshold {_percent(record['threshold'])}; {flagged} of {len(record['windows'])} parts "
        "flagged."
    )
    return (
        '<figure class="dfd-timeline"><picture>'
        f'<source media="(max-width: 640px)" srcset="{_data_url(narrow, "image/png")}">'
        f'<img src="{_data_url(wide, "image/png")}" alt="{_e(alt)}"></picture>'
        "<figcaption>Fake probability of each part over time; flagged parts shaded red.</figcaption></figure>"
    )


def _frames(report: VideoReport, window: dict) -> str:
    items = []
    for thumbnail in report.thumbnails:
        when = f"frame {thumbnail.frame}"
        if thumbnail.time is not None:
            when = f"{clock(thumbnail.time, 2)}, {when}"
        items.append(
            f'<li><img src="{_data_url(thumbnail.jpeg, "image/jpeg")}" alt="{_e(f"{report.name}, {when}")}">'
            f"<span>{_e(when)}</span></li>"
        )
    return (
        f'<div class="dfd-frames"><h4>The {len(items)} frames the model saw in the most suspicious part '
        f"({_e(time_range(window))})</h4><ul>{''.join(items)}</ul></div>"
    )


CSS = """
.dfd-progress { border: 2px solid var(--color-accent); border-radius: 8px; padding: 12px 16px; margin: 8px 0; }
.dfd-progress p { margin: 0 0 8px 0; font-size: 1.1em; overflow-wrap: anywhere; }
.dfd-progress progress { display: block; width: 100%; height: 14px; margin-top: 4px; }
.dfd-notice { border-color: var(--border-color-primary); }
.dfd-summary { border-radius: 8px; padding: 16px; margin: 8px 0; border: 3px solid #6b7280; }
.dfd-summary.dfd-fake { border-color: #b91c1c; }
.dfd-summary.dfd-real { border-color: #15803d; }
.dfd-summary h2 { margin: 0 0 8px 0; font-size: 1.6em; }
.dfd-summary ul { margin: 10px 0 0 0; padding: 0; list-style: none; }
.dfd-summary li { overflow-wrap: anywhere; margin: 6px 0; }
.dfd-summary li .dfd-chip { font-size: 0.85em; }
.dfd-summary a { padding: 0; }
.dfd-chips { display: flex; flex-wrap: wrap; gap: 6px; margin: 0; }
.dfd-chip { border-radius: 999px; padding: 2px 10px; background: #e5e7eb; color: #111827; font-weight: 600; }
.dfd-chip.dfd-fake, .dfd-card.dfd-fake .dfd-badge { background: #b91c1c; color: #fff; }
.dfd-chip.dfd-real, .dfd-card.dfd-real .dfd-badge { background: #15803d; color: #fff; }
.dfd-chip.dfd-error, .dfd-card.dfd-error .dfd-badge, .dfd-card.dfd-stopped .dfd-badge {
  background: #4b5563; color: #fff; }
.dfd-card { border-radius: 8px; padding: 16px; margin: 12px 0; border: 1px solid var(--border-color-primary);
  border-left: 10px solid #6b7280; }
.dfd-card.dfd-fake { border-left-color: #b91c1c; }
.dfd-card.dfd-real { border-left-color: #15803d; }
.dfd-card h3 { margin: 0 0 8px 0; font-size: 1.3em; display: flex; flex-wrap: wrap; align-items: center; gap: 8px; }
.dfd-badge { border-radius: 6px; padding: 2px 10px; white-space: nowrap; }
.dfd-name { overflow-wrap: anywhere; min-width: 0; }
.dfd-card p { margin: 6px 0; }
.dfd-score strong { font-size: 1.2em; }
.dfd-card figure { margin: 12px 0; }
.dfd-card figure img { display: block; width: 100%; max-width: 880px; height: auto; }
.dfd-card figcaption { font-size: 0.9em; opacity: 0.8; }
.dfd-frames h4 { margin: 12px 0 6px 0; }
.dfd-frames ul { list-style: none; padding: 0; margin: 0; display: grid; gap: 8px;
  grid-template-columns: repeat(auto-fill, minmax(84px, 1fr)); }
.dfd-frames li { margin: 0; min-width: 0; }
.dfd-frames img { display: block; width: 100%; height: auto; border-radius: 4px; }
.dfd-frames span { display: block; font-size: 0.85em; overflow-wrap: anywhere; }
.dfd-reason { font-weight: 600; overflow-wrap: anywhere; }
.dfd-report { font-weight: 600; overflow-wrap: anywhere; }
@media (max-width: 640px) {
  .dfd-card, .dfd-summary { padding: 10px; }
  .dfd-card { border-left-width: 6px; }
  .dfd-summary h2 { font-size: 1.35em; }
}
"""


__all__ = [
    "CSS",
    "Progress",
    "Thumbnail",
    "VideoReport",
    "render_cards",
    "render_notice",
    "render_progress",
    "render_summary",
]
