"""Probing video files: frame counts, times, keyframes and rotation, from the mp4 index or by demuxing."""

import io
import os
from dataclasses import fields

import av
import PIL.Image
import numpy as np
import pytest

from conftest import (
    barcode_frames,
    numbered_frames,
    read_barcode,
    reference_frames,
    sampled_frames,
    write_paused_video,
    write_trimmed_video,
    write_video,
)
from dfd.decoding_dfd import read_video
from dfd.probing_dfd import VideoDecodeError, _packets_from_index, open_video, probe_video
from dfd.processing_dfd import DFDVideoProcessor
from dfd.settings_dfd import max_frame_pixels


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
    with open_video(path, threads=1) as (container, stream):
        return _packets_from_index(str(path), container, stream) is not None


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


def test_frames_an_edit_list_hides_are_not_counted(tmp_path):
    path = write_trimmed_video(tmp_path / "trimmed.mp4", barcode_frames(30), trimmed=3)
    info = probe_video(path)
    assert info.total_frames == 27
    assert info.keyframe_indices.tolist() == [7, 17]
    indices = [0, 1, 6, 7, 8, 26]
    decoded = read_video(path, indices=indices)
    assert [read_barcode(frame) for frame in decoded.frames] == [index + 3 for index in indices]
    np.testing.assert_array_equal(decoded.frames, reference_frames(path, indices))


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
    np.testing.assert_allclose(sampled_frames(path, num_frames=2).astype(int), upright[[0, 5]], atol=3)


@pytest.mark.parametrize("name", ["sliced.mp4", "sliced.mkv", "sliced.ts", "sliced.h264"])
def test_slices_are_counted_in_every_container(make_video, name):
    """x264's slice threads cut each frame into slices (one per encoder thread): FFmpeg decodes those side by side."""
    frames = barcode_frames(20, height=128, width=128)
    assert probe_video(make_video(name, frames, gop=10)).slices > 1
    assert probe_video(make_video("one_" + name, frames, gop=10, slice_threads=False)).slices == 1


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


def test_decode_errors_are_value_errors_that_wrap_pyav_errors(tmp_path):
    (tmp_path / "notes.mp4").write_text("this is not a video")
    with pytest.raises(ValueError) as raised:
        probe_video(tmp_path / "notes.mp4")
    assert isinstance(raised.value, VideoDecodeError)
    assert isinstance(raised.value.__cause__, av.FFmpegError)


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


# --- hostile files: the decoder opens nothing but the file it was given, and refuses huge frames from the header


FORMAT_REFUSED = (
    "not a self-contained video file: playlists, concat lists, image sequences and other formats that can name "
    "other files or URLs are refused"
)


def crafted_files(folder, named_video):
    """Files that make a demuxer open other files or URLs, each naming `named_video` (which may not exist)."""
    png = io.BytesIO()
    PIL.Image.fromarray(numbered_frames(1)[0]).save(png, format="PNG")
    crafted = {
        "ffconcat": f"ffconcat version 1.0\nfile '{named_video}'\n",
        "ffconcat, file: URL": f"ffconcat version 1.0\nfile 'file:{named_video}'\n",
        "HLS playlist": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{named_video}\n#EXT-X-ENDLIST\n",
        "HLS playlist, http": (
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"
        ),
        "DASH manifest": (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" '
            'mediaPresentationDuration="PT1S"><Period><AdaptationSet><Representation id="1" bandwidth="1" '
            f'mimeType="video/mp4"><BaseURL>file://{named_video}</BaseURL></Representation></AdaptationSet>'
            "</Period></MPD>\n"
        ),
        "SDP (RTP)": (
            "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
            "m=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
        ),
        "ffmetadata": ";FFMETADATA1\ntitle=x\n",
    }
    extensions = {"ffconcat": ".ffconcat", "HLS": ".m3u8", "DASH": ".mpd", "SDP": ".sdp", "ffmetadata": ".txt"}
    paths = {}
    for kind, text in crafted.items():
        # Named as their kind, so FFmpeg's probe (which weighs the extension) picks the demuxer that would follow them.
        paths[kind] = folder / f"{len(paths)}{extensions[kind.split()[0].rstrip(',')]}"
        paths[kind].write_text(text)
    # An image sequence: image2 expands %03d into other files' names.
    (folder / "frame_001.png").write_bytes(png.getvalue())
    paths["image2 pattern"] = folder / "frame_%03d.png"
    paths["image2 pattern"].write_bytes(png.getvalue())
    paths["single image"] = folder / "image.mp4"
    paths["single image"].write_bytes(png.getvalue())
    return paths


@pytest.mark.parametrize("named", ["existing", "missing"])
def test_files_that_name_other_files_or_urls_are_refused(tmp_path, named):
    video = write_video(tmp_path / "secret.mp4", numbered_frames(10))
    named_video = video if named == "existing" else tmp_path / "missing.mp4"
    for kind, path in crafted_files(tmp_path, named_video).items():
        with pytest.raises(VideoDecodeError) as raised:
            probe_video(path)
        if kind == "DASH manifest" and not av.format.ContainerFormat("dash").is_input:
            # PyAV's FFmpeg has no DASH demuxer, so the manifest is no video; one that has it is stopped by the list.
            assert str(raised.value).startswith(f"{path}: not a video FFmpeg can read"), kind
            continue
        assert str(raised.value) == f"{path}: {FORMAT_REFUSED}", kind
        with pytest.raises(VideoDecodeError, match=FORMAT_REFUSED):
            DFDVideoProcessor()(str(path), return_tensors="pt")


def test_names_that_look_like_protocols_are_just_file_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "other.mp4", numbered_frames(30))
    # FFmpeg would read "concat:a|b" as its concat protocol, and "subfile,..." as a slice of another file.
    for name in ("concat:other.mp4|other.mp4", "subfile,,start,0,end,0,,:other.mp4"):
        write_video(tmp_path / name, numbered_frames(5))
        assert probe_video(name).total_frames == 5
    assert sampled_frames("concat:other.mp4|other.mp4").shape[0] == 12


def test_pipes_and_devices_are_not_read(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    for path in (fifo, "/dev/zero"):
        with pytest.raises(VideoDecodeError) as raised:
            probe_video(path)
        assert str(raised.value) == f"{path}: not a regular file"


def test_frames_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    video = write_video(tmp_path / "clip.mp4", numbered_frames(4, height=48, width=64))
    folder = tmp_path / "frames"
    folder.mkdir()
    PIL.Image.fromarray(numbered_frames(1, height=48, width=64)[0]).save(folder / "0.png")
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", "3000")
    assert max_frame_pixels() == 3000
    with pytest.raises(VideoDecodeError) as raised:
        probe_video(video)
    assert str(raised.value) == (
        f"{video}: frames of 64x48 (3,072 pixels) are above the limit of 3,000 pixels per frame (DFD_MAX_FRAME_PIXELS)"
    )
    with pytest.raises(VideoDecodeError) as raised:
        sampled_frames(folder)
    assert str(raised.value) == (
        f"{folder / '0.png'}: 64x48 (3,072 pixels) is above the limit of 3,000 pixels per frame (DFD_MAX_FRAME_PIXELS)"
    )
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", "3072")
    assert sampled_frames(video).shape == (12, 48, 64, 3)
