"""The DFD video processor: videos in, the model's `pixel_values` out, one row per time window (per face in it).

It owns the one sampling rule (`num_frames` frames spread evenly over a window, the card's `np.linspace` over the
whole video when there is one window) and the windows that tile a longer video. Each video passes the one input gate
(inputs_dfd.py), is decoded once (decoding_dfd.py) with its frames resized as they come, cropped to faces when the
model was trained on faces (faces_dfd.py), and normalised by transformers' own video processing. transformers copies
these sibling files along with this one when the processor is saved, and loads them with `trust_remote_code`.
"""

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ChannelDimension, PILImageResampling, SizeDict
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .decoding_dfd import is_frame_list, read_video
from .faces_dfd import FACE_CHOICES, face_crops, face_detector_settings
from .inputs_dfd import Limits, video_file


logger = logging.getLogger(__name__)

CROPS = ("frame", "face")
# With crop="face", decoded frames are shrunk to at most this many pixels on their longest side (the face detector
# scans at half of it), so memory stays bounded while the face is cropped from a sharp frame.
FACE_FRAME_SIDE = 1920
# A video up to this many window durations long is one window: the model card's sampling of the whole video.
ONE_WINDOW_UP_TO = 1.5
# With crop="face", the face tracks scored per window at most (the largest, or most central, first): each is a row,
# one forward of the model, so that a crowd costs at most this many.
MAX_FACES = 4


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """
    Indices of `num_frames` frames spread evenly from the first to the last frame, as in the model card's reference
    `np.linspace(0, total - 1, num_frames, dtype=int)`. Shorter videos repeat frames evenly instead of failing.
    """
    if total_frames < 1:
        raise ValueError(f"A video needs at least one frame, got total_frames={total_frames}.")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    return np.linspace(0, total_frames - 1, num_frames).astype(np.int64)


def window_frame_indices(total_frames: int, num_frames: int, num_windows: int) -> np.ndarray:
    """
    (num_windows, num_frames) frame indices: the video is cut into `num_windows` equal consecutive windows, each
    sampled evenly, so the windows tile the whole video and one window is the model card's sampling.
    """
    if num_windows < 1:
        raise ValueError(f"num_windows must be at least 1, got {num_windows}.")
    bounds = np.linspace(0, total_frames, num_windows + 1).round().astype(np.int64)
    starts = np.minimum(bounds[:-1], total_frames - 1)
    lengths = np.maximum(bounds[1:] - starts, 1)
    return np.stack([start + sample_frame_indices(length, num_frames) for start, length in zip(starts, lengths)])


def windows_at_training_density(duration: float | None, window_duration: float | None) -> int:
    """
    How many windows tile a video of `duration` seconds so that each lasts about `window_duration`, the duration a
    training window covered: frames then lie as far apart as the model saw in training. A video up to 1.5 windows
    long (or of unknown duration, or for a model without `window_duration`) is one window.
    """
    if not window_duration or not duration or duration <= ONE_WINDOW_UP_TO * window_duration:
        return 1
    return max(1, round(duration / window_duration))


