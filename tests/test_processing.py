"""The video processor: every input kind to `pixel_values`, one row per time window, with the windows' metadata."""

import json
import logging
import shutil

import av
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoVideoProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from conftest import (
    REPO_ROOT,
    barcode_frames,
    brightness,
    frame_folder,
    numbered_frames,
    pixel_values_brightness,
    read_barcode,
    sampled_frames,
    write_video,
)
from dfd.inputs_dfd import Limits
from dfd.probing_dfd import VideoDecodeError
from dfd.processing_dfd import (
    DFDVideoProcessor,
    sample_frame_indices,
    window_count,
    window_frame_indices,
    windows_at_training_density,
)

MEAN = np.array(OPENAI_CLIP_MEAN, dtype=np.float32)
STD = np.array(OPENAI_CLIP_STD, dtype=np.float32)


# --- the sampling rule and the windows ----------------------------------------------------------------------------


def test_sample_frame_indices_is_the_model_card_linspace():
    for total in (1, 5, 12, 13, 300, 10_001):
        expected = np.linspace(0, total - 1, 12, dtype=int)
        np.testing.assert_array_equal(sample_frame_indices(total, 12), expected)
    assert sample_frame_indices(300, 12).dtype == np.int64
    assert sample_frame_indices(300, 12).tolist() == [0, 27, 54, 81, 108, 135, 163, 190, 217, 244, 271, 299]


def test_short_videos_repeat_frames_evenly():
    assert sample_frame_indices(5, 12).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    assert sample_frame_indices(1, 12).tolist() == [0] * 12
    with pytest.raises(ValueError, match="at least one frame"):
        sample_frame_indices(0, 12)
    with pytest.raises(ValueError, match="num_frames"):
        sample_frame_indices(10, 0)


def test_windows_tile_the_video_each_sampled_evenly():
    indices = window_frame_indices(300, 12, 3)
    assert indices.shape == (3, 12)
    for window, row in enumerate(indices):
        np.testing.assert_array_equal(row, window * 100 + sample_frame_indices(100, 12))
    np.testing.assert_array_equal(window_frame_indices(300, 12, 1)[0], sample_frame_indices(300, 12))


def test_windows_at_the_training_density():
    assert windows_at_training_density(30.0, 2.0) == 15
    assert windows_at_training_density(3.0, 2.0) == 1  # up to 1.5 windows long: one window, the card's sampling
    assert windows_at_training_density(3.1, 2.0) == 2
    assert windows_at_training_density(None, 2.0) == windows_at_training_density(30.0, None) == 1


def test_a_window_never_holds_fewer_distinct_frames_than_the_model_takes():
    assert window_count(300, 12.0, 12, windows=8) == (8, None)
    count, note = window_count(16, 0.64, 12, windows=8)
    assert count == 1
    assert note == "8 windows asked, 1 scored: a window needs 12 distinct frames and the video has 16"
    assert window_count(5, 0.2, 12)[0] == 1  # shorter than a window: one window that repeats frames, as in training
    assert window_count(300, 120.0, 12, window_duration=2.0, max_windows=32) == (
        25,
        "60 windows at the training density, 25 scored: a window needs 12 distinct frames and the video has 300",
    )
    assert window_count(3000, 120.0, 12, window_duration=2.0, max_windows=32) == (
        32,
        "60 windows at the training density, 32 scored (the limit)",
    )


def test_the_processor_cuts_a_video_into_windows_decoded_in_one_pass(make_video, monkeypatch):
    path = make_video("clip.mp4", barcode_frames(120), gop=30, fps=10)
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    processor = DFDVideoProcessor(size={"height": 64, "width": 64})
    outputs = processor(str(path), windows=4, decode_threads=1, return_metadata=True, return_tensors="pt")
    assert len(opened) == 1  # probed and decoded through one container (more threads: decoders side by side)
    assert outputs["pixel_values"].shape == (4, 12, 3, 64, 64)
    (metadata,) = outputs["video_metadata"]
    assert [window.window for window in metadata.windows] == [0, 1, 2, 3]
    expected = window_frame_indices(120, 12, 4)
    assert [window.frames_indices for window in metadata.windows] == expected.tolist()
    assert metadata.windows[2].timestamps == pytest.approx((expected[2] / 10).tolist())
    # Each row holds exactly its window's frames.
    images = (
        np.round((outputs["pixel_values"].numpy() * STD[:, None, None] + MEAN[:, None, None]).clip(0, 1) * 255)
        .astype(np.uint8)
        .transpose(0, 1, 3, 4, 2)
    )
    assert [[read_barcode(frame) for frame in row] for row in images] == expected.tolist()


