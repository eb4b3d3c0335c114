"""A video given as one array or tensor per frame is one video, as transformers' `make_batched_videos` reads it; a list
of such lists is a batch. Checked against the same frames given as one array, with frames that carry their index."""

import numpy as np
import pytest
import torch

from conftest import barcode_frames, numbered_frames
from dfd.processing_dfd import DFDVideoProcessor


def processed(videos, **kwargs):
    return DFDVideoProcessor(size={"height": 64, "width": 64})(videos, return_tensors="pt", **kwargs)["pixel_values"]


def frame_lists():
    frames = barcode_frames(20)
    return frames, {
        "numpy (H, W, C)": list(frames),
        "torch (H, W, C)": [torch.from_numpy(frame) for frame in frames],
        "torch (C, H, W)": [torch.from_numpy(frame).permute(2, 0, 1) for frame in frames],
        "numpy float [0, 1]": [frame.astype(np.float32) / 255 for frame in frames],
        "mixed numpy and torch": [torch.from_numpy(f) if i % 2 else f for i, f in enumerate(frames)],
        "tuple": tuple(frames),
    }


@pytest.mark.parametrize("kind", list(frame_lists()[1]))
def test_a_list_of_frame_arrays_is_one_video(kind):
    frames, videos = frame_lists()
    pixel_values = processed(videos[kind])
    assert pixel_values.shape == (1, 12, 3, 64, 64)
    torch.testing.assert_close(pixel_values, processed(frames), atol=0.02, rtol=0)


def test_a_list_of_frame_lists_is_a_batch_of_videos():
    dark, bright = numbered_frames(12)[:6], numbered_frames(12)[6:]
    pixel_values = processed([list(dark), [torch.from_numpy(frame) for frame in bright]], do_sample_frames=False)
    assert pixel_values.shape == (2, 6, 3, 64, 64)
    torch.testing.assert_close(pixel_values, processed([dark, bright], do_sample_frames=False))
    # A batch may mix frame lists with whole arrays.
    mixed = processed([list(dark), bright], do_sample_frames=False)
    torch.testing.assert_close(mixed, pixel_values)


def test_errors_name_the_shape_of_the_whole_video():
    frames = barcode_frames(3)
    with pytest.raises(ValueError, match=r"\(3, 64, 64, 5\)"):  # the video's shape, not one frame's
        processed([np.zeros((64, 64, 5), dtype=np.uint8)] * 3, do_sample_frames=False)
    with pytest.raises(ValueError, match=r"one shape; got \[\(32, 64, 3\), \(64, 64, 3\)\]"):
        processed([frames[0], frames[1][:32]])
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        processed([frame.astype(np.float32) for frame in frames])
