"""The `dfd` command, run as a real subprocess on real mp4 files with a tiny exported detector."""

import csv
import io
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForVideoClassification, AutoVideoProcessor

from conftest import dfd, error_lines, numbered_frames, write_video
from dfd.tools.cli import main
from dfd.modeling_dfd import resize_position_embeddings


FPS = 25
SHORT_FRAMES, LONG_FRAMES = 40, 90  # 1.6 s and 3.6 s at 25 fps


def in_folder(folder, *names) -> list[str]:
    return [str(folder / name) for name in names]


def clip_vision_weights(clip_dir) -> dict:
    """A saved CLIPVisionModel's tensors, named as inside `vision_model` (files may or may not carry that prefix)."""
    weights = load_file(clip_dir / "model.safetensors")
    return {name.removeprefix("vision_model."): tensor for name, tensor in weights.items()}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder with a short and a long clip (one nested), a truncated mp4 and a non-video file."""
    root = tmp_path_factory.mktemp("videos")
    (root / "sub").mkdir()
    write_video(root / "short.mp4", numbered_frames(SHORT_FRAMES), fps=FPS)
    write_video(root / "sub" / "long.mp4", numbered_frames(LONG_FRAMES, 48, 80), fps=FPS)
    whole = write_video(root / "whole.mp4", numbered_frames(30), fps=FPS).read_bytes()
    (root / "whole.mp4").unlink()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def reference_probabilities(tiny_detector_scores, videos):
    """Fake probabilities of the model card's sampling (12 frames over the whole video), by processor + model."""
    paths = [videos / "short.mp4", videos / "sub" / "long.mp4"]
    return {str(path): scores["fake"] for path, scores in zip(paths, tiny_detector_scores(paths))}


def test_predict_csv_matches_the_model_and_exits_0(tiny_detector_dir, videos, reference_probabilities):
    paths = in_folder(videos, "short.mp4", "sub/long.mp4")
    result = dfd("predict", *paths, "--model", tiny_detector_dir, "--format", "csv", "--device", "cpu")  # fp32
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["path"] for row in rows] == list(reference_probabilities)
    for row in rows:
        # A model without window_duration or a threshold: one window, the card's prediction at 0.5, 4 decimals.
        assert float(row["fake_score"]) == pytest.approx(reference_probabilities[row["path"]], abs=6e-5)
        assert len(row["fake_score"].split(".")[1]) <= 4
        assert row["label"] == ("fake" if float(row["fake_score"]) >= 0.5 else "real")
        # `score` is the verdict's probability: the fake score for fake, its complement for real.
        expected = float(row["fake_score"]) if row["label"] == "fake" else 1 - float(row["fake_score"])
        assert float(row["score"]) == pytest.approx(expected, abs=1e-4)
        assert row["threshold"] == "0.5" and row["rule"] == "top window"
        assert row["mean_fake_probability"] == row["max_fake_probability"] == row["fake_score"]
        total = SHORT_FRAMES if "short" in row["path"] else LONG_FRAMES
        flagged = f"0.00-{(total - 1) / FPS:.2f}s" if row["label"] == "fake" else "-"
        assert row["flagged_windows"] == flagged
        assert row["error"] == "" and row["num_windows"] == "1"
        assert float(row["duration"]) == pytest.approx(total / FPS)

    result = dfd("predict", *paths, "--model", tiny_detector_dir, "--format", "json", "--device", "cpu")
    for record in json.loads(result.stdout):
        total = SHORT_FRAMES if "short" in record["path"] else LONG_FRAMES
        # Frame i is shown at i / fps: the card's np.linspace(0, total - 1, 12) frames.
        expected = np.linspace(0, total - 1, 12).astype(int) / FPS
        np.testing.assert_allclose(record["windows"][0]["timestamps"], expected, atol=1e-6)


