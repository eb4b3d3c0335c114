"""Hub-ready detector folders: the model, its processor and code, written in one step, plus the root configs."""

import inspect
import json
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from huggingface_hub import ModelCardData
from transformers import PreTrainedConfig

from ..configuration_dfd import DFDConfig
from ..processing_dfd import DFDVideoProcessor
from .files import UMASK, write_atomically


PACKAGE_ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = "dfd-detector"


def hub_files() -> list[Path]:
    """
    Every Hub file of the package (the flat `*_dfd.py` siblings and handler.py) and the Dockerfile of the serving
    container: an export carries them all, so that what the Endpoint, the serving container (and its image) and a
    Space load is there beside what the model's and processor's own `save_pretrained` carry.
    """
    return sorted([*PACKAGE_ROOT.glob("*_dfd.py"), PACKAGE_ROOT / "handler.py", PACKAGE_ROOT / "Dockerfile"])


# The distributions the exported code imports, with the version bounds of our own pyproject; torch comes with the
# Endpoints container (its CUDA build), so it is not listed.
DEFAULT_MODEL_NAME = "dfd-deepfake-detector"
ENDPOINT_REQUIREMENTS = ("transformers", "torchvision", "av", "safetensors", "huggingface_hub", "numpy", "pillow")


def check_config_overrides(overrides: dict) -> None:
    """Refuse names `DFDConfig` doesn't take, so that a misspelt override fails instead of being stored and ignored."""
    known = set(inspect.signature(DFDConfig.__init__).parameters) | set(
        inspect.signature(PreTrainedConfig.__init__).parameters
    )
    unknown = sorted(set(overrides) - (known - {"self", "kwargs"}))
    if unknown:
        raise ValueError(f"unknown DFDConfig field(s): {', '.join(unknown)}")


def processor_for(config):
    """The video processor that matches a detector config: frames resized to its image_size, its num_frames."""
    size = config.image_size
    return DFDVideoProcessor(size={"height": size, "width": size}, num_frames=config.num_frames)


def endpoint_requirements(extras: tuple[str, ...] = (), names: tuple[str, ...] = ENDPOINT_REQUIREMENTS) -> str:
    """
    requirements.txt for the Inference Endpoints container: the packages the exported code needs (`names`), as
    pinned here, and those of our `extras` it needs too (e.g. "face" for a processor that crops faces).
    """
    wanted = {name.replace("_", "-") for name in names}
    lines = []
    for requirement in metadata.requires(DISTRIBUTION) or ():
        requirement, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra:  # an extra's requirement: kept with its other markers (platforms, Python versions)
            if extra.group(1) in extras:
                platforms = re.sub(
                    r"\s*\band\s+extra\s*==\s*['\"][^'\"]+['\"]|extra\s*==\s*['\"][^'\"]+['\"]\s*(and\b)?", "", marker
                )
                line = requirement.strip().replace(" ", "")
                lines.append(f"{line}; {platforms.strip()}" if platforms.strip() else line)
            continue
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group().replace("_", "-").lower()
        if name in wanted:
            lines.append(requirement.replace(" ", ""))
    return "".join(f"{line}\n" for line in sorted(lines, key=str.lower))


def _copy_hub_files(folder: Path, extras: tuple[str, ...] = ()):
    """Every Hub file (`hub_files`), and requirements.txt with the serving container's packages and our `extras`'."""
    for path in hub_files():
        shutil.copyfile(path, folder / path.name)
    (folder / "requirements.txt").write_text(endpoint_requirements(("serve", *extras)), encoding="utf-8")


def _without_local_paths(value):
    """A config (JSON value) without the `_name_or_path` entries that are not Hub ids."""
    if isinstance(value, dict):
        return {
            key: _without_local_paths(item)
            for key, item in value.items()
            if key != "_name_or_path" or (isinstance(item, str) and hub_id(item))
        }
    if isinstance(value, list):
        return [_without_local_paths(item) for item in value]
    return value


