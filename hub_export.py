"""Write a Hub-ready detector folder: weights, configs, the code files the Hub loads, and a model card."""

import shutil
import tempfile
from pathlib import Path


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
    staging.chmod(0o755)  # mkdtemp's private 0700 would carry over to the published folder
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if readme is not None:
            (staging / "README.md").write_text(readme, encoding="utf-8")
        if output_dir.exists():
            previous = output_dir.with_name(f".{output_dir.name}.old-{staging.name.rsplit('-', 1)[-1]}")
            output_dir.rename(previous)
            staging.rename(output_dir)
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
    from .processing_dfd import DFDVideoProcessor

    config = DFDConfig(architectures=["DFDForVideoClassification"])
    with tempfile.TemporaryDirectory() as staging:
        # Saving straight into the repo root would copy the code files onto themselves (shutil.SameFileError).
        config.save_pretrained(staging)
        DFDVideoProcessor().save_pretrained(staging)
        return {
            name: (Path(staging) / name).read_text(encoding="utf-8")
            for name in ("config.json", "video_preprocessor_config.json")
        }


def write_root_configs(repo_root=Path(__file__).resolve().parent) -> None:
    """Regenerate config.json and video_preprocessor_config.json at the repo root (`make configs`)."""
    for name, text in default_root_configs().items():
        (Path(repo_root) / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write_root_configs()
