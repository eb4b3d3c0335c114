"""`dfd endpoint`: serve a detector over HTTP as its container does (serving_dfd.py, the Inference Endpoints protocol).

    dfd endpoint --model runs/dfd/model --port 8080
    curl -H "Content-Type: video/mp4" --data-binary @video.mp4 "localhost:8080/?windows=4"

The same server an export's Dockerfile runs, started from the installed package; a Hub id is downloaded first (or
read from the cache when the Hub cannot be reached). Its settings are DFD_SERVE_* and the handler's DFD_MAX_*
limits (see the README). Needs the serve extra: `pip install "dfd-detector[serve]"`.
"""

import argparse

from .common import CommandError


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value}")
    return value


def run(args) -> int:
    from ..loading import local_folder  # the model libraries: once the arguments are good

    try:
        from ... import serving_dfd
    except ImportError as error:
        raise CommandError(f"dfd endpoint needs {error.name}: pip install 'dfd-detector[serve]'") from None
    try:
        folder = local_folder(args.model)
    except OSError as error:
        raise CommandError(f"--model {args.model}: {error}") from None
    serving_dfd.serve(str(folder), args.host, args.port)
    return 0


def add_parser(subparsers, parent: argparse.ArgumentParser):
    parser = subparsers.add_parser(
        "endpoint",
        parents=[parent],
        help="serve a detector over HTTP as its container does (the Inference Endpoints protocol)",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2].replace("\n", " "),
    )
    parser.add_argument("--model", required=True, help="local folder or Hub repo id of a detector")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=port, default=8080, help="port to listen on (default: 8080; 0: any free port)")
    parser.set_defaults(run=run)
