"""
The detector's pictures: a video's fake probability over time, and where a window's fake evidence lies.

`dfd predict --plot/--explain` saves them and the web page (page_dfd.py) shows them. Both are drawn on a bare
matplotlib `Figure`, which renders with Agg: no GUI backend and no pyplot state, so they draw on headless servers and
from worker threads. A Hub file: it imports only public libraries, so a Space draws them from the model repo.

Text keeps its size in points whatever the figure's width: a narrower figure (the page's phone layout) has text that
is larger relative to it, so it stays legible once the picture is scaled to a small screen.
"""

import io
import math

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter


TIMELINE_HEIGHT = 2.8  # inches
EXPLANATION_COLUMNS = 6


def png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def clock(seconds: float, decimals: int = 1) -> str:
    """A time as a person reads it off a video player: 0:07.5, 1:02.0 (minutes:seconds)."""
    minutes, rest = divmod(round(max(0.0, seconds), decimals), 60)
    return f"{int(minutes)}:{rest:0{3 + decimals if decimals else 2}.{decimals}f}"


def timeline_figure(record: dict, width: float = 8.0, title: str | None = None) -> Figure:
    """
    Each window's fake probability along the video (a bar over the time it covers, a dot at its middle), the windows
    the rule flagged shaded, and the threshold the video was held to dashed. The legend sits above the axes, never
    over the data. `record` is a prediction's record (results_dfd.py); `width` in inches (under 5: the legend takes
    two rows).
    """
    figure = Figure(figsize=(width, TIMELINE_HEIGHT + (0.3 if title else 0)), layout="constrained")
    axes = figure.subplots()
    windows = record["windows"]
    fake = [window["fake_probability"] for window in windows]
    timed = all(window["start"] is not None and window["end"] is not None for window in windows)
    if timed:
        # A window covers the time from its first frame to the next window's (the last one, to the video's end).
        end = max(record["duration"] or 0, windows[-1]["end"]) or 1
        spans = [(window["start"], after["start"]) for window, after in zip(windows, windows[1:])]
        spans.append((windows[-1]["start"], end))
        middles = [(start + stop) / 2 for start, stop in spans]
        axes.hlines(fake, [start for start, _ in spans], [stop for _, stop in spans], lw=3)
        axes.set_xlim(0, end)
        if end >= 60:
            axes.set_xlabel("time in the video (min:s)")
            axes.xaxis.set_major_formatter(FuncFormatter(lambda seconds, _: clock(seconds, 0)))
        else:
            axes.set_xlabel("time in the video (s)")
    else:  # a file without frame timing
        middles = list(range(1, len(windows) + 1))
        axes.set_xlabel("window")
        axes.set_xlim(0.5, len(windows) + 0.5)
    for number, flagged in enumerate(record["flagged_windows"]):
        start, stop = spans[flagged["window"]] if timed else (flagged["window"] + 0.5, flagged["window"] + 1.5)
        axes.axvspan(start, stop, color="tab:red", alpha=0.2, lw=0, label="flagged" if number == 0 else None)
    axes.plot(middles, fake, marker="o", color="tab:blue", label="fake probability")
    axes.axhline(record["threshold"], color="black", linestyle="--", lw=1, label=f"threshold {record['threshold']:.0%}")
    axes.set_ylim(0, 1)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_ylabel("fake probability")
    axes.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.legend(loc="outside upper center", ncols=3 if width >= 5 else 2, frameon=False)
    return figure


def _outline(mask: np.ndarray, patch_height: int, patch_width: int) -> list:
    """The border, in pixels, of the patches where `mask` (grid_height, grid_width) is set, as line segments."""
    padded = np.pad(mask, 1)
    segments = []
    for row, column in zip(*np.nonzero(mask)):
        top, left = row * patch_height - 0.5, column * patch_width - 0.5
        bottom, right = top + patch_height, left + patch_width
        if not padded[row, column + 1]:
            segments.append([(left, top), (right, top)])
        if not padded[row + 2, column + 1]:
            segments.append([(left, bottom), (right, bottom)])
        if not padded[row + 1, column]:
            segments.append([(left, top), (left, bottom)])
        if not padded[row + 1, column + 2]:
            segments.append([(right, top), (right, bottom)])
    return segments


def explanation_figure(name: str, window, method: str = "integrated gradients", columns: int = EXPLANATION_COLUMNS):
    """
    One window (an `explaining_dfd.WindowExplanation`) for a reviewer: every frame the model saw, with the regions
    that drove the fake score tinted red (the more evidence, the stronger) and the strongest outlined, so that what
    lies under them stays visible; each frame's time and share of the window's evidence; the frame with the largest
    share framed in red. `columns`: frames per row.
    """
    frames, heatmaps = window.images, window.heatmaps
    rows = math.ceil(len(frames) / columns)
    columns = min(len(frames), columns)
    figure = Figure(figsize=(2.3 * columns, 2.5 * rows + 0.9), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    grid_height, grid_width = heatmaps.shape[1:]
    patch_height, patch_width = frames.shape[1] // grid_height, frames.shape[2] // grid_width
    peak = heatmaps.max()
    shares = window.frame_shares
    tint = np.zeros((grid_height, grid_width, 4))
    tint[..., 0] = 1.0  # red
    for index, axis in enumerate(axes.flat):
        axis.set_axis_off()
        if index >= len(frames):
            continue
        axis.imshow(frames[index])
        if peak > 0:
            tint[..., 3] = 0.5 * heatmaps[index] / peak
            extent = (-0.5, grid_width * patch_width - 0.5, grid_height * patch_height - 0.5, -0.5)
            axis.imshow(tint.copy(), extent=extent, interpolation="bilinear")
            axis.add_collection(
                LineCollection(_outline(heatmaps[index] >= peak / 2, patch_height, patch_width), colors="red", lw=1.5)
            )
        time = window.timestamps[index]
        label = f"frame {window.frames[index]}" if time is None else clock(time)
        axis.set_title(f"{label}: {shares[index]:.0%}", fontsize="medium")
        if peak > 0 and index == int(shares.argmax()):
            axis.set_axis_on()
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_color("tab:red")
                spine.set_linewidth(3)
    start, end = window.timestamps[0], window.timestamps[-1]
    when = f"window {window.window + 1}" if start is None or end is None else f"{clock(start)}-{clock(end)}"
    figure.suptitle(
        f"{name}, {when}: fake probability {window.fake_probability:.0%}\n"
        f"red: where the evidence for fake lies ({method}),\noutlined where strongest; %: each frame's share of it",
        fontsize="medium",
    )
    return figure


__all__ = ["clock", "explanation_figure", "png_bytes", "timeline_figure"]
