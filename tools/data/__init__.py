"""
The field's datasets as downloaded, as manifests with honest splits (`dfd data index`).

The API the training side uses, small and stable:

- `read_manifest(path) -> list[Row]`: a manifest CSV (`path,label,split,group,method,dataset,crop`), checked, with
  absolute paths;
- `resolve(source) -> list[Row]`: a manifest path, or `FORMAT:ROOT` (e.g. `dfd:/data/FaceForensics++`) indexed on the
  fly with the defaults;
- `index(format, root, **options) -> Index`: a dataset's rows and the notes on what was left out, for `FORMATS`;
- `write_manifest(path, rows)`; `Row` (path, label real/fake, split train/validation/test/excluded, group, method,
  dataset, crop frame/face); `ManifestError`, `LayoutError`, `SplitError` (all ValueErrors whose message is one
  line);
- `source_path(source) -> str`: the file or folder a source names (ROOT for `FORMAT:ROOT`).

Rows whose split is `excluded` are for the record only: training and evaluation skip them.
"""

import os
from pathlib import Path

from . import celebdf, deepfakebench, dfd, dfdc, dfdcp, ffpp
from .layout import COMPRESSIONS, Index, LayoutError
from .manifest import COLUMNS, CROPS, LABELS, SPLITS, ManifestError, Row, read_manifest, write_manifest
from .splits import SplitError, leakage


# Format name -> its module (each has `index(root, **options)`, `OPTIONS` and a docstring saying what it reads).
FORMATS = {"ffpp": ffpp, "dfd": dfd, "celebdf": celebdf, "dfdc": dfdc, "dfdcp": dfdcp, "deepfakebench": deepfakebench}

__all__ = [
    "COLUMNS", "COMPRESSIONS", "CROPS", "FORMATS", "LABELS", "SPLITS", "Index", "LayoutError", "ManifestError", "Row",
    "SplitError", "index", "leakage", "read_manifest", "resolve", "source_path", "write_manifest",
]  # fmt: skip


def index(format: str, root: str | os.PathLike, **options) -> Index:
    """
    Index the dataset at `root` (for `deepfakebench`, its JSON file) in the layout `format` names. Options, where the
    format takes them (each module's OPTIONS): compression (raw, c23, c40; default c23), methods (FF++ method names),
    seed (of the grouped splits; default 0), frames_root (DeepfakeBench's rgb_dir). None counts as left out; an option
    the format does not take is a ValueError.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; the formats are {', '.join(FORMATS)}")
    module = FORMATS[format]
    options = {name: value for name, value in options.items() if value is not None}
    unknown = [name for name in options if name not in module.OPTIONS]
    if unknown:
        raise ValueError(
            f"{format}: does not take {', '.join(unknown)} (it takes {', '.join(module.OPTIONS) or 'none'})"
        )
    if options.get("compression", "c23") not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {options['compression']!r}")
    return module.index(Path(root).expanduser().absolute(), **options)


def _format_and_root(source: str | os.PathLike) -> tuple[str | None, str]:
    """(FORMAT, ROOT) of `FORMAT:ROOT`; (None, source) for anything else (a file named like it included)."""
    text = os.fspath(source)
    format, separator, root = text.partition(":")
    if separator and format in FORMATS and not os.path.exists(text):
        return format, root
    return None, text


def source_path(source: str | os.PathLike) -> str:
    """The file or folder `source` names: ROOT for `FORMAT:ROOT`, else `source` itself."""
    return _format_and_root(source)[1]


def resolve(source: str | os.PathLike) -> list[Row]:
    """
    The rows of `source`: a manifest file, or `FORMAT:ROOT` (a dataset indexed with the defaults, not written).
    Raises ManifestError, LayoutError or SplitError with a one-line message.
    """
    format, path = _format_and_root(source)
    if format is None:
        return read_manifest(path)
    rows = index(format, path).rows
    if not rows:
        raise LayoutError(f"{os.fspath(source)}: no videos")
    return rows