def window_count(
    total_frames: int,
    duration: float | None,
    num_frames: int,
    windows: int | None = None,
    window_duration: float | None = None,
    max_windows: int | None = None,
) -> tuple[int, str | None]:
    """
    How many windows a video gets, and why fewer than asked when so: `windows` equal windows, else as many as tile
    it at `window_duration` seconds each, else one; at most `max_windows`, and never so many that a window holds
    fewer than `num_frames` distinct frames, which the model never saw in training (a 16-frame clip in 8 windows
    would be 2 frames repeated 6 times each). A video shorter than `num_frames` frames is one window, as in training.
    """
    asked = windows or windows_at_training_density(duration, window_duration)
    wanted = f"{asked} windows asked" if windows else f"{asked} windows at the training density"
    count = min(asked, max(1, total_frames // num_frames))
    if count < asked:
        return (
            count,
            f"{wanted}, {count} scored: a window needs {num_frames} distinct frames and the video has {total_frames}",
        )
    if max_windows and count > max_windows:
        return max_windows, f"{wanted}, {max_windows} scored (the limit)"
    return count, None


@dataclass
class DFDWindowMetadata:
    """
    One row of `pixel_values`: time window `window` of its video, its frames (`frames_indices`, shown at
    `timestamps` seconds, None where the source does not time its frames) and, with `crop="face"`, which face and what
    was cropped from each frame. A window has one row per face track, `face` 0, 1, ... in the processor's
    `face_choice` order, or one row of whole frames (`face` None) when it has no face. Per frame: `crop_boxes`
    `[x0, y0, x1, y1]` in the decoded frame's pixels, `face_boxes` the track's face box (None where the frame is kept
    whole), `face_sources` ("face": detected there; "neighbours": carried from detections of that face in the nearest
    frames of the same shot; "frame": neither, the whole frame, resized to the crops' square in a face's row).
    """

    window: int
    frames_indices: list[int]
    timestamps: list[float | None]
    face: int | None = None
    crop_boxes: list[list[int]] | None = None
    face_boxes: list[list[float] | None] | None = None
    face_sources: list[str] | None = None


@dataclass
class DFDVideoMetadata(VideoMetadata):
    """A video's metadata (`return_metadata=True`), with its `windows`, one per row of `pixel_values`, in order."""

    windows: list[DFDWindowMetadata] | None = None
    notes: list[str] | None = None
    """Why the video got fewer windows than asked, when it did; also logged as a warning."""

    @property
    def face_tracks(self) -> list[dict]:
        """
        With `crop="face"`, the faces tracked in each window, read from the rows of `windows`: per track its
        `window`, `face` number, `boxes` (per frame, None where not followed) and `sources`; empty without faces.
        """
        return [
            {"window": row.window, "face": row.face, "boxes": row.face_boxes, "sources": row.face_sources}
            for row in self.windows or []
            if row.face is not None
        ]


def _is_frame_array_list(video) -> bool:
    """A list of (H, W, C) or (C, H, W) numpy arrays or torch tensors: one video, one array per frame."""
    return (
        isinstance(video, (list, tuple))
        and len(video) > 0
        and all(isinstance(frame, (np.ndarray, torch.Tensor)) and frame.ndim == 3 for frame in video)
    )


def _stack_frames(video):
    """A list of frame arrays as one (T, ...) array, so that it is read (and its shape reported) as one video."""
    if not _is_frame_array_list(video):
        return video
    shapes = {tuple(frame.shape) for frame in video}
    if len(shapes) > 1:
        raise ValueError(f"The frames of a video must all have one shape; got {sorted(shapes)}.")
    if all(isinstance(frame, torch.Tensor) for frame in video):
        return torch.stack(list(video))
    return np.stack([frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else frame for frame in video])


def split_batch(videos) -> list:
    """
    One video or a batch of them -> a list of videos. A path, URL, a video file's bytes, a list of PIL images or a list
    of frame arrays is one video (as in transformers' `make_batched_videos`), any other list a batch.
    """
    one_video = isinstance(videos, (str, os.PathLike, bytes, bytearray, memoryview)) or is_frame_list(videos)
    if one_video or _is_frame_array_list(videos):
        return [_stack_frames(videos)]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        return list(videos) if videos.ndim == 5 else [videos]
    if isinstance(videos, (list, tuple)) and videos:
        return [_stack_frames(video) for video in videos]
    raise TypeError(f"Expected a video or a non-empty list of videos, got {type(videos).__name__}.")


class DFDVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into the model input: per time window, `num_frames` frames sampled evenly over it, resized straight
    to 384x384 (no crop, so nothing at the frame edges is lost) and normalised with the CLIP mean and std.

    Accepts one video or a list of videos: a path (a video file or a folder of frame images), an http(s) URL or a
    video file's bytes (through the input gate, inputs_dfd.py: size cap, public addresses, deadline), a list of PIL
    images, a (T, H, W, C) / (T, C, H, W) array or tensor, or a list of per-frame arrays. Frames are resized as they
    are decoded (to the processor's `size`; a call that asks another `size` resizes them again), so memory grows with
    the output, not the video's resolution.

    `windows=N` cuts each video into N equal windows, `window_duration=S` into windows of about S seconds (the
    pipeline passes the model's `window_duration`, the training videos' median duration); by default a video is one
    window, the model card's sampling. `pixel_values` has one row per window (with `crop="face"`, per face in it), all
    videos' windows in order: shape (rows, num_frames, 3, 384, 384) with `return_tensors="pt"`. With
    `return_metadata=True`, `video_metadata` holds per video its `windows`, one `DFDWindowMetadata` per row (frame
    indices, times, face and crop boxes) in the same order.

    `crop="face"` (saved in video_preprocessor_config.json, so a model trained on face crops is served with them)
    turns each window into one row per face followed through its frames, each frame a square around that face,
    `face_margin` face widths larger on every side: at most `max_faces` faces, the largest or the most central first
    (`face_choice`), so that the first row is the face a one-face model was trained on. A window without a face is one
    row of whole frames. `face_detector` names the detector and its settings (faces_dfd.FACE_DETECTORS; default
    libfacedetection), saved too, so that a crop is reproducible; see faces_dfd.py. It needs the package's `face`
    extra. The default, `crop="frame"`, is the model card's recipe: whole frames, one row per window.
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

    def __init__(
        self,
        crop: str = "frame",
        face_margin: float = 0.3,
        face_choice: str = "largest",
        face_detector: dict | None = None,
        max_faces: int = MAX_FACES,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if face_choice not in FACE_CHOICES:
            raise ValueError(f"face_choice must be one of {FACE_CHOICES}, got {face_choice!r}")
        if isinstance(face_margin, bool) or not isinstance(face_margin, (int, float)) or not 0 <= face_margin <= 2:
            raise ValueError(f"face_margin must be a number of face widths in [0, 2], got {face_margin!r}")
        if isinstance(max_faces, bool) or not isinstance(max_faces, int) or not 1 <= max_faces <= 64:
            raise ValueError(f"max_faces must be a whole number of faces in [1, 64], got {max_faces!r}")
        self.crop, self.face_margin, self.face_choice = crop, float(face_margin), face_choice
        self.face_detector, self.max_faces = face_detector_settings(face_detector), max_faces

    def preprocess(
        self,
        videos,
        windows: int | None = None,
        window_duration: float | None = None,
        limits: Limits | None = None,
        decode_threads: int | None = None,
        return_metadata: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """
        Decode, sample and crop every video, then resize and normalise its windows with the base class. `limits`
        (a server's `inputs_dfd.Limits`) caps the windows and the frames decoding may take; `decode_threads` is this
        call's share of the decoding threads (callers decoding several videos at once give each a share).
        """
        for name, value in (("windows", windows), ("decode_threads", decode_threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        if window_duration is not None and not (isinstance(window_duration, (int, float)) and window_duration > 0):
            raise ValueError(f"window_duration must be a positive number of seconds, got {window_duration!r}")
        if kwargs.pop("fps", None) is not None:
            raise ValueError(f"{type(self).__name__} samples a fixed number of frames: pass `num_frames`, not `fps`.")
        kwargs.pop("video_metadata", None)  # measured from each video, never taken from the caller
        num_frames = kwargs.pop("num_frames", None) or self.num_frames
        sample = kwargs.pop("do_sample_frames", None)
        sample = self.do_sample_frames if sample is None else sample
        transform = self._decode_transform(kwargs.get("do_resize"), kwargs.get("size"), kwargs.get("resample"))

        rows, metadata = [], []
        for video in split_batch(videos):

            def choose(info, notes):
                if not sample:  # frames already picked by the caller: all of them, one window
                    return np.arange(info.total_frames)[None]
                count, note = window_count(
                    info.total_frames,
                    info.duration,
                    num_frames,
                    windows,
                    window_duration,
                    limits and limits.max_windows,
                )
                if note:
                    notes.append(note)
                indices = window_frame_indices(info.total_frames, num_frames, count)
                if limits is not None:
                    limits.check_decoding(info, indices)
                return indices

            video_rows, video_metadata = self._decode_windows(video, choose, transform, decode_threads)
            rows += video_rows
            metadata.append(video_metadata)
        outputs = super().preprocess(
            rows, do_sample_frames=False, input_data_format=ChannelDimension.LAST, return_metadata=False, **kwargs
        )
        outputs["pixel_values"] = outputs.pop("pixel_values_videos")
        if return_metadata:
            outputs["video_metadata"] = metadata
        return outputs

    def _decode_windows(self, video, choose, transform, threads) -> tuple[list[np.ndarray], DFDVideoMetadata]:
        """One video's rows (the frames of each window, cropped) and metadata; decoded once, all windows together."""
        notes, shape = [], {}

        def indices(info):
            chosen = choose(info, notes)
            shape["windows"] = chosen.shape
            return chosen.reshape(-1)

        if isinstance(video, (bytes, bytearray, memoryview, str, os.PathLike)):
            with video_file(video) as path:
                decoded = read_video(path, indices, threads, transform)
        else:
            decoded = read_video(video, indices, threads, transform)
        info = decoded.info
        frames = decoded.frames.reshape(*shape["windows"], *decoded.frames.shape[1:])
        indices_by_window = decoded.indices.reshape(shape["windows"])
        times = decoded.timestamps.reshape(shape["windows"])
        rows, windows = [], []
        for window, (window_frames, window_indices, window_times) in enumerate(zip(frames, indices_by_window, times)):
            for cropped, crop in self.crop_frames(window_frames, window_times):
                rows.append(cropped)
                windows.append(
                    DFDWindowMetadata(
                        window=window,
                        frames_indices=window_indices.tolist(),
                        timestamps=[None if np.isnan(time) else round(float(time), 6) for time in window_times],
                        **crop,
                    )
                )
        for note in notes:
            logger.warning(f"{info.path}: {note}")
        metadata = DFDVideoMetadata(
            total_num_frames=info.total_frames,
            fps=info.fps,
            width=info.width,
            height=info.height,
            duration=info.duration,
            video_backend="pyav",
            frames_indices=decoded.indices.tolist(),
            windows=windows,
            notes=notes,
        )
        return rows, metadata

    def crop_frames(self, frames: np.ndarray, timestamps=None) -> list[tuple[np.ndarray, dict]]:
        """
        The rows the model sees of one window's decoded frames (T, H, W, 3), before the resize to `size`, each with
        what was cropped (`DFDWindowMetadata` fields): the frames themselves, or with `crop="face"` one row of crops
        per face track (one row of whole frames without a face). `timestamps`: the frames' seconds (NaN: untimed).
        """
        if self.crop == "frame":
            return [(frames, {})]
        height, width = frames.shape[1:3]
        tracks = face_crops(frames, self.face_margin, self.face_choice, self.max_faces, self.face_detector, timestamps)
        if not tracks:
            whole = {"crop_boxes": [[0, 0, width, height]] * len(frames), "face_sources": ["frame"] * len(frames)}
            return [(frames, whole)]
        return [
            (
                crops,
                {
                    "face": face,
                    "crop_boxes": boxes.tolist(),
                    "face_boxes": [
                        None if source == "frame" else np.round(box, 1).tolist()
                        for box, source in zip(track.boxes, track.sources)
                    ],
                    "face_sources": track.sources,
                },
            )
            for face, (crops, track, boxes) in enumerate(tracks)
        ]

    def _decode_transform(self, do_resize=None, size=None, resample=None):
        """
        What each decoded (H, W, 3) uint8 frame becomes as it comes out of the decoder: resized by this processor's own
        `resize`, as the base class would resize it, so resizing early changes no pixel (the base class then finds the
        frames at their size). With `crop="face"` the face is cropped from the decoded frames first, so they are only
        shrunk to `FACE_FRAME_SIDE` on their longest side.
        """
        if not (self.do_resize if do_resize is None else do_resize):
            return None
        resample = self.resample if resample is None else resample
        size = SizeDict(**get_size_dict(self.size if size is None else size))

        def resize(frame: np.ndarray, size: SizeDict) -> np.ndarray:
            video = torch.from_numpy(np.require(frame, requirements=["C", "W"])[None]).permute(0, 3, 1, 2)
            return self.resize(video.contiguous(), size=size, resample=resample)[0].permute(1, 2, 0).numpy()

        def shrink(frame: np.ndarray) -> np.ndarray:
            height, width = frame.shape[:2]
            scale = FACE_FRAME_SIDE / max(height, width)
            if scale >= 1:
                return frame
            return resize(frame, SizeDict(height=max(1, round(height * scale)), width=max(1, round(width * scale))))

        return shrink if self.crop == "face" else lambda frame: resize(frame, size)

    def sample_frames(self, metadata: VideoMetadata, num_frames: int | None = None, fps=None, **kwargs) -> np.ndarray:
        """The one sampling rule, `sample_frame_indices`: frames spread evenly over the whole video."""
        if fps is not None:
            raise ValueError(f"{type(self).__name__} samples a fixed number of frames: pass `num_frames`, not `fps`.")
        return sample_frame_indices(metadata.total_num_frames, num_frames or self.num_frames)


DFDVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["DFDVideoMetadata", "DFDVideoProcessor", "DFDWindowMetadata", "sample_frame_indices"]
