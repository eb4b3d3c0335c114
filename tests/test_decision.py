"""
The decision rule stored with a model (decision_dfd.DecisionRule) and the calibration training fits for it, and the
verdict on long videos: a tiny detector trained on short synthetic clips by train_accelerate.py (the demo's recipe),
then a long real video and a long video with a short fake stretch made the same way, scored with default settings by
`dfd predict` and by pipeline("video-classification").
"""

import dataclasses
import json
import statistics
import subprocess
import sys

import numpy as np
import pytest
from transformers import pipeline

from dfd.decision_dfd import DecisionRule, calibrate, eer_threshold, held_out_temperature_gain, sigmoid
from dfd.processing_dfd import window_frame_indices, windows_at_training_density
from dfd.tools.demo import FAST, build_tiny_clip, script_environment, synthesize_videos, train_command
from dfd.tools.synthetic_videos import TextureSettings, texture_clip, write_video


SETTINGS = dataclasses.replace(FAST, videos_per_class={"train": 48, "validation": 12, "test": 1})
LONG_SECONDS = 30
FAKE_STRETCH = (10, 16)  # seconds


@pytest.fixture(scope="session")
def trained_on_short_clips(tmp_path_factory):
    """The demo's adapter detector, trained once per session on 2 s clips: (export folder, training metrics)."""
    root = tmp_path_factory.mktemp("short_clips")
    (root / "logs").mkdir()
    synthesize_videos(root / "data", SETTINGS, seed=0)
    build_tiny_clip(root / "tiny_clip", SETTINGS, seed=0)
    command = train_command("adapters", root, SETTINGS, seed=0)
    result = subprocess.run(command, capture_output=True, text=True, env=script_environment(), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((root / "runs" / "adapters" / "model" / "metrics.json").read_text())
    return root / "runs" / "adapters" / "model", metrics


@pytest.fixture(scope="session")
def long_videos(tmp_path_factory):
    """A 30 s real video and a 30 s video that is real but for a fake stretch at 10-16 s, the demo's textures."""
    folder = tmp_path_factory.mktemp("long_videos")
    settings = TextureSettings(size=SETTINGS.video_size, num_frames=LONG_SECONDS * SETTINGS.fps)
    stretch = tuple(second * SETTINGS.fps for second in FAKE_STRETCH)
    real = texture_clip(np.random.default_rng(1), fake=False, settings=settings)
    spliced = texture_clip(np.random.default_rng(2), fake=False, settings=settings, fake_frames=stretch)
    return {
        "real": write_video(folder / "real_30s.mp4", real, fps=SETTINGS.fps),
        "spliced": write_video(folder / "spliced_30s.mp4", spliced, fps=SETTINGS.fps),
    }


def overlaps(window, start, end):
    return window["start"] < end and window["end"] >= start


def test_dfd_predict_finds_a_short_fake_stretch_in_a_long_video(trained_on_short_clips, long_videos, tmp_path):
    export, _ = trained_on_short_clips
    command = [sys.executable, "-m", "dfd.tools.cli", "predict", str(long_videos["real"]), str(long_videos["spliced"])]
    result = subprocess.run(
        [*command, "--model", str(export), "--format", "json", "--plot", str(tmp_path / "plots")],
        capture_output=True,
        text=True,
        timeout=600,
        env=script_environment(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    real, spliced = json.loads(result.stdout)

    for record in (real, spliced):
        # Windows of the training duration (2 s) tile the 30 s: 15 windows, the training's frame spacing.
        assert len(record["windows"]) == LONG_SECONDS // 2
        assert record["rule"] == "top window"
        assert record["threshold"] >= json.loads((export / "config.json").read_text())["decision_threshold"]
        for window in record["windows"]:
            assert len(set(window["timestamps"])) == len(window["timestamps"])
    assert real["label"] == "real" and real["flagged_windows"] == []
    assert real["fake_score"] < real["threshold"] and real["score"] == pytest.approx(1 - real["fake_score"])

    assert spliced["label"] == "fake" and spliced["fake_score"] >= spliced["threshold"]
    assert spliced["score"] == spliced["fake_score"]
    flagged = spliced["flagged_windows"]
    assert any(overlaps(window, *FAKE_STRETCH) for window in flagged)
    # Only windows at the fake stretch are flagged (a window reaching into it from next door may be).
    assert all(overlaps(window, FAKE_STRETCH[0] - 2, FAKE_STRETCH[1] + 2) for window in flagged)
    # The mean over the windows, reported too, would have missed it.
    assert spliced["mean_fake_probability"] < spliced["threshold"] <= spliced["fake_score"]
    assert (tmp_path / "plots" / "spliced_30s.mp4.png").read_bytes().startswith(b"\x89PNG")


def test_pipeline_applies_the_same_windows_and_rule(trained_on_short_clips, long_videos):
    export, _ = trained_on_short_clips
    classifier = pipeline("video-classification", model=str(export), trust_remote_code=True)
    real, spliced = classifier([str(long_videos["real"]), str(long_videos["spliced"])])
    assert real[0]["label"] == "real" and real[0]["flagged_windows"] == []
    assert spliced[0]["label"] == "fake"
    assert any(overlaps(window, *FAKE_STRETCH) for window in spliced[0]["flagged_windows"])
    assert spliced[0]["fake_score"] >= spliced[0]["threshold"]
    assert sum(entry["score"] for entry in spliced) == pytest.approx(1.0)
    # The one-window override is transformers' whole-video sampling: frames 2 s apart, which training never showed.
    (one_window, _) = classifier(str(long_videos["real"]), windows=1)
    stored = json.loads((export / "config.json").read_text())["decision_threshold"]
    assert one_window["threshold"] == pytest.approx(stored)


@pytest.mark.parametrize("num_windows", [1, 4, 15, 32])
def test_long_real_videos_are_not_flagged_more_often_than_short_ones(num_windows):
    """
    Real videos of n windows whose windows' log-odds follow the real fit (independent windows, the case the
    correction is exact for): the rule flags them at the target rate whatever n; one fixed threshold would flag
    almost every long one.
    """
    rule = DecisionRule(threshold=0.2, real_log_odds={"mean": -3.0, "std": 1.0})
    rng = np.random.default_rng(num_windows)
    log_odds = rng.normal(-3.0, 1.0, size=(20_000, num_windows))
    flagged = np.array([rule.decide(1 / (1 + np.exp(-video))).fake for video in log_odds])
    one_window_rate = 1 - statistics.NormalDist(-3.0, 1.0).cdf(np.log(0.2 / 0.8))  # a real window's chance
    assert flagged.mean() == pytest.approx(one_window_rate, abs=0.01)
    fixed = (1 / (1 + np.exp(-log_odds)) >= rule.threshold).any(axis=1).mean()
    if num_windows >= 15:
        assert fixed > 5 * one_window_rate


def test_decision_rule_from_a_config_without_calibration_is_todays_verdict():
    class OldConfig:  # a config.json from before the decision fields: attributes missing
        pass

    rule = DecisionRule.from_config(OldConfig())
    assert (rule.threshold, rule.top_k, rule.real_log_odds) == (0.5, 1, None)
    assert rule.decide([0.7]).fake and not rule.decide([0.3]).fake
    assert rule.threshold_for(10) == 0.5
    decision = rule.decide([0.2, 0.6, 0.4, 0.9])
    assert decision.fake and decision.score == 0.9 and decision.flagged == [1, 3]
    assert DecisionRule(top_k=2).decide([0.2, 0.6, 0.4, 0.9]).score == pytest.approx(0.75)
    with pytest.raises(ValueError, match="threshold must lie in"):
        DecisionRule.from_config(OldConfig(), threshold=1.5)


def test_windows_at_the_training_density():
    assert windows_at_training_density(30.0, 2.0) == 15
    assert windows_at_training_density(3.0, 2.0) == 1  # up to 1.5 windows: the card's sampling of the whole video
    assert windows_at_training_density(3.2, 2.0) == 2
    assert windows_at_training_density(30.0, None) == 1  # a model without window_duration: as before
    assert windows_at_training_density(None, 2.0) == 1
    # Each window samples its own stretch of the video; windows never share frames while the video has enough.
    indices = window_frame_indices(240, 8, 15)
    assert (np.diff(indices, axis=1) > 0).all() and (indices[1:, 0] > indices[:-1, -1]).all()


def test_pipeline_reads_urls_and_names_a_bad_video(trained_on_short_clips, long_videos, tmp_path, monkeypatch):
    """
    A URL is downloaded through the one fetcher and scored as the file is: refused on 127.0.0.1, fetched once the
    test patches the fetcher to let its own server through; a bad input is one clear error.
    """
    import functools
    import http.server
    import shutil
    import sys
    import threading

    from conftest import allow_loopback

    export, _ = trained_on_short_clips
    shutil.copy(long_videos["spliced"], tmp_path / "spliced.mp4")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        classifier = pipeline("video-classification", model=str(export), trust_remote_code=True)
        url = f"http://127.0.0.1:{server.server_address[1]}/spliced.mp4"
        with pytest.raises(ValueError, match="127.0.0.1 is a loopback address"):
            classifier(url)
        # The export's own copy of the fetcher, which the pipeline's processor loaded with its code.
        fetching = sys.modules[type(classifier.video_processor).__module__.rpartition(".")[0] + ".fetching_dfd"]
        allow_loopback(fetching, monkeypatch)
        by_url = classifier(url)
        assert by_url == classifier(str(long_videos["spliced"]))
        (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
        with pytest.raises(ValueError, match=r"broken.mp4: "):
            classifier(str(tmp_path / "broken.mp4"))
    finally:
        server.shutdown()
        server.server_close()


def test_a_frame_repeated_within_a_window_is_listed_once(tiny_detector_dir, make_video):
    """A video shorter than a window repeats frames: each window lists its distinct frames and their times once."""
    from conftest import numbered_frames
    from dfd.scoring_dfd import VideoScorer
    from dfd.tools.loading import load_detector

    model, processor = load_detector(str(tiny_detector_dir))
    video = make_video("short.mp4", numbered_frames(8), fps=10)
    (prediction,) = VideoScorer(model, processor).predict([str(video)], windows=4)
    (window,) = prediction.windows  # 4 windows of 2 frames each would be frames the model never saw together
    assert prediction.notes == ["4 windows asked, 1 scored: a window needs 12 distinct frames and the video has 8"]
    assert window.frames == list(range(8))
    assert window.timestamps == [round(0.1 * frame, 6) for frame in range(8)]


def test_calibration_keeps_a_temperature_only_when_it_helps_videos_it_was_not_fitted_on():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    # Classes N(-0.5, 1) and N(0.5, 1): x itself is the true log-odds, so x is calibrated and 6x far too sure.
    x = np.where(labels == 1, rng.normal(0.5, 1, 200), rng.normal(-0.5, 1, 200))
    overconfident = calibrate(labels, 6 * x, 0.05)
    assert overconfident["temperature_kept"] and overconfident["held_out_nll_gain"] > 0
    assert overconfident["temperature"] == overconfident["fitted_temperature"] == pytest.approx(6, rel=0.2)
    assert overconfident["ece_after"] < overconfident["ece_before"]
    assert overconfident["config"]["calibration_temperature"] == overconfident["temperature"]
    calibrated = calibrate(labels, x, 0.05)  # fitting still moves the temperature, but not to held-out videos' good
    assert not calibrated["temperature_kept"] and calibrated["held_out_nll_gain"] <= 0
    assert calibrated["temperature"] == 1.0 != calibrated["fitted_temperature"]
    assert calibrated["notes"] == [
        f"temperature scaling (fitted {calibrated['fitted_temperature']:.3f}) did not lower the held-out NLL of the "
        "validation videos (cross-validated): temperature 1 is kept"
    ]
    one_class = calibrate(np.zeros(10, dtype=int), rng.normal(size=10), 0.05)
    assert one_class["temperature"] == 1.0 and "eer_threshold" not in one_class
    assert held_out_temperature_gain(np.array([0, 1, 1]), np.array([-1.0, 1.0, 2.0])) is None  # too few to hold out


def test_the_threshold_holds_the_real_validation_videos_to_the_target_rate():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], [200, 50])
    log_odds = np.where(labels == 1, rng.normal(3, 1, 250), rng.normal(-3, 1, 250))
    result = calibrate(labels, log_odds, 0.05)
    assert result["false_positive_rate"] <= 0.05
    assert result["config"]["decision_threshold"] == result["threshold"]
    assert result["real_log_odds"]["mean"] == pytest.approx((log_odds[labels == 0] / result["temperature"]).mean())
    # The equal-error threshold matches sklearn's ROC curve.
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, log_odds, drop_intermediate=False)
    crossing = int(np.argmax(fpr >= 1 - tpr))
    assert eer_threshold(labels, log_odds)["eer_threshold"] == pytest.approx(sigmoid(thresholds[crossing]))
