"""
Training's side of the decision rule that every surface applies (`decision_dfd`): how long a window lasts, the
calibration fitted on the validation videos, and the log line that reports it.

Better than the anchors' argmax at 0.5: the export carries a temperature, a threshold at a target false-positive
rate and the real windows' spread, so a verdict means the same on a 2 s clip and on a long video of many windows.
"""

import os

import numpy as np
from accelerate.logging import get_logger

from ...decision_dfd import calibrate
from ...probing_dfd import VideoDecodeError, probe_video


logger = get_logger(__name__)


def window_duration(videos: list[str], seed: int, sample_size: int = 500) -> float | None:
    """
    The median duration of (a seeded sample of) the training videos: a training window spreads `num_frames` frames
    over a whole video, so this is how long a window at inference should last. None without timed videos (frame
    folders).
    """
    rng = np.random.default_rng(seed)
    sample = rng.choice(videos, size=min(sample_size, len(videos)), replace=False) if videos else []
    durations = []
    for video in sample:
        if os.path.isdir(video):
            continue
        try:
            duration = probe_video(video).duration
        except VideoDecodeError:
            continue
        if duration:
            durations.append(duration)
    return float(np.median(durations)) if durations else None


def calibrate_decision(labels, log_odds, target_false_positive_rate: float) -> dict:
    """`decision_dfd.calibrate` on the validation videos, its notes logged as warnings."""
    calibration = calibrate(labels, log_odds, target_false_positive_rate)
    for note in calibration.pop("notes"):
        logger.warning(f"Calibration: {note}")
    return calibration


def describe_calibration(calibration: dict) -> str:
    text = (
        f"Calibration on {calibration['real_videos']} real + {calibration['fake_videos']} fake validation videos: "
        f"temperature {calibration['temperature']:.3f}, ECE {calibration['ece_before']:.4f} -> "
        f"{calibration['ece_after']:.4f}"
    )
    if "threshold" in calibration:
        text += (
            f"; threshold {calibration['threshold']:.4f} at a target false-positive rate of "
            f"{calibration['target_false_positive_rate']:g} (validation: FPR {calibration['false_positive_rate']:.3f}, "
            f"TPR {calibration['true_positive_rate']:.3f})"
        )
    if "eer_threshold" in calibration:
        text += f"; EER threshold {calibration['eer_threshold']:.4f}"
    return text
