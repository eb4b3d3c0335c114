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
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer, CLIPVisionEmbeddings
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

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
            Tokens after the embeddings (CLIP's pre-layernorm) and after each block: `num_hidden_layers + 1` tensors of
            shape `(batch_size * num_frames, 1 + num_patches, hidden_size)`, frames of a video consecutive.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            Attention weights of each block after the softmax: `num_hidden_layers` tensors of shape
            `(batch_size * num_frames, num_attention_heads, 1 + num_patches, 1 + num_patches)`. Attention is within a
            frame; the adapters in front of the blocks mix frames. Only the eager attention computes them: load with
            `attn_implementation="eager"`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    frame_embeds: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


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
            [
                DFDEncoderLayer(config, index in adapter_layers)
                for index in range(config.vision_config.num_hidden_layers)
            ]
        )
        self.first_adapter_layer = min(adapter_layers, default=len(self.layers))

    def frozen_prefix_length(self) -> int:
        """
        Blocks before the first adapter of a frozen backbone see no trainable input: they run without autograd, unless
        the input needs a gradient. Frozen: none of their parameters requires grad (whatever their layers hold, e.g.
        a quantized linear layer, whose `weight` is a method).
        """
        prefix = self.layers[: self.first_adapter_layer]
        backbone_frozen = not any(parameter.requires_grad for parameter in prefix.parameters())
        return self.first_adapter_layer if backbone_frozen else 0

    def forward(self, hidden_states, num_frames, grid_size, no_grad_blocks=0, **kwargs):
        """Runs the first `no_grad_blocks` blocks without autograd (the frozen prefix, see `DFDModel.forward`)."""
        for index, layer in enumerate(self.layers):
            # Reentrant checkpointing backpropagates into a block only through inputs that require grad: tokens
            # that come out of no_grad (the frozen embeddings and prefix) would leave the adapters without gradients.
            needs_input_grad = layer.gradient_checkpointing and layer.training and torch.is_grad_enabled()
            if index >= no_grad_blocks and needs_input_grad and not hidden_states.requires_grad:
                hidden_states = hidden_states.requires_grad_()
            with torch.no_grad() if index < no_grad_blocks else nullcontext():
                hidden_states = layer(hidden_states, None, num_frames=num_frames, grid_size=grid_size, **kwargs)
        return hidden_states


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
    _can_record_outputs = {"hidden_states": DFDEncoderLayer, "attentions": CLIPAttention}

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
        # Loading replaces every parameter with a new, trainable one: freeze the backbone again. With
        # `output_loading_info=True` transformers returns `(model, loading_info)`.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if model.config.freeze_backbone:
            model.freeze_backbone()
        return loaded

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        """
        CLIP's blocks read the attention backend from `config.vision_config`, which has no sub-model of its own:
        it follows this model's choice, checked once, instead of being set unchecked by transformers (with a warning).
        """
        if isinstance(attn_implementation, str):
            self.config.vision_config._attn_implementation_internal = attn_implementation
        try:
            super().set_attn_implementation(attn_implementation, *args, **kwargs)
        finally:
            self.config.vision_config._attn_implementation_internal = self.config._attn_implementation

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
        # The GradientCheckpointingLayer switches that `activation_checkpointing_enable` sets, here set per block.
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

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> DFDModelOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, num_channels, height, width)`):
            Frames as produced by `DFDVideoProcessor`. Any number of frames >= 1.
        interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
            Interpolate the position embeddings on each call, for frames whose size differs from
            `config.image_size`.
        output_hidden_states, output_attentions, return_dict (`bool`, *optional*):
            As everywhere in transformers; see `DFDModelOutput` for the shapes.

        Example:

        ```python
        >>> import torch
        >>> from transformers import AutoModel, AutoVideoProcessor

        >>> repo = "Arko007/deepfake-detector-dfd-sota"
        >>> processor = AutoVideoProcessor.from_pretrained(repo, trust_remote_code=True)
        >>> model = AutoModel.from_pretrained(repo, trust_remote_code=True, attn_implementation="eager").dfd

        >>> inputs = processor("video.mp4", return_tensors="pt")
        >>> with torch.no_grad():
        ...     outputs = model(**inputs, output_attentions=True)
        >>> outputs.pooler_output.shape  # one feature per video
        torch.Size([1, 1024])
        >>> len(outputs.attentions), outputs.attentions[0].shape  # per block: (videos * frames, heads, tokens, tokens)
        (24, torch.Size([12, 16, 730, 730]))
        ```"""
        if pixel_values.ndim != 5:
            raise ValueError(
                f"pixel_values must be (batch, frames, channels, height, width), got shape {tuple(pixel_values.shape)}"
            )
        batch_size, num_frames, num_channels, height, width = pixel_values.shape
        patch_size = self.config.vision_config.patch_size
        grid_size = (height // patch_size, width // patch_size)

        frames = pixel_values.reshape(batch_size * num_frames, num_channels, height, width)
        # The frozen embeddings and the frozen blocks in front of the first adapter build no autograd graph, unless the
        # input itself needs a gradient (saliency maps, adversarial examples): then everything runs with autograd.
        backbone_frozen = not any(parameter.requires_grad for parameter in self.embeddings.parameters())
        frozen_prefix = backbone_frozen and not pixel_values.requires_grad
        with torch.no_grad() if frozen_prefix else nullcontext():
            hidden_states = self.embeddings(frames, interpolate_pos_encoding=interpolate_pos_encoding)
            hidden_states = self.pre_layrnorm(hidden_states)
        no_grad_blocks = self.encoder.frozen_prefix_length() if frozen_prefix else 0
        hidden_states = self.encoder(hidden_states, num_frames, grid_size, no_grad_blocks, **kwargs)
        frame_embeds = self.post_layernorm(hidden_states[:, 0]).view(batch_size, num_frames, -1)
        return DFDModelOutput(
            last_hidden_state=hidden_states.view(batch_size, num_frames, *hidden_states.shape[1:]),
            frame_embeds=frame_embeds,
            pooler_output=frame_embeds.mean(dim=1),
        )


class DFDForVideoClassification(DFDPreTrainedModel):
    """DFDModel + dropout + linear head over the time-averaged CLS feature. Logits: (batch, num_labels)."""

    def __init__(self, config: DFDConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dfd = DFDModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.vision_config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.FloatTensor,
        labels: torch.LongTensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            0 = real, 1 = fake. When given, the cross-entropy loss is returned (`self.loss_function`).

        `hidden_states` and `attentions` (with `output_hidden_states` / `output_attentions`) are `DFDModel`'s.

        Example:

        ```python
        >>> import torch
        >>> from transformers import AutoModelForVideoClassification, AutoVideoProcessor

        >>> repo = "Arko007/deepfake-detector-dfd-sota"
        >>> processor = AutoVideoProcessor.from_pretrained(repo, trust_remote_code=True)
        >>> model = AutoModelForVideoClassification.from_pretrained(repo, trust_remote_code=True)

        >>> inputs = processor("video.mp4", return_tensors="pt")  # 12 evenly spaced frames at 384x384
        >>> with torch.no_grad():
        ...     logits = model(**inputs).logits
        >>> model.config.id2label[logits.argmax(-1).item()]
        'real'
        ```"""
        outputs = self.dfd(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits.float(), self.config)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

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

        state_dict = {name.removeprefix("vision_model."): tensor for name, tensor in clip.state_dict().items()}
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
