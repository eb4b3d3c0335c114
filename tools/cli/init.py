"""`dfd init`: an untrained detector built on a CLIP checkpoint, ready for training."""

import argparse

from .common import json_object, new_output_folder


def run(args) -> int:
    # torch and the model libraries: once the arguments are good
    from ..export import checkpoint_card
    from .checkpoints import check_overrides, describe_clip, detector_from_clip, export_detector, parameter_counts

    output = new_output_folder(args.output, args.overwrite)
    check_overrides(args.config_overrides)
    model = detector_from_clip(args.clip, args.config_overrides)
    origin = f"built from {describe_clip(args.clip)} with its adapters at identity and a new classifier"
    export_detector(model, output, checkpoint_card(model, origin, base_model=args.clip))
    print(f"saved an untrained detector to {output} ({parameter_counts(model)})")
    print(f"train it with: accelerate launch -m dfd.train_accelerate --model_path {output} ...")
    return 0


def add_parser(subparsers, parent: argparse.ArgumentParser):
    parser = subparsers.add_parser(
        "init",
        parents=[parent],
        help="start a detector from a CLIP checkpoint",
        description=(
            "Write an untrained detector (CLIP vision backbone, adapters at identity, new classifier) with its "
            "processor config, ready for train_accelerate.py --model_path."
        ),
    )
    parser.add_argument(
        "--clip", required=True, help="CLIP checkpoint: Hub id (e.g. openai/clip-vit-large-patch14) or local folder"
    )
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument(
        "--config-overrides",
        type=json_object,
        default={},
        metavar="JSON",
        help='DFDConfig arguments, inline (e.g. \'{"image_size": 224, "adapter_layers": [20, 21, 22, 23]}\') or a '
        "JSON file",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(run=run)
