"""`dfd convert`'s command line: a legacy checkpoint saved with torch.save (the card's best_model.pt) as a Hub-ready
detector (converting.py does it)."""

import argparse

from .common import json_object


def run(args) -> int:
    from .converting import run  # torch and the model libraries: once the arguments are good

    return run(args)


def add_parser(subparsers, parent: argparse.ArgumentParser):
    parser = subparsers.add_parser(
        "convert",
        parents=[parent],
        help="import a legacy best_model.pt / pytorch_model.bin",
        description=(
            "Import a checkpoint saved with torch.save (a dict with 'model_state_dict', or a bare state dict) into a "
            "Hub-ready detector folder. It is loaded with torch.load(weights_only=True): files that need code to "
            "unpickle are refused. CLIP vision weights are mapped by name (clip.vision_model.*, vision_model.*, "
            "backbone.*, ...); adapters and classifier are kept when their names and shapes match the detector's. A "
            "classifier that does not fit (e.g. the original MLP head, classifier.0/classifier.3) is refused unless "
            "--new-head is given."
        ),
    )
    parser.add_argument("checkpoint", help="the legacy checkpoint file")
    parser.add_argument("--output", required=True, metavar="DIR")
    architecture = parser.add_mutually_exclusive_group()
    architecture.add_argument(
        "--clip", help="CLIP checkpoint (Hub id or folder) that defines the backbone and fills weights the file lacks"
    )
    architecture.add_argument(
        "--config", help="config.json (or a folder holding one) of the detector to build; default: the card's ViT-L/14"
    )
    parser.add_argument(
        "--config-overrides",
        type=json_object,
        default={},
        metavar="JSON",
        help="DFDConfig arguments, inline or a JSON file",
    )
    parser.add_argument(
        "--new-head",
        action="store_true",
        help="convert even when the file's classifier does not fit the detector's (e.g. an MLP head): the head starts "
        "new and the detector must be trained before use",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(run=run)
