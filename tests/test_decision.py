"""
The decision rule stored with a model (inference.DecisionRule), windows at the training density, and the verdict on
long videos: a tiny detector trained on short synthetic clips by train_accelerate.py (the demo's recipe), then a long
real video and a long video with a short fake stretch made the same way, scored with default settings by `dfd
predict` and by pipeline("video-classification").
"""

import dataclasses
import json
import statistics
import subprocess
import sys

import numpy as np
import pytest
from transformers import pipeline

from dfd.inference import DecisionRule, window_frame_indices, windows_at_training_density
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
    assert real["score"] < real["threshold"]

    assert spliced["label"] == "fake" and spliced["score"] >= spliced["threshold"]
    flagged = spliced["flagged_windows"]
    assert any(overlaps(window, *FAKE_STRETCH) for window in flagged)
    # Only windows at the fake stretch are flagged (a window reaching into it from next door may be).
    assert all(overlaps(window, FAKE_STRETCH[0] - 2, FAKE_STRETCH[1] + 2) for window in flagged)
    # The mean over the windows, reported too, would have missed it.
    assert spliced["mean_fake_probability"] < spliced["threshold"] <= spliced["score"]
    assert (tmp_path / "plots" / "spliced_30s.mp4.png").read_bytes().startswith(b"\x89PNG")


def test_pipeline_applies_the_same_windows_and_rule(trained_on_short_clips, long_videos):
    export, _ = trained_on_short_clips
    classifier = pipeline("video-classification", model=str(export), trust_remote_code=True)
    real, spliced = classifier([str(long_videos["real"]), str(long_videos["spliced"])])
    assert real[0]["label"] == "real" and real[0]["flagged_windows"] == []
    assert spliced[0]["label"] == "fake"
    assert any(overlaps(window, *FAKE_STRETCH) for window in spliced[0]["flagged_windows"])
    assert spliced[0]["score"] >= spliced[0]["threshold"]
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
    fetcher's test switch allows the test's own server; a bad input is one clear error.
    """
    import functools
    import http.server
    import shutil
    import sys
    import threading

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
        # The export's own copy of the fetcher, which the pipeline loaded with its code.
        fetching = sys.modules[type(classifier).__module__.rpartition(".")[0] + ".fetching_dfd"]
        monkeypatch.setattr(fetching, "TEST_ALLOWED_ADDRESSES", frozenset({"127.0.0.1"}))
        by_url = classifier(url)
        assert by_url == classifier(str(long_videos["spliced"]))
        (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
        with pytest.raises(ValueError, match=r"broken.mp4: "):
            classifier(str(tmp_path / "broken.mp4"))
    finally:
        server.shutdown()
        server.server_close()


def test_a_timestamp_never_repeats_within_a_window(tiny_detector_dir, make_video):
    """More windows x frames than the video has frames: each window lists its distinct frame times, once each."""
    from conftest import numbered_frames
    from dfd.inference import VideoScorer
    from dfd.tools.loading import load_detector

    model, processor = load_detector(str(tiny_detector_dir))
    video = make_video("short.mp4", numbered_frames(20), fps=10)
    (prediction,) = VideoScorer(model, processor).predict([str(video)], num_windows=4)
    for index, window in enumerate(prediction.windows):  # 5 frames each, sampled 12 times
        assert window.timestamps == [round(0.1 * frame, 6) for frame in range(5 * index, 5 * index + 5)]
