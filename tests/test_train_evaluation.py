"""--do_eval on real runs: several sets scored with the stored calibration and rule, written per set, in
predictions.csv and the cross-dataset table; its numbers agree with the training run's validation."""

import csv
import io
import json

import numpy as np
import pytest

from training_fixtures import run_script


def test_do_eval_reproduces_validation_metrics_on_several_sets(trained, training_videos, frame_cache_dir, tmp_path):
    output_dir, _ = trained
    result = run_script(
        "--do_eval",
        "--model_path", output_dir / "model",
        "--eval_dir", training_videos / "val", training_videos / "train",
        "--cache_dir", frame_cache_dir,
        "--output_dir", tmp_path / "eval",
    )  # fmt: skip
    evaluation = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    training = json.loads((output_dir / "model" / "metrics.json").read_text())
    calibration = training["calibration"]
    assert evaluation["threshold"] == calibration["threshold"]
    evaluated = evaluation["sets"]["val"]
    # Threshold-free metrics as in training; the rest at the stored threshold, where calibration measured the rates.
    for name in ("eval_roc_auc", "eval_average_precision", "eval_eer"):
        assert evaluated[name] == pytest.approx(training[name], abs=1e-6), name
    assert evaluated["eval_recall_real"] == pytest.approx(1 - calibration["false_positive_rate"])
    assert evaluated["eval_recall_fake"] == pytest.approx(calibration["true_positive_rate"])
    assert evaluation["sets"]["train"]["eval_samples"] == 13  # the corrupt video is skipped
    assert evaluation["sets"]["train"]["skipped_videos"] == 1 and evaluated["skipped_videos"] == 0
    for name in ("val", "train"):
        assert (tmp_path / "eval" / f"roc_curve-{name}.png").is_file()

    rows = list(csv.DictReader(io.StringIO((tmp_path / "eval" / "predictions.csv").read_text())))
    assert list(rows[0]) == ["set", "split", "dataset", "method", "group", "path", "label", "score", "verdict"]
    assert [row["set"] for row in rows] == ["val"] * 6 + ["train"] * 13
    assert {(row["split"], row["dataset"], row["method"], row["group"]) for row in rows} == {("train", "", "", "")}
    for row in rows:
        assert row["label"] == ("fake" if "/fake/" in row["path"] else "real")
        fake = float(row["score"]) >= calibration["threshold"]
        assert row["verdict"] == ("fake" if fake else "real")
    val = [row for row in rows if row["set"] == "val"]
    recall_real = np.mean([row["verdict"] == "real" for row in val if row["label"] == "real"])
    assert recall_real == pytest.approx(evaluated["eval_recall_real"])

    # The cross-dataset table: one row per set (folders of real/ and fake/ are one split, "train"), with its counts.
    table = result.stdout[result.stdout.index("Evaluation at threshold") :].splitlines()
    assert table[1].split()[:5] == ["set", "split", "real", "fake", "AUC"]
    assert [line.split()[:4] for line in table[2:4]] == [["val", "train", "3", "3"], ["train", "train", "7", "6"]]
    assert float(table[2].split()[4]) == pytest.approx(evaluated["eval_roc_auc"], abs=1e-4)
    assert evaluated["split"] == "train" and evaluated["eval_class_counts"] == {"real": 3, "fake": 3}
