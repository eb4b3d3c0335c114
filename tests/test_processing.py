"""Video decoding and preprocessing: every input kind, exact frame sampling, seeking, rotation and bad files."""

import json
import os
import pickle
import re
import shutil
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoVideoProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.video_utils import load_video

from conftest import REPO_ROOT, barcode_frames, numbered_frames, read_barcode, write_video
from dfd.processing_dfd import DFDVideoProcessor
from dfd.decoding_dfd import (
    VideoDecodeError,
    _plan_decoders,
    _skips_non_reference_frames,
    _split_at_keyframes,
    decoding_threads,
    load_video_frames,
    probe_video,
    read_video,
    sample_frame_indices,
)

MEAN = np.array(OPENAI_CLIP_MEAN, dtype=np.float32)
STD = np.array(OPENAI_CLIP_STD, dtype=np.float32)


def brightness(frames):
    """Mean brightness of each (H, W, 3) frame."""
    return np.asarray(frames, dtype=np.float64).mean(axis=(1, 2, 3))


def pixel_values_brightness(pixel_values):
    """Undo the CLIP normalisation of (T, 3, H, W) pixel values and return each frame's mean in 0..255."""
    pixels = pixel_values.numpy() * STD[None, :, None, None] + MEAN[None, :, None, None]
    return pixels.mean(axis=(1, 2, 3)) * 255


def reference_frames(path, indices):
    """What transformers' own PyAV loader returns for these (ascending, distinct) frame indices."""
    frames, _ = load_video(str(path), backend="pyav", sample_indices_fn=lambda metadata, **kwargs: np.asarray(indices))
    return frames


# --- sampling ---------------------------------------------------------------------------------------------------


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


# --- probing and reading files --------------------------------------------------------------------------------


def test_probe_counts_and_times_frames_without_decoding_them(make_video):
    path = make_video("long.mp4", numbered_frames(300, height=48, width=80), gop=100)
    info = probe_video(path)
    assert info.total_frames == 300
    assert info.fps == 25
    assert info.duration == pytest.approx(12.0)
    assert (info.width, info.height, info.rotation) == (80, 48, 0)
    assert info.keyframe_indices.tolist() == [0, 100, 200]
    np.testing.assert_allclose(info.timestamps, np.arange(300) / 25)


def test_probe_orders_frames_by_presentation_time(make_video):
    path = make_video("bframes.mp4", barcode_frames(40), gop=20, bframes=3)
    with av.open(str(path)) as container:
        packet_pts = [packet.pts for packet in container.demux(video=0) if packet.size]
    assert packet_pts != sorted(packet_pts), "the fixture must store frames out of presentation order"
    info = probe_video(path)
    assert info.total_frames == 40
    assert info.frame_pts.tolist() == sorted(packet_pts)
    assert info.keyframe_indices.tolist() == [0, 20]


@pytest.mark.parametrize(
    "name, options",
    [
        ("long_gop.mp4", {"gop": 100}),
        ("short_gop.mp4", {"gop": 5}),
        ("bframes.mp4", {"gop": 60, "bframes": 3}),
        ("bframes.mkv", {"gop": 60, "bframes": 3}),
        ("mpegts.ts", {"gop": 60, "bframes": 2}),
        ("vp9.webm", {"codec": "libvpx-vp9", "gop": 50}),
        ("av1.mp4", {"codec": "libsvtav1", "gop": 50}),
        ("hevc.mp4", {"codec": "libx265", "gop": 50}),  # B-frames that nothing refers to: skipped when unwanted
        ("hevc.mkv", {"codec": "libx265", "gop": 50}),
    ],
)
def test_read_video_is_bit_identical_to_transformers_load_video(tmp_path, name, options):
    path = write_video(tmp_path / name, barcode_frames(300), **options)
    for indices in (
        sample_frame_indices(300, 12),
        [0, 1, 2, 99, 100, 101, 150, 298, 299],  # both sides of keyframes, and the very end
        list(range(0, 300, 7)),
    ):
        expected = reference_frames(path, indices)
        for threads in (1, 3):  # one decoder, and several side by side
            decoded = read_video(path, indices=indices, threads=threads)
            assert decoded.frames.shape == expected.shape == (len(indices), 64, 64, 3)
            assert decoded.frames.dtype == np.uint8
            np.testing.assert_array_equal(decoded.frames, expected)
            assert [read_barcode(frame) for frame in decoded.frames] == list(indices)
            np.testing.assert_array_equal(decoded.indices, indices)


