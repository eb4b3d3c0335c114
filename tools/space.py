"""`dfd space`: write a ready Hugging Face Space folder that serves a detector's page (`dfd serve`) to Hub visitors.

    dfd space --model Arko007/deepfake-detector-dfd-sota --output my-space
    cd my-space && python app.py    # or push the folder to a Space repo (sdk: gradio)

The Hub's hosted inference does not run models with custom code and its widgets take no video, so a Space linked to
the model is how a visitor tries it. The Space installs this package from the model repo (`requirements.txt`) and runs
the same app, on the same `VideoScorer`. `DFD_MODEL` overrides the model it serves, e.g. a local folder for a test.
"""

import argparse
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .files import check_new_output, write_atomically


DEFAULT_HARDWARE = "t4-small"  # ViT-L/14 on 12 frames at 384 px per window: a GPU, as `dfd predict` is slow on CPUs

APP_TEMPLATE = '''"""The {model} page: drop videos, read the verdict. Written by `dfd space`."""

import os

from dfd.tools.app import serve


if __name__ == "__main__":
    serve(os.environ.get("DFD_MODEL", "{model}"))  # DFD_MODEL: another model, e.g. a local folder
'''

README_TEMPLATE = """---
title: {title}
emoji: 🎞️
colorFrom: indigo
colorTo: gray
sdk: gradio
{sdk_version}app_file: app.py
models:
  - {model}
suggested_hardware: {hardware}
license: apache-2.0
short_description: Is this video a deepfake? Verdict, timeline, frames.
pinned: false
---

# {title}

Drop one or more videos (or paste URLs) to get the verdict of [{model}](https://huggingface.co/{model}): real or
fake, the fake score, the fake probability over time with the most suspicious window shaded, that window's frames and
a JSON report. Videos are scored by the model's own code (`VideoScorer`), as by `dfd predict` and its Inference
Endpoint.

Run it on your machine: `pip install -r requirements.txt && python app.py`, then open http://127.0.0.1:7860.
"""


def package_requirement(model: str) -> str:
    """The package with the app extra, installed from the model repo (the repo root is the `dfd` package)."""
    return f"dfd-detector[app] @ git+https://huggingface.co/{model}"


def gradio_version() -> str | None:
    try:
        return version("gradio")
    except PackageNotFoundError:
        return None


def write_space(
    model: str, output, hardware: str = DEFAULT_HARDWARE, title: str | None = None, overwrite: bool = False
) -> Path:
    """Write app.py, requirements.txt and README.md (the Space's metadata) into `output`; returns the folder."""
    try:
        validate_repo_id(model)
    except HFValidationError as error:
        raise ValueError(f"--model {model}: a Space links a Hub model id (owner/name): {error}") from None
    output = check_new_output(output, overwrite)
    sdk = gradio_version()
    readme = README_TEMPLATE.format(
        title=title or f"{model.split('/')[-1]} demo",
        model=model,
        hardware=hardware,
        sdk_version=f"sdk_version: {sdk}\n" if sdk else "",
    )
    write_atomically(output / "README.md", readme)
    write_atomically(output / "app.py", APP_TEMPLATE.format(model=model))
    write_atomically(output / "requirements.txt", package_requirement(model) + "\n")
    return output


def run(args) -> int:
    output = write_space(args.model, args.output, args.hardware, args.title, args.overwrite)
    print(f"wrote the Space for {args.model} to {output}")
    return 0


def add_parser(subparsers, parent: argparse.ArgumentParser):
    from .cli.predict import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "space",
        parents=[parent],
        help="write a Hugging Face Space folder that serves the model's page",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"Hub id of the linked model (default: {DEFAULT_MODEL})")
    parser.add_argument("--output", required=True, metavar="DIR", help="the Space folder to write")
    parser.add_argument(
        "--hardware", default=DEFAULT_HARDWARE, help=f"the Space's suggested_hardware (default: {DEFAULT_HARDWARE})"
    )
    parser.add_argument("--title", help="the Space's title (default: '<model name> demo')")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(run=run)
