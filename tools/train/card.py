"""The export's model card: tools/model_card.md filled in with the run's recipe, data, numbers and decision rule."""

import importlib.resources
import math

from huggingface_hub import EvalResult, ModelCardData

from ..export import DEFAULT_MODEL_NAME, hub_id
from .evaluation import cross_dataset_markdown
from .optimization import batch_settings, describe_batch
from .splits import Overlap
from .summary import describe_split


# Reported in the model card's model-index, with their display names.
CARD_METRICS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "roc_auc": "ROC AUC",
    "average_precision": "Average precision",
    "f1": "F1 (fake)",
    "recall_real": "Real detection rate (recall of real)",
    "recall_fake": "Fake detection rate (recall of fake)",
    "eer": "Equal error rate",
}
MODEL_CARD_TEMPLATE = importlib.resources.files("dfd.tools") / "model_card.md"


def describe_decision(config) -> str:
    """The card's paragraph on how the export reaches a verdict (the calibration stored in its config)."""
    windows = (
        f"Videos longer than {1.5 * config.window_duration:.2f} s are tiled with windows of "
        f"{config.window_duration:.2f} s, the median duration of the training videos, each sampled as in training."
        if config.window_duration
        else "Each video is one window, its frames spread over the whole video."
    )
    if config.decision_threshold is None:
        return f"{windows} No decision threshold was calibrated (fewer than 2 real validation videos): 0.5 applies."
    return (
        f"{windows} A video is fake when its top window's fake probability (calibrated with temperature "
        f"{config.calibration_temperature:.3f}) reaches {config.decision_threshold:.4f}, the threshold at the "
        "target false-positive rate on the real validation videos; a video of more windows is held to a higher "
        "threshold, so that long real videos are not flagged more often than short ones. `dfd predict --threshold` "
        "and the Endpoint's `threshold` parameter override it."
    )


def describe_temperature(calibration: dict) -> str:
    """Whether the calibration kept its temperature, and why: it is kept only when it helps on held-out videos."""
    if calibration.get("temperature_kept"):
        return (
            f"Temperature scaling is kept: it lowered the validation videos' negative log-likelihood on videos it was "
            f"not fitted on (cross-validated) by {calibration['held_out_nll_gain']:.4f}."
        )
    if calibration.get("held_out_nll_gain") is None:
        return (
            "The temperature is 1: there were too few validation videos of each class to check that temperature "
            "scaling lowers their negative log-likelihood on held-out videos, the condition for keeping it."
        )
    return (
        f"The temperature is 1: the fitted one ({calibration['fitted_temperature']:.3f}) did not lower the validation "
        "videos' negative log-likelihood on held-out videos (cross-validated), the condition for keeping it."
    )


def describe_data_source(args, summary: dict) -> str:
    """The training data: a Hub dataset, or the datasets (with their methods) of the manifests, or local folders."""
    dataset = hub_id(args.dataset_name)
    if dataset:
        return f"the Hub dataset [`{dataset}`](https://huggingface.co/datasets/{dataset})"
    named = {name: methods for name, methods in summary["datasets"]["train"].items() if name}
    if not named:
        return "local videos (folders of real/ and fake/)"
    return "; ".join(
        f"{name} ({', '.join(f'{method}: {count:,}' for method, count in methods.items())} training videos)"
        for name, methods in named.items()
    )


def describe_split_policy(split: dict) -> str:
    """The card's paragraph on the validation split: how it was made, what it shares with training, and why."""
    text = f"Validation split: {describe_split(split)}."
    if split["validation"] == "identity":
        text += (
            " This departs from the recipe's plain stratified split, which puts videos of one identity on both sides "
            "(on DeepFakeDetection every validation actor is also a training actor): a detector validated on faces "
            "it trained on can score well by recognising them."
        )
    elif split["validation"] == "stratified":
        text += (
            " Videos of one person may be on both sides, and a detector validated on faces it trained on can score "
            "well by recognising them; a manifest with identity groups (`dfd data index`) is split by identity."
        )
    for overlap in split["overlaps"]:
        text += f" Trained with `--allow_overlap`: {Overlap(**overlap).describe()}."
    return text


def describe_augmentation(args) -> str:
    text = f"horizontal flip, brightness jitter {args.brightness_jitter} (one draw per video)"
    if args.augment == "robust":
        text += (
            "; robust: noise, downscale-upscale, blur and re-compression (H.264 CRF 23-40 or JPEG quality 30-90), "
            "each with probability 0.5"
        )
    return text