def test_hevc_skips_unwanted_non_reference_frames_only_with_one_temporal_layer(make_video):
    """With temporal layers, HEVC's "sub-layer non-reference" frames can be references of a higher layer."""
    indices = [0, 7, 29, 31, 59]
    for name, options, skips in [
        ("one_layer.mp4", {}, True),
        ("three_layers.mp4", {"options": {"x265-params": "temporal-layers=3"}}, False),
    ]:
        path = make_video(name, barcode_frames(60), codec="libx265", gop=30, **options)
        with av.open(str(path)) as container:
            assert _skips_non_reference_frames(container.streams.video[0].codec_context) is skips
        decoded = read_video(path, indices=indices, threads=1)
        np.testing.assert_array_equal(decoded.frames, reference_frames(path, indices))


def test_decoders_side_by_side_split_the_work_at_keyframes_without_overlap(make_video):
    path = make_video("clip.mp4", barcode_frames(300), gop=50, bframes=2)
    info = probe_video(path)
    assert info.keyframe_indices.tolist() == [0, 50, 100, 150, 200, 250]
    wanted = sample_frame_indices(300, 12).tolist()  # 0, 27, 54, ..., 299
    for threads in (1, 2, 3, 4, 6, 16):
        groups = _split_at_keyframes(info, wanted, threads)
        assert [index for group in groups for index in group] == wanted
        assert len(groups) == min(threads, 6)  # never more groups than runs between keyframes
        for earlier, later in zip(groups, groups[1:]):
            # The later group starts decoding at a keyframe past every frame the earlier one decodes.
            later_start = max(keyframe for keyframe in info.keyframe_indices if keyframe <= later[0])
            assert earlier[-1] < later_start
    # Equal runs of work get equal shares: two groups of three keyframe intervals each.
    assert _split_at_keyframes(info, wanted, 2) == [wanted[:6], wanted[6:]]
    with pytest.raises(ValueError, match="threads must be at least 1"):
        read_video(path, threads=0)


def test_uneven_keyframe_runs_go_to_fewer_decoders_with_more_threads(make_video):
    """Side by side, a long run between two keyframes would keep one core busy while the other idles."""
    wanted = sample_frame_indices(300, 12).tolist()
    even = probe_video(make_video("even.mp4", barcode_frames(300), gop=50))
    assert [thread_type for _, thread_type in _plan_decoders(even, wanted, 2)] == ["SLICE", "SLICE"]  # one each
    uneven = probe_video(make_video("uneven.mp4", barcode_frames(300), gop=290))
    assert uneven.keyframe_indices.tolist() == [0, 290]
    assert _plan_decoders(uneven, wanted, 2) == [(wanted, "FRAME")]
    np.testing.assert_array_equal(read_video(uneven, threads=2).frames, reference_frames(uneven.path, wanted))


@pytest.mark.parametrize("name", ["sliced.mp4", "sliced.mkv", "sliced.ts", "sliced.h264"])
def test_slices_are_counted_in_every_container(make_video, name):
    """x264's slice threads cut each frame into slices (one per encoder thread): FFmpeg decodes those side by side."""
    frames = barcode_frames(20, height=128, width=128)
    assert probe_video(make_video(name, frames, gop=10)).slices > 1
    assert probe_video(make_video("one_" + name, frames, gop=10, slice_threads=False)).slices == 1


