"""
The run's export: the best checkpoint's weights in a fresh fp32 model, its calibration in the config, its model card,
metrics.json and roc_curve.png, all replaced in one step.

Better than the anchors' `save_pretrained` into the output folder: the export is assembled beside the previous one
and swapped in, so a run killed at any point leaves the previous set of files or the new one, never a mix.
"""

from pathlib import Path

from accelerate.logging import get_logger

from ...decision_dfd import sigmoid
from ..export import save_detector
from ..files import write_json
from ..plots import plot_roc_curve
from .calibration import describe_calibration
from .card import model_card
from .errors import reporting_full_disk
from .model import model_to_export
from .output import EXPORT_NAME


logger = get_logger(__name__)


def export_best_checkpoint(
    args, processor, checkpoint: Path, state: dict, run: dict, evaluation, calibration, cross_dataset=None
) -> Path:
    """
    Export `checkpoint` with the numbers of its last evaluation (`evaluation`: metrics, labels, fake log-odds of the
    validation videos), its `calibration`, and its results on the evaluation sets (`cross_dataset`, a
    `evaluation.CrossDataset`, or None without --eval_dir); returns the export folder.
    """
    metrics, labels, log_odds = evaluation
    summary = {
        "best_checkpoint": checkpoint.name,
        "best_epoch": state["best_epoch"],
        "metric_for_best_model": args.metric_for_best_model,
        "global_step": state["global_step"],
        "train_runtime": state["train_runtime"],
        **run,
    }
    results = {f"eval_{name}": value for name, value in metrics.items()}
    results.update(eval_samples=len(labels), train_samples=sum(run["data"]["train"].values()), **summary)
    model = model_to_export(args, checkpoint)
    model.config.update({**calibration["config"], "window_duration": run["window_duration"]})
    results["calibration"] = {name: value for name, value in calibration.items() if name != "config"}
    if cross_dataset is not None:
        results["evaluation"] = {
            "threshold": cross_dataset.threshold, "rule": cross_dataset.rule, "sets": cross_dataset.sets
        }  # fmt: skip
    extra_files = {
        "metrics.json": lambda path: write_json(path, results),
        "roc_curve.png": lambda path: plot_roc_curve(labels, sigmoid(log_odds), metrics, path),
    }
    export_dir = Path(args.output_dir) / EXPORT_NAME
    with reporting_full_disk(export_dir, "the export"):
        readme = model_card(args, model, results, metrics)
        save_detector(model, processor, export_dir, readme=readme, extra_files=extra_files)
    logger.info(describe_calibration(calibration))
    logger.info(
        f"Done in {state['train_runtime'] / 60:.1f} min: best {args.metric_for_best_model} "
        f"{metrics[args.metric_for_best_model]:.4f} at epoch {state['best_epoch']} ({checkpoint.name}); "
        f"{run['skipped_videos']} unreadable video(s) skipped. Exported to {export_dir}, with its metrics.json and "
        "roc_curve.png"
    )
    return export_dir
