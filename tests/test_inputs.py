"""The one input gate: paths, bytes, data: URLs and base64 text become a local file, within one set of limits; a
server refuses paths on its own disk with the same line whether they exist or not. (URLs: tests/test_fetching.py.)"""

import base64
import os
import tempfile
from pathlib import Path

import pytest

from conftest import numbered_frames, write_video
from dfd.inputs_dfd import LOCAL_PATHS_REFUSED, Limits, base64_video, video_file
from dfd.probing_dfd import VideoDecodeError, probe_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("gate") / "clip.mp4", numbered_frames(20))


def through_the_gate(source, **rules):
    """What the gate lets through: the bytes of the local file it gives, and whether that file is gone afterwards."""
    with video_file(source, **rules) as path:
        content = Path(path).read_bytes()
        temporary = path
    return content, not os.path.exists(temporary)


def refusal(source, **rules) -> str:
    with pytest.raises(VideoDecodeError) as raised, video_file(source, **rules):
        pass
    return str(raised.value)


def test_a_local_path_is_read_where_it_is_when_paths_are_allowed(clip):
    with video_file(str(clip)) as path:
        assert path == str(clip)
    with video_file(clip) as path:  # a pathlib.Path too
        assert path == str(clip)
    assert clip.exists()  # the user's file is never removed


def test_a_server_refuses_paths_alike_whether_they_exist_or_not(clip):
    existing = refusal(str(clip), local_paths=False)
    missing = refusal(str(clip.with_name("missing.mp4")), local_paths=False)
    assert existing.endswith(f": {LOCAL_PATHS_REFUSED}") and missing.endswith(f": {LOCAL_PATHS_REFUSED}")
    assert existing.removeprefix(str(clip)) == missing.removeprefix(str(clip.with_name("missing.mp4")))
    # In a JSON body, text that is not a URL is base64: a path is refused without looking at the disk.
    for path in (str(clip), "/etc/passwd", "/no/such/file.mp4", "~/video.mp4", "../video.mp4"):
        assert refusal(path, local_paths=False, base64_text=True).endswith(f": a path: {LOCAL_PATHS_REFUSED}")


def test_bytes_data_urls_and_every_base64_spelling_become_a_temporary_file(clip):
    video = clip.read_bytes()
    encoded = base64.b64encode(video).decode()
    spellings = [
        video,
        bytearray(video),
        memoryview(video),
        f"data:video/mp4;base64,{encoded}",
        encoded,
        base64.encodebytes(video).decode(),  # wrapped in lines, as the `base64` tool writes it
        base64.urlsafe_b64encode(video).decode().rstrip("="),  # URL-safe, unpadded
    ]
    for source in spellings:
        content, removed = through_the_gate(source, local_paths=False, base64_text=True)
        assert content == video and removed
    with video_file(video) as path:
        assert probe_video(path).total_frames == 20


def test_errors_name_the_input_as_given_never_a_temporary_file(clip):
    with pytest.raises(VideoDecodeError) as raised, video_file(b"not a video") as path:
        probe_video(path)
    assert str(raised.value).startswith("<video bytes>: not a video FFmpeg can read")
    assert tempfile.gettempdir() not in str(raised.value)
    assert refusal("data:video/mp4") == "<base64 video>: a data: URL without a comma before its base64 video"
    assert refusal("%%%", local_paths=False, base64_text=True) == (
        f"%%%: neither an http(s) URL nor base64-encoded video ({LOCAL_PATHS_REFUSED})"
    )
    assert refusal(12345) == "<video>: a video must be a path, an http(s) URL or bytes, got int"


def test_the_size_cap_is_checked_before_anything_is_decoded_or_written(clip, monkeypatch):
    video = clip.read_bytes()
    limits = Limits(max_input_bytes=len(video) - 1)
    message = f"the video is {len(video):,} bytes, above the {len(video) - 1:,} byte limit (DFD_MAX_INPUT_BYTES)"
    assert refusal(video, limits=limits) == f"<video bytes>: {message}"
    assert refusal(str(clip), limits=limits) == f"{clip}: {message}"  # a server's local file too
    huge = "A" * 4_000_000  # 3 MB of base64 is refused on its length, before it is decoded
    assert "above the 1,000 byte limit" in refusal(huge, base64_text=True, limits=Limits(max_input_bytes=1000))
    # Without a server's limits, local files are not capped, and sent bytes follow DFD_MAX_INPUT_BYTES.
    with video_file(str(clip)) as path:
        assert path == str(clip)
    monkeypatch.setenv("DFD_MAX_INPUT_BYTES", str(len(video) - 1))
    assert refusal(video) == f"<video bytes>: {message}"


def test_base64_video_refuses_what_is_not_base64():
    assert base64_video("aGVsbG8") == b"hello"
    for text in ("", "not base64!", "data:video/mp4;base64,%%%"):
        with pytest.raises(ValueError):
            base64_video(text)
