"""Write what users keep without ever leaving it half-written: Hub-ready detector folders and single files."""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once at import: setting the umask to read it is not thread-safe (decode threads may be creating files).
_UMASK = _read_umask()


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
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the mode `open()` would
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def check_config_overrides(overrides: dict) -> None:
    """Refuse names `DFDConfig` doesn't take, so that a misspelt override fails instead of being stored and ignored."""
    import inspect

    from transformers import PreTrainedConfig

    from .configuration_dfd import DFDConfig

    known = set(inspect.signature(DFDConfig.__init__).parameters) | set(
        inspect.signature(PreTrainedConfig.__init__).parameters
    )
    unknown = sorted(set(overrides) - (known - {"self", "kwargs"}))
    if unknown:
        raise ValueError(f"unknown DFDConfig field(s): {', '.join(unknown)}")


def processor_for(config):
    """The video processor that matches a detector config: frames resized to its image_size, its num_frames."""
    from .processing_dfd import DFDVideoProcessor

    size = config.image_size
    return DFDVideoProcessor(size={"height": size, "width": size}, num_frames=config.num_frames)


def save_detector(model, processor, output_dir, readme: str | None = None) -> Path:
    """
    Save `model` (safetensors, config.json, configuration_dfd.py, modeling_dfd.py) and `processor`
    (video_preprocessor_config.json, processing_dfd.py) into `output_dir`, plus README.md when given.

    The folder is assembled next to its destination and renamed into place, so a crash never leaves a half-written
    export, and an existing export is replaced only once the new one is complete.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    staging.chmod(0o777 & ~_UMASK)  # mkdtemp's private 0700 would carry over to the published folder
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if readme is not None:
            (staging / "README.md").write_text(readme, encoding="utf-8")
        if output_dir.exists():
            previous = output_dir.with_name(f".{output_dir.name}.old-{staging.name.rsplit('-', 1)[-1]}")
            output_dir.rename(previous)
            try:
                staging.rename(output_dir)
            except BaseException:
                previous.rename(output_dir)  # never leave the user without their previous export
                raise
            shutil.rmtree(previous)
        else:
            staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def default_root_configs() -> dict[str, str]:
    """The JSON files of the full-size default detector, as `save_pretrained` writes them, keyed by file name."""
    from .configuration_dfd import DFDConfig

    config = DFDConfig(architectures=["DFDForVideoClassification"])
    with tempfile.TemporaryDirectory() as staging:
        # Saving straight into the repo root would copy the code files onto themselves (shutil.SameFileError).
        config.save_pretrained(staging)
        processor_for(config).save_pretrained(staging)
        return {
            name: (Path(staging) / name).read_text(encoding="utf-8")
            for name in ("config.json", "video_preprocessor_config.json")
        }


def write_root_configs(repo_root=Path(__file__).resolve().parent) -> None:
    """Regenerate config.json and video_preprocessor_config.json at the repo root (`make configs`)."""
    for name, text in default_root_configs().items():
        write_atomically(Path(repo_root) / name, text)


if __name__ == "__main__":
    write_root_configs()
