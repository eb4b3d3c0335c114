"""No export names a folder of the machine it was made on: `dfd init`, `dfd convert` and training's export (a model
loaded from a local folder, saved with tools/export.save_detector) leave no local path in any file."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForVideoClassification, AutoVideoProcessor

from dfd.tools.cli import main
from dfd.tools.export import save_detector


def files_naming(folder: Path, *paths: Path) -> list[str]:
    """The files of `folder` whose bytes hold any of `paths` (as text)."""
    needles = [str(path).encode() for path in paths]
    return [file.name for file in sorted(folder.iterdir()) if any(needle in file.read_bytes() for needle in needles)]


def vision_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())["vision_config"]


def test_dfd_init_and_dfd_convert_exports_name_no_local_folder(tiny_clip_dir, tmp_path):
    clip = Path(tiny_clip_dir).resolve()
    assert clip.is_absolute()
    initialised = tmp_path / "initialised"
    assert main(["init", "--clip", str(clip), "--output", str(initialised)]) == 0

    weights = load_file(clip / "model.safetensors")
    legacy = {f"clip.vision_model.{name.removeprefix('vision_model.')}": tensor for name, tensor in weights.items()}
    torch.save(legacy, tmp_path / "best_model.pt")
    converted = tmp_path / "converted"
    convert = ["convert", str(tmp_path / "best_model.pt"), "--clip", str(clip), "--output", str(converted)]
    assert main([*convert, "--new-head"]) == 0

    for export in (initialised, converted):
        assert (export / "config.json").is_file() and (export / "serving_dfd.py").is_file()
        assert files_naming(export, clip, tmp_path) == []
        assert "_name_or_path" not in vision_config(export)


def test_a_trained_export_of_a_model_loaded_from_a_folder_names_no_local_folder(tiny_detector_dir, tmp_path):
    """What train_accelerate.py exports: a model loaded from --model_path (a folder), saved with save_detector."""
    source = tmp_path / "source"
    model = AutoModelForVideoClassification.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    model.config.vision_config._name_or_path = str(source / "clip")  # as `from_clip` copies it from a local CLIP
    assert model.config._name_or_path == str(tiny_detector_dir)
    exported = save_detector(model, processor, tmp_path / "exported")
    assert files_naming(exported, tiny_detector_dir, source, tmp_path) == []
    assert "_name_or_path" not in json.loads((exported / "config.json").read_text())
    # It loads as it did, with the same weights.
    reloaded = AutoModelForVideoClassification.from_pretrained(exported, trust_remote_code=True)
    assert reloaded.config.to_dict()["id2label"] == model.config.to_dict()["id2label"]
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)

    # A Hub id is no local path: it stays, naming where the backbone came from.
    model.config.vision_config._name_or_path = "openai/clip-vit-large-patch14"
    exported = save_detector(model, processor, tmp_path / "exported", readme=None)
    assert vision_config(exported)["_name_or_path"] == "openai/clip-vit-large-patch14"
