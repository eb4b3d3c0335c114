"""Decoding the frames asked for, exactly: bit-identical to transformers' `load_video`, from files, frame folders and
frames in memory, with seeking, decoders side by side, and one-line errors for bad inputs."""

import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest

from conftest import (
    barcode_frames,
    brightness,
    frame_folder,
    numbered_frames,
    read_barcode,
    reference_frames,
    sampled_frames,
    write_video,
)
from dfd.decoding_dfd import (
    _plan_decoders,
    _skips_non_reference_frames,
    _split_at_keyframes,
    frames_to_decode,
    read_video,
)
from dfd.probing_dfd import VideoDecodeError, probe_video
from dfd.processing_dfd import DFDVideoProcessor, sample_frame_indices
from dfd.settings_dfd import decoding_threads


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
        read_video(path, wanted, threads=0)


def test_uneven_keyframe_runs_go_to_fewer_decoders_with_more_threads(make_video):
    """Side by side, a long run between two keyframes would keep one core busy while the other idles."""
    wanted = sample_frame_indices(300, 12).tolist()
    even = probe_video(make_video("even.mp4", barcode_frames(300), gop=50))
    assert [thread_type for _, thread_type in _plan_decoders(even, wanted, 2)] == ["SLICE", "SLICE"]  # one each
    uneven = probe_video(make_video("uneven.mp4", barcode_frames(300), gop=290))
    assert uneven.keyframe_indices.tolist() == [0, 290]
    assert _plan_decoders(uneven, wanted, 2) == [(wanted, "FRAME")]
    np.testing.assert_array_equal(read_video(uneven, wanted, threads=2).frames, reference_frames(uneven.path, wanted))


def test_the_decoding_thread_budget_can_be_set_for_the_process(make_video, monkeypatch):
    # A container's CPU quota does not show in the CPU count, so the budget can be given explicitly.
    monkeypatch.setenv("DFD_DECODE_THREADS", "3")
    assert decoding_threads() == 3
    path = make_video("clip.mp4", barcode_frames(90), gop=30)
    assert [read_barcode(frame) for frame in sampled_frames(path)] == sample_frame_indices(90, 12).tolist()
    monkeypatch.setenv("DFD_DECODE_THREADS", "three")
    with pytest.raises(ValueError, match="DFD_DECODE_THREADS='three' is not valid"):
        decoding_threads()
    monkeypatch.delenv("DFD_DECODE_THREADS")
    assert 1 <= decoding_threads() <= 16


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
    assert (decoded.info.fps, decoded.info.total_frames) == (25, 300)


def test_read_video_takes_a_probed_video_in_place_of_its_path(make_video):
    path = make_video("clip.mp4", barcode_frames(90), gop=30)
    info = probe_video(path)
    decoded = read_video(info, indices=[89, 0, 45])
    assert [read_barcode(frame) for frame in decoded.frames] == [89, 0, 45]
    np.testing.assert_array_equal(decoded.frames, read_video(path, indices=[89, 0, 45]).frames)
    assert decoded.info is info


def test_read_video_rejects_indices_outside_the_video(make_video):
    path = make_video("clip.mp4", numbered_frames(10))
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        read_video(path, indices=[0, 10])
    with pytest.raises(IndexError):
        read_video(path, indices=[-1])


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    gray = [PIL.Image.fromarray(np.full((20, 30), 90, dtype=np.uint8), mode="L") for _ in range(3)]
    rgba = [PIL.Image.fromarray(np.full((20, 30, 4), 90, dtype=np.uint8), mode="RGBA") for _ in range(3)]
    folder = tmp_path / "gray"
    folder.mkdir()
    for index, image in enumerate(gray):
        image.save(folder / f"{index:03d}.jpg")
    for video in (gray, rgba, folder, np.full((3, 20, 30, 1), 90, dtype=np.uint8)):
        frames = sampled_frames(video)
        assert frames.shape == (12, 20, 30, 3)
        np.testing.assert_allclose(frames, 90, atol=2)


