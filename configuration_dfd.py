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

# pipeline("video-classification", trust_remote_code=True) runs the detector's own pipeline (pipeline_dfd.py): the
# windows and decision rule (processing_dfd.py, decision_dfd.py) instead of transformers' one sampled clip.
DFD_CUSTOM_PIPELINES = {
    "video-classification": {
        "impl": "pipeline_dfd.DFDVideoClassificationPipeline",
        "pt": ["AutoModelForVideoClassification"],
        "type": "video",
    }
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
        window_duration (`float`, *optional*):
            Seconds of video one training window covered (the median duration of the training videos, each sampled
            evenly with `num_frames` frames). Inference tiles a longer video with windows of about this duration, so
            that frames lie as far apart as in training; a video up to 1.5 windows long is one window, the sampling
            above. Unset (models trained before it was recorded): one window per video unless asked for more.
        calibration_temperature (`float`, *optional*, defaults to 1.0):
            Logits are divided by it before the softmax: the temperature scaling fitted on the validation set, so
            that a window's fake probability is calibrated.
        decision_threshold (`float`, *optional*):
            A video is fake when its score under the decision rule reaches this threshold (for a one-window video;
            see `real_log_odds`). Chosen in training at a target false-positive rate on real validation videos.
            Unset: 0.5.
        decision_top_k (`int`, *optional*, defaults to 1):
            The decision rule: a video's score is the mean fake probability of its `decision_top_k` most suspicious
            windows (1: its top window, so that a short fake stretch in a long video is not averaged away).
        real_log_odds (`dict`, *optional*):
            `{"mean": m, "std": s}` of the calibrated fake log-odds of real validation windows. With it, a video of
            n windows is held to a higher threshold, so that it has no more chances of a false alarm than a video
            of one window (the per-window false-positive rate p becomes 1 - (1 - p) ** (1 / n), under a normal fit
            of real windows' log-odds). Unset: the same threshold at every length.
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
        window_duration=None,
        calibration_temperature=1.0,
        decision_threshold=None,
        decision_top_k=1,
        real_log_odds=None,
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
        if window_duration is not None and not window_duration > 0:
            raise ValueError(f"window_duration must be positive seconds, got {window_duration}")
        if not calibration_temperature > 0:
            raise ValueError(f"calibration_temperature must be positive, got {calibration_temperature}")
        if decision_threshold is not None and not 0 < decision_threshold < 1:
            raise ValueError(f"decision_threshold must lie in (0, 1), got {decision_threshold}")
        if decision_top_k < 1:
            raise ValueError(f"decision_top_k must be at least 1, got {decision_top_k}")
        self.window_duration = window_duration
        self.calibration_temperature = calibration_temperature
        self.decision_threshold = decision_threshold
        self.decision_top_k = decision_top_k
        self.real_log_odds = real_log_odds

        if kwargs.get("id2label") is None and kwargs.get("num_labels") is None:
            kwargs["id2label"] = dict(enumerate(CLASS_NAMES))
            kwargs.setdefault("label2id", {name: index for index, name in enumerate(CLASS_NAMES)})
        kwargs.setdefault("auto_map", dict(DFD_AUTO_MAP))
        kwargs.setdefault("custom_pipelines", dict(DFD_CUSTOM_PIPELINES))
        super().__init__(**kwargs)


def custom_pipeline_class():
    """
    The pipeline config.json's `custom_pipelines` names. transformers saves a config's module with the files it
    imports relatively, so importing the pipeline here makes `save_pretrained` and `push_to_hub` carry it (and the
    processor code it runs): a saved folder serves `pipeline("video-classification", trust_remote_code=True)`.
    """
    from .pipeline_dfd import DFDVideoClassificationPipeline

    return DFDVideoClassificationPipeline


DFDConfig.register_for_auto_class()

__all__ = ["DFDConfig", "custom_pipeline_class"]
