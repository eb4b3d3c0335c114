"""
Face crops (`crop="face"`): which detector, and what the crop costs.

    .venv/bin/python benchmarks/bench_faces.py [--json faces.json] [--quick]

1. Face detectors on video frames: a real face (scikit-image's astronaut photograph) pasted on a textured background
   (its grass photograph) in 1920x1080 frames, at several face heights and positions, plus frames without a face.
   Each detector scans the frame resized to 960 px wide, as faces_dfd.py does. Candidates: dlib's HOG detector (the
   package's `detect_faces`) and OpenCV's Haar cascade (`haarcascade_frontalface_default.xml`, shipped in
   opencv-python-headless 4.x; OpenCV 5 dropped the cascade classifier), measured when cv2 offers it.
2. Decoding the 12 frames of one 1080p video alone, against decoding them and cropping the face track (detection,
   tracking, crop), in one run with the runs taking turns.
"""

import time

import numpy as np
import torch

from common import CACHE_DIR, base_parser, format_table, goal, measure_interleaved, parse_arguments, report
from dfd.decoding_dfd import probe_video, read_video
from dfd.faces_dfd import DETECTION_SIZE, detect_faces, face_crop, load_face_detector
from dfd.tools.synthetic_videos import face_scene, grass_background, write_video


FACE_HEIGHTS = (60, 90, 130, 240, 400)
POSITIONS = ((0.5, 0.5), (0.2, 0.3), (0.8, 0.3), (0.2, 0.7), (0.8, 0.7))  # centre and near the corners


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def haar_detector(smallest: float):
    """
    OpenCV's frontal-face Haar cascade, scanning as `detect_faces` does (resized to DETECTION_SIZE) on one thread for
    faces from `smallest` of the frame height up, or None without it.
    """
    try:
        import cv2
    except ImportError:
        return None
    if not hasattr(cv2, "CascadeClassifier"):
        return None
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    cv2.setNumThreads(1)  # as dlib's detector: one core each

    def detect(frame):
        scale = DETECTION_SIZE / max(frame.shape[:2])
        resized = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)
        side = max(20, round(smallest * gray.shape[0]))
        boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
        return np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=np.float64).reshape(-1, 4) / scale

    return detect


def compare_detectors(width: int, height: int, face_heights) -> list[dict]:
    dlib_detector = load_face_detector()
    detectors = {"dlib HOG (dlib-bin)": lambda frame: detect_faces(frame, dlib_detector)[:, :4]}
    for smallest, name in ((0.0, "all sizes"), (1 / 12, "faces from 1/12 of the height")):
        haar = haar_detector(smallest)
        if haar is not None:
            detectors[f"OpenCV Haar (opencv-python-headless 4.x), {name}"] = haar
    background = grass_background(height, width)
    rows = []
    for name, detect in detectors.items():
        detect(background)  # warm-up
        for face_height in face_heights:
            hits, ious, false_positives, seconds = 0, [], 0, 0.0
            for x, y in POSITIONS:
                frames, truth = face_scene(height, width, [(x * width, y * height)], face_height)
                start = time.perf_counter()
                boxes = detect(frames[0])
                seconds += time.perf_counter() - start
                overlaps = [iou(box, truth[0]) for box in boxes]
                best = max(overlaps, default=0.0)
                hits += int(best >= 0.5)
                ious += [best] if best >= 0.5 else []
                false_positives += sum(int(overlap < 0.1) for overlap in overlaps)
            rows.append(
                {
                    "detector": name,
                    "face_height_px": face_height,
                    "found": f"{hits}/{len(POSITIONS)}",
                    "mean_iou_found": float(np.mean(ious)) if ious else None,
                    "false_positives": false_positives,
                    "ms_per_frame": 1000 * seconds / len(POSITIONS),
                }
            )
        start = time.perf_counter()
        empty = detect(background)
        rows.append(
            {
                "detector": name,
                "face_height_px": "no face",
                "found": "-",
                "false_positives": len(empty),
                "ms_per_frame": 1000 * (time.perf_counter() - start),
            }
        )
    return rows


def moving_face_video(width: int, height: int, seconds: float, fps: int, face_height: int):
    """A video whose face crosses the frame, written once into the benchmark cache."""
    path = CACHE_DIR / f"face_{width}x{height}_{seconds:g}s_{fps}fps.mp4"
    if not path.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        count = int(seconds * fps)
        centres = zip(np.linspace(0.25 * width, 0.75 * width, count), np.linspace(0.4 * height, 0.6 * height, count))
        frames = (face_scene(height, width, [centre], face_height)[0][0] for centre in centres)
        staging = path.with_name(f".{path.name}.partial.mp4")
        write_video(staging, frames, fps=fps, gop=2 * fps, crf=23)
        staging.replace(path)
    return path


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each (best reported).")
    args = parse_arguments(parser, argv)
    width, height = (640, 360) if args.quick else (1920, 1080)
    repeats = 1 if args.quick else args.repeats

    detector_rows = compare_detectors(width, height, (120,) if args.quick else FACE_HEIGHTS)

    video = moving_face_video(width, height, 2 if args.quick else 10, 25, height // 6)
    info = probe_video(video)
    seconds = measure_interleaved(
        {
            "decode": lambda: read_video(info, num_frames=12),
            "decode_and_face_crop": lambda: face_crop(read_video(info, num_frames=12).frames, margin=0.3),
        },
        repeats,
    )
    _, track, _ = face_crop(read_video(info, num_frames=12).frames, margin=0.3)
    crop_row = {
        "video": f"{width}x{height}, {info.duration:g} s, face {height // 6} px tall",
        "decode_s": seconds["decode"],
        "decode_and_face_crop_s": seconds["decode_and_face_crop"],
        "ratio": seconds["decode_and_face_crop"] / seconds["decode"],
        "frames_with_face": f"{track.sources.count('face')}/12",
    }
    large_enough = [
        row["found"]
        for row in detector_rows
        if row["detector"].startswith("dlib") and row["found"] != "-" and row["face_height_px"] > height / 9
    ]
    everywhere = f"{len(POSITIONS)}/{len(POSITIONS)}"
    goals = [
        goal(
            "dlib finds faces from 1/9 of the frame height up",
            None,
            "all positions",
            all(found == everywhere for found in large_enough),
        )
    ]
    return report(
        args,
        "faces",
        torch.device("cpu"),
        [
            format_table(
                f"Face detectors on {width}x{height} frames (astronaut on grass)",
                ["detector", "face_height_px", "found", "mean_iou_found", "false_positives", "ms_per_frame"],
                detector_rows,
            ),
            format_table(
                f"Decoding 12 frames, with and without the face crop (best of {repeats})",
                list(crop_row),
                [crop_row],
            ),
        ],
        goals,
        detectors=detector_rows,
        crop=crop_row,
    )


if __name__ == "__main__":
    main()
