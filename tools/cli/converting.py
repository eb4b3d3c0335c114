"""What `dfd convert` does (its command line is convert.py): a legacy checkpoint saved with torch.save (the card's
best_model.pt) as a Hub-ready detector."""

import json
import math
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from ...configuration_dfd import DFDConfig
from ...modeling_dfd import DFDForVideoClassification, resize_position_embeddings
from ..export import checkpoint_card
from .checkpoints import check_overrides, describe_clip, detector_from_clip, export_detector, parameter_counts
from .common import CommandError, new_output_folder


# Wrappers that training code adds in front of parameter names: DataParallel/DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Parts of a full CLIPModel that a vision-only detector has no use for.
NOT_VISION = ("text_model.", "text_projection", "visual_projection", "logit_scale")
POSITION_EMBEDDING = "dfd.embeddings.position_embedding.weight"


def load_legacy_state_dict(path: str) -> dict:
    """Tensors of a checkpoint saved with torch.save, loaded with `weights_only=True` so no code is ever run."""
    if not os.path.isfile(path):
        raise CommandError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():  # e.g. about the pickle protocol of a file that is refused anyway
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # torch's own message advises loading with weights_only=False, i.e. running the code: it is never passed on.
        text = " ".join(str(error).split())
        if isinstance(error, pickle.UnpicklingError):  # what the weights-only unpickler refuses
            code = re.search(r"GLOBAL (\S+)", text)
            opcode = re.search(r"Unsupported operand (\d+)", text)
            needs = code.group(1) if code else f"pickle opcode {opcode.group(1)}" if opcode else "unknown objects"
            raise CommandError(
                f"{path}: refused: unpickling it needs code ({needs}), which could do anything; only tensors and "
                "plain containers are loaded"
            ) from None
        reason = f"{type(error).__name__}: {text}" if "weights_only" not in text else type(error).__name__
        raise CommandError(f"{path}: not a PyTorch checkpoint holding only tensors ({reason})") from None
    if not isinstance(checkpoint, dict):
        checkpoint = {}
    for key in ("model_state_dict", "state_dict"):  # a training checkpoint, as in the model card's usage
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    tensors = {
        key: value for key, value in checkpoint.items() if isinstance(key, str) and isinstance(value, torch.Tensor)
    }
    if not tensors:
        raise CommandError(f"{path}: holds no state dict (expected tensors, or a dict with 'model_state_dict')")
    return tensors


def is_square_grid(position_embeddings: torch.Tensor) -> bool:
    """A CLIP position table: (1 + g*g, hidden), one CLS position and a g x g patch grid."""
    num_patches = len(position_embeddings) - 1
    return position_embeddings.ndim == 2 and math.isqrt(num_patches) ** 2 == num_patches


def map_legacy_state_dict(legacy: dict, target: dict) -> tuple[dict, list[str], list[str]]:
    """
    Rename legacy tensors to the detector's names: `dfd.<CLIP vision name>` for the backbone (from keys like
    `clip.vision_model.*`, `vision_model.*`, `backbone.*`), and the detector's own names (adapters, `classifier.*`)
    after any wrapper prefix. A tensor is used only where its shape fits (position embeddings are resized to the
    detector's patch grid). Returns (state dict to load, names of the tensors used, names ignored).
    """
    mapped, used, ignored = {}, [], []
    for key, tensor in legacy.items():
        name = key
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if any(part in name for part in NOT_VISION):
            ignored.append(key)
            continue
        if "vision_model." in name:
            name = name.rsplit("vision_model.", 1)[1]
        parts = name.split(".")
        # Drop leading module names (`backbone.`, `model.`, ...) until the rest is a detector or backbone name.
        candidates = [".".join(parts[start:]) for start in range(len(parts))]
        target_name = next(
            (
                candidate
                for rest in candidates
                for candidate in (rest, f"dfd.{rest}")
                if candidate in target and candidate not in mapped
            ),
            None,
        )
        if target_name is None:
            ignored.append(key)
            continue
        expected = target[target_name].shape
        if target_name == POSITION_EMBEDDING and is_square_grid(tensor) and tensor.shape[1] == expected[1]:
            tensor = resize_position_embeddings(tensor, math.isqrt(expected[0] - 1))
        if tensor.shape != expected:
            ignored.append(key)
            continue
        mapped[target_name] = tensor
        used.append(key)
    return mapped, used, ignored


def build_detector(args) -> DFDForVideoClassification:
    """The detector to fill: built on --clip, or with the architecture of --config (default: the card's)."""
    if args.clip:
        return detector_from_clip(args.clip, args.config_overrides)
    config_path = Path(args.config) if args.config else None
    if config_path is not None and config_path.is_dir():
        config_path = config_path / "config.json"
    values = json.loads(config_path.read_text()) if config_path else {}
    return DFDForVideoClassification(DFDConfig(**{**values, **args.config_overrides}))


def missing_by_part(target: dict, mapped: dict) -> dict[str, list[str]]:
    """The detector's weights the checkpoint does not provide, as backbone / adapters / classifier names."""
    missing = {"backbone": [], "adapters": [], "classifier": []}
    for name in target:
        if name not in mapped:
            part = "adapters" if ".adapter." in name else "classifier" if name.startswith("classifier.") else "backbone"
            missing[part].append(name)
    return missing


def refuse_incomplete(args, missing: dict[str, list[str]]):
    """A converted detector must not keep a random backbone, nor, unless asked, a random classifier."""
    if missing["backbone"] and not args.clip:
        raise CommandError(
            f"{args.checkpoint}: {len(missing['backbone'])} backbone weights are missing (e.g. "
            f"{missing['backbone'][0]}); pass --clip to take them from a CLIP checkpoint"
        )
    if missing["classifier"] and not args.new_head:
        # E.g. the card's original head, an MLP (classifier.0, classifier.3), which the detector's Linear cannot take.
        raise CommandError(
            f"{args.checkpoint}: no classifier fits the detector's ({', '.join(missing['classifier'])}), so it would "
            "predict at random; pass --new-head to convert anyway, then train the new head"
        )


def print_report(used: list[str], ignored: list[str], missing: dict[str, list[str]]):
    print(f"used {len(used)} tensors, ignored {len(ignored)}, missing {sum(map(len, missing.values()))}")
    for kind, names in (
        ("ignored", ignored),
        ("missing, taken from the CLIP checkpoint", missing["backbone"]),
        ("missing, adapters starting at identity", missing["adapters"]),
        ("missing, a NEW classifier that must be trained before use", missing["classifier"]),
    ):
        if names:
            print(f"  {kind}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}")


def run(args) -> int:
    output = new_output_folder(args.output, args.overwrite)
    legacy = load_legacy_state_dict(args.checkpoint)  # first: a refused file fails before any model is built
    check_overrides(args.config_overrides)
    model = build_detector(args)
    target = model.state_dict()
    mapped, used, ignored = map_legacy_state_dict(legacy, target)
    if not used:
        raise CommandError(f"{args.checkpoint}: none of its {len(legacy)} tensors is a CLIP vision or detector weight")
    missing = missing_by_part(target, mapped)
    refuse_incomplete(args, missing)
    with torch.no_grad():
        model.load_state_dict(mapped, strict=False)
    origin = "converted from a checkpoint of the original DFD training code"
    if args.clip:
        origin += f", with {describe_clip(args.clip)} for the backbone"
    card = checkpoint_card(model, origin, base_model=args.clip, trained=not missing["classifier"])
    export_detector(model, output, card)
    print_report(used, ignored, missing)
    print(f"saved the converted detector to {output} ({parameter_counts(model)})")
    return 0
