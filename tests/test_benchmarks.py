"""Every benchmark script runs from the command line in its quick mode and writes the JSON and tables it promises;
the GPU suite runs end to end with the tiny config, as on the GPU machine: without PyAV, 🤗 Datasets or an install of
this repository. No timing is asserted: speed goals live in benchmarks/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from conftest import REPO_ROOT, numbered_frames, write_video


BENCHMARKS = REPO_ROOT / "benchmarks"


# A sitecustomize that makes this interpreter look like the GPU image's: the packages it lacks cannot be found, and
# neither can the editable install of this repository (its finder and path hook are dropped).
GPU_IMAGE_SITECUSTOMIZE = """
import sys
from importlib.machinery import PathFinder

MISSING_ON_THE_GPU_IMAGE = {"av", "datasets", "dill", "multiprocess"}


class PathFinderWithoutMissing(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname.partition(".")[0] in MISSING_ON_THE_GPU_IMAGE:
            return None
        return super().find_spec(fullname, path, target)


def installed_editable(hook_or_finder):
    return "__editable__" in getattr(hook_or_finder, "__module__", "")


sys.meta_path[:] = [
    PathFinderWithoutMissing if finder is PathFinder else finder
    for finder in sys.meta_path
    if not installed_editable(finder)
]
sys.path_hooks[:] = [hook for hook in sys.path_hooks if not installed_editable(hook)]
sys.path[:] = [entry for entry in sys.path if "__editable__" not in entry]
sys.path_importer_cache.clear()
"""


def run_benchmark(command, tmp_path, **variables):
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
        "DFD_BENCHMARK_CACHE": str(tmp_path / "cache"),  # generated inputs stay out of the checkout
        "OMP_NUM_THREADS": "1",  # tiny tensors: threads only add waiting, worst when pytest shares the CPU
        **variables,
    }
    result = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def run_script(name, tmp_path, *arguments):
    output = tmp_path / f"{name}.json"
    stdout = run_benchmark(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--json", str(output), *arguments], tmp_path
    )
    return json.loads(output.read_text()), stdout


def keyframe_positions(path):
    """Decode-order positions of the keyframes, read from the packets alone."""
    with av.open(str(path)) as container:
        packets = [packet for packet in container.demux(video=0) if packet.size]
    return [index for index, packet in enumerate(packets) if packet.is_keyframe]


def has_b_frames(path):
    """Whether a video's packets come in an order other than presentation order, which only B-frames cause."""
    with av.open(str(path)) as container:
        pts = [packet.pts for packet in container.demux(video=0) if packet.size]
    return pts != sorted(pts)


def test_decode_benchmark_reads_identical_frames(tmp_path):
    result, stdout = run_script("bench_decode", tmp_path, "--cache-dir", str(tmp_path / "videos"))
    labels = [row["video"].split()[0] for row in result["rows"]]
    assert labels == ["(a)", "(a')", "(a'')", "(b)", "(c)", "(d)", "(e)", "(f)"]
    # This venv has none of the optional peers: each is skipped with one line saying so, load_video still runs.
    for peer in ("torchcodec exact", "torchcodec approximate", "decord", "OpenCV (seek by frame)"):
        reason = result["skipped_peers"][peer]
        assert reason.endswith("is not installed") and f"skipped {peer}: {reason}" in stdout
    codecs = {}
    for row, spec in zip(result["rows"], result["videos"]):
        # The generated inputs are what the table says: every frame written, keyframes exactly every GOP.
        assert row["total_frames"] == spec["seconds"] * spec["fps"]
        path = tmp_path / "videos" / row["file"]
        assert keyframe_positions(path) == list(range(0, row["total_frames"], spec["keyframe_interval"]))
        with av.open(str(path)) as container:
            codecs[row["video"].split()[0]] = (container.streams.video[0].codec_context.name, container.format.name)
        assert len(row["indices"]) == 12
        package, probe, load_video = row["contenders"]
        assert package["contender"] == "package" and package["ratio_min"] == 1 and package["min_s"] > 0
        # Timed apart, the package's first step: indexing the file.
        assert probe["contender"] == "package: probe_video alone" and 0 < probe["min_s"]
        assert load_video["contender"] == "load_video (pyav)"
        if row["video"].startswith("(e)"):
            # A WebM header holds no frame count, and load_video samples from the header's count.
            assert load_video["error"] == "ValueError: A video needs at least one frame, got total_frames=0."
            assert "| (e) quick stand-in" in stdout and "| error |" in stdout
            continue
        assert load_video["identical"] and load_video["min_s"] > 0
        assert load_video["ratio_min"] == pytest.approx(load_video["min_s"] / package["min_s"])
        assert load_video["ratio_median"] == pytest.approx(load_video["median_s"] / package["median_s"])
        table_row = next(line for line in stdout.splitlines() if line.startswith(f"| {row['video']} |"))
        assert table_row.startswith(f"| {row['video']} | {row['total_frames']} | package |")
        # (a'') is encoded as the ffmpeg command line does, (f) by x265: with B-frames, so packets leave
        # presentation order.
        assert has_b_frames(path) == (spec["preset"] == "medium" or spec["codec"] == "libx265")
    assert codecs["(d)"] == ("h264", "mov,mp4,m4a,3gp,3g2,mj2")
    assert codecs["(e)"] == ("vp9", "matroska,webm") and codecs["(f)"] == ("hevc", "mov,mp4,m4a,3gp,3g2,mj2")
    assert "### Goals" in stdout
    goals = {goal["goal"]: goal for goal in result["goals"]}
    assert goals["bit-identical to every peer that decodes the video"]["met"] is True
    # Only finished videos are left in the cache (written under a staging name, then renamed).
    assert sorted(path.name for path in (tmp_path / "videos").iterdir()) == sorted(
        row["file"] for row in result["rows"]
    )
    # A subset of the videos, for measuring one change quickly.
    subset, _ = run_script("bench_decode", tmp_path, "--cache-dir", str(tmp_path / "videos"), "--videos", "a2,e")
    assert [row["video"].split()[0] for row in subset["rows"]] == ["(a'')", "(e)"]


def test_faces_benchmark_compares_detectors_and_times_the_crop(tmp_path):
    result, stdout = run_script("bench_faces", tmp_path)
    default = "libfacedetection 640 (default)"
    detectors = {row["clip"]: row for row in result["detectors"]}
    assert detectors["40 px, upright"][default] == "12/12" and detectors["no face (grass)"][default] == "0/2"
    assert all(row["ms_per_frame_median"] > 0 for row in result["detector_times"])
    crops = {row["video"]: row for row in result["crops"]}
    assert crops["40 px, turned +20"]["on_face"] == "12/12"
    assert [row["face_rows"] for row in result["costs"]] == [1, 3]
    for row in result["costs"]:
        assert row["ratio"] == pytest.approx(row["decode_and_face_crops_s"] / row["decode_s"])
    assert "### Decoding 12 frames, with and without the face crops" in stdout


def test_inference_benchmark_compares_the_detector_with_bare_clip(tmp_path):
    result, stdout = run_script("bench_inference", tmp_path)
    variants = {(row["variant"], row["batch"]) for row in result["rows"]}
    assert variants == {("clip (floor)", 1), ("dfd", 1), ("clip (floor)", 2), ("dfd", 2)}
    assert all(row["videos_per_s"] > 0 and row["time_vs_eager_clip"] > 0 for row in result["rows"])
    assert [row["layout"] for row in result["adapter_layout"]] == [
        "channels-last view (used)",
        "contiguous copy + conv",
    ]
    assert result["goals"][0]["goal"] == "adapter cost over bare CLIP, eager (%)"
    assert result["machine"]["device"] == "cpu" and result["precisions"] == ["fp32"]
    assert result["compiled_graphs"] == 0
    assert "| tiny | fp32 | dfd | 2 | 12 |" in stdout
    # The CPU precisions, side by side against fp32 (what `inference.default_dtype` chooses from).
    precisions = {row["variant"]: row for row in result["cpu_precisions"]}
    assert list(precisions) == [
        "fp32 eager",
        "bf16 weights and input",
        "bf16 autocast, fp32 weights (--dtype bf16)",
        "int8 dynamic nn.Linear (--dtype int8)",
    ]
    assert precisions["fp32 eager"]["time_vs_fp32"] == 1 and precisions["fp32 eager"]["max_logit_diff"] == 0
    for row in precisions.values():
        assert row["latency_ms"] > 0 and 0 <= row["relative_logit_diff"] < 0.1
    assert sum(row["max_logit_diff"] > 0 for row in precisions.values()) == 3  # every other precision rounds
    assert "| tiny | 12 | int8 dynamic nn.Linear (--dtype int8) |" in stdout


def test_data_benchmark_reads_the_training_frame_cache(tmp_path):
    result, stdout = run_script("bench_data", tmp_path, "--cache-dir", str(tmp_path / "data"), "--workers", "0,1")
    assert [(row["workers"], row["augment_on"], row["robust"]) for row in result["rows"]] == [
        (0, "-", False),
        (0, "cpu", False),
        (0, "-", True),
        (1, "-", False),
        (1, "cpu", False),
        (1, "-", True),
    ]
    assert all(row["videos_per_s"] > 0 and row["ms_per_batch"] > 0 for row in result["rows"])
    assert any((tmp_path / "data" / "frame_cache").iterdir())
    assert result["goals"][0]["goal"] == "videos/s fed with <= 16 workers"


def test_frame_cache_benchmark_fills_with_one_and_two_processes(tmp_path):
    result, stdout = run_script("bench_frame_cache", tmp_path, "--cache-dir", str(tmp_path / "fill"))
    assert [row["processes"] for row in result["rows"]] == [1, 2]
    assert [row["decoded_per_process"] for row in result["rows"]] == ["4", "2, 2"]
    assert all(row["videos_per_s_per_process"] > 0 and row["cache_mb_per_video"] > 0 for row in result["rows"])
    assert "Frame cache fill, 4 videos each" in stdout


def gpu_image_environment(tmp_path) -> dict:
    """PYTHONPATH holding a sitecustomize that hides av, datasets and the installed `dfd`; checked to do so."""
    site = tmp_path / "gpu_image_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GPU_IMAGE_SITECUSTOMIZE)
    variables = {"PYTHONPATH": str(site), "PYTHON": sys.executable}
    hidden = ("dfd", "av", "datasets")
    probe = f"from importlib.util import find_spec; print([find_spec(name) is None for name in {hidden}])"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={**os.environ, **variables}, capture_output=True, text=True
    )
    assert result.stdout.strip() == str([True] * len(hidden)), result.stdout + result.stderr
    return variables


