"""The PNGs the tooling draws: a video's fake probability over time (`dfd predict --plot`) and training's ROC curve.

Both use a bare matplotlib `Figure`, which renders with Agg: no GUI backend and no pyplot state, so plotting works on
headless machines and from worker threads.
"""

from pathlib import Path

import numpy as np
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
        f"{Path(record['path']).name}: {record['label']} ({record['rule']} {record['score']:.3f}, "
        f"mean {record['mean_fake_probability']:.3f})"
    )
    axes.legend(loc="best", fontsize="small")
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
