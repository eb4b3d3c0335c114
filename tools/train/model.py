"""The detector a run trains or evaluates, with its video processor, and the fp32 copy that gets exported."""

from pathlib import Path

import torch
from accelerate.logging import get_logger
from safetensors.torch import load_file

from ...configuration_dfd import CLASS_NAMES
from ...faces_dfd import load_face_detector
from ...modeling_dfd import DFDForVideoClassification
from ...processing_dfd import DFDVideoProcessor
from ..export import processor_for
from .errors import TrainingError


logger = get_logger(__name__)


def load_model_and_processor(args, data_crop: str | None = None):
    """
    A new detector from CLIP weights (--init_from, with --config_overrides) or a DFD checkpoint (--model_path), in
    fp32, and its video processor, cropping as --crop asks, else as the training videos ask (`data_crop`: "face" for
    face crops, see `data.training_crop`), else as --model_path's does. The processor is exported with the model, so
    that it crops at inference as the training videos were cropped.
    """
    source = f"--model_path {args.model_path}" if args.model_path else f"--init_from {args.init_from}"
    try:
        model, processor = _load_model_and_processor(args)
    except OSError as error:  # not found, offline, or not a checkpoint: transformers says which
        raise TrainingError(f"{source}: {error}") from error
    if args.crop:
        processor.crop = args.crop
    elif data_crop:
        processor.crop = data_crop
        logger.info(
            "The training videos are face crops: the model crops faces (crop: face), so that it sees faces at "
            "inference too"
        )
    if processor.crop == "face":
        try:
            load_face_detector()  # without the face extra, say so now rather than from a decoding worker
        except ImportError as error:
            raise TrainingError(str(error)) from error
    return model, processor


def _load_model_and_processor(args):
    if args.model_path:
        model = DFDForVideoClassification.from_pretrained(args.model_path, dtype=torch.float32)
        # The data's labels are CLASS_NAMES' indices: a checkpoint that numbers its classes otherwise would be
        # trained and scored on swapped classes.
        expected_labels = dict(enumerate(CLASS_NAMES))
        if model.config.id2label != expected_labels:
            raise TrainingError(f"{args.model_path}: labels {model.config.id2label}, expected {expected_labels}")
        try:
            return model, DFDVideoProcessor.from_pretrained(args.model_path)
        except OSError:
            pass  # a checkpoint saved without its processor: build the one its config implies
    else:
        model = DFDForVideoClassification.from_clip(args.init_from, **args.config_overrides)
    return model, processor_for(model.config)


def prepare_model(args, model, accelerator):
    """Gradient checkpointing, compiled blocks and a bf16 backbone, as the arguments and the precision ask."""
    if args.gradient_checkpointing:
        model.set_checkpointed_blocks(args.checkpointed_blocks)
    if args.torch_compile:
        model.compile_blocks()
    if accelerator.mixed_precision == "bf16":
        model.cast_frozen_weights(torch.bfloat16)  # the export is rebuilt in fp32 (see model_to_export)


def model_to_export(args, checkpoint: Path) -> DFDForVideoClassification:
    """
    A fresh fp32 copy of the source (--init_from / --model_path) with `checkpoint`'s trainable weights, all a
    checkpoint holds. The training copy won't do: bf16 training rounded its frozen backbone.
    """
    model, _ = _load_model_and_processor(args)
    model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
    return model
