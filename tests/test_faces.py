"""
Face crops (`crop="face"`): a real face (scikit-image's astronaut photo) moving over a textured background in real mp4
files, found by the real detector (dlib, the `face` extra); the processor's setting saved, loaded and followed by
training, the pipeline, `dfd predict` and the Endpoints handler.
"""

import base64
import io
import json
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoModelForVideoClassification, AutoVideoProcessor, pipeline

from conftest import REPO_ROOT, write_video
from dfd.faces_dfd import FACE_EXTRA, crop_boxes, track_face
from dfd.processing_dfd import DFDVideoProcessor
from dfd.tools.synthetic_videos import face_scene, grass_background
from dfd.tools.train.frame_cache import FrameCache


HEIGHT, WIDTH = 360, 640
MARGIN = 0.3


def iou(a, b) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    return overlap / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap)


def crossing(num_frames, face_height):
    """Centres of a face that crosses the frame from left to right while drifting down."""
    xs = np.linspace(0.2 * WIDTH, 0.8 * WIDTH, num_frames)
    ys = np.linspace(0.4 * HEIGHT, 0.6 * HEIGHT, num_frames)
    return list(zip(xs, ys))


def expected_crop(face_box, side):
    """The crop the truth asks for: a square of `side` around the true face, moved inside the frame."""
    centre = (face_box[:2] + face_box[2:]) / 2
    x0 = np.clip(centre[0] - side / 2, 0, WIDTH - side)
    y0 = np.clip(centre[1] - side / 2, 0, HEIGHT - side)
    return [x0, y0, x0 + side, y0 + side]


@pytest.mark.parametrize("face_height", [60, 120])
def test_the_crop_follows_a_moving_face(make_video, face_height):
    frames, truth = face_scene(HEIGHT, WIDTH, crossing(36, face_height), face_height)
    video = make_video("moving_face.mp4", frames)
    processor = DFDVideoProcessor(crop="face", face_margin=MARGIN)
    outputs = processor(str(video), return_tensors="pt", return_metadata=True)
    metadata = outputs["video_metadata"][0]

    assert outputs["pixel_values"].shape == (1, 12, 3, 384, 384)
    assert metadata.face_sources == ["face"] * 12
    side = (1 + 2 * MARGIN) * face_height
    for index, face_box, crop_box in zip(metadata.frames_indices, metadata.face_boxes, metadata.crop_boxes):
        assert iou(face_box, truth[index]) >= 0.7, (index, face_box, truth[index])
        assert iou(crop_box, expected_crop(truth[index], side)) >= 0.7, (index, crop_box)
        assert crop_box[2] - crop_box[0] == crop_box[3] - crop_box[1]  # square, so the resize keeps the face's shape


def test_frames_without_the_face_take_the_neighbours_box(make_video):
    frames, truth = face_scene(HEIGHT, WIDTH, crossing(12, 100), 100)
    hidden = [4, 5, 11]
    frames[hidden] = grass_background(HEIGHT, WIDTH)
    video = make_video("face_hidden.mp4", frames)
    metadata = DFDVideoProcessor(crop="face")(str(video), return_metadata=True)["video_metadata"][0]

    assert metadata.frames_indices == list(range(12))
    assert [index for index, source in enumerate(metadata.face_sources) if source != "face"] == hidden
    assert {metadata.face_sources[index] for index in hidden} == {"neighbours"}
    for index in range(11):  # the face moves steadily, so the box between its neighbours' is where it would be
        assert iou(metadata.face_boxes[index], truth[index]) >= 0.7, index
    assert metadata.face_boxes[11] == metadata.face_boxes[10]  # after the last sighting: that box


def test_a_video_without_a_face_keeps_its_whole_frames(make_video):
    video = make_video("grass.mp4", np.stack([grass_background(HEIGHT, WIDTH)] * 12))
    outputs = DFDVideoProcessor(crop="face")(str(video), return_tensors="pt", return_metadata=True)
    metadata = outputs["video_metadata"][0]

    assert metadata.face_sources == ["frame"] * 12
    assert metadata.face_boxes is None
    assert metadata.crop_boxes == [[0, 0, WIDTH, HEIGHT]] * 12
    whole_frames = DFDVideoProcessor()(str(video), return_tensors="pt")["pixel_values"]
    assert torch.equal(outputs["pixel_values"], whole_frames)


