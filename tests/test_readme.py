"""
The README's code runs as written. Every fenced block the README marks `<!-- runs in tests/test_readme.py -->` runs
here, unchanged, offline: in a folder holding the files it names (clip.mp4, videos/, runs/dfd/model), with the Hub
repos it names served from a local Hugging Face cache (the network being the one edge a test replaces), and with the
installed `dfd` command. A marked block that fails here is a README that lies.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO_ROOT, numbered_frames, write_video


MARKER = "<!-- runs in tests/test_readme.py -->"
BLOCK = re.compile(re.escape(MARKER) + r"\n```(\w+)\n(.*?)\n```", re.S)
HUB_REPOS = {"model": "Arko007/deepfake-detector-dfd-sota", "clip": "openai/clip-vit-large-patch14"}


def marked_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall((REPO_ROOT / "README.md").read_text(encoding="utf-8"))


def cache_repo(hub_cache: Path, repo_id: str, folder: Path):
    """A Hub repo as huggingface_hub keeps it once downloaded: what offline loading reads."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(folder, repo / "snapshots" / revision)


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_detector_dir, tiny_clip_dir):
    """A user's folder: the videos and the trained export the README's commands name, and a Hub cache."""
    root = tmp_path_factory.mktemp("readme")
    write_video(root / "clip.mp4", numbered_frames(40, 48, 48), fps=10)
    (root / "videos").mkdir()
    for name, frames in (("a.mp4", 30), ("b.mp4", 50)):
        write_video(root / "videos" / name, numbered_frames(frames, 48, 48), fps=10)
    shutil.copytree(tiny_detector_dir, root / "runs" / "dfd" / "model")
    cache_repo(root / "hf_home" / "hub", HUB_REPOS["model"], tiny_detector_dir)
    cache_repo(root / "hf_home" / "hub", HUB_REPOS["clip"], tiny_clip_dir)
    return root


def test_the_readme_marks_the_blocks_it_promises_run():
    languages = [language for language, _ in marked_blocks()]
    assert languages.count("python") >= 1 and languages.count("bash") >= 1


@pytest.mark.parametrize("number", range(len(marked_blocks())))
def test_a_marked_readme_block_runs_as_written(project, number, tmp_path):
    language, code = marked_blocks()[number]
    work = tmp_path / "work"
    shutil.copytree(project, work, symlinks=True)
    environment = {
        **os.environ,
        "HF_HOME": str(work / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CUDA_VISIBLE_DEVICES": "",
    }
    if language == "python":
        command = [sys.executable, "-c", code]
    else:
        command = ["bash", "-c", "set -euo pipefail\n" + textwrap.dedent(code)]
    result = subprocess.run(command, cwd=work, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{language} block {number}:\n{code}\n--- stderr:\n{result.stderr[-3000:]}"
