"""Configuration of the DFD video deepfake detector: a frozen CLIP vision tower with spatiotemporal adapters."""

from transformers import CLIPVisionConfig, PreTrainedConfig

# CLIP ViT-L/14 (openai/clip-vit-large-patch14) vision tower, at the detector's 384x384 input (27x27 patch grid).
CLIP_VIT_LARGE_PATCH14 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)

# The default labels: class i is CLASS_NAMES[i] (0 = real, 1 = fake, as the model card says).
CLASS_NAMES = ("real", "fake")
# Hub custom code: every Auto class resolves to a sibling file of config.json.
DFD_AUTO_MAP = {
    "AutoConfig": "configuration_dfd.DFDConfig",
    "AutoModel": "modeling_dfd.DFDForVideoClassification",
    "AutoModelForVideoClassification": "modeling_dfd.DFDForVideoClassification",
}


class DFDConfig(PreTrainedConfig):
    r"""
    Configuration for [`DFDModel`] and [`DFDForVideoClassification`]. The defaults describe
    Arko007/deepfake-detector-dfd-sota: CLIP ViT-L/14 at 384x384, 12 frames, adapters in all 24 blocks,
    labels 0 = real and 1 = fake.

    Args:
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The CLIP vision tower. Defaults to ViT-L/14. Its `image_size` is always set to `image_size` below,
            so its position embeddings cover the detector's patch grid.
        num_frames (`int`, *optional*, defaults to 12):
            Frames sampled (evenly spaced) from each video. The model itself runs on any number of frames >= 1.
        image_size (`int`, *optional*, defaults to 384):
            Height and width each frame is resized to. 384 / 14 gives a 27x27 patch grid.
        adapter_bottleneck (`int`, *optional*, defaults to 104):
            Width `r` of each adapter (hidden_size -> r -> hidden_size). 104 is a multiple of 8 (tensor-core
            friendly) and gives 5.21 M trainable parameters with the defaults, 0.9% under the card's 5,255,938.
        adapter_kernel_size (`list[int]`, *optional*, defaults to `[3, 3, 3]`):
            Kernel of the depthwise 3-D convolution over (time, height, width) of the patch-token grid. Odd sizes
            keep the grid shape ("same" padding), so any number of frames works.
        adapter_layers (`list[int]`, *optional*):
            Indices of the encoder blocks that get an adapter, in front of their attention. Defaults to every block.
            An empty list gives a frame-only model (mean of per-frame CLIP features), useful as an ablation.
            Blocks before the first adapter run without autograd.
        freeze_backbone (`bool`, *optional*, defaults to `True`):
            Keep the CLIP weights frozen (`requires_grad=False`); only the adapters and the head train.
        classifier_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on the pooled video feature before the classifier.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initializer of new (not loaded) weights, except in the adapters: their
            up-projections start at zero (a new adapter is the identity) and their depthwise kernels at unit gain
            (std 1/sqrt(kernel volume)).
    """

    model_type = "dfd"
    sub_configs = {"vision_config": CLIPVisionConfig}

    def __init__(
        self,
        vision_config=None,
        num_frames=12,
        image_size=384,
        adapter_bottleneck=104,
        adapter_kernel_size=(3, 3, 3),
        adapter_layers=None,
        freeze_backbone=True,
        classifier_dropout=0.1,
        initializer_range=0.02,
        **kwargs,
    ):
        if vision_config is None:
            vision_config = CLIP_VIT_LARGE_PATCH14
        elif isinstance(vision_config, CLIPVisionConfig):
            vision_config = vision_config.to_dict()  # a copy: the caller's config stays as it was
        vision_config = CLIPVisionConfig(**{**vision_config, "image_size": image_size})
        self.vision_config = vision_config

        self.num_frames = num_frames
        self.image_size = image_size
        self.adapter_bottleneck = adapter_bottleneck
        self.adapter_kernel_size = list(adapter_kernel_size)
        if any(size % 2 == 0 for size in self.adapter_kernel_size) or len(self.adapter_kernel_size) != 3:
            raise ValueError(f"adapter_kernel_size must be three odd sizes, got {self.adapter_kernel_size}")
        num_layers = vision_config.num_hidden_layers
        self.adapter_layers = sorted(set(range(num_layers) if adapter_layers is None else adapter_layers))
        if any(not 0 <= index < num_layers for index in self.adapter_layers):
            raise ValueError(f"adapter_layers must lie in [0, {num_layers}), got {self.adapter_layers}")
        self.freeze_backbone = freeze_backbone
        self.classifier_dropout = classifier_dropout
        self.initializer_range = initializer_range

        if kwargs.get("id2label") is None and kwargs.get("num_labels") is None:
            kwargs["id2label"] = dict(enumerate(CLASS_NAMES))
            kwargs.setdefault("label2id", {name: index for index, name in enumerate(CLASS_NAMES)})
        kwargs.setdefault("auto_map", dict(DFD_AUTO_MAP))
        super().__init__(**kwargs)


DFDConfig.register_for_auto_class()

__all__ = ["DFDConfig"]
