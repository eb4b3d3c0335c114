"""Shared fixtures: real mp4 files (the package's `write_video`) and a tiny CLIP checkpoint saved locally."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests stay fp32, also on CPUs with bf16 units, where the default precision is bf16 (inference.default_dtype); the
# `dfd` subprocesses inherit it. tests/test_precision.py tests the rule itself.
os.environ["DFD_DTYPE"] = "fp32"

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from dfd.tools.synthetic_videos import write_video  # tests import it from here

REPO_ROOT = Path(__file__).resolve().parents[1]

# The training tests' fixtures and helpers.
pytest_plugins = ["training_fixtures"]


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
