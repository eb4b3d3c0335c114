"""The speed paths of the model (fused adapter update, selective checkpointing, compiled blocks) give the same
outputs and gradients as the straightforward reference computation."""

import sys

import pytest
import torch
from torch.nn import functional as F

from conftest import REPO_ROOT, TINY_IMAGE_SIZE as IMAGE_SIZE, tiny_clip_config
from dfd.configuration_dfd import DFDConfig
from dfd.modeling_dfd import DFDForVideoClassification, DFDSpatioTemporalAdapter

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from bench_train_step import saved_activation_bytes  # noqa: E402  (the benchmark's counter, checked here)




def tiny_config(**overrides):
    values = dict(image_size=IMAGE_SIZE, adapter_bottleneck=8, num_frames=4, attn_implementation="sdpa")
    values.update(overrides)
    return DFDConfig(vision_config=tiny_clip_config().to_dict(), **values)


def randomized(module, seed=0):
    """Non-zero weights everywhere (new adapters start at identity, which would hide any mistake)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module


def reference_adapter_forward(adapter, hidden_states, num_frames, grid_size):
    """The adapter written plainly: patches -> down -> contiguous (B, r, T, h, w) -> conv -> up, CLS kept apart."""
    batch_frames, num_tokens, _ = hidden_states.shape
    patches = hidden_states[:, 1:]
    x = adapter.down_proj(patches)
    x = x.reshape(batch_frames // num_frames, num_frames, *grid_size, -1).permute(0, 4, 1, 2, 3).contiguous()
    x = adapter.conv(x)
    x = x.permute(0, 2, 3, 4, 1).reshape(batch_frames, num_tokens - 1, -1)
    return torch.cat([hidden_states[:, :1], patches + adapter.up_proj(F.gelu(x))], dim=1)


def adapter_output_and_gradients(forward, adapter, dtype):
    """Output and gradients (input, then each parameter) of an adapter forward on fixed tokens, in `dtype`."""
    adapter = adapter.to(dtype)
    hidden_states = torch.randn(8, 1 + 36, 32, generator=torch.Generator().manual_seed(1)).to(dtype).requires_grad_()
    output = forward(adapter, hidden_states, 4, (6, 6))
    (output.float() * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
    gradients = [hidden_states.grad] + [parameter.grad.clone() for parameter in adapter.parameters()]
    adapter.zero_grad(set_to_none=True)
    assert torch.equal(output[:, 0], hidden_states[:, 0])  # the CLS token passes through untouched
    return [output.float()] + [gradient.float() for gradient in gradients]


def test_adapter_matches_the_reference_computation():
    adapter = randomized(DFDSpatioTemporalAdapter(tiny_config()))
    fast = adapter_output_and_gradients(DFDSpatioTemporalAdapter.forward, adapter, torch.float32)
    reference = adapter_output_and_gradients(reference_adapter_forward, adapter, torch.float32)
    for value, expected in zip(fast, reference):
        torch.testing.assert_close(value, expected, atol=2e-4, rtol=2e-4)


def test_adapter_in_bf16_stays_within_bf16_rounding_of_the_fp32_reference():
    adapter = randomized(DFDSpatioTemporalAdapter(tiny_config()))
    exact = adapter_output_and_gradients(reference_adapter_forward, adapter, torch.float32)
    fast = adapter_output_and_gradients(DFDSpatioTemporalAdapter.forward, adapter, torch.bfloat16)
    for value, expected in zip(fast, exact):
        # 8 mantissa bits, and gradients summed over a few hundred tokens: a few percent of the largest value.
        torch.testing.assert_close(value, expected, rtol=5e-2, atol=5e-2 * expected.abs().max().item())


def video_batch(seed=0):
    return torch.randn(2, 4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def trainable_gradients(model, pixel_values):
    model.zero_grad(set_to_none=True)
    model(pixel_values, labels=torch.tensor([0, 1])).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def tiny_model(**overrides):
    torch.manual_seed(0)
    model = DFDForVideoClassification(tiny_config(classifier_dropout=0.0, **overrides))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapter." in name:
                parameter.normal_(std=0.3)
    return model.train()


def test_checkpointing_some_blocks_gives_the_same_gradients():
    model = tiny_model()
    pixel_values = video_batch()
    expected = trainable_gradients(model, pixel_values)

    model.set_checkpointed_blocks([1])
    assert [layer.gradient_checkpointing for layer in model.dfd.encoder.layers] == [False, True]
    selective = trainable_gradients(model, pixel_values)

    model.set_checkpointed_blocks(None)
    assert all(layer.gradient_checkpointing for layer in model.dfd.encoder.layers)
    every_block = trainable_gradients(model, pixel_values)

    memory = {}
    labels = torch.tensor([0, 1])
    for blocks in ([], [1], None):
        model.set_checkpointed_blocks(blocks)
        memory[str(blocks)] = saved_activation_bytes(model, lambda: model(pixel_values, labels=labels).loss)
    assert memory["None"] < memory["[1]"] < memory["[]"]
    for name, gradient in expected.items():
        torch.testing.assert_close(selective[name], gradient, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(every_block[name], gradient, atol=1e-6, rtol=1e-5)
    model.set_checkpointed_blocks([])
    assert not any(layer.gradient_checkpointing for layer in model.dfd.encoder.layers)


def test_checkpointing_skips_the_frozen_prefix_and_rejects_unknown_blocks():
    model = tiny_model(adapter_layers=[1])
    model.set_checkpointed_blocks(None)
    # Block 0 runs without autograd (no adapter before it), so it has nothing to recompute.
    assert [layer.gradient_checkpointing for layer in model.dfd.encoder.layers] == [False, True]
    assert trainable_gradients(model, video_batch())["dfd.encoder.layers.1.adapter.up_proj.weight"].abs().sum() > 0
    with pytest.raises(ValueError, match="layers must lie in"):
        model.set_checkpointed_blocks([2])


def test_compiled_blocks_match_eager_and_still_save_and_load(tmp_path):
    torch._dynamo.reset()
    model = tiny_model().eval()
    pixel_values = video_batch()
    with torch.no_grad():
        expected = model(pixel_values).logits
    names = set(model.state_dict())

    # fullgraph: an adapter block compiles as one graph, without breaks. aot_eager checks the capture quickly;
    # the inductor backend (the default) is what the GPU benchmark times.
    model.compile_blocks(backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, expected, atol=1e-5, rtol=1e-5)
    gradients = trainable_gradients(model.train(), pixel_values)
    assert gradients["dfd.encoder.layers.0.adapter.down_proj.weight"].abs().sum() > 0

    assert set(model.state_dict()) == names  # no `_orig_mod.` prefixes: checkpoints stay loadable
    model.save_pretrained(tmp_path)
    reloaded = DFDForVideoClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, expected, atol=1e-5, rtol=1e-5)
