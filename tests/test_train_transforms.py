"""Video-level augmentation: one flip and one brightness draw per video, never per frame; and --augment robust's
degradations on a real face (scikit-image's astronaut): re-compression within FaceForensics++'s c23-c40 range, drawn
from torch's seeded RNG, the shape and dtype kept."""

import numpy as np
import pytest
import torch
from skimage.data import astronaut

from dfd.tools.train.transforms import RobustAugmentation, augment_videos, h264_round_trip, jpeg_round_trip


def test_augmentation_draws_once_per_video():
    torch.manual_seed(0)
    ramp = torch.linspace(50, 200, 8).round().to(torch.uint8)  # brightness rises left to right: a flip shows
    videos = ramp.expand(64, 4, 3, 8, 8)  # 64 videos of 4 identical frames
    augmented = augment_videos(videos, brightness=0.2)
    assert augmented.dtype == torch.float32
    assert torch.equal(augmented, augmented[:, :1].expand_as(augmented)), "frames of one video were augmented apart"
    flipped = augmented[:, 0, 0, 0, 0] > augmented[:, 0, 0, 0, -1]
    assert 10 < flipped.sum() < 54
    factors = augmented.mean((1, 2, 3, 4)) / ramp.float().mean()
    assert factors.min() >= 0.8 - 1e-6 and factors.max() <= 1.2 + 1e-6 and factors.std() > 0.05


@pytest.fixture(scope="module")
def face_video():
    """6 frames (T, H, W, 3) of the astronaut's face panning right, 96 x 96."""
    image = astronaut()[::2, ::2]  # 256 x 256, the face about rows 10 to 100, columns 75 to 140
    return np.stack([np.ascontiguousarray(image[4:100, 60 + step : 156 + step]) for step in range(0, 12, 2)])


def psnr(a, b) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize("round_trip, stronger, weaker", [(h264_round_trip, 40, 23), (jpeg_round_trip, 30, 90)])
def test_recompression_degrades_as_its_setting_says(face_video, round_trip, stronger, weaker):
    strong, weak = round_trip(face_video, stronger), round_trip(face_video, weaker)
    assert strong.shape == weak.shape == face_video.shape and strong.dtype == np.uint8
    assert 20 < psnr(strong, face_video) < psnr(weak, face_video) < 50


def test_robust_augmentation_is_seeded_and_keeps_the_videos_form(face_video):
    frames = np.ascontiguousarray(face_video.transpose(0, 3, 1, 2))  # as the cache holds them: (T, 3, H, W)
    assert np.array_equal(RobustAugmentation(probability=0.0)(frames), frames)

    augmentation = RobustAugmentation()
    torch.manual_seed(0)
    first = [augmentation(frames) for _ in range(12)]
    torch.manual_seed(0)
    again = [augmentation(frames) for _ in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(video.shape == frames.shape and video.dtype == np.uint8 for video in first)
    changed = [video for video in first if not np.array_equal(video, frames)]
    assert len(changed) >= 8  # each of 4 degradations with probability 0.5: 1 in 16 videos unchanged
    assert all(psnr(video, frames) > 18 for video in changed)  # degraded, still the face

    torch.manual_seed(1)
    assert 18 < psnr(RobustAugmentation(probability=1.0)(frames), frames) < 40  # all four degradations
