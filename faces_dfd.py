"""
Face tracks for the processor's `crop="face"`: the model sees a square around the face instead of the whole frame.

A face in a 1920x1080 frame squeezed whole into 384x384 covers a handful of patches, and blending artifacts vanish;
most deepfake detectors therefore crop faces first. One step per function:

- `detect_faces`: the faces of one frame, with dlib's HOG face detector;
- `track_face`: one face followed through a window's frames, with one box size for the window and a median-smoothed
  centre, so the crop moves with the face without per-frame jitter; frames where it was not found take their
  neighbours' box, and a window without any face keeps its whole frames;
- `crop_boxes` / `crop_frames`: the square crops with a margin around the face (the processor resizes them).

`face_crop` chains them for the processor (processing_dfd.py). The detector is an optional dependency, the package's
`face` extra (`pip install "dfd-detector[face]"`, i.e. `pip install dlib-bin`); benchmarks/RESULTS.md says why this
one. Like the other Hub files, this one imports only numpy and PIL at the top, so an exported model folder loads
without the detector until a face crop is asked for.
"""

import threading
from dataclasses import dataclass

import numpy as np
import PIL.Image


FACE_EXTRA = 'pip install "dfd-detector[face]" (or: pip install dlib-bin)'
FACE_CHOICES = ("largest", "central")
# The detector scans every frame resized to this longest side (down or up), so that it finds the same faces in every
# video whatever its resolution (from about 1/9 of a 16:9 frame's height up) at the same cost; scanning twice as
# large (dlib's upsampling) finds smaller faces at twice the cost (benchmarks/RESULTS.md, "Face detectors").
DETECTION_SIZE = 960
DETECTION_UPSAMPLING = 0
# Names the detector and its settings, for caches of cropped frames: change it whenever detections would change.
FACE_DETECTOR = f"dlib-hog-{DETECTION_SIZE}-up{DETECTION_UPSAMPLING}"
# A detection further than this many face widths from the face followed so far belongs to someone else.
MAX_STEP_IN_FACE_WIDTHS = 1.5

_local = threading.local()


def load_face_detector():
    """dlib's frontal face detector (its model is built into dlib: nothing is downloaded), one per thread."""
    if not hasattr(_local, "detector"):
        try:
            import dlib
        except ImportError as error:
            raise ImportError(f'crop="face" needs the face detector: {FACE_EXTRA}') from error
        _local.detector = dlib.get_frontal_face_detector()
    return _local.detector


def detect_faces(frame: np.ndarray, detector=None) -> np.ndarray:
    """(N, 5) float boxes `x0, y0, x1, y1, score` of the faces in one RGB frame (H, W, 3) uint8, in its pixels."""
    detector = detector or load_face_detector()
    height, width = frame.shape[:2]
    scale = DETECTION_SIZE / max(height, width)
    image = frame
    if scale != 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(PIL.Image.fromarray(frame).resize(size, PIL.Image.BILINEAR, reducing_gap=2.0))
    rectangles, scores, _ = detector.run(np.ascontiguousarray(image), DETECTION_UPSAMPLING, 0.0)
    boxes = [[r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale] for r in rectangles]
    return np.column_stack([np.reshape(boxes, (-1, 4)), np.asarray(scores, dtype=np.float64)])


@dataclass
class FaceTrack:
    """
    One face through a window's frames. `boxes`: (T, 4) face box `x0, y0, x1, y1` per frame. `sources`: per frame,
    "face" (found there), "neighbours" (not found there: the box comes from the nearest frames that had it) or
    "frame" (no face in the whole window: the frame is kept whole).
    """

    boxes: np.ndarray
    sources: list[str]


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., :2] + boxes[..., 2:4]) / 2


def _pick_face(detections: list[np.ndarray], frame_size: tuple[int, int], choice: str) -> tuple[int, np.ndarray]:
    """The frame and box of the face to follow: the largest of the window, or the one nearest the frame's centre."""
    frame_of = np.concatenate([np.full(len(boxes), frame) for frame, boxes in enumerate(detections)]).astype(int)
    boxes = np.concatenate(detections)
    if choice == "largest":
        best = np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    else:
        height, width = frame_size
        best = np.argmin(np.linalg.norm(_centres(boxes[:, :4]) - [width / 2, height / 2], axis=1))
    return frame_of[best], boxes[best, :4]


