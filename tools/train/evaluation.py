"""
Evaluation: the metrics of a model on a DataLoader (each epoch's validation, the export's), and the evaluation sets
(--eval_dir; with --do_eval also --dataset_name), scored with the model's calibration and decision rule into the
cross-dataset table, metrics.json, predictions.csv and ROC curves.

The headline is the video-level ROC AUC: one score per video, the model's prediction over its frames spread over the
whole video. Each row names the split it evaluated and its counts; a set whose fakes come from several methods gets a
row per method as well (FaceForensics++'s cross-manipulation table): the method's fakes against the real videos of
the same dataset(s).
"""

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.nn import functional as F

from ...configuration_dfd import CLASS_NAMES
from ...decision_dfd import FAKE_LABEL, DecisionRule, sigmoid
from ..data import Row
from ..files import write_atomically, write_json
from ..metrics import load_dfd_metrics
from ..plots import plot_roc_curve
from .accelerator import main_process_first
from .data import VideoData, class_counts, make_eval_dataloader
from .transforms import normalize_videos


# The cross-dataset table's metric columns: threshold-free first, then those at the stored threshold.
CROSS_DATASET_COLUMNS = {
    "eval_roc_auc": "AUC",
    "eval_average_precision": "AP",
    "eval_eer": "EER",
    "eval_balanced_accuracy": "bal. acc.",
    "eval_recall_real": "recall real",
    "eval_recall_fake": "recall fake",
}
PREDICTION_COLUMNS = ["set", "split", "dataset", "method", "group", "path", "label", "score", "verdict"]


def load_metric(accelerator):
    with main_process_first(accelerator):
        return load_dfd_metrics(keep_in_memory=True)


@torch.no_grad()
def evaluate_model(model, dataloader, processor, metric, accelerator):
    """
    Metrics over the whole dataset (predictions gathered from every process, in the dataset's order), plus the labels
    and the fake log-odds (fake minus real logit: the softmax's fake probability is their sigmoid).
    """
    model.eval()
    fake_index = accelerator.unwrap_model(model).config.label2id[FAKE_LABEL]
    labels, log_odds, predictions, losses = [], [], [], []
    for batch in dataloader:
        logits = model(pixel_values=normalize_videos(batch["frames"], processor)).logits.float()
        loss = F.cross_entropy(logits, batch["labels"], reduction="none")
        fake_log_odds = logits[:, fake_index] - logits[:, 1 - fake_index]
        gathered = accelerator.gather_for_metrics((batch["labels"], fake_log_odds, logits.argmax(-1), loss))
        for store, values in zip((labels, log_odds, predictions, losses), gathered):
            store.append(values.cpu())
    labels, log_odds, predictions, losses = (
        torch.cat(values).numpy() for values in (labels, log_odds, predictions, losses)
    )
    metrics = metric.compute(predictions=predictions, references=labels, prediction_scores=sigmoid(log_odds))
    metrics["loss"] = float(losses.mean())
    return metrics, labels, log_odds


def score_sets(args, accelerator, model, processor, metric, data: VideoData) -> dict[str, tuple]:
    """(labels, fake log-odds) of every evaluation set, each video one window spread over it (its frames as in
    training). Every process takes part; each gets the whole of every set."""
    scores = {}
    for name, evaluation in data.evaluation.items():
        dataloader = accelerator.prepare(make_eval_dataloader(args, data, evaluation.rows))
        _, labels, log_odds = evaluate_model(model, dataloader, processor, metric, accelerator)
        scores[name] = labels, log_odds
    return scores


@dataclass
class CrossDataset:
    """The evaluation sets' results: metrics.json's "sets", predictions.csv's rows, and each set's ROC curve."""

    threshold: float
    rule: str
    sets: dict[str, dict] = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)
    curves: dict[str, tuple] = field(default_factory=dict)  # name -> (labels, scores, metrics)


def method_subsets(rows: list[Row]) -> dict[str, list[int]]:
    """
    Method -> the rows of its fakes and of the real videos of the same dataset(s), for a set whose fakes come from
    two methods or more (none otherwise: the set's own row says it all).
    """
    methods = list(dict.fromkeys(row.method for row in rows if row.label == "fake" and row.method))
    if len(methods) < 2:
        return {}
    subsets = {}
    for method in methods:
        fakes = {row.dataset for row in rows if row.label == "fake" and row.method == method}
        subsets[method] = [
            index for index, row in enumerate(rows)
            if (row.label == "fake" and row.method == method) or (row.label == "real" and row.dataset in fakes)
        ]  # fmt: skip
    return subsets


def _results(metric, labels, scores, verdicts) -> dict:
    metrics = metric.compute(predictions=verdicts, references=labels, prediction_scores=scores)
    results = {f"eval_{key}": value for key, value in metrics.items()}
    results.update(eval_samples=len(labels), eval_class_counts=class_counts(labels))
    return results


