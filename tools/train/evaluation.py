"""
Evaluation: the metrics of a model on a DataLoader (each epoch's validation, the export's), and --do_eval, which
scores each evaluation set with the model's stored calibration and decision rule and writes the cross-dataset table.
"""

import csv
import io
import re
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ...configuration_dfd import CLASS_NAMES
from ...decision_dfd import FAKE_LABEL, DecisionRule, sigmoid
from ..files import write_atomically, write_json
from ..metrics import load_dfd_metrics
from ..plots import plot_roc_curve
from .accelerator import main_process_first
from .data import VideoData, class_counts, make_eval_dataloader
from .transforms import normalize_videos


# The cross-dataset table's columns: threshold-free first, then those at the stored threshold.
CROSS_DATASET_COLUMNS = {
    "eval_roc_auc": "AUC",
    "eval_average_precision": "AP",
    "eval_eer": "EER",
    "eval_balanced_accuracy": "bal. acc.",
    "eval_recall_real": "recall real",
    "eval_recall_fake": "recall fake",
}


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


def evaluate_sets(args, accelerator, model, processor, metric, data: VideoData):
    """
    --do_eval: every evaluation set scored by --model_path with its stored calibration and decision threshold, each
    video one window spread over it (its frames as in training). Writes predictions.csv (set, path, true label,
    score, verdict), metrics.json (per set; the threshold-dependent metrics at the stored threshold) and a ROC curve
    per set, and prints the cross-dataset table.
    """
    rule = DecisionRule.from_config(model.config)
    temperature = model.config.calibration_temperature
    model = accelerator.prepare(model)
    output_dir = Path(args.output_dir)
    results, predictions = {}, []
    for name, table in data.evaluation.items():
        dataloader = accelerator.prepare(make_eval_dataloader(args, data, table))
        _, labels, log_odds = evaluate_model(model, dataloader, processor, metric, accelerator)
        scores = sigmoid(log_odds / temperature)
        verdicts = np.array([rule.decide([score]).fake for score in scores], dtype=np.int64)
        metrics = metric.compute(predictions=verdicts, references=labels, prediction_scores=scores)
        results[name] = {f"eval_{key}": value for key, value in metrics.items()}
        results[name].update(
            eval_samples=len(labels), eval_class_counts=class_counts(labels), skipped_videos=data.skipped[name]
        )
        predictions += [
            {"set": name, "path": video, "label": CLASS_NAMES[label], "score": round(float(score), 6),
             "verdict": CLASS_NAMES[verdict]}
            for video, label, score, verdict in zip(table["video"], labels, scores, verdicts)
        ]  # fmt: skip
        if accelerator.is_main_process:
            roc_name = "roc_curve.png" if len(data.evaluation) == 1 else f"roc_curve-{file_name_part(name)}.png"
            plot_roc_curve(labels, scores, metrics, output_dir / roc_name)
    if accelerator.is_main_process:
        write_json(
            output_dir / "metrics.json",
            {"model": args.model_path, "threshold": rule.threshold, "rule": rule.name, "sets": results},
        )
        write_predictions(output_dir / "predictions.csv", predictions)
        print(cross_dataset_table(results, rule.threshold))


def file_name_part(name: str) -> str:
    """A set's name as part of a file name: a Hub dataset's ORG/NAME would otherwise name a folder."""
    return re.sub(r"[^\w.-]+", "_", name)


def write_predictions(path: Path, predictions: list[dict]):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["set", "path", "label", "score", "verdict"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(predictions)
    write_atomically(path, buffer.getvalue())


def cross_dataset_table(results: dict[str, dict], threshold: float) -> str:
    """One row per evaluation set: threshold-free AUC, AP and EER, then balanced accuracy and per-class recall at the
    stored threshold (the field's protocol: train on one set, test on the others)."""
    width = max(len("set"), *(len(name) for name in results))
    titles = "  ".join(f"{title:>11}" for title in CROSS_DATASET_COLUMNS.values())
    header = f"{'set':<{width}}  {'videos':>6}  {titles}"
    lines = [f"Evaluation at threshold {threshold:.4f}:", header]
    for name, metrics in results.items():
        values = "  ".join(f"{metrics[key]:>11.4f}" for key in CROSS_DATASET_COLUMNS)
        lines.append(f"{name:<{width}}  {metrics['eval_samples']:>6}  {values}")
    return "\n".join(lines)