def test_window_duration_tiles_a_long_video_and_leaves_a_short_one_whole(make_video):
    processor = DFDVideoProcessor(size={"height": 32, "width": 32})
    long = make_video("long.mp4", numbered_frames(200, 32, 32), fps=20)  # 10 s
    short = make_video("short.mp4", numbered_frames(50, 32, 32), fps=20)  # 2.5 s
    outputs = processor([long, short], window_duration=2.0, return_metadata=True, return_tensors="pt")
    assert outputs["pixel_values"].shape == (5 + 1, 12, 3, 32, 32)
    assert [len(metadata.windows) for metadata in outputs["video_metadata"]] == [5, 1]
    assert outputs["video_metadata"][1].windows[0].frames_indices == sample_frame_indices(50, 12).tolist()


def test_too_many_windows_are_capped_with_a_warning_never_scored_silently(make_video, caplog):
    path = make_video("short.mp4", barcode_frames(16))
    with caplog.at_level(logging.WARNING):
        outputs = DFDVideoProcessor(size={"height": 64, "width": 64})(
            str(path), windows=8, return_metadata=True, return_tensors="pt"
        )
    assert outputs["pixel_values"].shape == (1, 12, 3, 64, 64)
    (note,) = outputs["video_metadata"][0].notes
    assert note == "8 windows asked, 1 scored: a window needs 12 distinct frames and the video has 16"
    assert [record.getMessage() for record in caplog.records] == [f"{path}: {note}"]


def test_a_server_limits_windows_and_decoding_work(make_video):
    processor = DFDVideoProcessor(size={"height": 32, "width": 32})
    path = make_video("clip.mp4", numbered_frames(240, 32, 32), gop=240, fps=24)  # one keyframe: decode to the end
    limits = Limits(max_windows=3, max_decoded_frames=100)
    with pytest.raises(VideoDecodeError, match=r"clip.mp4: the requested frames take decoding 240 frames, above the"):
        processor(str(path), windows=2, limits=limits)
    limits = Limits(max_windows=3, max_decoded_frames=1000, max_duration=5)
    with pytest.raises(VideoDecodeError, match=r"the video lasts 10.0 s, above the 5 s limit"):
        processor(str(path), limits=limits)
    limits = Limits(max_windows=3)
    outputs = processor(str(path), window_duration=1.0, limits=limits, return_metadata=True)
    assert len(outputs["video_metadata"][0].windows) == 3
    assert "scored (the limit)" in outputs["video_metadata"][0].notes[0]


def test_bad_window_arguments_are_refused(make_video):
    path = make_video("clip.mp4", numbered_frames(30))
    for arguments, message in [
        ({"windows": 0}, "windows must be a whole number"),
        ({"windows": 2.5}, "windows must be a whole number"),
        ({"window_duration": -1}, "window_duration must be a positive number"),
        ({"decode_threads": 0}, "decode_threads must be a whole number"),
    ]:
        with pytest.raises(ValueError, match=message):
            DFDVideoProcessor()(str(path), **arguments)


# --- every input kind ---------------------------------------------------------------------------------------------


NUM_INPUT_FRAMES = 30
EXPECTED_BRIGHTNESS = brightness(numbered_frames(NUM_INPUT_FRAMES)[sample_frame_indices(NUM_INPUT_FRAMES, 12)])


@pytest.fixture
def every_input_kind(tmp_path):
    """The same 30 numbered 48x40 frames as each kind of input the processor accepts."""
    frames = numbered_frames(NUM_INPUT_FRAMES, height=40, width=48)
    path = write_video(tmp_path / "clip.mp4", frames)
    return {
        "path str": str(path),
        "pathlib.Path": path,
        "frame folder": frame_folder(tmp_path, frames),
        "PIL list": [PIL.Image.fromarray(frame) for frame in frames],
        "numpy THWC": frames,
        "numpy TCHW": frames.transpose(0, 3, 1, 2).copy(),
        "torch THWC": torch.from_numpy(frames),
        "torch TCHW": torch.from_numpy(frames).permute(0, 3, 1, 2),
        "torch float [0, 1]": torch.from_numpy(frames).float() / 255,
    }