def test_the_decoding_thread_budget_can_be_set_for_the_process(make_video, monkeypatch):
    # A container's CPU quota does not show in the CPU count, so the budget can be given explicitly.
    monkeypatch.setenv("DFD_DECODE_THREADS", "3")
    assert decoding_threads() == 3
    path = make_video("clip.mp4", barcode_frames(90), gop=30)
    assert [read_barcode(frame) for frame in read_video(path).frames] == sample_frame_indices(90, 12).tolist()
    monkeypatch.delenv("DFD_DECODE_THREADS")
    assert 1 <= decoding_threads() <= 16


def test_a_stream_without_timestamps_is_read_by_counting_frames(make_video):
    # A raw H.264 stream has no timestamps (and transformers' load_video cannot read it: it fails to seek to 0).
    path = make_video("annexb.h264", barcode_frames(100), gop=30)
    info = probe_video(path)
    assert info.frame_pts is None
    assert (info.total_frames, info.fps) == (100, 25)
    assert info.keyframe_indices.tolist() == [0, 30, 60, 90]
    np.testing.assert_allclose(info.timestamps, np.arange(100) / 25)
    with av.open(str(path)) as container:
        every_frame = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    indices = [99, 0, 31, 30, 64]
    decoded = read_video(path, indices=indices)
    np.testing.assert_array_equal(decoded.frames, np.stack([every_frame[index] for index in indices]))
    assert [read_barcode(frame) for frame in decoded.frames] == indices


def test_a_stream_whose_frames_change_size_is_refused_on_one_line(make_video, tmp_path):
    small = make_video("small.h264", barcode_frames(10), gop=5).read_bytes()
    large = make_video("large.h264", barcode_frames(10, height=96, width=96), gop=5).read_bytes()
    path = tmp_path / "joined.h264"
    path.write_bytes(small + large)
    with pytest.raises(VideoDecodeError, match=r"joined.h264: frames change size within the video"):
        read_video(path, indices=[0, 15])
    assert read_video(path, indices=[0, 9]).frames.shape == (2, 64, 64, 3)


def test_read_video_returns_unsorted_and_repeated_indices_in_the_requested_order(make_video):
    path = make_video("clip.mp4", barcode_frames(300), gop=100, bframes=2)
    indices = [250, 3, 3, 120, 0, 250]
    decoded = read_video(path, indices=indices)
    assert [read_barcode(frame) for frame in decoded.frames] == indices
    expected = reference_frames(path, sorted(set(indices)))
    lookup = {index: frame for index, frame in zip(sorted(set(indices)), expected)}
    np.testing.assert_array_equal(decoded.frames, np.stack([lookup[index] for index in indices]))
    np.testing.assert_allclose(decoded.timestamps, np.array(indices) / 25)
    assert (decoded.fps, decoded.total_frames) == (25, 300)


def test_read_video_defaults_to_evenly_sampled_frames(make_video):
    path = make_video("clip.mp4", barcode_frames(90), gop=30)
    decoded = read_video(path)
    assert decoded.indices.tolist() == sample_frame_indices(90, 12).tolist()
    assert [read_barcode(frame) for frame in decoded.frames] == decoded.indices.tolist()
    assert read_video(path, num_frames=5).indices.tolist() == [0, 22, 44, 66, 89]


def test_read_video_takes_a_probed_video_in_place_of_its_path(make_video):
    path = make_video("clip.mp4", barcode_frames(90), gop=30)
    info = probe_video(path)
    decoded = read_video(info, indices=[89, 0, 45])
    assert [read_barcode(frame) for frame in decoded.frames] == [89, 0, 45]
    np.testing.assert_array_equal(decoded.frames, read_video(path, indices=[89, 0, 45]).frames)
    assert (decoded.duration, decoded.total_frames) == (info.duration, 90)
    assert read_video(info).indices.tolist() == sample_frame_indices(90, 12).tolist()


