"""Video-level augmentation: one flip and one brightness draw per video, never per frame."""

import torch

from dfd.tools.train.transforms import augment_videos


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
