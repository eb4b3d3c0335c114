"""DFD video deepfake detector: a frozen CLIP vision tower with spatiotemporal adapters (ST-Adapter style).

Each video is a stack of frames (batch, frames, 3, H, W). Frames go through CLIP's vision tower as one big batch of
images; in front of the attention of each configured block, an adapter mixes every patch token with its neighbours
in time and space (a depthwise 3-D convolution over the frames' patch grids). The per-frame CLS features are
layer-normed, averaged over time and classified (0 = real, 1 = fake).
"""

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from transformers import CLIPVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPVisionEmbeddings
from transformers.utils import ModelOutput

from .configuration_dfd import DFDConfig


@dataclass
class DFDModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_frames, 1 + num_patches, hidden_size)`):
            Tokens of every frame after the last block.
        frame_embeds (`torch.FloatTensor` of shape `(batch_size, num_frames, hidden_size)`):
            Per-frame CLS features after CLIP's post-layernorm (CLIPVisionModel's `pooler_output` for each frame).
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Mean of `frame_embeds` over time: the video feature the classifier reads.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            Tokens after the embeddings and after each block, each `(batch_size * num_frames, 1 + num_patches,
            hidden_size)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    frame_embeds: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class DFDZeroInitLinear(nn.Linear):
    """A linear layer that `_init_weights` starts at zero, so that a new adapter adds nothing (identity at init)."""


