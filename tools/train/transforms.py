"""Video-level augmentation and normalisation, applied to batches of cached uint8 frames on the training device."""

from functools import lru_cache

import torch


def augment_videos(frames: torch.Tensor, brightness: float) -> torch.Tensor:
    """
    Random horizontal flip (p=0.5) and brightness jitter (factor in [1 - b, 1 + b], as torchvision's ColorJitter) of
    uint8 videos (B, T, 3, H, W), returned as floats in [0, 255]. Each video gets one draw for all its frames: a
    per-frame flip or flicker would be a temporal artifact for the adapters to learn instead of the fake.
    The draws come from torch's global RNG, which `set_seed` seeds and `save_state`/`load_state` restore.
    """
    batch_size = frames.shape[0]
    flip = (torch.rand(batch_size) < 0.5).view(-1, 1, 1, 1, 1).to(frames.device)
    factor = torch.empty(batch_size).uniform_(1 - brightness, 1 + brightness).view(-1, 1, 1, 1, 1)
    frames = torch.where(flip, frames.flip(-1), frames).float()
    return (frames * factor.to(frames.device)).clamp(0, 255)


def normalize_videos(frames: torch.Tensor, processor) -> torch.Tensor:
    """
    uint8 (or [0, 255] float) videos (B, T, 3, H, W) -> model input, with the processor's own rescale factor, mean and
    std: the cache holds the processor's resized frames, so this finishes exactly what `processor(videos)` does.
    """
    mean, std = _channel_constants((tuple(processor.image_mean), tuple(processor.image_std)), frames.device)
    return (frames.float() * processor.rescale_factor - mean) / std


@lru_cache
def _channel_constants(values: tuple[tuple[float, ...], ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-channel constants as (1, 1, 3, 1, 1) tensors on `device`, copied there once rather than every batch (each
    copy from host memory would make the host wait for the GPU)."""
    return tuple(torch.tensor(value, device=device).view(1, 1, -1, 1, 1) for value in values)
