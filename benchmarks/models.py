"""Model configurations the benchmarks build with random weights (nothing is downloaded)."""

from dfd.configuration_dfd import DFDConfig


# Small enough to run every benchmark in seconds on a CPU; the same structure as ViT-L/14 (patch grid, adapters).
TINY_VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, patch_size=16)
TINY_OVERRIDES = dict(image_size=64, adapter_bottleneck=8)


def benchmark_config(name: str, **overrides) -> DFDConfig:
    """`full`: the released detector (CLIP ViT-L/14 @ 384, 12 frames, adapters in all 24 blocks); `tiny`: 4 blocks."""
    if name == "full":
        return DFDConfig(attn_implementation="sdpa", **overrides)
    if name == "tiny":
        return DFDConfig(vision_config=TINY_VISION, attn_implementation="sdpa", **{**TINY_OVERRIDES, **overrides})
    raise ValueError(f"unknown config {name!r}: choose 'tiny' or 'full'")
