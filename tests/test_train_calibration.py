"""
Training's side of the decision rule: the window duration measured on the training videos (real mp4 files), and the
calibration fitted on the validation videos and stored in the export's config as decision_dfd's rule reads it.
"""

import json

import pytest

from dfd.configuration_dfd import DFDConfig
from dfd.decision_dfd import DecisionRule
from dfd.tools.train.calibration import describe_calibration, window_duration
from training_fixtures import video_frames


def test_window_duration_is_the_median_of_the_timed_videos(tmp_path, make_video):
    videos = [make_video(f"{count}.mp4", video_frames("real", count, num_frames=count), fps=10) for count in (5, 8, 20)]
    frame_folder = tmp_path / "frames"
    frame_folder.mkdir()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video")
    paths = [str(path) for path in (*videos, frame_folder, corrupt)]
    assert window_duration(paths, seed=0) == pytest.approx(0.8)  # 0.5, 0.8 and 2.0 s; the others have none
    assert window_duration([str(frame_folder)], seed=0) is None


def test_training_records_the_window_duration_and_calibration(trained):
    output_dir, result = trained
    config = json.loads((output_dir / "model" / "config.json").read_text())
    calibration = json.loads((output_dir / "model" / "metrics.json").read_text())["calibration"]
    # 8 frames at 25 fps: every training clip lasts 0.32 s (the frame folder has no duration).
    assert config["window_duration"] == pytest.approx(8 / 25)
    assert config["calibration_temperature"] == calibration["temperature"] > 0
    assert config["decision_threshold"] == calibration["threshold"]
    assert config["real_log_odds"] == calibration["real_log_odds"]
    assert calibration["false_positive_rate"] <= calibration["target_false_positive_rate"] == 0.05
    assert 0 < calibration["eer_threshold"] < 1
    # The validation videos are separated perfectly (AUC 1); Platt's targets keep the temperature finite, and it is
    # kept because it lowers the held-out NLL, so the calibration error falls.
    assert json.loads((output_dir / "model" / "metrics.json").read_text())["eval_roc_auc"] == 1.0
    assert 0.1 < calibration["temperature"] < 10 and calibration["temperature_kept"]
    assert calibration["held_out_nll_gain"] > 0 and calibration["ece_after"] < calibration["ece_before"]
    assert {"ece_before", "true_positive_rate", "temperature_kept", "held_out_nll_gain"} <= set(calibration)
    # The rule every surface applies reads back what was fitted.
    rule = DecisionRule.from_config(DFDConfig.from_pretrained(output_dir / "model"))
    assert rule.threshold == calibration["threshold"] and rule.real_log_odds == calibration["real_log_odds"]
    assert describe_calibration(calibration) in result.stderr


def test_describe_calibration_without_a_threshold():
    text = describe_calibration(
        {"real_videos": 1, "fake_videos": 3, "temperature": 1.0, "ece_before": 0.25, "ece_after": 0.25}
    )
    assert text == "Calibration on 1 real + 3 fake validation videos: temperature 1.000, ECE 0.2500 -> 0.2500"