def test_invalid_arrays_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="4 dimensions"):
        sampled_frames(np.zeros((20, 30, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        sampled_frames(np.full((2, 20, 30, 3), 255.0, dtype=np.float32))
    with pytest.raises(ValueError, match="channel axis"):
        sampled_frames(np.zeros((2, 20, 30, 5), dtype=np.uint8))
    with pytest.raises(TypeError, match="list of PIL images"):
        sampled_frames(12345)


def test_sampling_picks_the_linspace_frames_of_a_file(make_video):
    path = make_video("clip.mp4", numbered_frames(97))
    expected = brightness(numbered_frames(97)[np.linspace(0, 96, 12, dtype=int)])
    np.testing.assert_allclose(brightness(sampled_frames(path)), expected, atol=1.5)


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
                    sampled_frames(locked_folder)
                with pytest.raises(VideoDecodeError) as image_error:
                    sampled_frames(locked_image)
        finally:
            locked_folder.chmod(0o755)  # so that the clean-up can empty it
    assert str(folder_error.value) == f"{locked_folder}: cannot list the folder (Permission denied)"
    assert str(image_error.value) == f"{locked_image / 'frame_0.png'}: not a readable image (Permission denied)"


def test_bad_inputs_raise_one_line_video_decode_errors(tmp_path):
    for kind, (path, reason) in _bad_inputs(tmp_path).items():
        video = path.parent if kind == "unreadable image" else path
        with pytest.raises(VideoDecodeError) as raised:
            sampled_frames(str(video))
        message = str(raised.value)
        assert message.startswith(f"{path}: "), (kind, message)
        assert reason in raised.value.reason, (kind, message)
        assert "\n" not in message, (kind, message)
        # The processor surfaces the same error, and it survives pickling (DataLoader workers).
        with pytest.raises(VideoDecodeError, match="^" + re.escape(f"{path}: ")):
            DFDVideoProcessor()([video], return_tensors="pt")
        assert str(pickle.loads(pickle.dumps(raised.value))) == message


@pytest.mark.parametrize(
    "name, threads, opens",
    [("clip.mp4", 1, 1), ("clip.mp4", 2, 2), ("clip.mkv", 1, 1), ("clip.mkv", 2, 2), ("clip.h264", 1, 2)],
)
def test_read_video_decodes_an_indexed_file_through_the_container_it_probed(
    tmp_path, monkeypatch, name, threads, opens
):
    """
    Opening costs FFmpeg a few decoded frames: the container that probed a file decodes it too, by seeking (with any
    threads when the mp4 index made decoding its first frame needless, else with the probe's one). A stream without
    timestamps is decoded from the start, by a decoder of its own.
    """
    path = write_video(tmp_path / name, barcode_frames(60), gop=10)
    calls = []
    real_open = av.open

    def counting_open(*args, **kwargs):
        calls.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    decoded = read_video(path, indices=[59, 0, 25, 25], threads=threads)
    assert len(calls) == opens
    assert [read_barcode(frame) for frame in decoded.frames] == [59, 0, 25, 25]


def test_frames_can_be_chosen_from_the_probed_file_without_opening_it_twice(tmp_path):
    path = write_video(tmp_path / "clip.mp4", barcode_frames(60), gop=10)
    seen = []

    def last_two(info):
        seen.append((info.total_frames, info.duration))
        return [info.total_frames - 1, info.total_frames - 2]

    decoded = read_video(path, indices=last_two)
    assert seen == [(60, pytest.approx(60 / 25))]
    assert [read_barcode(frame) for frame in decoded.frames] == [59, 58]

    def refuse(info):
        raise ValueError(f"{info.path}: too long")

    with pytest.raises(ValueError, match="clip.mp4: too long"):
        read_video(path, indices=refuse)


def test_frames_to_decode_counts_from_each_wanted_frames_keyframe(tmp_path):
    info = probe_video(write_video(tmp_path / "clip.mp4", numbered_frames(100, 32, 32), gop=25))
    assert info.keyframe_indices.tolist() == [0, 25, 50, 75]
    assert frames_to_decode(info, [10]) == 11
    assert frames_to_decode(info, [30]) == 6
    assert frames_to_decode(info, [30, 30, 40, 99]) == 16 + 25
    assert frames_to_decode(info, range(100)) == 100
