"""Scoring videos through the pipeline's pieces (`VideoScorer`), and the precision it runs in: bf16 where the CPU or GPU
computes it natively, fp32 elsewhere, int8 on request."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForVideoClassification, AutoVideoProcessor

from conftest import numbered_frames, write_video
from dfd.explaining_dfd import VideoExplainer
from dfd.inputs_dfd import Limits
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.results_dfd import VideoError, VideoPrediction
from dfd.scoring_dfd import VideoScorer, cpu_has_bf16, default_dtype, quantize_linear_layers
from dfd.settings_dfd import DTYPE as DTYPE_VARIABLE


CPU = torch.device("cpu")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags as Linux lists them, None elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return set(next(line for line in text.splitlines() if line.startswith("flags")).split(":")[1].split())


@pytest.fixture
def auto_precision(monkeypatch):
    """The rule without the override that conftest sets for the other tests."""
    monkeypatch.delenv(DTYPE_VARIABLE)
    return monkeypatch


def answer(monkeypatch, avx512_bf16: bool, amx: bool):
    """torch's CPU probes answer as a CPU with (or without) those units would."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


def test_the_probe_agrees_with_the_cpus_own_flags():
    flags = cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    assert cpu_has_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)


def test_auto_is_bf16_on_cpus_with_bf16_units_and_fp32_without(auto_precision):
    answer(auto_precision, avx512_bf16=False, amx=False)
    assert default_dtype(CPU) == torch.float32
    answer(auto_precision, avx512_bf16=True, amx=False)
    assert default_dtype(CPU) == torch.bfloat16
    answer(auto_precision, avx512_bf16=False, amx=True)
    assert default_dtype(CPU) == torch.bfloat16
    assert default_dtype(torch.device("meta")) == torch.float32  # neither a CPU nor a GPU


def test_auto_is_fp32_when_torch_has_no_probe(auto_precision):
    auto_precision.delattr(torch.cpu, "_is_avx512_bf16_supported")
    auto_precision.delattr(torch.cpu, "_is_amx_tile_supported")
    assert not cpu_has_bf16()
    assert default_dtype(CPU) == torch.float32


def test_the_environment_overrides_the_rule_and_a_bad_value_is_named(auto_precision):
    answer(auto_precision, avx512_bf16=True, amx=True)
    settings = [("fp32", torch.float32), ("int8", torch.qint8), (" bf16 ", torch.bfloat16), ("", torch.bfloat16)]
    for name, dtype in settings:
        auto_precision.setenv(DTYPE_VARIABLE, name)
        assert default_dtype(CPU) == dtype
    auto_precision.setenv(DTYPE_VARIABLE, "fp16")
    with pytest.raises(ValueError, match="DFD_DTYPE='fp16' is not valid"):
        default_dtype(CPU)


def test_the_suite_runs_fp32():
    assert default_dtype(CPU) == torch.float32


@pytest.fixture(scope="module")
def video_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision_videos")
    return [
        str(write_video(folder / "dark.mp4", numbered_frames(30)[:15], fps=10)),  # one window only: 15 frames
        str(write_video(folder / "ramp.mp4", numbered_frames(40, 48, 80), fps=10)),
    ]


def scorer(tiny_detector_dir, dtype) -> VideoScorer:
    model = AutoModelForVideoClassification.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    return VideoScorer(model, processor, CPU, dtype)


def fake_probabilities(scorer: VideoScorer, paths) -> list[float]:
    return [window.fake_probability for result in scorer.predict(paths) for window in result.windows]


def test_int8_and_bf16_score_like_fp32(tiny_detector_dir, video_paths):
    reference = fake_probabilities(scorer(tiny_detector_dir, torch.float32), video_paths)
    quantized = scorer(tiny_detector_dir, torch.qint8)
    assert not any(type(module) is torch.nn.Linear for module in quantized.model.modules())
    assert fake_probabilities(quantized, video_paths) == pytest.approx(reference, abs=0.05)
    assert fake_probabilities(scorer(tiny_detector_dir, torch.bfloat16), video_paths) == pytest.approx(
        reference, abs=0.05
    )


def test_a_frozen_prefix_is_read_from_its_parameters_not_a_layers_attributes(tiny_clip_dir):
    model = DFDForVideoClassification.from_clip(tiny_clip_dir, image_size=32, adapter_layers=[1]).eval()
    encoder = model.base_model.encoder
    assert encoder.frozen_prefix_length() == 1  # from_clip freezes the backbone
    encoder.layers[0].mlp.fc2.bias.requires_grad_(True)
    assert encoder.frozen_prefix_length() == 0
    encoder.layers[0].mlp.fc2.bias.requires_grad_(False)

    pixel_values = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(pixel_values=pixel_values).logits
    # A quantized linear layer's `weight` is a method: the rule reads parameters, and a quantized block has none.
    quantize_linear_layers(model)
    assert callable(encoder.layers[0].self_attn.q_proj.weight)
    assert encoder.frozen_prefix_length() == 1
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixel_values).logits, reference, atol=0.05, rtol=0)


