"""Every benchmark script runs from the command line in its quick mode and writes the JSON and tables it promises;
the GPU suite runs end to end with the tiny config. No timing is asserted: speed goals live in benchmarks/."""

import json
import os
import subprocess
import sys

import av

from conftest import REPO_ROOT


BENCHMARKS = REPO_ROOT / "benchmarks"


def run_benchmark(command, tmp_path):
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
        "DFD_BENCHMARK_CACHE": str(tmp_path / "cache"),  # generated inputs stay out of the checkout
        "OMP_NUM_THREADS": "1",  # tiny tensors: threads only add waiting, worst when pytest shares the CPU
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
    assert [row["video"].split()[0] for row in result["rows"]] == ["(a)", "(a')", "(a'')", "(b)", "(c)"]
    for row, spec in zip(result["rows"], result["videos"]):
        # The generated inputs are what the table says: every frame written, keyframes exactly every GOP.
        assert row["total_frames"] == spec["seconds"] * spec["fps"]
        path = tmp_path / "videos" / row["file"]
        assert keyframe_positions(path) == list(range(0, row["total_frames"], spec["keyframe_interval"]))
        assert len(row["indices"]) == 12
        assert row["identical_to_load_video"] and row["identical_to_every_frame"]
        assert min(row["package_s"], row["load_video_s"], row["every_frame_s"]) > 0
        table_row = next(line for line in stdout.splitlines() if line.startswith(f"| {row['video']} |"))
        assert table_row.startswith(f"| {row['video']} | {row['total_frames']} |")
        assert table_row.endswith("| yes | yes |")
        # (a'') is encoded as the ffmpeg command line does: with B-frames, so packets leave presentation order.
        assert has_b_frames(path) == (spec["preset"] == "medium")
    assert "### Goals" in stdout
    # Only finished videos are left in the cache (written under a staging name, then renamed).
    assert sorted(path.name for path in (tmp_path / "videos").iterdir()) == sorted(
        row["file"] for row in result["rows"]
    )


def test_inference_benchmark_compares_the_detector_with_bare_clip(tmp_path):
    result, stdout = run_script("bench_inference", tmp_path)
    variants = {(row["variant"], row["batch"]) for row in result["rows"]}
    assert variants == {("clip (floor)", 1), ("dfd", 1), ("clip (floor)", 2), ("dfd", 2)}
    assert all(row["videos_per_s"] > 0 and row["time_vs_eager_clip"] > 0 for row in result["rows"])
    assert [row["layout"] for row in result["adapter_layout"]] == [
        "channels-last view (used)",
        "contiguous copy + conv",
    ]
    assert result["goals"][0]["goal"] == "adapter cost over bare CLIP (%)"
    assert result["machine"]["device"] == "cpu" and result["dtype"] == "float32"
    assert "| tiny | dfd | 2 | 12 |" in stdout


def test_train_step_benchmark_shows_checkpointing_saving_activations(tmp_path):
    result, _ = run_script("bench_train_step", tmp_path)
    rows = {row["variant"]: row for row in result["rows"]}
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
    assert all(row["step_s"] > 0 for row in result["rows"])


def test_data_benchmark_reads_the_training_frame_cache(tmp_path):
    result, stdout = run_script("bench_data", tmp_path, "--cache-dir", str(tmp_path / "data"), "--workers", "0,1")
    assert [(row["workers"], row["augment_on"]) for row in result["rows"]] == [
        (0, "-"),
        (0, "cpu"),
        (1, "-"),
        (1, "cpu"),
    ]
    assert all(row["videos_per_s"] > 0 for row in result["rows"])
    assert any((tmp_path / "data" / "frame_cache").iterdir())
    assert result["goals"][0]["goal"] == "videos/s fed with <= 16 workers"


def test_gpu_suite_runs_with_the_tiny_config(tmp_path):
    output = tmp_path / "suite" / "gpu_suite.json"
    run_benchmark(["bash", str(BENCHMARKS / "gpu_suite.sh"), str(output), "--tiny"], tmp_path)
    suite = json.loads(output.read_text())
    assert suite["tiny"] is True and set(suite["parts"]) == {"inference", "train_step", "data"}
    for name, part in suite["parts"].items():
        assert "error" not in part, (name, part["error"])
        assert part["rows"] and part["wall_s"] > 0
    compiled = [row for row in suite["parts"]["inference"]["rows"] if row["variant"] == "dfd, compile_blocks()"]
    assert len(compiled) == 1 and compiled[0]["videos_per_s"] > 0
