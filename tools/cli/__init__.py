"""The `dfd` command: score videos from a terminal or a web page, start a checkpoint from CLIP, import a legacy one.

    dfd predict video.mp4 videos/ "more/*.mov" --windows 8 --format json --output results.json --plot plots/
    dfd init --clip openai/clip-vit-large-patch14 --output checkpoints/dfd-init
    dfd convert best_model.pt --output checkpoints/dfd-converted --clip openai/clip-vit-large-patch14
    dfd serve --model runs/dfd/model                # the web page, on 127.0.0.1
    dfd endpoint --model runs/dfd/model --port 8080 # the serving container's HTTP server (Inference Endpoints protocol)
    dfd space --model ORG/NAME --output my-space    # a ready Hugging Face Space folder for the model
    dfd data index dfd /data/FaceForensics++ --output dfd.csv   # a dataset as downloaded -> a manifest

Errors are printed as one line (`--debug` shows the traceback). Exit status: 0 on success, 1 on failure (for
`predict`: when any input could not be scored; the others are still scored and written), 2 on usage errors.
"""

import argparse
import importlib
import sys
from collections.abc import Iterable

from .common import CommandError


# Each command's module (which defines its parser with `add_parser`) and its line in `dfd --help`. A module is
# imported only when its command is given, and defines its parser without importing torch or the model libraries,
# so that `dfd --help` and argument errors answer at once.
COMMANDS = {
    "predict": (".predict", "label videos real or fake"),
    "init": (".init", "start a detector from a CLIP checkpoint"),
    "convert": (".convert", "import a legacy best_model.pt / pytorch_model.bin"),
    "demo": (".demo", "train and compare two tiny detectors on synthetic videos, offline"),
    "serve": ("..app", "start a web page to drop videos on (Gradio, on 127.0.0.1)"),
    "endpoint": (".endpoint", "serve a detector over HTTP as its container does (the Inference Endpoints protocol)"),
    "space": ("..space", "write a Hugging Face Space folder that serves the model's page"),
    "data": (".data", "index datasets as downloaded into manifests"),
}


def build_parser(commands: Iterable[str] = tuple(COMMANDS)) -> argparse.ArgumentParser:
    """The `dfd` parser, with the full parsers of `commands` (the others are listed, not defined)."""
    debug_help = "show full tracebacks and library warnings"
    parser = argparse.ArgumentParser(prog="dfd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Every command takes --debug too; SUPPRESS keeps `dfd --debug predict ...` from being reset by the command.
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help) in COMMANDS.items():
        if name in commands:
            importlib.import_module(module, __package__).add_parser(subparsers, parent)
        else:
            subparsers.add_parser(name, help=help)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((argument for argument in argv if not argument.startswith("-")), None)
    args = build_parser([command]).parse_args(argv)
    if not args.debug:  # the libraries' logging, imported only once a command runs (transformers' takes a second)
        from huggingface_hub.utils import logging as hub_logging
        from transformers.utils import logging

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
