"""The probe's fast path: frame counts and timestamps from the mp4 index equal those of demuxing every packet."""

from dataclasses import fields

import av
import numpy as np
import pytest

from conftest import barcode_frames, read_barcode, write_video
from test_processing import write_paused_video, write_trimmed_video
from dfd.decoding_dfd import VideoDecodeError, _open_video, _packets_from_index, probe_video, read_video


def assert_same_probe(path, ignore=()):
    """The index and the scan give the same VideoInfo, field for field (but `ignore`), or the same error."""
    outcomes = []
    for index in (True, False):
        try:
            outcomes.append(probe_video(path, index=index))
        except VideoDecodeError as error:
            outcomes.append(str(error))
    indexed, scanned = outcomes
    if isinstance(scanned, str) or isinstance(indexed, str):
        assert indexed == scanned
        return None
    for field in fields(scanned):
        if field.name in ignore:
            continue
        expected, actual = getattr(scanned, field.name), getattr(indexed, field.name)
        if isinstance(expected, np.ndarray):
            np.testing.assert_array_equal(actual, expected, err_msg=field.name)
        else:
            assert actual == expected, field.name
    return scanned


def index_used(path) -> bool:
    with _open_video(path, threads=1) as (container, stream):
        return _packets_from_index(str(path), container, stream) is not None


@pytest.mark.parametrize(
    "name, options",
    [
        ("plain.mp4", {"gop": 10}),
        ("bframes.mp4", {"gop": 12, "bframes": 3}),
        ("faststart.mp4", {"gop": 12, "bframes": 2, "container_options": {"movflags": "faststart"}}),
        ("rotated.mp4", {"gop": 10, "rotation": 90}),
        ("hevc.mp4", {"codec": "libx265", "gop": 12}),
    ],
)
def test_the_mp4_index_gives_the_scanned_frames_and_times(tmp_path, name, options):
    path = write_video(tmp_path / name, barcode_frames(50), **options)
    assert index_used(path)
    info = assert_same_probe(path)
    assert info.total_frames == 50


def test_variable_frame_timing_is_read_from_the_index(tmp_path):
    path = write_paused_video(tmp_path / "paused.mp4", barcode_frames(10), pause=31)
    assert index_used(path)
    assert assert_same_probe(path).timestamps[-1] == pytest.approx(40 / 25)


@pytest.mark.parametrize(
    "name, write",
    [
        # Frames an edit list hides stay in the index, marked to be discarded: counted by demuxing instead.
        ("trimmed.mp4", lambda path: write_trimmed_video(path, barcode_frames(30), trimmed=3)),
        # Matroska cues index keyframes only.
        ("bframes.mkv", lambda path: write_video(path, barcode_frames(30), gop=10, bframes=2)),
    ],
)
def test_indexes_that_do_not_list_every_shown_frame_are_not_used(tmp_path, name, write):
    path = write(tmp_path / name)
    assert not index_used(path)
    assert_same_probe(path)


def test_a_cut_file_is_reported_as_truncated_whichever_way_it_is_probed(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, size=(40, 64, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / "cut.mp4", frames, container_options={"movflags": "faststart"})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert not index_used(path)
    with pytest.raises(VideoDecodeError, match="the container indexes 40 frames but only"):
        probe_video(path)


def test_without_a_keyframe_table_the_packets_are_scanned(tmp_path):
    """An mp4 of keyframes only has no `stss` box; FFmpeg then flags keyframes by parsing, which the index lacks."""
    path = write_video(tmp_path / "still.mp4", barcode_frames(1))
    assert not index_used(path)
    assert assert_same_probe(path).total_frames == 1


def test_damaged_sample_tables_never_change_the_frames_or_their_times(tmp_path):
    """
    Bytes of the `moov` box overwritten at random: the index is used only where it still agrees with the packets.
    Keyframes may differ once a sample size is damaged: the demuxer then flags H.264 keyframes by parsing garbage,
    while the index (which seeking follows) keeps the file's `stss`.
    """
    path = write_video(tmp_path / "bframes.mp4", barcode_frames(40), gop=12, bframes=3)
    original = path.read_bytes()
    moov = original.index(b"moov") - 4
    rng = np.random.default_rng(0)
    for trial in range(40):
        damaged = bytearray(original)
        for position in rng.integers(moov, len(original), size=3):
            damaged[position] = rng.integers(0, 256)
        damaged_path = tmp_path / f"damaged_{trial}.mp4"
        damaged_path.write_bytes(bytes(damaged))
        assert_same_probe(damaged_path, ignore={"keyframe_indices"})


def test_the_index_is_read_without_demuxing_the_file(tmp_path):
    """Packets of the middle of the file overwritten with zeros: the index still answers, only the first is read."""
    path = write_video(tmp_path / "clip.mp4", barcode_frames(60), gop=10, container_options={"movflags": "faststart"})
    with av.open(str(path)) as container:
        entries = container.streams.video[0].index_entries
        start, end = entries[20].pos, entries[40].pos
    data = bytearray(path.read_bytes())
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    info = probe_video(path)
    assert info.total_frames == 60
    assert info.keyframe_indices.tolist() == [0, 10, 20, 30, 40, 50]


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
