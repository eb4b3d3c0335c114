"""
The PNGs the tooling draws: a video's fake probability over time (`dfd predict --plot`), where a window's fake
evidence lies (`dfd predict --explain`, the web page) and training's ROC curve.

Both use a bare matplotlib `Figure`, which renders with Agg: no GUI backend and no pyplot state, so plotting works on
headless machines and from worker threads.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from .files import write_atomically


def save_png(figure: Figure, path: Path):
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=110))


def write_plot(record: dict, path: Path):
    """
    A PNG of each window's fake probability along the video's time line, every flagged window shaded, the threshold
    the video was held to, and the verdict by the model's decision rule in the title.
    """
    figure = Figure(figsize=(8, 3), layout="constrained")
    axes = figure.subplots()
    windows = record["windows"]
    fake = [window["fake_probability"] for window in windows]
    timed = all(window["start"] is not None and window["end"] is not None for window in windows)
    if timed:
        middles = [(window["start"] + window["end"]) / 2 for window in windows]
        axes.hlines(fake, [window["start"] for window in windows], [window["end"] for window in windows], lw=3)
        axes.set_xlabel("time (s)")
        if record["duration"]:
            axes.set_xlim(0, record["duration"])
    else:  # a file without frame timing
        middles = list(range(1, len(windows) + 1))
        axes.set_xlabel("window")
    for number, flagged in enumerate(record["flagged_windows"]):
        start, end = (flagged["start"], flagged["end"]) if timed else (flagged["window"] + 0.5, flagged["window"] + 1.5)
        axes.axvspan(start, end, color="tab:red", alpha=0.15, label="flagged window" if number == 0 else None)
    axes.plot(middles, fake, marker="o", color="tab:blue")
    axes.axhline(record["threshold"], color="gray", linestyle="--", lw=1, label=f"threshold {record['threshold']:.3f}")
    axes.set_ylim(0, 1)
    axes.set_ylabel("fake probability")
    axes.set_title(
        f"{Path(record['path']).name}: {record['label']} (fake score {record['fake_score']:.3f}, {record['rule']}; "
        f"mean {record['mean_fake_probability']:.3f})"
    )
    axes.legend(loc="best", fontsize="small")
    save_png(figure, path)


EXPLANATION_COLUMNS = 6


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


def write_explanation(name: str, window, path: Path, method: str = "integrated gradients"):
    """
    A PNG of one window (an `explaining_dfd.WindowExplanation`) for a reviewer: every frame the model saw, with the regions
    that drove the fake score tinted red (the more evidence, the stronger) and the strongest outlined, so that what
    lies under them stays visible; each frame's time and share of the window's evidence; the frame with the largest
    share framed in red.
    """
    frames, heatmaps = window.images, window.heatmaps
    rows = math.ceil(len(frames) / EXPLANATION_COLUMNS)
    columns = min(len(frames), EXPLANATION_COLUMNS)
    figure = Figure(figsize=(2.3 * columns, 2.5 * rows + 0.8), layout="constrained")
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
        label = f"frame {window.frames[index]}" if time is None else f"{time:.2f} s"
        axis.set_title(f"{label}: {shares[index]:.0%}", fontsize="medium")
        if peak > 0 and index == int(shares.argmax()):
            axis.set_axis_on()
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_color("tab:red")
                spine.set_linewidth(3)
    start, end = window.timestamps[0], window.timestamps[-1]
    when = f"window {window.window + 1}" if start is None or end is None else f"{start:.2f}-{end:.2f} s"
    figure.suptitle(
        f"{name}, {when}: fake probability {window.fake_probability:.2f}\n"
        f"red: where the evidence for fake lies ({method}), outlined where strongest; %: each frame's share of it",
        fontsize="medium",
    )
    save_png(figure, path)


def plot_roc_curve(labels: np.ndarray, scores: np.ndarray, metrics: dict, path: Path):
    """The validation ROC curve with its AUC and equal-error point (training's roc_curve.png)."""
    from sklearn.metrics import roc_curve

    figure = Figure(figsize=(5, 5), layout="constrained")
    axes = figure.subplots()
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        axes.plot(fpr, tpr, label=f"ROC AUC = {metrics['roc_auc']:.4f}")
        axes.plot([metrics["eer"]], [1 - metrics["eer"]], "o", label=f"EER = {metrics['eer']:.4f}")
    else:
        axes.text(0.5, 0.5, "one class only: no ROC curve", ha="center")
    axes.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
    axes.set(
        xlabel="False positive rate (real called fake)",
        ylabel="True positive rate (fake detected)",
        title=f"ROC on {len(labels)} videos",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    axes.legend(loc="lower right")
    save_png(figure, path)