class DFDSpatioTemporalAdapter(nn.Module):
    """x + up(GELU(conv3d(down(x)))) on the patch tokens; the CLS token passes through unchanged."""

    def __init__(self, config: DFDConfig):
        super().__init__()
        hidden_size, bottleneck = config.vision_config.hidden_size, config.adapter_bottleneck
        kernel_size = tuple(config.adapter_kernel_size)
        self.down_proj = nn.Linear(hidden_size, bottleneck)
        self.conv = nn.Conv3d(
            bottleneck,
            bottleneck,
            kernel_size=kernel_size,
            padding=tuple(size // 2 for size in kernel_size),
            groups=bottleneck,
        )
        self.up_proj = DFDZeroInitLinear(bottleneck, hidden_size)

    def forward(self, hidden_states: torch.Tensor, num_frames: int, grid_size: tuple[int, int]) -> torch.Tensor:
        batch_frames, num_tokens, _ = hidden_states.shape
        height, width = grid_size
        # Project every token and drop the CLS row afterwards: slicing the narrow output is cheap, while slicing the
        # wide input first would copy all of it (a strided matmul input).
        x = self.down_proj(hidden_states)[:, 1:]
        # (batch*frames, h*w, r) -> (batch, r, frames, h, w): a permuted view, i.e. channels-last 3-D memory, which
        # the depthwise convolution reads about 8x faster than a contiguous copy (CPU, benchmarks/bench_inference.py).
        x = x.view(batch_frames // num_frames, num_frames, height, width, -1).permute(0, 4, 1, 2, 3)
        x = self.conv(x)
        x = x.permute(0, 2, 3, 4, 1).reshape(batch_frames, num_tokens - 1, -1)
        # A zero bottleneck row for the CLS token gives a full-size update in one matmul, added in one pass; the CLS
        # row (which would get the up-projection's bias) is then restored, so the CLS token passes through unchanged.
        x = self.up_proj(F.pad(F.gelu(x), (0, 0, 1, 0)))
        output = hidden_states + x
        output[:, 0] = hidden_states[:, 0]
        return output


class DFDEncoderLayer(CLIPEncoderLayer):
    """A CLIP encoder block (same parameter names, so CLIP weights load as is) with an optional adapter in front."""

    def __init__(self, config: DFDConfig, has_adapter: bool):
        super().__init__(config.vision_config)
        self.adapter = DFDSpatioTemporalAdapter(config) if has_adapter else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        grid_size: tuple[int, int] = (1, 1),
        **kwargs,
    ) -> torch.Tensor:
        if self.adapter is not None:
            hidden_states = self.adapter(hidden_states, num_frames, grid_size)
        return super().forward(hidden_states, attention_mask, **kwargs)


class DFDEncoder(nn.Module):
    def __init__(self, config: DFDConfig):
        super().__init__()
        adapter_layers = set(config.adapter_layers)
        self.layers = nn.ModuleList(
            [DFDEncoderLayer(config, index in adapter_layers) for index in range(config.vision_config.num_hidden_layers)]
        )
        self.first_adapter_layer = min(adapter_layers, default=len(self.layers))

    def frozen_prefix_length(self) -> int:
        """Blocks before the first adapter of a frozen backbone see no trainable input: they run without autograd."""
        backbone_frozen = not self.layers[0].self_attn.q_proj.weight.requires_grad
        return self.first_adapter_layer if backbone_frozen else 0

    def forward(self, hidden_states, num_frames, grid_size, output_hidden_states=False, **kwargs):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        frozen_prefix_length = self.frozen_prefix_length()
        for index, layer in enumerate(self.layers):
            with torch.no_grad() if index < frozen_prefix_length else nullcontext():
                hidden_states = layer(hidden_states, None, num_frames=num_frames, grid_size=grid_size, **kwargs)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class DFDPreTrainedModel(PreTrainedModel):
    config: DFDConfig
    config_class = DFDConfig
    base_model_prefix = "dfd"
    main_input_name = "pixel_values"
    input_modalities = ("video",)
    _no_split_modules = ["DFDEncoderLayer", "CLIPVisionEmbeddings"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        """Random init for new weights; called per parameter-owning module, also when loading from the meta device."""
        super()._init_weights(module)
        if isinstance(module, CLIPVisionEmbeddings):
            init.normal_(module.class_embedding, std=module.embed_dim**-0.5)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, nn.Conv3d):
            # The adapter's depthwise kernel: unit gain over its taps (std 0.02 would start the temporal path near
            # zero, and with a zero up-projection too, learning would start flat).
            init.normal_(module.weight, std=module.weight[0].numel() ** -0.5)
            init.zeros_(module.bias)
        elif isinstance(module, DFDZeroInitLinear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading replaces every parameter with a new, trainable one: freeze the backbone again.
        model = super().from_pretrained(*args, **kwargs)
        if model.config.freeze_backbone:
            model.freeze_backbone()
        return model

    def freeze_backbone(self):
        """Freeze every CLIP weight; the adapters and the classifier stay trainable."""
        for name, parameter in self.base_model.named_parameters():
            if ".adapter." not in name:
                parameter.requires_grad_(False)

    def cast_frozen_weights(self, dtype: torch.dtype):
        """
        Hold the frozen weights in `dtype` (e.g. bf16 for mixed-precision training: they need no fp32 master copy,
        which halves their memory), keeping the trainable ones in their own dtype for the optimizer.
        """
        for parameter in self.parameters():
            if not parameter.requires_grad:
                parameter.data = parameter.data.to(dtype)
        return self

    def set_checkpointed_blocks(self, layers: Iterable[int] | None = None):
        """
        Recompute the activations of the given encoder blocks in the backward pass instead of storing them, block by
        block rather than all or nothing: each checkpointed block keeps only its input and costs one more forward of
        that block, so checkpoint as few blocks as fit the memory (benchmarks/bench_train_step.py). `None`
        checkpoints every block that runs with autograd (the frozen prefix stores nothing); `[]` turns it off.
        """
        encoder = self.base_model.encoder
        if layers is None:
            layers = range(encoder.frozen_prefix_length(), len(encoder.layers))
        layers = set(layers)
        if any(not 0 <= index < len(encoder.layers) for index in layers):
            raise ValueError(f"layers must lie in [0, {len(encoder.layers)}), got {sorted(layers)}")
        # The GradientCheckpointingLayer switches that `gradient_checkpointing_enable` sets, here set per block.
        # Non-reentrant checkpointing passes gradients to the adapters even though the frozen blocks' inputs need none.
        checkpoint_function = partial(checkpoint, use_reentrant=False)
        for index, layer in enumerate(encoder.layers):
            layer._gradient_checkpointing_func = checkpoint_function
            layer.gradient_checkpointing = index in layers

    def compile_blocks(self, **compile_kwargs):
        """
        Opt-in `torch.compile` of each encoder block in place (regional compilation): the identical blocks share one
        compiled graph, so compiling takes seconds rather than minutes, and parameter names, `save_pretrained` and
        `trust_remote_code` loading stay as they are. `compile_kwargs` go to `torch.compile` (e.g. `mode=...`).
        """
        for layer in self.base_model.encoder.layers:
            layer.compile(**compile_kwargs)
        return self


class DFDModel(DFDPreTrainedModel):
    """CLIP vision tower with adapters; returns per-frame and pooled (mean over frames) features."""

    def __init__(self, config: DFDConfig):
        super().__init__(config)
        vision_config = config.vision_config
        # PreTrainedModel resolves the attention backend (SDPA by default) on the top config only, while CLIP's
        # attention reads the vision sub-config: hand the resolved choice down.
        if vision_config._attn_implementation is None:
            vision_config._attn_implementation = config._attn_implementation
        # Same attribute names as CLIPVisionTransformer, so `vision_model.*` CLIP weights map one to one.
        self.embeddings = CLIPVisionEmbeddings(vision_config)
        self.pre_layrnorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.encoder = DFDEncoder(config)
        self.post_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
        self.post_init()
        if config.freeze_backbone:
            self.freeze_backbone()

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DFDModelOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
            Frames as produced by `DFDVideoProcessor`. Any number of frames >= 1.
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Interpolate the position embeddings on each call, for frames whose size differs from
            `config.image_size`.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got shape {tuple(pixel_values.shape)}"
            )
        batch_size, num_frames, num_channels, height, width = pixel_values.shape
        patch_size = self.config.vision_config.patch_size
        grid_size = (height // patch_size, width // patch_size)

        frames = pixel_values.reshape(batch_size * num_frames, num_channels, height, width)
        backbone_frozen = not self.embeddings.patch_embedding.weight.requires_grad
        with torch.no_grad() if backbone_frozen else nullcontext():
            hidden_states = self.embeddings(frames, interpolate_pos_encoding=interpolate_pos_encoding)
            hidden_states = self.pre_layrnorm(hidden_states)
        hidden_states, all_hidden_states = self.encoder(
            hidden_states, num_frames, grid_size, output_hidden_states=output_hidden_states, **kwargs
        )
        frame_embeds = self.post_layernorm(hidden_states[:, 0]).view(batch_size, num_frames, -1)
        output = DFDModelOutput(
            last_hidden_state=hidden_states.view(batch_size, num_frames, *hidden_states.shape[1:]),
            frame_embeds=frame_embeds,
            pooler_output=frame_embeds.mean(dim=1),
            hidden_states=all_hidden_states,
        )
        return output if return_dict else output.to_tuple()


class DFDForVideoClassification(DFDPreTrainedModel):
    """DFDModel + dropout + linear head over the time-averaged CLS feature. Logits: (batch, num_labels)."""

    def __init__(self, config: DFDConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dfd = DFDModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.vision_config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            0 = real, 1 = fake. When given, the cross-entropy loss is returned.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.dfd(
            pixel_values,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.to(logits.device))
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()

    @classmethod
    def from_clip(cls, pretrained_model_name_or_path, **config_overrides) -> "DFDForVideoClassification":
        """
        A new detector whose backbone is a CLIP checkpoint (a CLIPModel or CLIPVisionModel, Hub id or local dir).

        The vision weights are copied and the position embeddings resized once, bicubically as CLIP's
        `interpolate_pos_encoding` does, to the detector's patch grid; adapters start at identity and the head at
        random. `config_overrides` go to `DFDConfig` (e.g. `image_size`, `adapter_layers`).
        """
        clip = CLIPVisionModel.from_pretrained(pretrained_model_name_or_path, dtype=torch.float32)
        clip_config = clip.config.to_dict()
        config = DFDConfig(vision_config=clip_config, **config_overrides)
        model = cls(config)

        state_dict = {
            name.removeprefix("vision_model."): tensor for name, tensor in clip.state_dict().items()
        }
        new_grid = config.image_size // config.vision_config.patch_size
        key = "embeddings.position_embedding.weight"
        state_dict[key] = resize_position_embeddings(state_dict[key], new_grid)
        missing, unexpected = model.dfd.load_state_dict(state_dict, strict=False)
        not_adapter = [name for name in missing if ".adapter." not in name]
        if not_adapter or unexpected:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a CLIP vision checkpoint: missing {not_adapter}, "
                f"unexpected {unexpected}"
            )
        return model


def resize_position_embeddings(position_embeddings: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Resize CLIP's (1 + g*g, d) position table to a new_grid x new_grid patch grid (bicubic, CLS kept)."""
    class_position, patch_positions = position_embeddings[:1], position_embeddings[1:]
    old_grid = int(patch_positions.shape[0] ** 0.5)
    if old_grid == new_grid:
        return position_embeddings
    grid = patch_positions.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat([class_position, grid.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1)])


DFDForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")

__all__ = ["DFDPreTrainedModel", "DFDModel", "DFDForVideoClassification", "resize_position_embeddings"]