def test_gpu_suite_runs_with_the_tiny_config_without_av_datasets_or_an_install(tmp_path):
    output = tmp_path / "suite" / "gpu_suite.json"
    command = ["bash", str(BENCHMARKS / "gpu_suite.sh"), str(output), "--tiny"]
    stdout = run_benchmark(command, tmp_path, **gpu_image_environment(tmp_path))
    suite = json.loads(output.read_text())
    machine = suite["machine"]
    # The package came from the checkout, through gpu_suite.sh's link, not from the (hidden) install.
    assert Path(machine["dfd_package"]).name == "dfd" and machine["dfd_package"] != str(REPO_ROOT)
    assert machine["av"] is None and machine["datasets"] is None and machine["date"] and machine["torch"]
    assert suite["tiny"] is True and list(suite["parts"]) == ["inference", "train_step", "data"]
    skip_reason = "needs av, datasets, not installed here (carry wheels to run this part)"
    assert suite["parts"]["data"]["skipped"] == skip_reason and f"skipped: {skip_reason}" in stdout
    for name in ("inference", "train_step"):
        assert "error" not in suite["parts"][name], (name, suite["parts"][name]["error"])
        assert suite["parts"][name]["rows"] and suite["parts"][name]["wall_s"] > 0

    inference = suite["parts"]["inference"]
    assert inference["precisions"] == ["bf16", "autocast"]
    compiled = [row for row in inference["rows"] if "output_diff_vs_eager" in row]
    assert sorted((row["precision"], row["variant"], row["batch"]) for row in compiled) == sorted(
        (precision, variant, batch)
        for precision in ("bf16", "autocast")
        for variant in ("clip, compiled blocks", "dfd, compile_blocks()")
        for batch in (1, 2)
    )
    # Inductor compiled every block of a model into one graph per precision and batch size, and kept its outputs.
    assert inference["compiled_graphs"] == 8
    assert all(row["videos_per_s"] > 0 and row["output_diff_vs_eager"] <= 0.05 for row in compiled)
    goals = {goal["goal"]: goal for goal in inference["goals"]}
    assert goals["latency, batch 1 (ms)"]["measured"] == next(
        row["latency_ms"]
        for row in compiled
        if (row["precision"], row["variant"], row["batch"]) == ("bf16", "dfd, compile_blocks()", 1)
    )
    assert goals["compiled vs eager outputs, max |diff| / max |eager|"]["met"] is True

    # The training step, as train_accelerate.py runs it (bf16 frozen weights, autocast): checkpointing and adapters in
    # the last blocks only keep fewer activations for the backward pass.
    train_step = suite["parts"]["train_step"]
    assert train_step["precision"] == "bf16"
    rows = {row["variant"]: row for row in train_step["rows"]}
    no_checkpointing = rows["adapters in all 4 blocks"]
    every_block = rows["adapters in all 4 blocks, checkpoint all"]
    some_blocks = rows["adapters in all 4 blocks, checkpoint first 3"]
    assert (every_block["checkpointed_blocks"], some_blocks["checkpointed_blocks"]) == (4, 3)
    assert (
        every_block["saved_activations_gb"]
        < some_blocks["saved_activations_gb"]
        < no_checkpointing["saved_activations_gb"]
    )
    # Blocks before the first adapter run without autograd: fewer adapters, less memory kept for backward.
    last_two = rows["adapters in last 2 of 4 blocks"]
    assert rows["adapters in last 1 of 4 blocks"]["saved_activations_gb"] < last_two["saved_activations_gb"]
    assert last_two["saved_activations_gb"] < no_checkpointing["saved_activations_gb"]
    assert all(row["step_s"] > 0 for row in train_step["rows"])


