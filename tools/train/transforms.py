"""
Video-level augmentation and normalisation of cached uint8 frames: the recipe's flip and brightness jitter and the
normalisation on batches on the training device, and the opt-in robustness degradations on each video in the
DataLoader workers.
"""

import io
from functools import lru_cache

import av
import numpy as np
import PIL.Image
import PIL.ImageFilter
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


class RobustAugmentation:
    """
    `--augment robust`: the degradations videos meet on their way to a detector, so that it does not learn the
    training set's encoding instead of the fake. Each is applied to a video with probability `probability`, with one
    draw per video (its frames alike), in the order they happen to a real upload:

    - sensor-like noise, a normal of standard deviation NOISE_STD (on 0..255);
    - downscale-upscale by a factor in SCALE (a video shared at a lower resolution and shown at the original);
    - Gaussian blur of radius (sigma) in BLUR_SIGMA;
    - re-compression, half the time H.264 at a CRF in CRF (FaceForensics++'s c23 to c40; x264 preset veryfast), half
      the time JPEG at a quality in JPEG_QUALITY (each frame on its own, as a frame dump would be).

    It runs on the uint8 frames (T, 3, H, W) of one video as the Dataset returns them, so in the DataLoader workers,
    beside the reads, with PIL and PyAV (frame by frame, which is faster on a CPU than batched convolutions);
    benchmarks/bench_data.py measures its cost per batch. Draws come from torch's RNG, which each worker's seed (from
    the sampler's generator, reseeded every epoch) makes reproducible; a mid-epoch resume repeats them exactly only
    without workers (--dataloader_num_workers 0), since a worker's draws depend on the batches it handled before.
    """

    NOISE_STD = (2.0, 10.0)
    SCALE = (0.35, 0.9)
    BLUR_SIGMA = (0.4, 1.5)
    CRF = (23, 40)
    JPEG_QUALITY = (30, 90)

    def __init__(self, probability: float = 0.5):
        self.probability = probability

    def _happens(self) -> bool:
        return bool(torch.rand(()) < self.probability)

    @staticmethod
    def _uniform(low: float, high: float) -> float:
        return float(torch.empty(()).uniform_(low, high))

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        video = np.ascontiguousarray(np.asarray(frames).transpose(0, 2, 3, 1))  # (T, H, W, 3), as images are
        height, width = video.shape[1:3]
        if self._happens():
            noise = torch.randn(video.shape) * self._uniform(*self.NOISE_STD)
            video = (torch.from_numpy(video) + noise).round_().clamp_(0, 255).to(torch.uint8).numpy()
        images = [PIL.Image.fromarray(frame) for frame in video]
        if self._happens():
            scale = self._uniform(*self.SCALE)
            small = (max(1, round(width * scale)), max(1, round(height * scale)))
            images = [
                image.resize(small, PIL.Image.BILINEAR).resize((width, height), PIL.Image.BILINEAR) for image in images
            ]
        if self._happens():
            blur = PIL.ImageFilter.GaussianBlur(self._uniform(*self.BLUR_SIGMA))
            images = [image.filter(blur) for image in images]
        video = np.stack([np.asarray(image) for image in images])
        if self._happens():
            if width % 2 == 0 and height % 2 == 0 and torch.rand(()) < 0.5:  # H.264's 4:2:0 needs even sides
                video = h264_round_trip(video, round(self._uniform(*self.CRF)))
            else:
                video = jpeg_round_trip(video, round(self._uniform(*self.JPEG_QUALITY)))
        return np.ascontiguousarray(video.transpose(0, 3, 1, 2))


def jpeg_round_trip(video: np.ndarray, quality: int) -> np.ndarray:
    """uint8 frames (T, H, W, 3) each encoded as JPEG at `quality` and decoded again."""
    frames = []
    for frame in video:
        buffer = io.BytesIO()
        PIL.Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        frames.append(np.asarray(PIL.Image.open(buffer).convert("RGB")))
    return np.stack(frames)


def h264_round_trip(video: np.ndarray, crf: int) -> np.ndarray:
    """uint8 frames (T, H, W, 3), H and W even, encoded as one H.264 stream at `crf` and decoded again."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        stream.codec_context.thread_count = 1  # each DataLoader worker is a process of its own
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