def _follow(detections: list[np.ndarray], start: int, box: np.ndarray, frames) -> dict[int, np.ndarray]:
    """Walk from frame `start` through `frames`, taking in each the detection nearest the face's last box."""
    followed = {}
    for frame in frames:
        candidates = detections[frame][:, :4]
        if len(candidates):
            distance = np.linalg.norm(_centres(candidates) - _centres(box), axis=1)
            nearest = np.argmin(distance)
            if distance[nearest] <= MAX_STEP_IN_FACE_WIDTHS * (box[2] - box[0]):
                box = followed[frame] = candidates[nearest]
    return followed


def track_face(detections: list[np.ndarray], frame_size: tuple[int, int], choice: str = "largest") -> FaceTrack:
    """
    Follow one face through a window, given each frame's `detect_faces` boxes: the face `choice` picks ("largest" or
    "central"), then in each frame the detection nearest it. The track has one size (the median of the face's
    boxes) and centres smoothed by a median over each frame and its two neighbours, which removes a stray detection
    but keeps steady motion exact.
    """
    if choice not in FACE_CHOICES:
        raise ValueError(f"face_choice must be one of {FACE_CHOICES}, got {choice!r}")
    num_frames = len(detections)
    height, width = frame_size
    detections = [np.reshape(boxes, (-1, 5)) for boxes in detections]
    if not any(len(boxes) for boxes in detections):
        return FaceTrack(np.tile([0.0, 0.0, width, height], (num_frames, 1)), ["frame"] * num_frames)
    start, box = _pick_face(detections, frame_size, choice)
    found = {start: box}
    found.update(_follow(detections, start, box, range(start + 1, num_frames)))
    found.update(_follow(detections, start, box, range(start - 1, -1, -1)))
    frames = np.array(sorted(found))
    boxes = np.stack([found[frame] for frame in frames])
    everywhere = np.arange(num_frames)
    centres = np.stack([np.interp(everywhere, frames, axis) for axis in _centres(boxes).T], axis=1)
    padded = np.concatenate([centres[:1], centres, centres[-1:]])
    centres = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    half = np.median(np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])) / 2
    sources = ["face" if frame in found else "neighbours" for frame in range(num_frames)]
    return FaceTrack(np.concatenate([centres - half, centres + half], axis=1), sources)


def crop_boxes(track: FaceTrack, frame_size: tuple[int, int], margin: float) -> np.ndarray:
    """
    (T, 4) int square crops `x0, y0, x1, y1` around the track's boxes, `margin` face widths larger on every side,
    all of one size (at most the frame's shorter side) and moved inside the frame rather than cut by its edge.
    """
    height, width = frame_size
    if track.sources[0] == "frame":
        return np.tile([0, 0, width, height], (len(track.sources), 1))
    side = (track.boxes[:, 2] - track.boxes[:, 0]).max() * (1 + 2 * margin)
    side = int(min(max(round(side), 1), height, width))
    centres = _centres(track.boxes)
    x0 = np.clip(np.round(centres[:, 0] - side / 2), 0, width - side).astype(int)
    y0 = np.clip(np.round(centres[:, 1] - side / 2), 0, height - side).astype(int)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1)


def crop_frames(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The (T, side, side, 3) crops of frames (T, H, W, 3) by `crop_boxes` (the whole frames when they cover them)."""
    if (boxes[:, 2:] == [frames.shape[2], frames.shape[1]]).all() and (boxes[:, :2] == 0).all():
        return frames
    return np.stack([frame[y0:y1, x0:x1] for frame, (x0, y0, x1, y1) in zip(frames, boxes.tolist())])


def face_crop(frames: np.ndarray, margin: float, choice: str = "largest") -> tuple[np.ndarray, FaceTrack, np.ndarray]:
    """One window's frames (T, H, W, 3) -> (the crops around its face track, the track, the crop boxes)."""
    detector = load_face_detector()
    frame_size = frames.shape[1:3]
    track = track_face([detect_faces(frame, detector) for frame in frames], frame_size, choice)
    boxes = crop_boxes(track, frame_size, margin)
    return crop_frames(frames, boxes), track, boxes


__all__ = [
    "FACE_CHOICES",
    "FACE_DETECTOR",
    "FaceTrack",
    "crop_boxes",
    "crop_frames",
    "detect_faces",
    "face_crop",
    "load_face_detector",
    "track_face",
]
