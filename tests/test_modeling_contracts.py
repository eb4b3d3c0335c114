"""transformers' model contracts on a tiny DFD: loading info, recorded attentions and hidden states, tuples, loss,
checkpointing variants, input gradients, dtype and device-map loading, attention backends and `torch.export`."""

import logging

import pytest
import torch
from safetensors import safe_open
from torch.nn import functional as F

from conftest import TINY_IMAGE_SIZE as IMAGE_SIZE, tiny_clip_config
from dfd.configuration_dfd import DFDConfig
from dfd.modeling_dfd import DFDForVideoClassification, DFDModel

NUM_FRAMES = 3
NUM_PATCHES = (IMAGE_SIZE // 8) ** 2  # 6x6 grid
NUM_LAYERS = 2


def tiny_config(**overrides):
    values = dict(image_size=IMAGE_SIZE, adapter_bottleneck=8, num_frames=NUM_FRAMES, classifier_dropout=0.0)
    return DFDConfig(vision_config=tiny_clip_config().to_dict(), **{**values, **overrides})


def trained_looking(model, seed=0):
    """Non-zero adapters and head (new adapters are the identity, which would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapter." in name or name.startswith("classifier."):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


def video_batch(batch=2, seed=0):
    return torch.randn(batch, NUM_FRAMES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dfd_contracts")
    trained_looking(DFDForVideoClassification(tiny_config(attn_implementation="sdpa"))).save_pretrained(path)
    return path


def trainable_names(model):
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_loading_info_reports_missing_and_unexpected_keys_and_keeps_the_backbone_frozen(saved_dir, tmp_path):
    with safe_open(str(saved_dir / "model.safetensors"), "pt") as weights:
        saved_keys = set(weights.keys())
    assert "classifier.weight" in saved_keys and "dfd.encoder.layers.0.adapter.conv.weight" in saved_keys

    model, info = DFDForVideoClassification.from_pretrained(saved_dir, output_loading_info=True)
    assert isinstance(model, DFDForVideoClassification)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert all(".adapter." in name or name.startswith("classifier.") for name in trainable_names(model))

    # The base model drops the head: reported as unexpected, not silently.
    base, info = DFDModel.from_pretrained(saved_dir, output_loading_info=True)
    assert {key.rsplit(".", 1)[0] for key in info["unexpected_keys"]} == {"classifier"}
    assert not info["missing_keys"]
    assert trainable_names(base) and all(".adapter." in name for name in trainable_names(base))

    # A classifier from a base checkpoint: the new head is missing, and trainable.
    base.save_pretrained(tmp_path)
    model, info = DFDForVideoClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert {"classifier.weight", "classifier.bias"} <= trainable_names(model)


def test_attentions_and_hidden_states_are_recorded_per_block_with_their_shapes(saved_dir):
    model = DFDForVideoClassification.from_pretrained(saved_dir, attn_implementation="eager").eval()
    pixel_values = video_batch()
    with torch.no_grad():
        outputs = model(pixel_values, output_attentions=True, output_hidden_states=True)
        features = model.dfd(pixel_values, output_hidden_states=True)
    tokens = 1 + NUM_PATCHES
    assert len(outputs.attentions) == NUM_LAYERS
    for attention in outputs.attentions:
        assert attention.shape == (2 * NUM_FRAMES, 4, tokens, tokens)
        torch.testing.assert_close(attention.sum(-1), torch.ones(2 * NUM_FRAMES, 4, tokens))
    assert len(outputs.hidden_states) == NUM_LAYERS + 1
    assert all(state.shape == (2 * NUM_FRAMES, tokens, 32) for state in outputs.hidden_states)
    # The last one is the encoder output before the post-layernorm (as in CLIP), i.e. the model's last_hidden_state.
    torch.testing.assert_close(outputs.hidden_states[-1], features.last_hidden_state.flatten(0, 1))
    with torch.no_grad():
        embedded = model.dfd.pre_layrnorm(model.dfd.embeddings(pixel_values.flatten(0, 1)))
    torch.testing.assert_close(outputs.hidden_states[0], embedded)

    # Nothing is recorded unless asked for, and the config's flags count as asking.
    with torch.no_grad():
        plain = model(pixel_values)
    assert plain.attentions is None and plain.hidden_states is None
    torch.testing.assert_close(plain.logits, outputs.logits)
    model.config.output_attentions = True
    with torch.no_grad():
        assert len(model(pixel_values).attentions) == NUM_LAYERS


def test_recorded_outputs_carry_gradients(saved_dir):
    model = DFDForVideoClassification.from_pretrained(saved_dir, attn_implementation="eager").train()
    outputs = model(video_batch(), output_attentions=True, output_hidden_states=True)
    # Default input: the frozen embeddings run without autograd; everything after the first adapter has a graph.
    assert not outputs.hidden_states[0].requires_grad
    recorded = [*outputs.hidden_states[1:], *outputs.attentions]
    for tensor in recorded:
        tensor.retain_grad()
    outputs.logits[:, 1].sum().backward(retain_graph=True)
    assert all(tensor.grad is not None and tensor.grad.abs().sum() > 0 for tensor in recorded)

    pixel_values = video_batch().requires_grad_()
    outputs = model(pixel_values, output_hidden_states=True)
    outputs.hidden_states[0].retain_grad()
    outputs.logits[:, 1].sum().backward()
    assert outputs.hidden_states[0].grad.abs().sum() > 0


def test_return_dict_false_gives_tuples_and_the_loss_comes_from_loss_function(saved_dir):
    model = DFDForVideoClassification.from_pretrained(saved_dir).eval()
    pixel_values, labels = video_batch(), torch.tensor([0, 1])
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
        loss, logits = model(pixel_values, labels=labels, return_dict=False)
        hidden_tuple = model(pixel_values, output_hidden_states=True, return_dict=False)
        base_tuple = model.dfd(pixel_values, return_dict=False)
    torch.testing.assert_close(loss, F.cross_entropy(output.logits, labels))
    torch.testing.assert_close(logits, output.logits)
    assert len(hidden_tuple) == 2 and len(hidden_tuple[1]) == NUM_LAYERS + 1
    assert [tensor.shape for tensor in base_tuple] == [
        (2, NUM_FRAMES, 1 + NUM_PATCHES, 32),
        (2, NUM_FRAMES, 32),
        (2, 32),
    ]
    model.loss_function = lambda labels, logits, config, **kwargs: logits.sum() * 0 + 42.0
    with torch.no_grad():
        assert model(pixel_values, labels=labels).loss.item() == 42.0


def adapter_gradients(model, pixel_values, labels):
    model.zero_grad(set_to_none=True)
    model(pixel_values, labels=labels).loss.backward()
    return {name: parameter.grad for name, parameter in model.named_parameters() if parameter.requires_grad}


@pytest.mark.parametrize("adapter_layers", [None, [1]], ids=["adapters-everywhere", "frozen-first-block"])
@pytest.mark.parametrize("use_reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_gradient_checkpointing_trains_the_adapters(saved_dir, use_reentrant, adapter_layers):
    torch.manual_seed(0)
    model = trained_looking(DFDForVideoClassification(tiny_config(adapter_layers=adapter_layers))).train()
    pixel_values, labels = video_batch(), torch.tensor([0, 1])
    expected = adapter_gradients(model, pixel_values, labels)
    assert any(".adapter." in name for name in expected)

    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert all(layer.gradient_checkpointing for layer in model.dfd.encoder.layers)
    checkpointed = adapter_gradients(model, pixel_values, labels)
    assert set(checkpointed) == set(expected)
    for name, gradient in expected.items():
        assert checkpointed[name] is not None, name
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-6, rtol=1e-5)
    # Nothing frozen was trained on the way.
    assert all(parameter.grad is None for parameter in model.parameters() if not parameter.requires_grad)


def test_gradients_reach_pixel_values_and_match_finite_differences(saved_dir):
    model = DFDForVideoClassification.from_pretrained(saved_dir).eval().double()
    pixel_values = video_batch(1).double().requires_grad_()
    (gradient,) = torch.autograd.grad(model(pixel_values).logits[0, 1], pixel_values)
    assert gradient.abs().sum() > 0
    direction = torch.randn(pixel_values.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    epsilon = 1e-4
    with torch.no_grad():
        plus = model(pixel_values + epsilon * direction).logits[0, 1]
        minus = model(pixel_values - epsilon * direction).logits[0, 1]
    torch.testing.assert_close((plus - minus) / (2 * epsilon), (gradient * direction).sum(), rtol=1e-5, atol=1e-7)
    # The frozen backbone received nothing, though the whole graph was built.
    assert all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.parametrize("dtype_argument", ["dtype", "torch_dtype"])
def test_loads_in_bfloat16_and_with_a_device_map(saved_dir, dtype_argument):
    model = DFDForVideoClassification.from_pretrained(saved_dir, **{dtype_argument: torch.bfloat16})
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert all(".adapter." in name or name.startswith("classifier.") for name in trainable_names(model))

    reference = DFDForVideoClassification.from_pretrained(saved_dir).eval()
    mapped = DFDForVideoClassification.from_pretrained(saved_dir, device_map="cpu").eval()
    assert {parameter.device.type for parameter in mapped.parameters()} == {"cpu"}
    with torch.no_grad():
        torch.testing.assert_close(mapped(video_batch()).logits, reference(video_batch()).logits)
        bf16_logits = model.eval()(video_batch().bfloat16()).logits.float()
    torch.testing.assert_close(bf16_logits, reference(video_batch()).logits, atol=0.1, rtol=0.1)


def transformers_log(function) -> str:
    """What transformers logs while `function` runs."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        function()
    finally:
        logger.removeHandler(handler)
    return "\n".join(record.getMessage() for record in records)


def test_attention_backend_is_set_for_the_vision_tower_without_warnings(saved_dir):
    loaded = {}
    log = transformers_log(
        lambda: loaded.update(model=DFDForVideoClassification.from_pretrained(saved_dir, attn_implementation="eager"))
    )
    model = loaded["model"]
    assert "sub-model" not in log and "sub-config" not in log, log
    assert model.config._attn_implementation == model.config.vision_config._attn_implementation == "eager"
    assert model.dfd.encoder.layers[0].self_attn.config._attn_implementation == "eager"

    log = transformers_log(lambda: model.set_attn_implementation("sdpa"))
    assert "sub-model" not in log and "sub-config" not in log, log
    assert model.config.vision_config._attn_implementation == "sdpa"
    with torch.no_grad():
        assert model(video_batch(), output_attentions=True).attentions == ()  # sdpa computes no weights
    model.set_attn_implementation("eager")
    with torch.no_grad():
        assert len(model(video_batch(), output_attentions=True).attentions) == NUM_LAYERS


def test_forward_exports_with_torch_export(saved_dir):
    model = DFDForVideoClassification.from_pretrained(saved_dir).eval()
    pixel_values = video_batch()
    exported = torch.export.export(model, args=(pixel_values,))
    with torch.no_grad():
        expected = model(pixel_values).logits
        other_input = video_batch(seed=1)
        torch.testing.assert_close(exported.module()(pixel_values).logits, expected)
        torch.testing.assert_close(exported.module()(other_input).logits, model(other_input).logits)
