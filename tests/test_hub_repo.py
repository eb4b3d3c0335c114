"""The repository root as a Hub model repo: root configs, the Auto classes on a checkout, atomic exports."""

import json
import os
import stat

import pytest
import torch
from transformers import AutoConfig, AutoModelForVideoClassification, AutoVideoProcessor

from conftest import REPO_ROOT
from dfd.tools.export import default_root_configs, save_detector
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.processing_dfd import DFDVideoProcessor


def without_version(text):
    values = json.loads(text)
    values.pop("transformers_version", None)
    return values


@pytest.mark.parametrize("name", ["config.json", "video_preprocessor_config.json"])
def test_root_configs_match_the_code_defaults(name):
    """Regenerate with `make configs` when this fails."""
    expected = default_root_configs()[name]
    assert without_version((REPO_ROOT / name).read_text()) == without_version(expected)


def test_checkout_root_loads_through_auto_classes():
    config = AutoConfig.from_pretrained(REPO_ROOT, trust_remote_code=True)
    assert type(config).__name__ == "DFDConfig"
    assert (config.num_frames, config.image_size, config.vision_config.patch_size) == (12, 384, 14)
    assert config.auto_map["AutoModel"] == "modeling_dfd.DFDForVideoClassification"
    processor = AutoVideoProcessor.from_pretrained(REPO_ROOT, trust_remote_code=True)
    assert type(processor).__name__ == "DFDVideoProcessor"
    assert processor.size.height == 384 and processor.num_frames == 12 and not processor.do_center_crop


def test_export_replaces_an_existing_folder_only_when_complete(tiny_detector_dir, tmp_path):
    model = DFDForVideoClassification.from_pretrained(tiny_detector_dir)
    processor = DFDVideoProcessor.from_pretrained(tiny_detector_dir)
    target = save_detector(model, processor, tmp_path / "export", readme="# first\n")
    assert {p.name for p in target.iterdir()} >= {
        "config.json",
        "model.safetensors",
        "configuration_dfd.py",
        "modeling_dfd.py",
        "processing_dfd.py",
        "video_preprocessor_config.json",
        "README.md",
    }

    class ExplodingProcessor:
        def save_pretrained(self, directory):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_detector(model, ExplodingProcessor(), tmp_path / "export", readme="# second\n")
    assert (target / "README.md").read_text() == "# first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]

    save_detector(model, processor, tmp_path / "export", readme="# second\n")
    assert (target / "README.md").read_text() == "# second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    reloaded = AutoModelForVideoClassification.from_pretrained(target, trust_remote_code=True)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))


def test_an_export_is_a_deployable_repo_readable_as_the_umask_says(tiny_detector_dir, tmp_path):
    model = DFDForVideoClassification.from_pretrained(tiny_detector_dir)
    previous = os.umask(0o022)
    try:
        target = save_detector(model, DFDVideoProcessor.from_pretrained(tiny_detector_dir), tmp_path / "export")
    finally:
        os.umask(previous)
    # The files the Endpoint runs, and the ones they import, as in the checkout.
    exported = [path.name for path in REPO_ROOT.glob("*_dfd.py")] + ["handler.py"]
    for name in exported:
        assert (target / name).read_bytes() == (REPO_ROOT / name).read_bytes(), name
    requirements = (target / "requirements.txt").read_text().split()
    assert any(line.startswith("transformers") and ">=5" in line for line in requirements)
    assert any(line.startswith("av") for line in requirements)
    assert not any(line.startswith("dlib") for line in requirements)  # only models that crop faces need it
    assert not any(line.startswith("torch") and not line.startswith("torchvision") for line in requirements)
    # safetensors creates its file 0600; every export file is made readable as the umask (022) says.
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in target.iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