def test_int8_is_refused_on_a_gpu_and_for_gradient_explanations(tiny_detector_dir, video_paths):
    model = AutoModelForVideoClassification.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    with pytest.raises(ValueError, match="int8 .* runs on the CPU only, not on cuda"):
        VideoScorer(model, processor, "cuda", torch.qint8)
    with pytest.raises(ValueError, match="integrated_gradients needs gradients, which int8 layers do not pass"):
        VideoExplainer(scorer(tiny_detector_dir, torch.qint8))


def test_predict_dtype_int8_scores_real_videos_end_to_end(tiny_detector_dir, video_paths, tiny_detector_scores):
    command = [sys.executable, "-m", "dfd.tools.cli", "predict", *video_paths, "--model", str(tiny_detector_dir)]
    result = subprocess.run(
        [*command, "--dtype", "int8", "--device", "cpu", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr  # torch.ao's deprecation warnings stay out of the user's way
    records = json.loads(result.stdout)
    assert [record["path"] for record in records] == video_paths
    reference = [scores["fake"] for scores in tiny_detector_scores(video_paths)]
    assert [record["fake_score"] for record in records] == pytest.approx(reference, abs=0.05)

    maps = Path(video_paths[0]).parent / "maps"
    result = subprocess.run(
        [*command, "--dtype", "int8", "--explain", maps], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert "--explain needs gradients, which int8 layers do not pass" in result.stderr


def test_a_bad_video_is_its_one_line_error_and_the_others_are_scored(tiny_detector_dir, video_paths, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video" * 100)
    results = list(scorer(tiny_detector_dir, torch.float32).predict([video_paths[0], str(broken), video_paths[1]]))
    assert [type(result) for result in results] == [VideoPrediction, VideoError, VideoPrediction]
    assert results[1].path == str(broken) and results[1].reason.startswith("not a video FFmpeg can read")
    assert results[1].to_dict() == {"path": str(broken), "error": results[1].reason}


def test_the_scorer_answers_as_the_pipeline_whatever_the_batch(tiny_detector_dir, video_paths):
    """One video's windows may span forward batches and share them with the next video's."""
    from transformers import pipeline

    classifier = pipeline("video-classification", model=str(tiny_detector_dir), trust_remote_code=True)
    expected = [entries[0] for entries in classifier(video_paths, windows=2)]
    for batch_size in (1, 3, 8):
        one = scorer(tiny_detector_dir, torch.float32)
        one.batch_size = batch_size
        records = [prediction.to_dict() for prediction in one.predict(video_paths, windows=2)]
        for record, entry in zip(records, expected):
            assert record["label"] == entry["label"] and len(record["windows"]) == len(entry["windows"])
            assert record["fake_score"] == pytest.approx(entry["fake_score"], abs=1e-6)


def test_kept_pixel_values_are_the_windows_the_model_saw(tiny_detector_dir, video_paths):
    one = scorer(tiny_detector_dir, torch.float32)
    (plain,) = one.predict(video_paths[1:], windows=2)
    (kept,) = one.predict(video_paths[1:], windows=2, keep_pixel_values=True)
    assert plain.pixel_values is None and "pixel_values" not in kept.to_dict()
    expected = one.processor(video_paths[1], windows=2, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(kept.pixel_values, expected, rtol=0, atol=0)


FORMAT_REFUSED = (
    "not a self-contained video file: playlists, concat lists, image sequences and other formats that can name "
    "other files or URLs are refused"
)


def test_a_failing_video_becomes_its_error_and_the_batch_goes_on(tmp_path, tiny_detector_dir, monkeypatch):
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    model = AutoModelForVideoClassification.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    good = write_video(tmp_path / "good.mp4", numbered_frames(30))
    # One keyframe, 600 frames: every frame up to the last wanted one must be decoded.
    long = write_video(tmp_path / "long.mp4", numbered_frames(600, 32, 32), fps=100, gop=10_000)
    listing = tmp_path / "list.mp4"
    listing.write_text(f"ffconcat version 1.0\nfile '{good}'\n")
    large = write_video(tmp_path / "large.mp4", numbered_frames(30, 128, 128))  # over the pixel limit set below
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", str(64 * 64))
    scorer = VideoScorer(model, processor, limits=Limits(max_decoded_frames=500))
    good_alone = list(scorer.predict([good]))[0]
    results = list(scorer.predict([good, long, good, listing, good, large, good], windows=1))
    kinds = [VideoPrediction, VideoError] * 3 + [VideoPrediction]
    assert [type(result) for result in results] == kinds
    assert str(results[1]) == (
        f"{long}: the requested frames take decoding 600 frames, above the 500 frame limit (DFD_MAX_DECODED_FRAMES)"
    )
    assert str(results[3]) == f"{listing}: {FORMAT_REFUSED}"
    assert str(results[5]) == (
        f"{large}: frames of 128x128 (16,384 pixels) are above the limit of 4,096 pixels per frame "
        "(DFD_MAX_FRAME_PIXELS)"
    )
    for result in results[::2]:
        assert result.fake_score == pytest.approx(good_alone.fake_score, abs=1e-6)
