"""The `dfd` command: score videos from a terminal or a web page, start a checkpoint from CLIP, import a legacy one.

    dfd predict video.mp4 videos/ "more/*.mov" --windows 8 --format json --output results.json --plot plots/
    dfd init --clip openai/clip-vit-large-patch14 --output checkpoints/dfd-init
    dfd convert best_model.pt --output checkpoints/dfd-converted --clip openai/clip-vit-large-patch14
    dfd serve --model runs/dfd/model                # the web page, on 127.0.0.1
    dfd space --model ORG/NAME --output my-space    # a ready Hugging Face Space folder for the model
    dfd data index dfd /data/FaceForensics++ --output dfd.csv   # a dataset as downloaded -> a manifest

Errors are printed as one line (`--debug` shows the traceback). Exit status: 0 on success, 1 on failure (for
`predict`: when any input could not be scored; the others are still scored and written), 2 on usage errors.
"""

import argparse
import sys

from huggingface_hub.utils import logging as hub_logging
from transformers.utils import logging

from .. import app, space
from . import convert, data, demo, init, predict
from .common import CommandError


def build_parser() -> argparse.ArgumentParser:
    debug_help = "show full tracebacks and library warnings"
    parser = argparse.ArgumentParser(prog="dfd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Every command takes --debug too; SUPPRESS keeps `dfd --debug predict ...` from being reset by the command.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (predict, init, convert, demo, app, space, data):
        command.add_parser(subparsers, parent)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        logging.set_verbosity_error()
        logging.disable_progress_bar()
        hub_logging.set_verbosity_error()  # e.g. the retries of an offline download
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        return error.exit_code if isinstance(error, CommandError) else 1
