"""The DFD video processor: videos in, `pixel_values` of `num_frames` frames at 384x384 out.

Decoding and frame sampling live in decoding_dfd.py, the optional face crop in faces_dfd.py, beside this file;
transformers copies them along with this one when the processor is saved, and loads them with `trust_remote_code`.
"""

import functools
import os
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
)
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .decoding_dfd import decode_video, is_frame_list, sample_frame_indices
from .faces_dfd import FACE_CHOICES, face_crop
from .fetching_dfd import is_url, video_file


CROPS = ("frame", "face")
# With crop="face", decoded frames are shrunk to at most this many pixels on their longest side (the face detector
# scans at half of it), so memory stays bounded while the face is cropped from a sharp frame.
FACE_FRAME_SIDE = 1920


# The resize of the call being processed, applied to frames as they are decoded (see `DFDVideoProcessor.preprocess`).
_CALL_RESIZE: ContextVar[Callable | None] = ContextVar("dfd_call_resize", default=None)


def _is_frame_array_list(video) -> bool:
    """A list of (H, W, C) or (C, H, W) numpy arrays or torch tensors: one video, one array per frame."""
    return (
        isinstance(video, (list, tuple))
        and len(video) > 0
        and all(isinstance(frame, (np.ndarray, torch.Tensor)) and frame.ndim == 3 for frame in video)
    )


def _stack_frames(video):
    """A list of frame arrays as one (T, ...) array, so that it is decoded (and its shape reported) as one video."""
    if not _is_frame_array_list(video):
        return video
    shapes = {tuple(frame.shape) for frame in video}
    if len(shapes) > 1:
        raise ValueError(f"The frames of a video must all have one shape; got {sorted(shapes)}.")
    if all(isinstance(frame, torch.Tensor) for frame in video):
        return torch.stack(list(video))
    return np.stack([frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else frame for frame in video])


def _split_batch(videos) -> list:
    """
    One video or a batch of them -> a list of videos. A path, URL, a video file's bytes, a list of PIL images or a list
    of frame arrays is one video (as in transformers' `make_batched_videos`), any other list a batch.
    """
    one_video = isinstance(videos, (str, os.PathLike, bytes, bytearray)) or is_frame_list(videos)
    if one_video or _is_frame_array_list(videos):
        return [_stack_frames(videos)]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        return list(videos) if videos.ndim == 5 else [videos]
    if isinstance(videos, (list, tuple)) and videos:
        return [_stack_frames(video) for video in videos]
    raise TypeError(f"Expected a video or a non-empty list of videos, got {type(videos).__name__}.")


@dataclass
class DFDVideoMetadata(VideoMetadata):
    """
    A video's metadata (`return_metadata=True`) with, for `crop="face"`, what was cropped from each sampled frame:
    `crop_boxes` `[x0, y0, x1, y1]` in the decoded frame's pixels, `face_boxes` the face track's box, and
    `face_sources`: "face" (found in that frame), "neighbours" (not found there: the neighbouring frames' box) or
    "frame" (no face in the whole window: the whole frame, as with `crop="frame"`).
    """

    crop_boxes: list[list[int]] | None = None
    face_boxes: list[list[float]] | None = None
    face_sources: list[str] | None = None


class DFDVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into the model input: `num_frames` frames sampled evenly over each video, resized straight to
    384x384 (no crop, so nothing at the frame edges is lost) and normalised with the CLIP mean and std.

    Accepts one video or a list of videos, each of any kind `load_video_frames` reads, or a video file's bytes, or an
    http(s) URL (fetched by fetching_dfd.py, under the same rules and size cap as the Endpoints handler). Frames are
    resized as they are decoded, so memory grows with the output, not the video's resolution. With
    `return_tensors="pt"`, `pixel_values` is one tensor of shape (batch, num_frames, 3, 384, 384); without it, a list
    holding one (num_frames, 3, 384, 384) tensor per video.

    `crop="face"` (saved in video_preprocessor_config.json, so a model trained on face crops is served with them)
    replaces each frame by a square around the face, `face_margin` face widths larger on every side, that follows one
    face (`face_choice`: the "largest" or the most "central") through the sampled frames; see faces_dfd.py. It needs
    the package's `face` extra. The default, `crop="frame"`, is the model card's recipe: whole frames.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 384, "width": 384}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 12
    model_input_names = ["pixel_values"]

    def __init__(self, crop: str = "frame", face_margin: float = 0.3, face_choice: str = "largest", **kwargs):
        super().__init__(**kwargs)
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if face_choice not in FACE_CHOICES:
            raise ValueError(f"face_choice must be one of {FACE_CHOICES}, got {face_choice!r}")
        if isinstance(face_margin, bool) or not isinstance(face_margin, (int, float)) or not 0 <= face_margin <= 2:
            raise ValueError(f"face_margin must be a number of face widths in [0, 2], got {face_margin!r}")
        self.crop, self.face_margin, self.face_choice = crop, float(face_margin), face_choice

    def crop_window(self, frames: np.ndarray) -> tuple[np.ndarray, dict]:
        """
        The frames the model sees of one window's decoded frames (T, H, W, 3), before the resize to `size`, and what
        was cropped (the `DFDVideoMetadata` fields): the frames themselves, or with `crop="face"` the face track's
        crops. Every path that feeds the model (this processor, hence the pipeline, `dfd predict`, the Endpoints
        handler, the web page and training) goes through here.
        """
        if self.crop == "frame":
            return frames, {}
        crops, track, boxes = face_crop(frames, self.face_margin, self.face_choice)
        return crops, {
            "crop_boxes": boxes.tolist(),
            "face_boxes": None if track.sources[0] == "frame" else np.round(track.boxes, 1).tolist(),
            "face_sources": track.sources,
        }

    def sample_frames(self, metadata: VideoMetadata, num_frames: int | None = None, fps=None, **kwargs) -> np.ndarray:
        """Even sampling over the whole video (see `sample_frame_indices`), whatever its length."""
        if fps is not None:
            raise ValueError(f"{type(self).__name__} samples a fixed number of frames: pass `num_frames`, not `fps`.")
        return sample_frame_indices(metadata.total_num_frames, self.num_frames if num_frames is None else num_frames)

    def preprocess(self, videos, **kwargs) -> BatchFeature:
        """The base class's, with this call's resize handed to the decoder, which applies it to each decoded frame."""
        resize = self._frame_resizer(kwargs.get("do_resize"), kwargs.get("size"), kwargs.get("resample"))
        token = _CALL_RESIZE.set(resize)
        try:
            return super().preprocess(videos, **kwargs)
        finally:
            _CALL_RESIZE.reset(token)

    def _frame_resizer(self, do_resize=None, size=None, resample=None) -> Callable | None:
        """
        One (H, W, 3) uint8 frame -> the frame as the decoder keeps it: resized by this processor's own `resize`, as
        `_preprocess` would resize it, so resizing early changes no pixel (`_preprocess` then finds the frames at
        their size already). With `crop="face"` the face is cropped from the decoded frames first, so they are only
        shrunk to `FACE_FRAME_SIDE` on their longest side.
        """
        if not (self.do_resize if do_resize is None else do_resize):
            return None
        resample = self.resample if resample is None else resample
        if self.crop == "face":
            return functools.partial(self._shrink_frame, resample=resample)
        size = self._standardize_kwargs(size=self.size if size is None else size)["size"]
        return functools.partial(self._resize_one_frame, size=size, resample=resample)

    def _resize_one_frame(self, frame: np.ndarray, size: SizeDict, resample) -> np.ndarray:
        video = torch.from_numpy(np.require(frame, requirements=["C", "W"])[None]).permute(0, 3, 1, 2).contiguous()
        return self.resize(video, size=size, resample=resample)[0].permute(1, 2, 0).numpy()

    def _shrink_frame(self, frame: np.ndarray, resample) -> np.ndarray:
        height, width = frame.shape[:2]
        scale = FACE_FRAME_SIDE / max(height, width)
        if scale >= 1:
            return frame
        size = SizeDict(height=max(1, round(height * scale)), width=max(1, round(width * scale)))
        return self._resize_one_frame(frame, size, resample)

    def resize_frame(self, frame: np.ndarray) -> np.ndarray:
        """A decoded (H, W, 3) uint8 frame resized as this processor resizes it (for callers that decode themselves)."""
        resize = self._frame_resizer()
        return frame if resize is None else resize(frame)

    def _decode_and_sample_videos(
        self,
        videos,
        video_metadata: VideoMetadata | dict | None,
        do_sample_frames: bool | None = None,
        sample_indices_fn: Callable | None = None,
    ) -> tuple[list[np.ndarray], list[VideoMetadata]]:
        """
        Decode every input with PyAV through `load_video_frames`'s loader, never transformers' default decoder (which
        needs `torchcodec` and a system FFmpeg). The metadata is measured, so a caller's `video_metadata` is ignored.
        """

        def sample_indices(total_frames):
            if not do_sample_frames:
                return range(total_frames)
            return sample_indices_fn(metadata=VideoMetadata(total_num_frames=total_frames))

        decoded = [self._decode(video, sample_indices, _CALL_RESIZE.get()) for video in _split_batch(videos)]
        cropped = [self.crop_window(video.frames) for video in decoded]
        metadata = [
            DFDVideoMetadata(
                total_num_frames=video.total_frames,
                fps=video.fps,
                height=video.frames.shape[1],
                width=video.frames.shape[2],
                duration=video.duration,
                video_backend="pyav",
                frames_indices=video.indices.tolist(),
                **crop,
            )
            for video, (_, crop) in zip(decoded, cropped)
        ]
        return [frames for frames, _ in cropped], metadata

    @staticmethod
    def _decode(video, sample_indices, resize):
        if isinstance(video, (bytes, bytearray)) or is_url(video):
            with video_file(video) as path:
                return decode_video(path, sample_indices, resize)
        return decode_video(video, sample_indices, resize)

    def _prepare_input_videos(self, videos, **kwargs):
        """Decoded frames are always (T, H, W, 3), so the channel axis is not guessed from shapes like (3, 3, W, 3)."""
        # Keyword pass-through: the base signature differs between transformers releases (5.17 has no do_convert_rgb).
        kwargs["input_data_format"] = ChannelDimension.LAST
        return super()._prepare_input_videos(videos, **kwargs)

    def _preprocess(self, videos, **kwargs) -> BatchFeature:
        """The base class's resize/rescale/normalise, under the name the model's `forward` takes: `pixel_values`."""
        outputs = super()._preprocess(videos, **kwargs)
        outputs["pixel_values"] = outputs.pop("pixel_values_videos")
        return outputs


DFDVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["DFDVideoMetadata", "DFDVideoProcessor"]