def _forget_local_paths(config_file: Path):
    """
    Drop from a saved config.json the folders of this machine it names: `_name_or_path`, the model's and its
    `vision_config`'s (copied from the CLIP checkpoint by `from_clip`), where it is a local path, not a Hub id.
    """
    config = json.loads(config_file.read_text(encoding="utf-8"))
    kept = _without_local_paths(config)
    if kept != config:  # written as transformers writes it
        config_file.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_detector(model, processor, output_dir, readme: str | None = None, extra_files: dict | None = None) -> Path:
    """
    Save a deployable Hub repo into `output_dir`: what the model's and the processor's `save_pretrained` write (the
    weights, config.json, video_preprocessor_config.json and the Hub files they import, the pipeline included), every
    other Hub file (handler.py and the scorer for the Endpoint, serving_dfd.py and the Dockerfile for the serving
    container, the web page a Space loads, the explainer), requirements.txt for the Endpoints container (it lists the
    face detector when the processor crops faces), and README.md when given. No file names a folder of this machine:
    config.json keeps `_name_or_path` only where it is a Hub id. `extra_files`: name -> function that writes the file
    at the path it is given (e.g. training's metrics.json), so that files describing the weights are replaced
    together with them.

    The folder is assembled next to its destination and renamed into place, so a crash never leaves a half-written
    export, and an existing export is replaced only once the new one is complete. Every file gets the mode the umask
    gives new files (safetensors creates its file private, which a serving container run as another user can't read).
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    staging.chmod(0o777 & ~UMASK)  # mkdtemp's private 0700 would carry over to the published folder
    try:
        model.save_pretrained(staging)
        _forget_local_paths(staging / "config.json")
        processor.save_pretrained(staging)
        _copy_hub_files(staging, extras=("face",) if processor.crop == "face" else ())
        if readme is not None:
            (staging / "README.md").write_text(readme, encoding="utf-8")
        for name, write in (extra_files or {}).items():
            write(staging / name)
        for path in staging.iterdir():
            if path.is_file():
                path.chmod(0o666 & ~UMASK)
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


def hub_id(name: str | None) -> str | None:
    """`name` when it names a Hub repo (ORG/NAME), `None` for a local path: cards never show paths of this machine."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return None
    return name


def checkpoint_card(model, origin: str, base_model: str | None = None, trained: bool = False) -> str:
    """
    README.md of an export that was not trained here (`dfd init`, `dfd convert`): what it is and how to train it.
    `origin` says where its weights come from, in words; `base_model` is kept only when it is a Hub id; `trained`:
    whether its classifier comes trained (a converted checkpoint's) rather than new.
    """
    config = model.config
    trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
    metadata = ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="video-classification",
        base_model=hub_id(base_model),
        tags=["deepfake-detection", "video-classification", "clip", "spatiotemporal-adapters", "custom_code"],
        model_name=DEFAULT_MODEL_NAME,
    )
    status = (
        "Its weights come trained from elsewhere and were not evaluated here: evaluate it on your data, or fine-tune "
        "it,"
        if trained
        else "**Not trained for detection yet**: its scores mean nothing until it is fine-tuned, e.g."
    )
    adapters = f"in {len(config.adapter_layers)} of {config.vision_config.num_hidden_layers} blocks"
    return (
        (PACKAGE_ROOT / "tools" / "checkpoint_card.md")
        .read_text(encoding="utf-8")
        .format(
            metadata=metadata.to_yaml(),
            model_name=DEFAULT_MODEL_NAME,
            origin=origin,
            status=status,
            config=config,
            adapters=f"{adapters} (bottleneck {config.adapter_bottleneck})" if config.adapter_layers else "none",
            trainable=trainable,
            total=total,
            trainable_share=trainable / total,
        )
    )


def default_root_configs() -> dict[str, str]:
    """The JSON files of the full-size default detector, as `save_pretrained` writes them, keyed by file name."""
    config = DFDConfig(architectures=["DFDForVideoClassification"])
    with tempfile.TemporaryDirectory() as staging:
        # Saving straight into the repo root would copy the code files onto themselves (shutil.SameFileError).
        config.save_pretrained(staging)
        processor_for(config).save_pretrained(staging)
        return {
            name: (Path(staging) / name).read_text(encoding="utf-8")
            for name in ("config.json", "video_preprocessor_config.json")
        }


def write_root_configs(repo_root=Path(__file__).resolve().parents[1]) -> None:
    """Regenerate config.json and video_preprocessor_config.json at the repo root (`make configs`)."""
    for name, text in default_root_configs().items():
        write_atomically(Path(repo_root) / name, text)


if __name__ == "__main__":
    write_root_configs()