def cross_dataset(data: VideoData, scores: dict[str, tuple], decision: dict, metric) -> CrossDataset:
    """
    Every evaluation set's `scores` (from `score_sets`) calibrated and judged as `decision` says: a model config's
    fields (`calibration_temperature`, `decision_threshold`, ...), e.g. a calibration's "config".
    """
    rule = DecisionRule.from_config(SimpleNamespace(**decision))
    temperature = decision.get("calibration_temperature") or 1.0
    results = CrossDataset(rule.threshold, rule.name)
    for name, (labels, log_odds) in scores.items():
        evaluation = data.evaluation[name]
        fakes = [row for row in evaluation.rows if row.label == "fake"]
        calibrated = sigmoid(log_odds / temperature)
        verdicts = np.array([rule.decide([score]).fake for score in calibrated], dtype=np.int64)
        result = {
            "split": evaluation.split,
            "datasets": sorted({row.dataset for row in evaluation.rows} - {""}),
            "fake_methods": [method for method in dict.fromkeys(row.method for row in fakes) if method],
        }
        result.update(_results(metric, labels, calibrated, verdicts), skipped_videos=data.skipped[name])
        methods = method_subsets(evaluation.rows)
        if methods:
            result["methods"] = {
                method: _results(metric, labels[subset], calibrated[subset], verdicts[subset])
                for method, subset in methods.items()
            }
        results.sets[name] = result
        results.curves[name] = labels, calibrated, result
        results.predictions += [
            {"set": name, "split": evaluation.split, "dataset": row.dataset, "method": row.method, "group": row.group,
             "path": row.path, "label": row.label, "score": round(float(score), 6), "verdict": CLASS_NAMES[verdict]}
            for row, score, verdict in zip(evaluation.rows, calibrated, verdicts)
        ]  # fmt: skip
    return results


def write_cross_dataset(output_dir: Path, results: CrossDataset, model: str):
    """metrics.json (per set, the threshold-dependent metrics at the stored threshold), predictions.csv and a ROC
    curve per set into `output_dir`."""
    write_json(
        output_dir / "metrics.json",
        {"model": model, "threshold": results.threshold, "rule": results.rule, "sets": results.sets},
    )
    write_predictions(output_dir / "predictions.csv", results.predictions)
    for name, (labels, scores, metrics) in results.curves.items():
        roc_name = "roc_curve.png" if len(results.curves) == 1 else f"roc_curve-{file_name_part(name)}.png"
        plot_roc_curve(labels, scores, {key.removeprefix("eval_"): value for key, value in metrics.items()},
                       output_dir / roc_name)  # fmt: skip


def evaluate_sets(args, accelerator, model, processor, metric, data: VideoData):
    """
    --do_eval: every evaluation set scored by --model_path with its stored calibration and decision threshold. Writes
    metrics.json, predictions.csv and the ROC curves into --output_dir and prints the cross-dataset table.
    """
    decision = model.config.to_dict()
    model = accelerator.prepare(model)
    scores = score_sets(args, accelerator, model, processor, metric, data)
    if accelerator.is_main_process:
        results = cross_dataset(data, scores, decision, metric)
        write_cross_dataset(Path(args.output_dir), results, args.model_path)
        print(cross_dataset_table(results))


def file_name_part(name: str) -> str:
    """A set's name as part of a file name: a Hub dataset's ORG/NAME would otherwise name a folder."""
    return re.sub(r"[^\w.-]+", "_", name)


def write_predictions(path: Path, predictions: list[dict]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PREDICTION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(predictions)
    write_atomically(path, buffer.getvalue())


TABLE_HEADER = ["set", "split", "real", "fake", *CROSS_DATASET_COLUMNS.values()]


def table_rows(sets: dict[str, dict]) -> list[tuple[str | None, list[str]]]:
    """The cross-dataset table's rows: (None for a set's own row, else the method; its cells), each set followed by
    its methods."""
    rows = []
    for name, result in sets.items():
        for method, metrics in [(None, result), *result.get("methods", {}).items()]:
            counts = metrics["eval_class_counts"]
            values = [f"{metrics[key]:.4f}" for key in CROSS_DATASET_COLUMNS]
            rows.append((method, [method or name, result["split"], str(counts["real"]), str(counts["fake"]), *values]))
    return rows


def cross_dataset_table(results: CrossDataset) -> str:
    """
    The field's protocol (train on one set, test on the others) as text: one row per evaluation set and per method
    of a set with several (indented), with the split evaluated and its real and fake videos; threshold-free AUC, AP
    and EER, then balanced accuracy and per-class recall at the stored threshold.
    """
    rows = [TABLE_HEADER] + [
        [f"  {cells[0]}" if method else cells[0], *cells[1:]] for method, cells in table_rows(results.sets)
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE_HEADER))]
    lines = [f"Evaluation at threshold {results.threshold:.4f} (video-level: one score per video):"]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def cross_dataset_markdown(sets: dict[str, dict]) -> str:
    """The cross-dataset table as Markdown, for the model card (a method's row reads "↳ method")."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for method, cells in table_rows(sets):
        lines.append("| " + " | ".join([f"↳ {cells[0]}" if method else cells[0], *cells[1:]]) + " |")
    return "\n".join(lines)