def test_explain_benchmark_measures_every_method_and_the_cost(tmp_path):
    result, stdout = run_script("bench_explain", tmp_path)
    assert [row["method"] for row in result["rows"]] == [
        "integrated_gradients",
        "gradient_x_input",
        "attention_rollout",
        "random",
    ]
    assert all(0 <= row["region_share"] <= 1 and row["uniform_share"] == 4 / 36 for row in result["rows"])
    assert result["timing"]["explain_vs_predict"] > 0 and result["timing"]["videos"] == 4
    assert "### Faithfulness on 4 synthetic fakes" in stdout


def test_frozen_prefix_benchmark_times_a_git_revision_beside_the_checkout(tmp_path):
    result, stdout = run_script("bench_frozen_prefix", tmp_path, "--baseline", "HEAD")
    assert [row["variant"] for row in result["rows"]] == ["current", "input needs grad", "baseline"]
    assert all(row["step_ms"] > 0 for row in result["rows"])
    assert result["goals"][0]["goal"] == "tiny: step time saved by the shortcut (x)"
    assert "| tiny | blocks 2-3 | 1x2 | baseline |" in stdout


def test_cpu_precision_benchmark_compares_every_precision_with_fp32(tmp_path, tiny_detector_dir):
    for label, level in (("real", 60), ("fake", 200)):
        (tmp_path / "videos" / label).mkdir(parents=True)
        for index in range(2):
            write_video(tmp_path / "videos" / label / f"{index}.mp4", numbered_frames(8 + index) // 2 + level // 2)
    arguments = ["--model", str(tiny_detector_dir), "--videos", str(tmp_path / "videos")]
    result, stdout = run_script("bench_cpu_precision", tmp_path, *arguments)
    rows = {row["precision"]: row for row in result["rows"]}
    assert list(rows) == ["fp32", "bf16", "int8"]
    assert rows["fp32"]["max_probability_diff"] == 0 and rows["fp32"]["verdicts_changed"] == 0
    for row in rows.values():
        assert 0 <= row["auc"] <= 1 and 0 <= row["max_probability_diff"] < 0.1
    assert rows["int8"]["max_probability_diff"] > 0  # int8 rounds: the scorer really ran it
    assert "| int8 |" in stdout


def test_decision_rule_benchmark_scores_every_row(tmp_path, tiny_detector_dir):
    result, stdout = run_script("bench_decision_rule", tmp_path, "--model", str(tiny_detector_dir))
    names = [row["videos"] for row in result["rows"]]
    assert names == ["real, 2 s", "real, 10 s", "real, 30 s", "real, 60 s"] + [
        f"30 s, fake {stretch}" for stretch in ("11-11.5 s", "11-12 s", "10-16 s")
    ]
    # A model without window_duration: one window per video, where every rule is the same.
    for row in result["rows"]:
        assert row["windows"] == 1
        rules = ("top 1", "top 2", "top 3", "top 1, one threshold", "mean >= 0.5 (before)")
        assert len({row[rule] for rule in rules}) == 1
    assert "| real, 60 s | 1 |" in stdout


def test_scoring_benchmark_times_batching_and_the_code_before_the_redesign(tmp_path):
    result, stdout = run_script("bench_scoring", tmp_path)
    assert result["batching"]["videos"] == 2 and result["batching"]["batch 1 / batch 8 (min)"] > 0
    assert [row["part"] for row in result["before_after"]] == ["decode", "score"]
    assert all(row["before min s"] > 0 and row["after min s"] > 0 for row in result["before_after"])
    # The same weights score the same videos alike before and after.
    assert result["agreement"]["max |fake score before - after|"] < 1e-5
    assert "### Before (7a1debd) and after, same videos and weights" in stdout


def test_serving_benchmark_loads_a_batched_and_an_unbatched_server_and_checks_every_answer(tmp_path):
    result, stdout = run_script("bench_serving", tmp_path)
    rows = {row["mode"]: row for row in result["rows"]}
    assert list(rows) == ["batched", "unbatched"]
    for row in rows.values():
        assert row["requests"] > 0 and row["errors"] == 0 and row["wrong answers"] == 0
        assert row["p50 latency (s)"] <= row["p99 latency (s)"]
    assert rows["unbatched"]["windows per pass"] == 1
    assert result["ratios"]["requests/s"] > 0 and "| batched / unbatched |" in stdout
