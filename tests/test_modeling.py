"""DFD model: parameter budget, identity at init, temporal sensitivity, CLIP import and Hub-style export/load."""

import copy
import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForVideoClassification, CLIPConfig, CLIPModel, CLIPVisionModel

from conftest import REPO_ROOT, TINY_IMAGE_SIZE as IMAGE_SIZE, tiny_clip_config
from dfd.configuration_dfd import DFDConfig
from dfd.modeling_dfd import DFDForVideoClassification, DFDModel

CARD_TRAINABLE = 5_255_938


@pytest.fixture(scope="module")
def tiny_model(tiny_clip_dir):
    torch.manual_seed(0)
    return DFDForVideoClassification.from_clip(tiny_clip_dir, image_size=IMAGE_SIZE, adapter_bottleneck=8).eval()


def randomize_adapters(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapter." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def video_batch(batch=2, frames=5, seed=0):
    return torch.randn(batch, frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def test_default_config_matches_the_card_on_meta_device():
    config = DFDConfig()
    with torch.device("meta"):
        model = DFDForVideoClassification(config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert abs(trainable - CARD_TRAINABLE) / CARD_TRAINABLE < 0.02, trainable
    assert 300e6 < total < 316e6, total
    assert config.vision_config.hidden_size == 1024 and config.vision_config.num_hidden_layers == 24
    assert config.vision_config.image_size == 384 and config.num_frames == 12
    assert config.id2label == {0: "real", 1: "fake"} and config.label2id == {"real": 0, "fake": 1}
    # Position embeddings are stored for the 27x27 grid, not interpolated on each forward.
    assert model.dfd.embeddings.position_embedding.weight.shape == (27 * 27 + 1, 1024)
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".adapter." in n or n.startswith("classifier.") for n in trainable_names)


def test_per_frame_features_equal_clip_at_init(tiny_clip_dir, tiny_model):
    clip = CLIPVisionModel.from_pretrained(tiny_clip_dir).eval()
    pixel_values = video_batch()
    with torch.no_grad():
        expected = clip(pixel_values.flatten(0, 1), interpolate_pos_encoding=True).pooler_output
        frame_embeds = tiny_model.dfd(pixel_values).frame_embeds
    assert frame_embeds.shape == (2, 5, 32)
    assert (frame_embeds.flatten(0, 1) - expected).abs().max() < 1e-5


def test_from_clip_accepts_a_full_clip_model_checkpoint(tmp_path):
    torch.manual_seed(1)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vision_config=tiny_clip_config().to_dict(),
        projection_dim=8,
    )
    clip = CLIPModel(config).eval()
    clip.save_pretrained(tmp_path)
    model = DFDForVideoClassification.from_clip(tmp_path, image_size=32).eval()
    pixel_values = video_batch(1, 3)[..., :32, :32]
    with torch.no_grad():
        expected = clip.vision_model(pixel_values.flatten(0, 1)).pooler_output
        assert (model.dfd(pixel_values).frame_embeds[0] - expected).abs().max() < 1e-5


def test_reversing_frames_matters_only_once_adapters_learn(tiny_model):
    pixel_values = video_batch()
    reversed_values = pixel_values.flip(1)
    with torch.no_grad():
        assert torch.allclose(tiny_model(pixel_values).logits, tiny_model(reversed_values).logits, atol=1e-5)
    trained = DFDForVideoClassification(tiny_model.config).eval()
    trained.load_state_dict(tiny_model.state_dict())
    randomize_adapters(trained)
    with torch.no_grad():
        difference = (trained(pixel_values).logits - trained(reversed_values).logits).abs().max()
    assert difference > 1e-3


@pytest.mark.parametrize("num_frames", [1, 2, 12])
def test_any_number_of_frames_runs(tiny_model, num_frames):
    with torch.no_grad():
        assert tiny_model(video_batch(3, num_frames)).logits.shape == (3, 2)


def test_loss_trains_only_adapters_and_head(tiny_model):
    model = DFDForVideoClassification(tiny_model.config).train()
    model.load_state_dict(tiny_model.state_dict())
    output = model(video_batch(), labels=torch.tensor([0, 1]))
    output.loss.backward()
    for name, parameter in model.named_parameters():
        if ".adapter." in name or name.startswith("classifier."):
            assert parameter.grad is not None, name
        else:
            assert parameter.grad is None, name
    # Zero-initialized up-projections still receive gradient, so the adapters can leave identity.
    assert model.dfd.encoder.layers[0].adapter.up_proj.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model):
    def adapter_grads(checkpointing):
        model = DFDForVideoClassification(tiny_model.config)
        model.load_state_dict(tiny_model.state_dict())
        randomize_adapters(model)
        model.train()
        model.dropout.p = 0.0
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.dfd.encoder.layers)
        model(video_batch(), labels=torch.tensor([0, 1])).loss.backward()
        return torch.cat([p.grad.flatten() for n, p in model.named_parameters() if p.grad is not None])

    assert torch.allclose(adapter_grads(False), adapter_grads(True), atol=1e-6)


