"""Shared fixtures: real mp4 files written with PyAV and a tiny CLIP checkpoint saved locally."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_video(path, frames, fps=25, codec="libx264", gop=None, rotation=None):
    """Encode uint8 frames (T, H, W, 3) into a real video file with PyAV; returns the path."""
    frames = np.asarray(frames, dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        options = {}
        if codec == "libx264":
            # Near-lossless so tests can compare decoded pixels with what was written.
            options.update({"crf": "0", "preset": "ultrafast"})
        if gop is not None:
            stream.codec_context.gop_size = gop
            if codec == "libx264":
                options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        stream.options = options
        if rotation is not None:
            stream.metadata["rotate"] = str(rotation)
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def numbered_frames(num_frames, height=64, width=64):
    """Frames whose mean brightness encodes their index, so a test can tell which frames were sampled."""
    levels = np.linspace(16, 235, num_frames).astype(np.uint8)
    return np.stack([np.full((height, width, 3), level, dtype=np.uint8) for level in levels])


def tiny_clip_config(**overrides):
    values = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    values.update(overrides)
    return CLIPVisionConfig(**values)


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