def test_the_face_to_follow_is_the_largest_or_the_most_central():
    large = np.array([20.0, 100, 140, 220, 1])  # left, 120 px
    small = np.array([290.0, 150, 350, 210, 1])  # centred, 60 px
    drift = np.array([6.0, 0, 6, 0, 0])
    detections = [np.stack([large + frame * drift, small - frame * drift]) for frame in range(6)]
    detections[2] = detections[2][1:]  # the large face is missed once: the track must not jump to the small one
    for choice, followed in (("largest", large), ("central", small)):
        track = track_face(detections, (HEIGHT, WIDTH), choice)
        step = drift if followed is large else -drift
        expected = [followed[:4] + frame * step[:4] for frame in range(6)]
        np.testing.assert_allclose(track.boxes, expected, atol=1e-6)
        sources = ["face", "face", "neighbours", "face", "face", "face"] if followed is large else ["face"] * 6
        assert track.sources == sources


def test_crops_are_squares_inside_the_frame():
    track = track_face([np.array([[600.0, 300, 640, 340, 1]])], (HEIGHT, WIDTH))  # at the bottom-right corner
    assert crop_boxes(track, (HEIGHT, WIDTH), margin=1.0).tolist() == [[520, 240, 640, 360]]
    assert crop_boxes(track, (HEIGHT, WIDTH), margin=5.0).tolist() == [[280, 0, 640, 360]]  # at most the frame


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"crop": "faces"}, "crop must be one of"),
        ({"face_margin": -0.1}, "face_margin must be"),
        ({"face_margin": "0.3"}, "face_margin must be"),
        ({"face_choice": "first"}, "face_choice must be one of"),
    ],
)
def test_bad_settings_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        DFDVideoProcessor(**setting)


def test_without_the_face_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if dlib were not installed: importing it fails
    errors = []
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)

    def crop_in_a_new_thread():  # the detector is loaded once per thread
        try:
            DFDVideoProcessor(crop="face")(frames)
        except ImportError as error:
            errors.append(str(error))

    thread = threading.Thread(target=crop_in_a_new_thread)
    thread.start()
    thread.join()
    assert errors == [f'crop="face" needs the face detector: {FACE_EXTRA}']
    assert "dfd-detector[face]" in FACE_EXTRA


def test_the_frame_cache_keeps_face_crops_apart(tmp_path):
    settings = [{}, {"crop": "face"}, {"crop": "face", "face_margin": 0.5}, {"crop": "face", "face_choice": "central"}]
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
    scores = {entry["label"]: entry["score"] for entry in detector(str(video))}
    assert scores["fake"] == pytest.approx(reference, abs=1e-5)

    result = subprocess.run(
        [sys.executable, "-m", "dfd.tools.cli", "predict", str(video), "--model", str(face_model), "--format", "json",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["score"] == pytest.approx(reference, abs=1e-5)

    from dfd.cards_dfd import VideoReport
    from dfd.page_dfd import VideoAnalyzer, VideoInput
    from dfd.tools.loading import load_scorer

    analyzer = VideoAnalyzer(load_scorer(str(face_model), device="cpu"))
    events = analyzer.analyze([VideoInput("v.mp4", str(video), True)], 1)
    (page,) = [event for event in events if isinstance(event, VideoReport)]
    assert page.record["score"] == pytest.approx(reference, abs=1e-5)
    # The square face crops, not the 4:3 frames.
    (shown,) = {PIL.Image.open(io.BytesIO(thumbnail.jpeg)).size for thumbnail in page.thumbnails}
    assert shown[0] == shown[1] and len(page.thumbnails) == 4

    from dfd.handler import EndpointHandler

    response = EndpointHandler(str(face_model))({"inputs": base64.b64encode(video.read_bytes()).decode()})
    assert {entry["label"]: entry["score"] for entry in response}["fake"] == pytest.approx(reference, abs=1e-5)