def test_frame_only_model_has_no_adapters(tiny_clip_dir):
    model = DFDForVideoClassification.from_clip(tiny_clip_dir, image_size=IMAGE_SIZE, adapter_layers=[])
    assert not any(".adapter." in name for name, _ in model.named_parameters())
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.weight", "classifier.bias"]


def test_adapters_only_in_last_blocks(tiny_clip_dir):
    model = DFDForVideoClassification.from_clip(tiny_clip_dir, image_size=IMAGE_SIZE, adapter_layers=[1])
    assert model.dfd.encoder.layers[0].adapter is None and model.dfd.encoder.layers[1].adapter is not None
    model(video_batch(), labels=torch.tensor([0, 1])).loss.backward()
    assert model.dfd.encoder.layers[1].adapter.down_proj.weight.grad is not None


def test_eager_and_sdpa_attention_agree(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    pixel_values = video_batch()
    logits = {}
    for implementation in ("eager", "sdpa"):
        model = DFDForVideoClassification.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert model.config.vision_config._attn_implementation == implementation
        randomize_adapters(model)
        with torch.no_grad():
            logits[implementation] = model(pixel_values).logits
    assert torch.allclose(logits["eager"], logits["sdpa"], atol=1e-5)


def test_saved_checkpoint_stores_resized_position_embeddings(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as weights:
        shape = weights.get_slice("dfd.embeddings.position_embedding.weight").get_shape()
    assert shape == [6 * 6 + 1, 32]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_dfd.DFDForVideoClassification"
    assert config["auto_map"]["AutoModelForVideoClassification"] == "modeling_dfd.DFDForVideoClassification"
    assert config["model_type"] == "dfd"


def test_auto_classes_rebuild_identity_adapters_from_config(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)
    model = AutoModelForVideoClassification.from_config(config, trust_remote_code=True)
    adapter = model.dfd.encoder.layers[0].adapter
    assert adapter.up_proj.weight.abs().max() == 0 and adapter.up_proj.bias.abs().max() == 0
    assert adapter.down_proj.weight.abs().max() > 0
    assert torch.equal(model.dfd.embeddings.position_ids[0], torch.arange(37))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        p.numel() for p in tiny_model.parameters() if p.requires_grad
    )


def test_base_model_loads_features_from_a_classifier_checkpoint(tiny_model, tmp_path):
    tiny_model = copy.deepcopy(tiny_model)  # the module-scoped model stays at identity for the other tests
    randomize_adapters(tiny_model, seed=3)
    tiny_model.save_pretrained(tmp_path)
    base = DFDModel.from_pretrained(tmp_path).eval()
    pixel_values = video_batch()
    with torch.no_grad():
        assert torch.allclose(base(pixel_values).pooler_output, tiny_model.dfd(pixel_values).pooler_output, atol=1e-6)


FRESH_PROCESS_LOAD = r"""
import importlib.util, json, sys
import torch
# Nothing of ours may be importable: no repo on sys.path, no installed package.
sys.meta_path = [finder for finder in sys.meta_path if "editable" not in repr(finder)]
sys.path = [entry for entry in sys.path if entry not in ("", {repo!r}) and "__editable__" not in entry]
assert importlib.util.find_spec("dfd") is None and importlib.util.find_spec("modeling_dfd") is None
from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification
export, pixels, out = sys.argv[1:4]
config = AutoConfig.from_pretrained(export, trust_remote_code=True)
pixel_values = torch.load(pixels, weights_only=True)
result = {{"config": type(config).__name__}}
for auto in (AutoModel, AutoModelForVideoClassification):
    model = auto.from_pretrained(export, trust_remote_code=True).eval()
    assert "transformers_modules" in type(model).__module__
    with torch.no_grad():
        result[auto.__name__] = model(pixel_values).logits.tolist()
json.dump(result, open(out, "w"))
"""


def test_export_loads_in_a_fresh_process_without_our_code(tiny_model, tmp_path):
    tiny_model = copy.deepcopy(tiny_model)
    randomize_adapters(tiny_model, seed=5)
    export = tmp_path / "export"
    tiny_model.save_pretrained(export)
    # The model's code, and the pipeline config.json names with the Hub files it runs (tests/test_pipeline.py).
    names = sorted(p.name for p in export.iterdir())
    assert {"config.json", "configuration_dfd.py", "model.safetensors", "modeling_dfd.py", "pipeline_dfd.py"} <= set(
        names
    )
    assert all(name.endswith(("_dfd.py", ".json", ".safetensors")) for name in names)
    pixel_values = video_batch()
    torch.save(pixel_values, tmp_path / "pixels.pt")
    with torch.no_grad():
        expected = tiny_model(pixel_values).logits
    script = FRESH_PROCESS_LOAD.format(repo=str(REPO_ROOT))
    subprocess.run(
        [sys.executable, "-c", script, str(export), str(tmp_path / "pixels.pt"), str(tmp_path / "out.json")],
        cwd=tmp_path,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"},
    )
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["config"] == "DFDConfig"
    for auto in ("AutoModel", "AutoModelForVideoClassification"):
        assert torch.allclose(torch.tensor(result[auto]), expected, atol=1e-5)
