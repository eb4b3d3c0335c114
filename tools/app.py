"""`dfd serve`: the detector's web page (page_dfd.py) on this machine, for moderators and anyone trying the model.

    dfd serve --model runs/dfd/model --port 7860

Drop videos or paste links; per video the page says whether it is likely fake, the fake score and what the threshold
means, the suspicious time range, the timeline, the frames the model saw, and a JSON report. Its API (`/analyze`,
callable with `gradio_client`) answers with the record of `dfd predict --format json`. It binds 127.0.0.1, and is
public only with --share. Gradio is an optional extra: pip install "dfd-detector[app]".
"""

import argparse

import torch

from ..inputs_dfd import Limits
from .cli.common import CommandError, UsageError
from .loading import load_scorer


def run(args) -> int:
    limits = Limits()
    if not 0 <= args.windows <= limits.max_windows:
        raise UsageError(f"--windows {args.windows} is outside [0, {limits.max_windows}] (DFD_MAX_WINDOWS)")
    try:
        from ..page_dfd import serve
    except ModuleNotFoundError as error:
        if error.name != "gradio":
            raise
        raise CommandError('the page needs Gradio: pip install "dfd-detector[app]"') from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        scorer = load_scorer(args.model, device, limits=limits)
    except OSError as error:
        raise CommandError(str(error)) from None
    serve(scorer, "127.0.0.1", args.port, args.share, args.windows)
    return 0


def add_parser(subparsers, parent: argparse.ArgumentParser):
    from .cli.common import positive_int
    from .cli.predict import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "serve",
        parents=[parent],
        help="start the web page to drop videos on (Gradio, on 127.0.0.1)",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2].replace("\n", " "),
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"local folder or Hub repo id of a detector (default: {DEFAULT_MODEL})"
    )
    parser.add_argument("--port", type=positive_int, default=7860, help="port on 127.0.0.1 (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also publish the page through a public gradio.live link")
    parser.add_argument(
        "--windows",
        type=int,
        default=0,
        help="the page's preset parts per video (default: 0, automatic: parts of the model's training duration)",
    )
    parser.set_defaults(run=run)
