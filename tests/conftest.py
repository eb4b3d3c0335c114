"""Shared fixtures: real mp4 files (the package's `write_video`) and a tiny CLIP checkpoint saved locally."""

import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests stay fp32, also on CPUs with bf16 units, where the default precision is bf16 (inference.default_dtype); the
# `dfd` subprocesses inherit it. tests/test_precision.py tests the rule itself.
os.environ["DFD_DTYPE"] = "fp32"

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.video_utils import load_video

from dfd.decoding_dfd import read_video
from dfd.processing_dfd import sample_frame_indices
from dfd.tools.synthetic_videos import write_video  # tests import it from here

# Tiny replicas of the field's datasets as downloaded (ffpp_replicas, celebdf_replica, ...), and the training tests'
# fixtures and helpers (real runs of train_accelerate.py, a stand-in Hub).
pytest_plugins = ["dataset_replicas", "training_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def numbered_frames(num_frames, height=64, width=64):
    """Frames whose mean brightness encodes their index, so a test can tell which frames were sampled."""
    levels = np.linspace(16, 235, num_frames).astype(np.uint8)
    return np.stack([np.full((height, width, 3), level, dtype=np.uint8) for level in levels])


def barcode_frames(num_frames, height=64, width=64):
    """
    Frames that carry their index as a 16-bit barcode of 8x8 blocks (two rows of eight, black or white; needs
    height >= 16 and width >= 64) above a grey band, so a test can read back exactly which frame it got, even through
    lossy coding.
    """
    frames = np.full((num_frames, height, width, 3), 128, dtype=np.uint8)
    for index in range(num_frames):
        for bit in range(16):
            row, column = divmod(bit, 8)
            value = 255 if (index >> bit) & 1 else 0
            frames[index, row * 8 : row * 8 + 8, column * 8 : column * 8 + 8] = value
    return frames


def read_barcode(frame):
    """The index `barcode_frames` wrote into an (H, W, 3) frame."""
    index = 0
    for bit in range(16):
        row, column = divmod(bit, 8)
        if frame[row * 8 + 2 : row * 8 + 6, column * 8 + 2 : column * 8 + 6].mean() > 128:
            index |= 1 << bit
    return index


def brightness(frames):
    """Mean brightness of each (H, W, 3) frame."""
    return np.asarray(frames, dtype=np.float64).mean(axis=(1, 2, 3))


def pixel_values_brightness(pixel_values):
    """Undo the CLIP normalisation of (T, 3, H, W) pixel values and return each frame's mean in 0..255."""
    mean, std = np.array(OPENAI_CLIP_MEAN, np.float32), np.array(OPENAI_CLIP_STD, np.float32)
    pixels = pixel_values.numpy() * std[None, :, None, None] + mean[None, :, None, None]
    return pixels.mean(axis=(1, 2, 3)) * 255


def reference_frames(path, indices):
    """What transformers' own PyAV loader returns for these (ascending, distinct) frame indices."""
    frames, _ = load_video(str(path), backend="pyav", sample_indices_fn=lambda metadata, **kwargs: np.asarray(indices))
    return frames


def sampled_frames(video, num_frames=12):
    """The card's sampling of any video `read_video` takes: `num_frames` evenly spaced frames, (T, H, W, 3) uint8."""
    return read_video(video, lambda info: sample_frame_indices(info.total_frames, num_frames)).frames


def frame_folder(folder, frames, name="frames"):
    """Unpadded names (frame_0 ... frame_29), so only a natural sort gets the order right."""
    folder = Path(folder) / name
    folder.mkdir()
    for index, frame in enumerate(frames):
        PIL.Image.fromarray(frame).save(folder / f"frame_{index}.png")
    (folder / "notes.txt").write_text("not a frame")
    return folder


def write_trimmed_video(path, frames, trimmed):
    """An mp4 whose edit list hides its first `trimmed` frames, as cutting a clip without re-encoding leaves it."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast", "x264-params": "keyint=10"}
        for frame in [*frames, None]:
            for packet in stream.encode(None if frame is None else av.VideoFrame.from_ndarray(frame, format="rgb24")):
                packet.pts -= trimmed  # in the encoder's 1/25 s time base: the first frames land before time 0
                packet.dts -= trimmed
                container.mux(packet)
    return path


def write_paused_video(path, frames, pause):
    """An mp4 whose last frame is shown `pause` frame periods late, as a variable frame rate recording can be."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for index, frame in enumerate([*frames, None]):
            video_frame = None
            if frame is not None:
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = index + (pause if index == len(frames) - 1 else 0)
                video_frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(video_frame):
                container.mux(packet)
    return path


# The start of a `python -c` script run where nothing of ours is installed (an export in a container, a Hub user's
# machine): the editable install of this venv is hidden, so any import of `dfd` fails as it would there.
WITHOUT_DFD = """
import importlib.abc, sys

class NoDfdPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "dfd" or name.startswith("dfd."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoDfdPackage())
"""


def dfd(*args):
    """The `dfd` command as a real subprocess: its CompletedProcess, output as text."""
    command = [sys.executable, "-m", "dfd.tools.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    """`error: ...` lines; the progress bar shares stderr, on lines of its own."""
    return [line.strip() for line in stderr.replace("\r", "\n").splitlines() if line.strip().startswith("error:")]


@pytest.fixture
def run_dfd(capsys):
    """`dfd ...` in this process (for commands whose subprocess start would dominate): (exit status, out, err)."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as transformers_logging

    from dfd.tools.cli import main

    verbosities = transformers_logging.get_verbosity(), hub_logging.get_verbosity()

    def run(*args):
        status = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    yield run
    # main() quiets transformers and huggingface_hub unless --debug.
    transformers_logging.set_verbosity(verbosities[0])
    hub_logging.set_verbosity(verbosities[1])
    transformers_logging.enable_progress_bar()


def tiny_clip_config():
    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A CLIPVisionModel checkpoint (random weights) saved with save_pretrained, as a stand-in for openai/clip-*."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    CLIPVisionModel(tiny_clip_config()).save_pretrained(path)
    return path


@pytest.fixture
def make_video(tmp_path):
    """Write a video into the test's tmp dir: make_video("a.mp4", frames, **encode_options)."""

    def _make(name, frames, **options):
        return write_video(tmp_path / name, frames, **options)

    return _make


# The tiny CLIP is trained at 32 px with patch 8: its 4x4 grid grows to 6x6, as ViT-L/14's does from 224 to 384.
TINY_IMAGE_SIZE = 48


@pytest.fixture(scope="session")
def tiny_detector_dir(tmp_path_factory, tiny_clip_dir):
    """
    A tiny detector with random, trained-looking adapters and head, exported like a real one (model + processor +
    code files): it loads with trust_remote_code and is pipeline-ready.
    """
    from dfd.tools.export import processor_for, save_detector
    from dfd.modeling_dfd import DFDForVideoClassification

    torch.manual_seed(0)
    model = DFDForVideoClassification.from_clip(tiny_clip_dir, image_size=TINY_IMAGE_SIZE, adapter_bottleneck=8)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapter." in name or name.startswith("classifier."):
                parameter.normal_(std=0.5)
    return save_detector(model, processor_for(model.config), tmp_path_factory.mktemp("tiny_detector") / "detector")


@pytest.fixture(scope="session")
def tiny_detector_scores(tiny_detector_dir):
    """
    Class probabilities ({label: probability} per video) of the tiny detector loaded as users load it (Auto classes,
    remote code) and run as processor + model: the reference the pipeline, `dfd predict` and the endpoint must match.
    """
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    model = AutoModelForVideoClassification.from_pretrained(tiny_detector_dir, trust_remote_code=True).eval()
    processor = AutoVideoProcessor.from_pretrained(tiny_detector_dir, trust_remote_code=True)

    def scores(paths) -> list[dict[str, float]]:
        with torch.no_grad():
            probabilities = model(**processor([str(path) for path in paths], return_tensors="pt")).logits.softmax(-1)
        return [dict(zip(model.config.id2label.values(), row)) for row in probabilities.tolist()]

    return scores


# --- fetching from a test's own server on 127.0.0.1 ------------------------------------------------------------------
# The fetcher (fetching_dfd.py) refuses loopback addresses, and production code has no switch to change that. Tests
# that serve videos on 127.0.0.1 patch the fetcher's one seam, `address_refusal`, in whichever copy of the module runs
# (the package's, or an exported model folder's that transformers loads): 127.0.0.1 passes, every other rule holds.

LOOPBACK = "127.0.0.1"


def allow_loopback(fetching, monkeypatch):
    """Let the fetcher module `fetching` download from 127.0.0.1 (and no other non-public address) in this test."""
    refusal = fetching.address_refusal
    monkeypatch.setattr(fetching, "address_refusal", lambda address: None if address == LOOPBACK else refusal(address))


@pytest.fixture
def loopback_fetches(monkeypatch):
    """`dfd.fetching_dfd` downloads from the test's own servers on 127.0.0.1."""
    from dfd import fetching_dfd

    allow_loopback(fetching_dfd, monkeypatch)


_FETCHING_FROM_LOOPBACK = f"""
import importlib.machinery, runpy, sys

class FetchingFromLoopback:  # patches each module named fetching_dfd, in any package, as it is imported
    def find_spec(self, name, path=None, target=None):
        if name.rpartition(".")[2] != "fetching_dfd":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            execute = spec.loader.exec_module

            def exec_module(module):
                execute(module)
                refusal = module.address_refusal
                module.address_refusal = lambda address: None if address == {LOOPBACK!r} else refusal(address)

            spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, FetchingFromLoopback())
option, target, *arguments = sys.argv[1:]
if option == "-c":
    sys.argv = ["-c", *arguments]
    exec(compile(target, "<string>", "exec"), {{"__name__": "__main__"}})
else:
    sys.argv = [target, *arguments]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def python_fetching_from_loopback(option: str, target: str, *arguments: str) -> list[str]:
    """
    The command line of `python -c CODE ARGUMENTS...` or `python -m MODULE ARGUMENTS...` (`option` "-c" or "-m") in
    which every fetcher, however it is imported (`dfd.fetching_dfd`, a model folder's copy loaded with
    trust_remote_code), downloads from 127.0.0.1: for a real server process (the endpoint, `dfd serve`) that a test
    sends URLs of its own server to. E.g. `python_fetching_from_loopback("-m", "dfd.tools.cli", "serve", ...)`.
    """
    if option not in ("-c", "-m"):
        raise ValueError(f"option must be -c or -m, got {option!r}")
    return [sys.executable, "-c", _FETCHING_FROM_LOOPBACK, option, target, *arguments]
