"""`dfd predict`'s inputs: files, folders and glob patterns expanded into videos, each real file or folder once.

Folder walks and `**` follow symbolic links but enter every real folder once, so a link back to a parent ends
instead of looping, and a file reached through several links or spellings is one video (compared by device and
inode, not by name). A folder walk that finds a video and its extracted frames scores the video once (see
`frames_of_videos`).
"""

import fnmatch
import glob
import os
from collections import defaultdict
from collections.abc import Iterator

from ...results_dfd import VideoError


VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file or folder `path` names, through links; None when it cannot be read."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status.st_dev, status.st_ino


def _visible_entries(folder: str) -> list[os.DirEntry]:
    # Hidden entries are skipped: partial downloads, macOS `._name.mp4` metadata files, .git folders.
    try:
        with os.scandir(folder) as entries:
            return sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def is_frame_folder(folder: str) -> bool:
    """
    A folder is one video made of frame images when it directly holds frame images (.png, .jpg, ...) and neither
    video files nor subfolders: the frame folders the processor and training read (images in natural name order).
    """
    from ...decoding_dfd import FRAME_IMAGE_EXTENSIONS  # with torch: imported when inputs are read, not by the parser

    entries = _visible_entries(folder)
    if any(_is_dir(entry) for entry in entries):
        return False
    suffixes = {os.path.splitext(entry.name)[1].lower() for entry in entries if _is_file(entry)}
    return bool(suffixes & set(FRAME_IMAGE_EXTENSIONS)) and not suffixes & set(VIDEO_EXTENSIONS)


def walk_folder(folder: str, seen_folders: set) -> Iterator[str]:
    """Video files and frame folders under `folder`, in name order; a real folder already walked is not entered."""
    identity = file_identity(folder)
    if identity is None or identity in seen_folders:
        return
    seen_folders.add(identity)
    for entry in _visible_entries(folder):
        path = os.path.join(folder, entry.name)
        if _is_dir(entry):
            if is_frame_folder(path):
                yield path
            else:
                yield from walk_folder(path, seen_folders)
        elif os.path.splitext(entry.name)[1].lower() in VIDEO_EXTENSIONS and _is_file(entry):
            yield path


def frames_of_videos(paths: list[str]) -> set[str]:
    """
    The frame folders among `paths` that hold the frames of a video also among them: a frame folder named as a video
    file (its stem) that lies below the folder holding the frame folder's parent. DeepfakeBench extracts every
    `<dir>/**/<video>.mp4` into `<dir>/frames/<video>/` (Celeb-DF's `Celeb-real/frames/id0_0000/` beside
    `Celeb-real/id0_0000.mp4`): scoring both would count each video twice. A frame folder without its video is kept.
    """
    videos = defaultdict(list)  # stem -> video files
    for path in paths:
        if os.path.isfile(path):
            videos[os.path.splitext(os.path.basename(path))[0]].append(path)
    duplicates = set()
    for path in paths:
        above = os.path.dirname(os.path.dirname(path))
        if os.path.isdir(path) and any(
            os.path.commonpath([video, above]) == above for video in videos[os.path.basename(path)]
        ):
            duplicates.add(path)
    return duplicates


def _folders_below(folder: str, seen_folders: set) -> Iterator[str]:
    """`folder` and every folder below it (what `**` matches), each real folder once."""
    identity = file_identity(folder or os.curdir)
    if identity is None or identity in seen_folders:
        return
    seen_folders.add(identity)
    yield folder
    for entry in _visible_entries(folder or os.curdir):
        if _is_dir(entry):
            yield from _folders_below(os.path.join(folder, entry.name), seen_folders)


def _match(folder: str, parts: list[str]) -> Iterator[str]:
    if not parts:
        yield folder
        return
    part, rest = parts[0], parts[1:]
    if part == "**":
        for below in _folders_below(folder, set()):
            if rest:
                yield from _match(below, rest)
                continue
            if below:  # a trailing `**` matches the folders and the files below
                yield below
            for entry in _visible_entries(below or os.curdir):
                if _is_file(entry):
                    yield os.path.join(below, entry.name)
    elif glob.has_magic(part):
        for entry in _visible_entries(folder or os.curdir) if not part.startswith(".") else _all_entries(folder):
            if fnmatch.fnmatch(entry.name, part) and (not rest or _is_dir(entry)):
                yield from _match(os.path.join(folder, entry.name), rest)
    else:
        path = os.path.join(folder, part)
        if os.path.isdir(path) if rest else os.path.exists(path):
            yield from _match(path, rest)


def _all_entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder or os.curdir) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError:
        return []


def glob_paths(pattern: str) -> list[str]:
    """
    `glob.glob(pattern, recursive=True)`, sorted, except that `**` enters each real folder once: the standard glob
    follows a link to a parent folder again and again.
    """
    root = os.sep if pattern.startswith(os.sep) else ""
    parts = [part for part in pattern.split(os.sep) if part]
    return sorted(set(_match(root, parts)))


def expand_inputs(patterns: list[str]) -> list[str | VideoError]:
    """
    Videos from files, folders (searched recursively for video files and frame folders) and glob patterns, in the
    order given, each real file or frame folder once. An input that names nothing becomes a `VideoError` in its place.
    """
    entries, seen, seen_folders = [], set(), set()

    def add(path: str):
        identity = file_identity(path)
        if identity not in seen:
            seen.add(identity)
            entries.append(path)

    def add_folder(folder: str):
        if is_frame_folder(folder):
            add(folder)
            return
        if file_identity(folder) in seen_folders:  # walked already, as part of an earlier input
            return
        found = list(walk_folder(folder, seen_folders))
        duplicates = frames_of_videos(found)
        videos = [path for path in found if path not in duplicates]
        if not videos:
            entries.append(
                VideoError(folder, f"no video files ({', '.join(VIDEO_EXTENSIONS)}) or frame folders in folder")
            )
        for video in videos:
            add(video)

    for pattern in patterns:
        if os.path.isdir(pattern):
            add_folder(pattern)
        elif os.path.exists(pattern):
            add(pattern)
        elif glob.has_magic(pattern):
            matches = glob_paths(pattern)
            if not matches:
                entries.append(VideoError(pattern, "no file matches this pattern"))
            for match in matches:
                add_folder(match) if os.path.isdir(match) else add(match)
        else:
            entries.append(VideoError(pattern, "file not found"))
    return entries
