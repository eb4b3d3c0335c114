"""Hostile inputs: files that name other files, frames too large to hold, bad settings (URLs: test_fetching.py)."""

import base64
import io
import os

import av
import numpy as np
import PIL.Image
import pytest
import torch

from conftest import numbered_frames, write_video
from dfd.decoding_dfd import (
    VideoDecodeError,
    decoding_threads,
    frames_to_decode,
    load_video_frames,
    max_frame_pixels,
    probe_video,
)
from dfd.inference import Limits, VideoError, VideoPrediction, VideoScorer
from dfd.processing_dfd import DFDVideoProcessor
from dfd.settings_dfd import download_seconds, max_input_bytes


FORMAT_REFUSED = (
    "not a self-contained video file: playlists, concat lists, image sequences and other formats that can name "
    "other files or URLs are refused"
)


# --- the decoder opens nothing but the file it was given -----------------------------------------------------------


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
    assert load_video_frames("concat:other.mp4|other.mp4").shape[0] == 12


def test_pipes_and_devices_are_not_read(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    for path in (fifo, "/dev/zero"):
        with pytest.raises(VideoDecodeError) as raised:
            probe_video(path)
        assert str(raised.value) == f"{path}: not a regular file"


# --- memory and work are bounded by the output ---------------------------------------------------------------------


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
        load_video_frames(folder)
    assert str(raised.value) == (
        f"{folder / '0.png'}: 64x48 (3,072 pixels) is above the limit of 3,000 pixels per frame (DFD_MAX_FRAME_PIXELS)"
    )
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", "3072")
    assert load_video_frames(video).shape == (12, 48, 64, 3)


def test_frames_to_decode_counts_from_each_wanted_frames_keyframe(tmp_path):
    info = probe_video(write_video(tmp_path / "clip.mp4", numbered_frames(100, 32, 32), gop=25))
    assert info.keyframe_indices.tolist() == [0, 25, 50, 75]
    assert frames_to_decode(info, [10]) == 11
    assert frames_to_decode(info, [30]) == 6
    assert frames_to_decode(info, [30, 30, 40, 99]) == 16 + 25
    assert frames_to_decode(info, range(100)) == 100


def test_frames_are_resized_as_decoded_and_pixel_values_do_not_change(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (20, 270, 480, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames)
    processor = DFDVideoProcessor()
    full = load_video_frames(path)
    assert full.shape == (12, 270, 480, 3)
    early = processor(str(path), return_tensors="pt", return_metadata=True)
    late = processor(full, do_sample_frames=False, return_tensors="pt")
    assert torch.equal(early["pixel_values"], late["pixel_values"])
    assert early["video_metadata"][0].height == 384  # what the decoder kept: the resized frames


# --- DFD_* settings --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, read",
    [
        ("DFD_DECODE_THREADS", "abc", decoding_threads),
        ("DFD_DECODE_THREADS", "0", decoding_threads),
        ("DFD_MAX_FRAME_PIXELS", "1e6", max_frame_pixels),
        ("DFD_MAX_INPUT_BYTES", "-5", max_input_bytes),
        ("DFD_DOWNLOAD_SECONDS", "nan", download_seconds),
        ("DFD_MAX_INPUT_BYTES", "100MB", Limits),
        ("DFD_MAX_DURATION_SECONDS", "inf", Limits),
        ("DFD_MAX_WINDOWS", "2.5", Limits),
        ("DFD_MAX_DECODED_FRAMES", "many", Limits),
    ],
)
def test_a_bad_setting_is_refused_on_one_line_naming_it(monkeypatch, name, value, read):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as raised:
        read()
    assert str(raised.value).startswith(f"{name}={value!r} is not valid: it must be a ")
    assert "\n" not in str(raised.value)


# --- one video's failure is that video's error -----------------------------------------------------------------------


def test_a_failing_video_becomes_its_error_and_the_batch_goes_on(tmp_path, tiny_detector_dir, monkeypatch):
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    model = AutoModelForVideoClassification.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    good = write_video(tmp_path / "good.mp4", numbered_frames(30))
    # One keyframe, 600 frames: every frame up to the last wanted one must be decoded.
    long = write_video(tmp_path / "long.mp4", numbered_frames(600, 32, 32), fps=100, gop=10_000)
    listing = tmp_path / "list.mp4"
    listing.write_text(f"ffconcat version 1.0\nfile '{good}'\n")
    large = write_video(tmp_path / "large.mp4", numbered_frames(30, 128, 128))  # over the pixel limit set below
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", str(64 * 64))
    scorer = VideoScorer(model, processor, limits=Limits(max_decoded_frames=500))
    good_alone = list(scorer.predict([good]))[0]
    results = list(scorer.predict([good, long, good, listing, good, large, good], num_windows=1))
    kinds = [VideoPrediction, VideoError] * 3 + [VideoPrediction]
    assert [type(result) for result in results] == kinds
    assert str(results[1]) == (
        f"{long}: the requested frames take decoding 600 frames, above the 500 frame limit (DFD_MAX_DECODED_FRAMES)"
    )
    assert str(results[3]) == f"{listing}: {FORMAT_REFUSED}"
    assert str(results[5]) == (
        f"{large}: frames of 128x128 (16,384 pixels) are above the limit of 4,096 pixels per frame "
        "(DFD_MAX_FRAME_PIXELS)"
    )
    for result in results[::2]:
        assert result.score == pytest.approx(good_alone.score, abs=1e-6)
