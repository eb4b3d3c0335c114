"""Every DFD_* setting is read in one place, when used, and a bad value is refused on one line naming it."""

import pytest

from dfd.inputs_dfd import Limits
from dfd.settings_dfd import (
    allow_local_paths,
    decoding_threads,
    download_seconds,
    dtype_name,
    environment_flag,
    max_frame_pixels,
    max_input_bytes,
)


@pytest.mark.parametrize(
    "name, value, read",
    [
        ("DFD_DECODE_THREADS", "abc", decoding_threads),
        ("DFD_DECODE_THREADS", "0", decoding_threads),
        ("DFD_MAX_FRAME_PIXELS", "1e6", max_frame_pixels),
        ("DFD_MAX_INPUT_BYTES", "-5", max_input_bytes),
        ("DFD_DOWNLOAD_SECONDS", "nan", download_seconds),
        ("DFD_MAX_INPUT_BYTES", "100MB", Limits),
        ("DFD_ALLOW_LOCAL_PATHS", "yes", allow_local_paths),
        ("DFD_DTYPE", "fp16", dtype_name),
        ("DFD_MAX_DURATION_SECONDS", "inf", Limits),
        ("DFD_MAX_WINDOWS", "2.5", Limits),
        ("DFD_MAX_DECODED_FRAMES", "many", Limits),
    ],
)
def test_a_bad_setting_is_refused_on_one_line_naming_it(monkeypatch, name, value, read):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as raised:
        read()
    assert str(raised.value).startswith(f"{name}={value!r} is not valid: it must be ")
    assert "\n" not in str(raised.value)


def test_settings_are_read_when_used(monkeypatch):
    monkeypatch.setenv("DFD_MAX_WINDOWS", "4")
    monkeypatch.setenv("DFD_ALLOW_LOCAL_PATHS", "1")
    assert Limits().max_windows == 4 and allow_local_paths()
    monkeypatch.setenv("DFD_MAX_WINDOWS", " 7 ")
    monkeypatch.delenv("DFD_ALLOW_LOCAL_PATHS")
    assert Limits().max_windows == 7 and not allow_local_paths()
    assert Limits(max_windows=2).max_windows == 2  # a server's own limit wins over the environment
    monkeypatch.setenv("DFD_DTYPE", "")
    assert dtype_name() == "auto"
    monkeypatch.setenv("DFD_X", "0")
    assert environment_flag("DFD_X") is False