def test_read_video_rejects_indices_outside_the_video(make_video):
    path = make_video("clip.mp4", numbered_frames(10))
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        read_video(path, indices=[0, 10])
    with pytest.raises(IndexError):
        read_video(path, indices=[-1])


def write_trimmed_video(path, frames, trimmed):
    """An mp4 whose edit list hides its first `trimmed` frames, as cutting a clip without re-encoding leaves it."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast", "x264-params": "keyint=10"}
        for frame in [*frames, None]:
            for packet in stream.encode(None if frame is None else av.VideoFrame.from_ndarray(frame, format="rgb24")):
                packet.pts -= trimmed  # in the encoder's 1/25 s time base: the first frames land before time 0
                packet.dts -= trimmed
                container.mux(packet)
    return path


def test_frames_an_edit_list_hides_are_not_counted(tmp_path):
    path = write_trimmed_video(tmp_path / "trimmed.mp4", barcode_frames(30), trimmed=3)
    info = probe_video(path)
    assert info.total_frames == 27
    assert info.keyframe_indices.tolist() == [7, 17]
    indices = [0, 1, 6, 7, 8, 26]
    decoded = read_video(path, indices=indices)
    assert [read_barcode(frame) for frame in decoded.frames] == [index + 3 for index in indices]
    np.testing.assert_array_equal(decoded.frames, reference_frames(path, indices))


def write_paused_video(path, frames, pause):
    """An mp4 whose last frame is shown `pause` frame periods late, as a variable frame rate recording can be."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for index, frame in enumerate([*frames, None]):
            video_frame = None
            if frame is not None:
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                video_frame.pts = index + (pause if index == len(frames) - 1 else 0)
                video_frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(video_frame):
                container.mux(packet)
    return path