def test_processor_handles_every_input_kind(every_input_kind):
    processor = DFDVideoProcessor()
    for kind, video in every_input_kind.items():
        pixel_values = processor(video, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape == (1, 12, 3, 384, 384), kind
        assert pixel_values.dtype == torch.float32, kind
        np.testing.assert_allclose(
            pixel_values_brightness(pixel_values[0]), EXPECTED_BRIGHTNESS, atol=1.5, err_msg=kind
        )


def test_processor_batches_a_list_mixing_input_kinds(every_input_kind):
    videos = list(every_input_kind.values())
    pixel_values = DFDVideoProcessor()(videos, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (len(videos), 12, 3, 384, 384)
    for video_pixels in pixel_values:
        np.testing.assert_allclose(pixel_values_brightness(video_pixels), EXPECTED_BRIGHTNESS, atol=1.5)
    stacked = np.stack([every_input_kind["numpy THWC"]] * 2)  # a 5-D array is a batch too
    assert DFDVideoProcessor()(stacked, return_tensors="pt")["pixel_values"].shape == (2, 12, 3, 384, 384)


def test_processor_normalises_with_the_clip_mean_and_std():
    video = np.zeros((4, 50, 70, 3), dtype=np.uint8)
    video[..., 0], video[..., 1], video[..., 2] = 100, 30, 250
    pixel_values = DFDVideoProcessor()(video, return_tensors="pt")["pixel_values"]
    expected = (np.array([100, 30, 250]) / 255 - MEAN) / STD
    assert pixel_values.shape == (1, 12, 3, 384, 384)
    for channel in range(3):
        torch.testing.assert_close(
            pixel_values[0, :, channel], torch.full((12, 384, 384), float(expected[channel])), atol=1e-5, rtol=0
        )


def test_videos_shorter_than_num_frames_repeat_frames_evenly(make_video):
    frames = barcode_frames(5)
    path = make_video("short.mp4", frames)
    expected_indices = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    assert [read_barcode(frame) for frame in sampled_frames(path)] == expected_indices
    assert [read_barcode(frame) for frame in sampled_frames(list(map(PIL.Image.fromarray, frames)))] == (
        expected_indices
    )
    assert DFDVideoProcessor()(path, return_tensors="pt")["pixel_values"].shape == (1, 12, 3, 384, 384)


def test_num_frames_given_at_call_or_construction_time_is_honoured(make_video):
    path = make_video("clip.mp4", numbered_frames(60))
    expected = brightness(numbered_frames(60)[np.linspace(0, 59, 8, dtype=int)])
    # Exactly what VideoClassificationPipeline.preprocess passes.
    outputs = DFDVideoProcessor()(str(path), num_frames=8, do_sample_frames=True, return_tensors="pt")
    assert list(outputs.keys()) == ["pixel_values"]
    assert outputs["pixel_values"].shape == (1, 8, 3, 384, 384)
    np.testing.assert_allclose(pixel_values_brightness(outputs["pixel_values"][0]), expected, atol=1.5)
    assert DFDVideoProcessor(num_frames=6)(path, return_tensors="pt")["pixel_values"].shape == (1, 6, 3, 384, 384)


def test_processor_keeps_every_frame_when_not_sampling():
    video = numbered_frames(20, height=24, width=24)
    pixel_values = DFDVideoProcessor()(video, do_sample_frames=False, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 20, 3, 384, 384)
    np.testing.assert_allclose(pixel_values_brightness(pixel_values[0]), brightness(video), atol=0.5)


def test_processor_returns_the_sampled_frames_metadata(make_video):
    path = make_video("clip.mp4", numbered_frames(50), fps=10)
    outputs = DFDVideoProcessor()([path, numbered_frames(7)], return_metadata=True, return_tensors="pt")
    file_metadata, array_metadata = outputs["video_metadata"]
    assert (file_metadata.total_num_frames, file_metadata.fps) == (50, 10)
    assert file_metadata.duration == pytest.approx(5)
    assert file_metadata.frames_indices == sample_frame_indices(50, 12).tolist()
    (window,) = file_metadata.windows
    assert (window.window, window.frames_indices) == (0, sample_frame_indices(50, 12).tolist())
    assert window.timestamps == pytest.approx([index / 10 for index in window.frames_indices])
    assert (array_metadata.total_num_frames, array_metadata.fps) == (7, None)
    assert array_metadata.frames_indices == sample_frame_indices(7, 12).tolist()
    assert array_metadata.windows[0].timestamps == [None] * 12  # frames in memory carry no times


def test_fps_sampling_is_refused_rather_than_ignored(make_video):
    path = make_video("clip.mp4", numbered_frames(10))
    with pytest.raises(ValueError, match="num_frames"):
        DFDVideoProcessor()(path, fps=2)


def test_auto_video_processor_round_trip_with_remote_code(tmp_path, make_video):
    processor = DFDVideoProcessor(num_frames=8)
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    config = json.loads((saved / "video_preprocessor_config.json").read_text())
    assert config["auto_map"] == {"AutoVideoProcessor": "processing_dfd.DFDVideoProcessor"}
    assert config["size"] == {"height": 384, "width": 384} and config["do_center_crop"] is False
    # The files it imports relatively (decoding, probing, the gate, the fetcher, faces, settings) travel with it; whole
    # frames are the default.
    assert (config["crop"], config["face_margin"], config["face_choice"]) == ("frame", 0.3, "largest")
    for name in ("processing_dfd.py", "decoding_dfd.py", "probing_dfd.py", "inputs_dfd.py", "fetching_dfd.py",
                 "faces_dfd.py", "settings_dfd.py"):  # fmt: skip
        assert (saved / name).read_text() == (REPO_ROOT / name).read_text()

    # A Hub repo holds just these flat files: load from a fresh copy so nothing resolves to the installed package.
    hub_copy = tmp_path / "hub_copy"
    shutil.copytree(saved, hub_copy)
    loaded = AutoVideoProcessor.from_pretrained(hub_copy, trust_remote_code=True)
    assert type(loaded).__name__ == "DFDVideoProcessor"
    assert type(loaded).__module__ != DFDVideoProcessor.__module__
    assert loaded.to_dict() == processor.to_dict()
    path = make_video("clip.mp4", numbered_frames(40))
    torch.testing.assert_close(
        loaded(str(path), return_tensors="pt")["pixel_values"],
        processor(str(path), return_tensors="pt")["pixel_values"],
        rtol=0,
        atol=0,
    )


def processed(videos, **kwargs):
    return DFDVideoProcessor(size={"height": 64, "width": 64})(videos, return_tensors="pt", **kwargs)["pixel_values"]


def frame_lists():
    frames = barcode_frames(20)
    return frames, {
        "numpy (H, W, C)": list(frames),
        "torch (H, W, C)": [torch.from_numpy(frame) for frame in frames],
        "torch (C, H, W)": [torch.from_numpy(frame).permute(2, 0, 1) for frame in frames],
        "numpy float [0, 1]": [frame.astype(np.float32) / 255 for frame in frames],
        "mixed numpy and torch": [torch.from_numpy(f) if i % 2 else f for i, f in enumerate(frames)],
        "tuple": tuple(frames),
    }


@pytest.mark.parametrize("kind", list(frame_lists()[1]))
def test_a_list_of_frame_arrays_is_one_video(kind):
    frames, videos = frame_lists()
    pixel_values = processed(videos[kind])
    assert pixel_values.shape == (1, 12, 3, 64, 64)
    torch.testing.assert_close(pixel_values, processed(frames), atol=0.02, rtol=0)


def test_a_list_of_frame_lists_is_a_batch_of_videos():
    dark, bright = numbered_frames(12)[:6], numbered_frames(12)[6:]
    pixel_values = processed([list(dark), [torch.from_numpy(frame) for frame in bright]], do_sample_frames=False)
    assert pixel_values.shape == (2, 6, 3, 64, 64)
    torch.testing.assert_close(pixel_values, processed([dark, bright], do_sample_frames=False))
    # A batch may mix frame lists with whole arrays.
    mixed = processed([list(dark), bright], do_sample_frames=False)
    torch.testing.assert_close(mixed, pixel_values)


def test_errors_name_the_shape_of_the_whole_video():
    frames = barcode_frames(3)
    with pytest.raises(ValueError, match=r"\(3, 64, 64, 5\)"):  # the video's shape, not one frame's
        processed([np.zeros((64, 64, 5), dtype=np.uint8)] * 3, do_sample_frames=False)
    with pytest.raises(ValueError, match=r"one shape; got \[\(32, 64, 3\), \(64, 64, 3\)\]"):
        processed([frames[0], frames[1][:32]])
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        processed([frame.astype(np.float32) for frame in frames])


def test_bad_inputs_name_the_video_on_one_line(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    with pytest.raises(VideoDecodeError, match=rf"^{tmp_path / 'notes.mp4'}: not a video FFmpeg can read"):
        DFDVideoProcessor()([str(tmp_path / "notes.mp4")], return_tensors="pt")
    with pytest.raises(VideoDecodeError, match=r"^<video bytes>: not a video FFmpeg can read"):
        DFDVideoProcessor()(b"not a video at all", return_tensors="pt")


def test_frames_are_resized_as_decoded_and_pixel_values_do_not_change(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (20, 270, 480, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames)
    processor = DFDVideoProcessor()
    full = sampled_frames(path)
    assert full.shape == (12, 270, 480, 3)
    early = processor(str(path), return_tensors="pt", return_metadata=True)
    late = processor(full, do_sample_frames=False, return_tensors="pt")
    assert torch.equal(early["pixel_values"], late["pixel_values"])
    assert (early["video_metadata"][0].height, early["video_metadata"][0].width) == (270, 480)  # the source's size