def describe_evaluation(evaluation: dict | None, num_frames: int) -> str:
    """The evaluation sets' section: which datasets, splits and methods, and the cross-dataset table."""
    if not evaluation:
        return ""
    sets = evaluation["sets"]
    evaluated = []
    for name, result in sets.items():
        methods = f", fakes: {', '.join(result['fake_methods'])}" if result["fake_methods"] else ""
        evaluated.append(f"{name} ({result['split']} split{methods})")
    return (
        f"\n### Evaluation sets\n\nThis checkpoint on {'; '.join(evaluated)}, each video scored once (one window "
        f"of {num_frames} frames spread over it) and judged at the threshold above ({evaluation['threshold']:.4f}). "
        "AUC, AP and EER are video-level and threshold-free; a set with several methods has a row per method (its "
        "fakes against the same dataset's real videos).\n\n" + cross_dataset_markdown(sets) + "\n"
    )


def describe_source(args) -> str:
    """Where the detector's weights came from, as the card says it."""
    kind = "fine-tuned from the DFD detector" if args.model_path else "built from the CLIP checkpoint"
    repo = hub_id(args.model_path or args.init_from)
    if repo is None:
        return "fine-tuned from a local DFD checkpoint" if args.model_path else "built from a local CLIP checkpoint"
    return f"{kind} [`{repo}`](https://huggingface.co/{repo})"


def model_card_data(args, metrics: dict) -> ModelCardData:
    """The card's YAML metadata: Hub references only, and a model-index of this run's validation metrics."""
    dataset = hub_id(args.dataset_name)
    return ModelCardData(
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="video-classification",
        base_model=hub_id(args.model_path or args.init_from),
        datasets=[dataset] if dataset else None,
        metrics=["accuracy", "roc_auc", "f1", "recall"],
        tags=["deepfake-detection", "video-classification", "clip", "spatiotemporal-adapters"],
        model_name=args.hub_model_id.split("/")[-1] if args.hub_model_id else DEFAULT_MODEL_NAME,
        eval_results=[
            EvalResult(
                task_type="video-classification",
                task_name="Deepfake detection",
                dataset_type=dataset or "videofolder",
                dataset_name=dataset or "local videos",
                dataset_split="validation",
                metric_type=name,
                metric_value=round(metrics[name], 4),
                metric_name=display_name,
            )
            for name, display_name in CARD_METRICS.items()
            if math.isfinite(metrics[name])
        ],
    )


def model_card(args, model, summary: dict, metrics: dict) -> str:
    """
    README.md of the export: tools/model_card.md filled in with this run's recipe and numbers. `summary`: what the
    export's metrics.json holds (the run, its split, calibration and evaluation sets); `metrics`: the validation's.
    """
    config = model.config
    card_data = model_card_data(args, metrics)
    counts = summary["data"]
    trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
    adapters = (
        f"in {len(config.adapter_layers)} of {config.vision_config.num_hidden_layers} blocks"
        if config.adapter_layers
        else "none (frame-only ablation)"
    )
    precision = {"no": "fp32", "bf16": "bf16 autocast, frozen backbone stored in bf16"}.get(
        summary["mixed_precision"], summary["mixed_precision"]
    )
    if args.gradient_checkpointing:
        precision += ", gradient checkpointing"
    sampling = "WeightedRandomSampler, inverse class-frequency weights"
    if not args.class_balanced_sampling:
        sampling = "uniform shuffle (no class balancing)"
    return MODEL_CARD_TEMPLATE.read_text(encoding="utf-8").format(
        metadata=card_data.to_yaml(),
        model_name=card_data.model_name,
        source=describe_source(args),
        config=config,
        adapters=f"{adapters} (bottleneck {config.adapter_bottleneck}, 3-D kernel {config.adapter_kernel_size})",
        trainable=trainable,
        total=total,
        trainable_share=trainable / total,
        data_source=describe_data_source(args, summary),
        data_rows="\n".join(
            f"| {split} | {counts[split]['real']:,} | {counts[split]['fake']:,} | {sum(counts[split].values()):,} |"
            for split in ("train", "validation")
        ),
        summary=summary,
        args=args,
        batch=describe_batch(batch_settings(args, summary["num_processes"])),
        split=describe_split_policy(summary["split"]),
        augmentation=describe_augmentation(args),
        sampling=sampling,
        precision=precision,
        training_minutes=summary["train_runtime"] / 60,
        metric_rows="\n".join(f"| {name} | {value:.4f} |" for name, value in metrics.items()),
        decision=describe_decision(config),
        temperature=describe_temperature(summary["calibration"]),
        evaluation=describe_evaluation(summary.get("evaluation"), config.num_frames),
        repo=args.hub_model_id or "path/to/model",
    )