def test_duration_comes_from_the_frame_timestamps(tmp_path):
    path = write_paused_video(tmp_path / "paused.mp4", numbered_frames(10), pause=31)
    info = probe_video(path)
    assert (info.total_frames, info.fps) == (10, 25)
    assert info.timestamps[-1] == pytest.approx(40 / 25)
    assert info.duration == pytest.approx(41 / 25)  # not total_frames / fps = 0.4 s
    outputs = DFDVideoProcessor(num_frames=4)(str(path), return_metadata=True, return_tensors="pt")
    assert outputs["video_metadata"][0].duration == info.duration


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_honoured(make_video, rotation):
    # Four grey quadrants of a wide frame: any wrong turn or flip moves a level to another corner.
    frames = np.zeros((6, 32, 48, 3), dtype=np.uint8)
    frames[:, :16, :24], frames[:, :16, 24:], frames[:, 16:, :24], frames[:, 16:, 24:] = 40, 100, 160, 220
    path = make_video("rotated.mp4", frames, rotation=rotation)

    # The pixels are stored unturned: only the metadata asks for the turn.
    assert reference_frames(path, [0]).shape == (1, 32, 48, 3)
    info = probe_video(path)
    assert info.rotation == (-rotation) % 360  # counter-clockwise
    upright = np.rot90(frames, k=-rotation // 90, axes=(1, 2))  # `rotation` is clockwise
    assert (info.height, info.width) == upright.shape[1:3]

    decoded = read_video(path, indices=[0, 5]).frames
    assert decoded.shape == (2, *upright.shape[1:])
    np.testing.assert_allclose(decoded.astype(int), upright[[0, 5]].astype(int), atol=3)
    np.testing.assert_allclose(load_video_frames(path, num_frames=2).astype(int), upright[[0, 5]], atol=3)


# --- every input kind ---------------------------------------------------------------------------------------------

NUM_INPUT_FRAMES = 30
EXPECTED_BRIGHTNESS = brightness(numbered_frames(NUM_INPUT_FRAMES)[sample_frame_indices(NUM_INPUT_FRAMES, 12)])


def frame_folder(tmp_path, frames, name="frames"):
    """Unpadded names (frame_0 ... frame_29), so only a natural sort gets the order right."""
    folder = tmp_path / name
    folder.mkdir()
    for index, frame in enumerate(frames):
        PIL.Image.fromarray(frame).save(folder / f"frame_{index}.png")
    (folder / "notes.txt").write_text("not a frame")
    return folder


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


def test_load_video_frames_samples_every_input_kind_the_same_way(every_input_kind):
    for kind, video in every_input_kind.items():
        frames = load_video_frames(video)
        assert frames.shape == (12, 40, 48, 3) and frames.dtype == np.uint8, kind
        np.testing.assert_allclose(brightness(frames), EXPECTED_BRIGHTNESS, atol=1.5, err_msg=kind)


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


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    gray = [PIL.Image.fromarray(np.full((20, 30), 90, dtype=np.uint8), mode="L") for _ in range(3)]
    rgba = [PIL.Image.fromarray(np.full((20, 30, 4), 90, dtype=np.uint8), mode="RGBA") for _ in range(3)]
    folder = tmp_path / "gray"
    folder.mkdir()
    for index, image in enumerate(gray):
        image.save(folder / f"{index:03d}.jpg")
    for video in (gray, rgba, folder, np.full((3, 20, 30, 1), 90, dtype=np.uint8)):
        frames = load_video_frames(video)
        assert frames.shape == (12, 20, 30, 3)
        np.testing.assert_allclose(frames, 90, atol=2)


def test_invalid_arrays_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="4 dimensions"):
        load_video_frames(np.zeros((20, 30, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        load_video_frames(np.full((2, 20, 30, 3), 255.0, dtype=np.float32))
    with pytest.raises(ValueError, match="channel axis"):
        load_video_frames(np.zeros((2, 20, 30, 5), dtype=np.uint8))
    with pytest.raises(TypeError, match="list of PIL images"):
        load_video_frames(12345)


def test_sampling_picks_the_linspace_frames_of_a_file(make_video):
    path = make_video("clip.mp4", numbered_frames(97))
    expected = brightness(numbered_frames(97)[np.linspace(0, 96, 12, dtype=int)])
    np.testing.assert_allclose(brightness(load_video_frames(path)), expected, atol=1.5)


def test_videos_shorter_than_num_frames_repeat_frames_evenly(make_video):
    frames = barcode_frames(5)
    path = make_video("short.mp4", frames)
    expected_indices = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    assert [read_barcode(frame) for frame in load_video_frames(path)] == expected_indices
    assert [read_barcode(frame) for frame in load_video_frames(list(map(PIL.Image.fromarray, frames)))] == (
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
    assert load_video_frames(path, num_frames=3).shape == (3, 64, 64, 3)


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
    assert file_metadata.timestamps[-1] == pytest.approx(4.9)
    assert (array_metadata.total_num_frames, array_metadata.fps) == (7, None)
    assert array_metadata.frames_indices == sample_frame_indices(7, 12).tolist()


def test_fps_sampling_is_refused_rather_than_ignored(make_video):
    path = make_video("clip.mp4", numbered_frames(10))
    with pytest.raises(ValueError, match="num_frames"):
        DFDVideoProcessor()(path, fps=2)


# --- bad inputs -------------------------------------------------------------------------------------------------


def _audio_only(path):
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _bad_inputs(tmp_path):
    (tmp_path / "empty.mp4").touch()
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "readme.txt").write_text("nothing to see")
    (tmp_path / "broken_image").mkdir()
    (tmp_path / "broken_image" / "000.png").write_bytes(b"\x89PNG not really")
    # Lossy, textured frames make the file large enough that half of it still holds whole frames.
    frames = np.random.default_rng(0).integers(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    return {
        "missing": (tmp_path / "missing.mp4", "not found"),
        "zero bytes": (tmp_path / "empty.mp4", "0 bytes"),
        "text named .mp4": (tmp_path / "notes.mp4", "not a video"),
        "audio only": (_audio_only(tmp_path / "audio.mp4"), "no video stream"),
        "truncated mp4 (index last)": (_cut_in_half(write_video(tmp_path / "cut.mp4", frames)), "not a video"),
        "truncated mp4 (index first)": (
            _cut_in_half(write_video(tmp_path / "cut_fast.mp4", frames, container_options={"movflags": "faststart"})),
            "the container indexes 40 frames but only",
        ),
        "empty folder": (tmp_path / "empty_folder", "empty folder"),
        "folder without images": (tmp_path / "no_images", "no frame images"),
        "unreadable image": (tmp_path / "broken_image" / "000.png", "not a readable image"),
    }


def test_bad_inputs_raise_one_line_video_decode_errors(tmp_path):
    for kind, (path, reason) in _bad_inputs(tmp_path).items():
        video = path.parent if kind == "unreadable image" else path
        with pytest.raises(VideoDecodeError) as raised:
            load_video_frames(str(video))
        message = str(raised.value)
        assert message.startswith(f"{path}: "), (kind, message)
        assert reason in raised.value.reason, (kind, message)
        assert "\n" not in message, (kind, message)
        # The processor surfaces the same error, and it survives pickling (DataLoader workers).
        with pytest.raises(VideoDecodeError, match="^" + re.escape(f"{path}: ")):
            DFDVideoProcessor()([video], return_tensors="pt")
        assert str(pickle.loads(pickle.dumps(raised.value))) == message


@contextmanager
def file_permissions_enforced():
    """Root reads files whatever their mode: as root, act as `nobody` for the block (other users are bound already)."""
    if os.geteuid() != 0:
        yield
        return
    PIL.Image.init()  # import PIL's format plugins while their files can still be read
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_unreadable_folders_and_images_raise_video_decode_errors():
    # Not pytest's tmp_path: an unprivileged user cannot enter it (0700), and must reach the files to be refused them.
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        root.chmod(0o755)
        locked_folder = frame_folder(root, numbered_frames(3), "locked_folder")
        locked_image = frame_folder(root, numbered_frames(3), "locked_image")
        (locked_image / "frame_0.png").chmod(0)
        locked_folder.chmod(0)
        try:
            with file_permissions_enforced():
                with pytest.raises(VideoDecodeError) as folder_error:
                    load_video_frames(locked_folder)
                with pytest.raises(VideoDecodeError) as image_error:
                    load_video_frames(locked_image)
        finally:
            locked_folder.chmod(0o755)  # so that the clean-up can empty it
    assert str(folder_error.value) == f"{locked_folder}: cannot list the folder (Permission denied)"
    assert str(image_error.value) == f"{locked_image / 'frame_0.png'}: not a readable image (Permission denied)"


def test_decode_errors_are_value_errors_that_wrap_pyav_errors(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video")
    with pytest.raises(ValueError) as raised:
        probe_video(tmp_path / "notes.mp4")
    assert isinstance(raised.value, VideoDecodeError)
    assert isinstance(raised.value.__cause__, av.FFmpegError)


# --- Hub round trip ---------------------------------------------------------------------------------------------


def test_auto_video_processor_round_trip_with_remote_code(tmp_path, make_video):
    processor = DFDVideoProcessor(num_frames=8)
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    config = json.loads((saved / "video_preprocessor_config.json").read_text())
    assert config["auto_map"] == {"AutoVideoProcessor": "processing_dfd.DFDVideoProcessor"}
    assert config["size"] == {"height": 384, "width": 384} and config["do_center_crop"] is False
    # The decoder, the fetcher and the face crop it imports relatively travel with it; whole frames are the default.
    assert (config["crop"], config["face_margin"], config["face_choice"]) == ("frame", 0.3, "largest")
    for name in ("processing_dfd.py", "decoding_dfd.py", "fetching_dfd.py", "faces_dfd.py"):
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
