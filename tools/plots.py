"""
PNG files the tooling writes: training's ROC curve, and the detector's own pictures (plots_dfd.py: the timeline and
the explanation, which the web page shows too) saved for `dfd predict --plot/--explain`. A bare matplotlib `Figure`
renders with Agg: no GUI backend and no pyplot state, so plotting works on headless machines and from worker threads.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .files import write_atomically


def save_png(figure: Figure, path: Path):
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=110))


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
