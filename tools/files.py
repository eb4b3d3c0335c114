"""Files users keep, never left half-written: one atomic writer, JSON output, and the guard for existing outputs."""

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once at import: setting the umask to read it is not thread-safe (decode threads may be creating files).
UMASK = _read_umask()


def write_atomically(path: str | os.PathLike, content: str | bytes | Callable[[BinaryIO], None]) -> Path:
    """
    Write `content` (text, bytes, or a function that writes into a binary file, e.g. `figure.savefig`) to a temporary
    file next to `path`, then rename it into place: readers see the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            if callable(content):
                content(file)
            else:
                file.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(temporary, 0o666 & ~UMASK)  # mkstemp creates 0600; give the file the mode `open()` would
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def json_ready(value):
    """Non-finite floats -> null, so the files are standard JSON (NaN is what sklearn gives for one-class sets)."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, value) -> Path:
    return write_atomically(path, json.dumps(json_ready(value), indent=2) + "\n")


def parse_json_object(value: str) -> dict:
    """A JSON object given inline or as the path of a JSON file (e.g. config overrides); ValueError says why not."""
    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON nor a JSON file ({error})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"expected a JSON object, e.g. '{{\"adapter_layers\": [20, 21, 22, 23]}}', got {text!r}")
    return parsed


def check_new_output(path: str | os.PathLike, overwrite: bool, flag: str = "--overwrite") -> Path:
    """An output folder is the user's work: a non-empty one (or a file in its place) is replaced only when asked."""
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: already exists (pass {flag} to replace it)")
    return path