def test_predict_decodes_with_the_package_not_the_model_folders_copy(tiny_detector_dir, videos, tmp_path):
    """A model exported by an older release carries an older decoding_dfd.py: `dfd predict` must not depend on it."""
    model_dir = tmp_path / "older_export"
    shutil.copytree(tiny_detector_dir, model_dir)
    with open(model_dir / "decoding_dfd.py", "a") as file:
        file.write("\n\ndef read_video(*args, **kwargs):\n    raise RuntimeError('the model folder decoder ran')\n")
    result = dfd("predict", videos / "short.mp4", "--model", model_dir, "--format", "json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["label"] in {"real", "fake"}


def test_predict_table_reports_bad_inputs_on_their_own_line_and_exits_1(tiny_detector_dir, videos):
    result = dfd(
        "predict",
        videos / "short.mp4",
        videos / "sub" / "*.mp4",  # a glob
        videos / "missing.mp4",
        videos / "truncated.mp4",
        "--model",
        tiny_detector_dir,
    )
    assert result.returncode == 1
    missing, truncated = error_lines(result.stderr)
    assert missing == f"error: {videos / 'missing.mp4'}: file not found"
    assert truncated.startswith(f"error: {videos / 'truncated.mp4'}: ")
    assert "Traceback" not in result.stderr
    header, *rows = [line.split() for line in result.stdout.splitlines()]
    assert header == ["video", "label", "fake_score", "threshold", "flagged_windows", "mean", "windows"]
    assert [row[0] for row in rows] == in_folder(videos, "short.mp4", "sub/long.mp4", "missing.mp4", "truncated.mp4")
    assert all(row[1] in ("real", "fake") for row in rows[:2])
    flagged = "0.00-1.56s" if rows[0][1] == "fake" else "-"
    assert 0 <= float(rows[0][2]) <= 1 and rows[0][3:] == ["0.5000", flagged, rows[0][2], "1"]
    assert [row[1] for row in rows[2:]] == ["error", "error"]


def test_predict_folder_with_windows_json_and_plots(tiny_detector_dir, videos, tmp_path):
    output, plots = tmp_path / "results" / "predictions.json", tmp_path / "plots"
    result = dfd("predict", videos, "--model", tiny_detector_dir, "--windows", "3", "--batch-size", "2",
                 "--output", output, "--plot", plots)  # fmt: skip
    assert result.returncode == 1  # the truncated mp4
    assert result.stdout == ""
    assert [line.split(":")[0] for line in error_lines(result.stderr)] == ["error"]
    assert sorted(p.name for p in output.parent.iterdir()) == ["predictions.json"]  # no temporary file left over

    records = json.loads(output.read_text())  # the format follows the .json extension
    assert [record["path"] for record in records] == in_folder(videos, "short.mp4", "sub/long.mp4", "truncated.mp4")
    assert set(records[2]) == {"path", "error"}
    for record, total in zip(records, (SHORT_FRAMES, LONG_FRAMES)):
        duration = total / FPS
        assert record["duration"] == pytest.approx(duration)
        windows = record["windows"]
        assert len(windows) == 3
        # The windows tile the video in time order: each spans its 12 frames, from the first frame to the last.
        assert windows[0]["start"] == 0.0 and windows[-1]["end"] == pytest.approx((total - 1) / FPS)
        for window, following in zip(windows, windows[1:]):
            assert window["end"] < following["start"] <= window["end"] + 1.5 / FPS
        for window in windows:
            assert len(window["timestamps"]) == 12 and window["timestamps"] == sorted(window["timestamps"])
            assert (window["start"], window["end"]) == (window["timestamps"][0], window["timestamps"][-1])
            assert 0 <= window["start"] < window["end"] <= duration
        fake = [window["fake_probability"] for window in windows]
        assert record["mean_fake_probability"] == pytest.approx(np.mean(fake), abs=1e-6)
        assert record["max_fake_probability"] == record["fake_score"] == pytest.approx(max(fake))
        worst = int(np.argmax(fake))
        suspicious = {"start": windows[worst]["start"], "end": windows[worst]["end"], "window": worst}
        assert record["most_suspicious"] == suspicious
        # The rule: fake when the top window reaches the threshold; every window that reaches it is flagged.
        assert record["threshold"] == 0.5 and record["label"] == ("fake" if max(fake) >= 0.5 else "real")
        flagged = [index for index, probability in enumerate(fake) if probability >= 0.5]
        assert [window["window"] for window in record["flagged_windows"]] == flagged
        for window in record["flagged_windows"]:
            scored = windows[window["window"]]
            assert (window["start"], window["end"]) == (scored["start"], scored["end"])

    pngs = sorted(str(path.relative_to(plots)) for path in plots.rglob("*.png"))
    assert pngs == ["short.mp4.png", "sub/long.mp4.png"]  # named after the videos' paths under the shared folder
    for png in plots.rglob("*.png"):
        content = png.read_bytes()
        assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 1000


def test_usage_errors_exit_2(tiny_detector_dir, videos):
    for args in (
        ["predict"],
        ["predict", videos / "short.mp4", "--windows", "0"],
        ["predict", videos / "short.mp4", "--threshold", "1"],
        ["predict", videos / "short.mp4", "--threshold", "high"],
        ["convert", "x.pt"],
    ):
        result = dfd(*args)
        assert result.returncode == 2, args
        assert "usage: dfd" in result.stderr and "Traceback" not in result.stderr


def test_threshold_overrides_the_models(tiny_detector_dir, videos, reference_probabilities):
    short = str(videos / "short.mp4")
    probability = reference_probabilities[short]
    for threshold, label in ((probability / 2, "fake"), ((1 + probability) / 2, "real")):
        result = dfd("predict", short, "--model", tiny_detector_dir, "--format", "json", "--threshold", threshold)
        (record,) = json.loads(result.stdout)
        assert (record["label"], record["threshold"]) == (label, pytest.approx(threshold))
        assert len(record["flagged_windows"]) == (label == "fake")


def test_clips_is_the_earlier_name_of_windows(tiny_detector_dir, videos):
    result = dfd(
        "predict", videos / "sub" / "long.mp4", "--model", tiny_detector_dir, "--clips", "2", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    assert "warning: --clips is deprecated: use --windows" in result.stderr
    assert len(json.loads(result.stdout)[0]["windows"]) == 2


def test_predict_names_a_missing_model_folder_and_an_unreachable_hub_id(videos, tmp_path, run_dfd):
    """Loading fails before any video is read; each reason is one line. The tests run with HF_HUB_OFFLINE=1."""
    video = videos / "short.mp4"
    for folder in (tmp_path / "nope", "./no-such-detector", "~/no-such-detector", "models/dfd/v1", "models/dfd/"):
        assert run_dfd("predict", video, "--model", folder) == (1, "", f"error: --model {folder}: no such folder\n")

    status, out, err = run_dfd("predict", video, "--model", video)
    assert (status, out) == (1, "")
    assert err.startswith(f"error: --model {video}: not a folder (")

    status, out, err = run_dfd("predict", video, "--model", "someone/not-cached")
    assert (status, out) == (1, "")
    assert err == (
        "error: --model someone/not-cached: not a local folder, and not in the Hub's cache while the Hub cannot be "
        "reached (HF_HUB_OFFLINE is set): pass a local folder instead\n"
    )


def test_help_on_every_command(capsys):
    result = dfd("--help")
    assert result.returncode == 0 and all(command in result.stdout for command in ("predict", "init", "convert"))
    for command in ("predict", "init", "convert"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: dfd {command}" in capsys.readouterr().out


def test_predict_splits_videos_between_processes_and_merges_them(
    tiny_detector_dir, videos, tmp_path, reference_probabilities
):
    """What `accelerate launch` does on GPUs, here as two CPU processes (gloo) started by torchrun."""
    output = tmp_path / "merged.csv"
    paths = in_folder(videos, "short.mp4", "truncated.mp4", "sub/long.mp4")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "dfd.tools.cli", "predict"]
    result = subprocess.run(
        [*launch, *paths, "--model", str(tiny_detector_dir), "--output", str(output), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0  # the truncated mp4 fails in one of the processes
    assert output.exists(), result.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(output.read_text())))  # the format follows the .csv extension
    assert [row["path"] for row in rows] == paths
    assert rows[1]["error"] and not rows[0]["error"] and not rows[2]["error"]
    assert [path.name for path in tmp_path.iterdir()] == ["merged.csv"]  # every process's journal is removed
    for row in (rows[0], rows[2]):
        assert float(row["fake_score"]) == pytest.approx(reference_probabilities[row["path"]], abs=6e-5)


def test_init_from_a_local_clip_then_load(tiny_clip_dir, tmp_path, run_dfd):
    output = tmp_path / "dfd-init"
    overrides = '{"image_size": 48, "adapter_bottleneck": 8}'
    status, out, _ = run_dfd("init", "--clip", tiny_clip_dir, "--output", output, "--config-overrides", overrides)
    assert status == 0 and str(output) in out

    model = AutoModelForVideoClassification.from_pretrained(output, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(output, trust_remote_code=True)
    assert (model.config.image_size, model.config.adapter_bottleneck) == (48, 8)
    assert processor.size.height == 48 and processor.num_frames == model.config.num_frames
    clip = clip_vision_weights(tiny_clip_dir)
    state = model.state_dict()
    torch.testing.assert_close(state["dfd.encoder.layers.1.mlp.fc1.weight"], clip["encoder.layers.1.mlp.fc1.weight"])
    grid = 48 // model.config.vision_config.patch_size
    torch.testing.assert_close(
        state["dfd.embeddings.position_embedding.weight"],
        resize_position_embeddings(clip["embeddings.position_embedding.weight"], grid),
    )
    assert all(not state[name].any() for name in state if ".adapter.up_proj." in name)  # adapters at identity
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable and all(".adapter." in name or name.startswith("classifier.") for name in trainable)
    # A deployable repo with a card that names no path of this machine and says the model is untrained.
    assert {"handler.py", "scoring_dfd.py", "pipeline_dfd.py", "requirements.txt"} <= {
        path.name for path in output.iterdir()
    }
    card = (output / "README.md").read_text()
    assert str(tiny_clip_dir) not in card and tiny_clip_dir.name not in card and str(tmp_path) not in card
    assert "model_name: dfd-deepfake-detector" in card and "base_model" not in card
    assert "a local CLIP checkpoint" in card and "Not trained for detection yet" in card

    status, _, err = run_dfd("init", "--clip", tiny_clip_dir, "--output", output)
    assert (status, err) == (1, f"error: {output}: already exists (pass --overwrite to replace it)\n")
    misspelt = ["--config-overrides", '{"image_sise": 48}']
    status, _, err = run_dfd("init", "--clip", tiny_clip_dir, "--output", tmp_path / "b", *misspelt)
    assert (status, err) == (2, "error: --config-overrides: unknown DFDConfig field(s): image_sise\n")


def test_convert_refuses_the_cards_mlp_head_unless_new_head(tiny_detector_dir, tiny_clip_dir, tmp_path, run_dfd):
    """
    The card's DeepfakeDetector layout: a CLIPModel under `clip.` (text tower included) and an MLP head (classifier.0,
    classifier.3) that the detector's Linear classifier cannot take: converting it would silently give a random head.
    """
    clip = clip_vision_weights(tiny_clip_dir)
    legacy = {f"clip.vision_model.{name}": tensor for name, tensor in clip.items()}
    legacy["clip.text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 32)
    legacy["clip.logit_scale"] = torch.tensor(2.6592)
    legacy["classifier.0.weight"], legacy["classifier.0.bias"] = torch.zeros(1024, 32), torch.zeros(1024)
    legacy["classifier.3.weight"], legacy["classifier.3.bias"] = torch.zeros(2, 1024), torch.zeros(2)
    checkpoint = tmp_path / "best_model.pt"
    torch.save(legacy, checkpoint)
    output = tmp_path / "converted"
    convert = ["convert", checkpoint, "--output", output, "--config", tiny_detector_dir]

    status, out, err = run_dfd(*convert)
    assert (status, out) == (1, "")
    assert err == (
        f"error: {checkpoint}: no classifier fits the detector's (classifier.weight, classifier.bias), so it would "
        "predict at random; pass --new-head to convert anyway, then train the new head\n"
    )
    assert not output.exists()

    status, out, _ = run_dfd(*convert, "--new-head")
    assert status == 0
    model = AutoModelForVideoClassification.from_pretrained(output, trust_remote_code=True)
    state = model.state_dict()
    adapters = [name for name in state if ".adapter." in name]
    report = out.splitlines()
    assert report[0] == f"used {len(clip)} tensors, ignored 6, missing {len(adapters) + 2}"
    assert report[1].startswith("  ignored: clip.text_model.embeddings.token_embedding.weight, clip.logit_scale, ")
    assert report[2].startswith(f"  missing, adapters starting at identity: {adapters[0]}, ")
    assert report[3] == (
        "  missing, a NEW classifier that must be trained before use: classifier.weight, classifier.bias"
    )
    assert report[4].startswith(f"saved the converted detector to {output} (")

    grid = model.config.image_size // model.config.vision_config.patch_size
    for name, tensor in clip.items():
        if name == "embeddings.position_embedding.weight":  # CLIP's 4x4 patch grid, resized to the detector's 6x6
            tensor = resize_position_embeddings(tensor, grid)
        torch.testing.assert_close(state[f"dfd.{name}"], tensor)
    assert all(not state[name].any() for name in state if ".adapter.up_proj." in name)


def test_convert_a_model_state_dict_checkpoint_round_trips(tiny_detector_dir, tmp_path, run_dfd):
    """A DDP-trained detector saved as {'model_state_dict': ...} (module. prefix): every weight, adapters included."""
    original = load_file(tiny_detector_dir / "model.safetensors")
    checkpoint = {
        "epoch": 11,
        "best_val_acc": 0.8488,
        "model_state_dict": {f"module.{name}": tensor for name, tensor in original.items()},
        "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 5e-6}]},
    }
    torch.save(checkpoint, tmp_path / "best_model.pt")
    output = tmp_path / "converted"
    config = tiny_detector_dir / "config.json"
    status, out, _ = run_dfd("convert", tmp_path / "best_model.pt", "--output", output, "--config", config)
    assert status == 0
    assert f"used {len(original)} tensors, ignored 0, missing 0" in out
    converted = load_file(output / "model.safetensors")
    assert converted.keys() == original.keys()
    for name in original:
        torch.testing.assert_close(converted[name], original[name])
    card = (output / "README.md").read_text()
    assert "converted from a checkpoint" in card and "Not trained" not in card and str(tmp_path) not in card


def test_convert_a_trainable_only_checkpoint_takes_the_backbone_from_clip(
    tiny_detector_dir, tiny_clip_dir, tmp_path, run_dfd
):
    """Only adapters and head were saved: the backbone must come from --clip, never stay random."""
    original = load_file(tiny_detector_dir / "model.safetensors")
    trainable = {
        name: tensor for name, tensor in original.items() if ".adapter." in name or name.startswith("classifier.")
    }
    checkpoint = tmp_path / "best_model.pt"
    torch.save({"model_state_dict": trainable}, checkpoint)

    status, _, err = run_dfd("convert", checkpoint, "--output", tmp_path / "a", "--config", tiny_detector_dir)
    assert status == 1 and "backbone weights are missing" in err and "pass --clip" in err
    assert not (tmp_path / "a").exists()

    overrides = '{"image_size": 48, "adapter_bottleneck": 8}'
    status, out, _ = run_dfd(
        "convert", checkpoint, "--output", tmp_path / "b", "--clip", tiny_clip_dir, "--config-overrides", overrides
    )
    assert status == 0 and f"used {len(trainable)} tensors, ignored 0, missing {len(original) - len(trainable)}" in out
    (missing,) = [line for line in out.splitlines() if line.startswith("  missing")]  # adapters and head were used
    assert missing.startswith("  missing, taken from the CLIP checkpoint: dfd.embeddings.")
    converted = load_file(tmp_path / "b" / "model.safetensors")
    for name in original:  # the tiny_detector_dir fixture also started from this CLIP, so every weight matches
        torch.testing.assert_close(converted[name], original[name])


class NotATensor:
    """Pickling this needs its class, i.e. code: weights_only loading must refuse the file."""

    def __init__(self):
        self.weights = torch.zeros(3)


def test_convert_refuses_a_checkpoint_that_needs_code(tiny_detector_dir, tmp_path):
    torch.save({"model_state_dict": NotATensor()}, tmp_path / "best_model.pt")
    output = tmp_path / "converted"
    result = dfd("convert", tmp_path / "best_model.pt", "--output", output, "--config", tiny_detector_dir)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'best_model.pt'}: refused: unpickling it needs code (")
    assert "NotATensor" in line and "weights_only" not in line
    assert not output.exists()


class CallsTheSystem:
    """Unpickled, this calls os.getcwd (a harmless stand-in for os.system): a module torch blocks outright."""

    def __reduce__(self):
        return os.getcwd, ()


def test_convert_never_advises_loading_with_weights_only_false(tiny_detector_dir, tmp_path, run_dfd):
    """torch's refusal says re-running with weights_only=False "will likely succeed": that advice runs the code."""
    torch.save({"model_state_dict": CallsTheSystem()}, tmp_path / "calls.pt")
    with open(tmp_path / "plain.pkl", "wb") as file:  # a plain pickle of an object, not written by torch.save
        pickle.dump({"model_state_dict": NotATensor()}, file, protocol=4)
    expected = {"calls.pt": "(posix.getcwd)", "plain.pkl": "(pickle opcode 149)"}
    convert = ["--output", tmp_path / "out", "--config", tiny_detector_dir]
    for name, needs in expected.items():
        status, out, err = run_dfd("convert", tmp_path / name, *convert)
        assert (status, out) == (1, "")
        assert err == (
            f"error: {tmp_path / name}: refused: unpickling it needs code {needs}, which could do anything; only "
            "tensors and plain containers are loaded\n"
        )
    (tmp_path / "cut.pt").write_bytes((tmp_path / "calls.pt").read_bytes()[:100])
    status, _, err = run_dfd("convert", tmp_path / "cut.pt", *convert)
    assert status == 1 and "not a PyTorch checkpoint holding only tensors" in err and "weights_only" not in err
    assert not (tmp_path / "out").exists()


def test_predict_explain_opens_and_decodes_each_video_once(tiny_detector_dir, videos, tmp_path, monkeypatch, run_dfd):
    """Scoring, then explaining the flagged windows, reuses the frames decoded for scoring: one open, one decode."""
    import av

    from dfd import decoding_dfd

    opened, decoded = [], []
    real_open, real_read = av.open, decoding_dfd.read_video
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    monkeypatch.setattr(
        decoding_dfd,
        "read_video",
        lambda video, *args, **kwargs: decoded.append(video) or real_read(video, *args, **kwargs),
    )
    monkeypatch.setattr("dfd.processing_dfd.read_video", decoding_dfd.read_video)
    monkeypatch.setenv("DFD_DECODE_THREADS", "2")  # one thread for each of the two decode workers: one decoder each
    paths = in_folder(videos, "short.mp4", "sub/long.mp4")
    status, out, err = run_dfd(
        "predict", *paths, "--model", tiny_detector_dir, "--windows", "2", "--threshold", "0.01",
        "--explain", tmp_path / "explained", "--format", "json",
    )  # fmt: skip
    assert status == 0, err
    assert all(record["flagged_windows"] for record in json.loads(out))  # every window explained
    assert len(list((tmp_path / "explained").rglob("*.png"))) == 4
    assert sorted(decoded) == sorted(paths)
    assert sorted(name.removeprefix("file:") for name in opened) == sorted(paths)
