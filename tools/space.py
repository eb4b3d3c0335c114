"""`dfd space`: write a ready Hugging Face Space folder that serves a detector's web page to Hub visitors.

    dfd space --model ORG/NAME --output my-space          # a Space linked to a model on the Hub
    dfd space --model runs/dfd/model --output my-space    # for a local export: DFD_MODEL names its folder
    cd my-space && python app.py                          # or push the folder to a Space repo (sdk: gradio)

The page's code comes from the model itself: every export holds page_dfd.py and the files it imports, and the
Space's app.py loads it with transformers' dynamic-module loader, as the model's own code is loaded. So the Space
installs only public packages (requirements.txt) and serves any export, also a repo that holds only the export
(`hf upload ORG/NAME runs/dfd/model .`). `DFD_MODEL` replaces the model it serves: a Hub id or a local folder.
"""

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import hf_hub_download

from .export import ENDPOINT_REQUIREMENTS, endpoint_requirements
from .files import check_new_output, write_atomically
from .loading import looks_like_path


DEFAULT_HARDWARE = "t4-small"  # ViT-L/14 on 12 frames at 384 px per window: a GPU, as `dfd predict` is slow on CPUs
# What the page imports besides the Endpoint's packages; gradio comes with the `app` extra.
PAGE_REQUIREMENTS = ("torch", "matplotlib")

APP_TEMPLATE = '''"""{title}: drop videos, read whether each is likely fake. Written by `dfd space`.

The page is the detector's own page_dfd.py, loaded with the model's code, so this Space installs only public
packages. DFD_MODEL: the detector it serves, a Hub id or a local folder{default}.
"""

import os
import sys

from transformers.dynamic_module_utils import get_class_from_dynamic_module


MODEL = os.environ.get("DFD_MODEL", {model!r})

if __name__ == "__main__":
    if not MODEL:
        sys.exit("error: set DFD_MODEL to the detector's folder (an export: config.json, page_dfd.py, the weights)")
    serve = get_class_from_dynamic_module("page_dfd.serve", MODEL)
    serve(MODEL, title={title!r})
'''

README_TEMPLATE = """---
title: {title}
emoji: 🎞️
colorFrom: indigo
colorTo: gray
sdk: gradio
{sdk_version}app_file: app.py
{models}suggested_hardware: {hardware}
license: apache-2.0
short_description: Is this video a deepfake? Verdict, where, and frames.
pinned: false
---

# {title}

Drop one or more videos (or paste links) to read, per video, whether {model_words} finds it likely fake: the fake
score and what its threshold means, the suspicious time range, the timeline, the frames the model saw and a JSON
report. The page is the model's own code (`page_dfd.py`, scoring with `VideoScorer` as `dfd predict` and the
Inference Endpoint do), loaded from the model like its other code, so this Space installs only public packages.
{where}
Run it on your machine: `pip install -r requirements.txt && {run}`, then open http://127.0.0.1:7860.
"""

LOCAL_MODEL_NOTE = """
This Space serves the detector folder that `DFD_MODEL` names: copy the export into this folder (e.g. as `model/`) and
set the Space variable `DFD_MODEL=model`, or push the export to a model repo and set `DFD_MODEL` to its id.
"""


def gradio_version() -> str | None:
    try:
        return version("gradio")
    except PackageNotFoundError:
        return None


def crops_faces(model: str, local: bool) -> bool | None:
    """Whether the detector's processor crops faces (then the Space needs the face detector); None when unknown."""
    try:
        path = (
            Path(model) / "video_preprocessor_config.json"
            if local
            else hf_hub_download(model, "video_preprocessor_config.json")
        )
        return json.loads(Path(path).read_text(encoding="utf-8")).get("crop") == "face"
    except Exception:  # noqa: BLE001 - offline, no such repo, no such file: the Space is written without the extra
        return None


def space_requirements(faces: bool) -> str:
    """The public packages the page needs, pinned as this package pins them: the Endpoint's, torch, matplotlib,
    gradio."""
    extras = ("app", "face") if faces else ("app",)
    return endpoint_requirements(extras, ENDPOINT_REQUIREMENTS + PAGE_REQUIREMENTS)


def check_model(model: str) -> bool:
    """Whether `model` is a local export (True) or a Hub id (False); ValueError says why it is neither."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        missing = [name for name in ("config.json", "page_dfd.py") if not (folder / name).is_file()]
        if missing:
            raise ValueError(
                f"--model {model}: not a detector export with its page (no {', '.join(missing)}): export it with this "
                "version of dfd"
            )
        return True
    if looks_like_path(model):
        raise ValueError(f"--model {model}: no such folder, and not a Hub model id (owner/name)")
    return False


def write_space(
    model: str, output, hardware: str = DEFAULT_HARDWARE, title: str | None = None, overwrite: bool = False
) -> Path:
    """
    Write app.py, requirements.txt and README.md (the Space's metadata) into `output`; returns the folder. `model`: a
    Hub id (the Space links it and serves it by default) or a local export (the Space names no model and serves the
    folder in DFD_MODEL).
    """
    local = check_model(model)
    output = check_new_output(output, overwrite)
    faces = crops_faces(model, local)
    if faces is None:
        print(
            f"warning: cannot read {model}'s processor config: if it crops faces, add dlib-bin to requirements.txt",
            file=sys.stderr,
        )
    name = Path(model).expanduser().resolve().name if local else model.split("/")[-1]
    title = title or f"{name} demo"
    sdk = gradio_version()
    readme = README_TEMPLATE.format(
        title=title,
        model_words="the detector" if local else f"[{model}](https://huggingface.co/{model})",
        models="" if local else f"models:\n  - {model}\n",
        hardware=hardware,
        sdk_version=f"sdk_version: {sdk}\n" if sdk else "",
        where=LOCAL_MODEL_NOTE if local else "",
        run="DFD_MODEL=path/to/export python app.py" if local else "python app.py",
    )
    default = "" if local else f" (default: {model})"
    write_atomically(output / "README.md", readme)
    write_atomically(output / "app.py", APP_TEMPLATE.format(model="" if local else model, title=title, default=default))
    write_atomically(output / "requirements.txt", space_requirements(bool(faces)))
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
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"Hub id of the model, or a local export folder (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="the Space folder to write")
    parser.add_argument(
        "--hardware", default=DEFAULT_HARDWARE, help=f"the Space's suggested_hardware (default: {DEFAULT_HARDWARE})"
    )
    parser.add_argument("--title", help="the Space's title (default: '<model name> demo')")
    parser.add_argument("--overwrite", action="store_true", help="replace DIR if it already holds files")
    parser.set_defaults(run=run)
