"""
`dfd demo`: the synthetic videos (fakes differ from reals only over time, checked on decoded mp4 files) and the fast
demo run end to end as users run it (a subprocess), then its export loaded through the pipeline.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import ks_2samp
from transformers import pipeline

from conftest import REPO_ROOT, sampled_frames
from dfd.tools.demo import FAST, MARKER_NAME, MODELS, DemoError, prepare_output_dir
from dfd.tools.synthetic_videos import TextureSettings, frame_statistics, write_dataset, write_video


SETTINGS = TextureSettings()


def decoded_clips(folder):
    """Every mp4 in folder, all frames decoded: (N, T, H, W, 3) uint8."""
    return np.stack([sampled_frames(path, SETTINGS.num_frames) for path in sorted(folder.glob("*.mp4"))])


def spectral_centroid(frames):
    """Power-weighted mean spatial frequency (cycles per frame, DC left out) of each grey frame (N, H, W)."""
    grey = frames.astype(np.float64).mean(axis=-1)
    power = np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True))) ** 2
    frequencies = np.fft.fftfreq(grey.shape[1], d=1 / grey.shape[1])
    radius = np.hypot(*np.meshgrid(frequencies, frequencies, indexing="ij"))
    return (power * radius).sum(axis=(1, 2)) / power.sum(axis=(1, 2))


@pytest.fixture(scope="module")
def synthetic_clips(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("synthetic"), videos_per_class=120, seed=7, settings=SETTINGS)
    return {name: decoded_clips(root / name) for name in ("real", "fake")}


def test_fakes_match_reals_frame_by_frame(synthetic_clips):
    real, fake = synthetic_clips["real"], synthetic_clips["fake"]
    assert real.shape == fake.shape == (120, SETTINGS.num_frames, SETTINGS.size, SETTINGS.size, 3)
    real_stats, fake_stats = frame_statistics(real), frame_statistics(fake)
    assert fake_stats["brightness"] == pytest.approx(real_stats["brightness"], rel=0.02)
    assert fake_stats["contrast"] == pytest.approx(real_stats["contrast"], rel=0.05)
    # One frame per video (frames of one video are not independent samples): brightness, contrast and spectrum are
    # drawn from the same distribution in both classes, for the first frame as for a later one.
    for index in (0, SETTINGS.num_frames // 2, SETTINGS.num_frames - 1):
        real_frames, fake_frames = real[:, index], fake[:, index]
        for statistic in (
            lambda frames: frames.mean(axis=(1, 2, 3)),
            lambda frames: frames.std(axis=(1, 2, 3)),
            spectral_centroid,
        ):
            assert ks_2samp(statistic(real_frames), statistic(fake_frames)).pvalue > 0.01
    # Smooth textures: most of the power lies below 3 cycles per frame, as drawn (0.5 to 2 cycles).
    assert np.median(spectral_centroid(real[:, 0])) < 3


def test_fakes_change_much_more_from_frame_to_frame(synthetic_clips):
    change = {name: frame_statistics(clips)["frame_to_frame_change"] for name, clips in synthetic_clips.items()}
    assert change["fake"] > 8 * change["real"]
    # Per video too, not only on average: the least jumpy fake changes more than the most jumpy real.
    per_video = {
        name: np.abs(np.diff(clips.astype(np.float32), axis=1)).mean(axis=(1, 2, 3, 4))
        for name, clips in synthetic_clips.items()
    }
    assert per_video["fake"].min() > per_video["real"].max()


@pytest.mark.skipif(os.geteuid() != 0, reason="SVT-AV1 raises the scheduling of root's threads only")
def test_writing_av1_leaves_the_callers_scheduling_alone(tmp_path):
    """SVT-AV1 turns root's encoding thread into SCHED_FIFO 99; left so, the test run hung in a spinning server."""
    before = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority
    write_video(tmp_path / "av1.mp4", np.zeros((8, 64, 64, 3), np.uint8), codec="libsvtav1")
    assert (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority) == before


def test_output_dir_is_cleared_only_when_the_demo_made_it(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DemoError, match="not made by `dfd demo`"):
        prepare_output_dir(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"

    earlier = tmp_path / "demo"
    (earlier / "data" / "train").mkdir(parents=True)
    (earlier / "results.json").write_text("{}")
    (earlier / MARKER_NAME).touch()
    (earlier / "notes.txt").write_text("keep me")
    prepare_output_dir(earlier)
    assert sorted(path.name for path in earlier.iterdir()) == [MARKER_NAME, "logs", "notes.txt"]


@pytest.fixture(scope="module")
def fast_demo(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("demo") / "demo_output"
    result = subprocess.run(
        [sys.executable, "-m", "dfd.tools.demo", "--fast", "--output-dir", str(output_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir, result.stdout


def test_fast_demo_prints_both_aucs_with_the_adapters_ahead(fast_demo):
    output_dir, stdout = fast_demo
    printed = {
        name: float(re.search(rf"^{re.escape(title)}\s+([\d.]+)", stdout, re.MULTILINE).group(1))
        for name, title in MODELS.items()
    }
    assert printed["adapters"] >= FAST.min_adapter_auc, stdout[-2000:]
    assert printed["frame_only"] <= FAST.max_frame_only_auc, stdout[-2000:]
    assert "PASS" in stdout

    results = json.loads((output_dir / "results.json").read_text())
    assert results["passed"]
    assert {name: round(values["roc_auc"], 3) for name, values in results["models"].items()} == printed
    # Only the adapter model trains anything beyond the linear head.
    head = results["models"]["frame_only"]["trainable_parameters"]
    assert head == 2 * FAST.clip["hidden_size"] + 2 and results["models"]["adapters"]["trainable_parameters"] > head
    assert len(results["predictions"]) == 2 * results["settings"]["videos_per_class"]["test"]
    for split in ("train", "validation", "test"):
        for name in ("real", "fake"):
            assert list((output_dir / "data" / split / name).glob("*.mp4")), (split, name)


def test_fast_demo_export_loads_and_tells_new_fakes_apart(fast_demo, tmp_path):
    output_dir, _ = fast_demo
    export_dir = output_dir / "runs" / "adapters" / "model"
    for name in ("config.json", "model.safetensors", "modeling_dfd.py", "video_preprocessor_config.json", "README.md"):
        assert (export_dir / name).is_file(), name

    classifier = pipeline("video-classification", model=str(export_dir), trust_remote_code=True)
    new_videos = write_dataset(tmp_path, videos_per_class=4, seed=1234)  # never seen in training or evaluation
    fake_scores = {
        name: [classifier(str(path))[0]["fake_score"] for path in sorted((new_videos / name).glob("*.mp4"))]
        for name in ("real", "fake")
    }
    assert min(fake_scores["fake"]) > max(fake_scores["real"]), fake_scores
