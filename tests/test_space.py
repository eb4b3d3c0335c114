"""
`dfd space`: the Space folder it writes, and that folder running in a fresh venv that holds only the Space's
requirements (neither this repository nor the package), serving a local export and answering a real upload.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from conftest import numbered_frames, write_video

from dfd.tools.space import write_space


START_SECONDS = 300


def front_matter(space) -> dict:
    return yaml.safe_load((space / "README.md").read_text().split("---\n")[1])


def requirement_names(space) -> list[str]:
    return [line for line in (space / "requirements.txt").read_text().splitlines() if line]


def test_a_space_for_a_hub_model_links_it_and_installs_only_public_packages(tmp_path):
    space = write_space("owner/model", tmp_path / "space", hardware="t4-small")
    assert sorted(path.name for path in space.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    metadata = front_matter(space)
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    assert metadata["models"] == ["owner/model"] and metadata["suggested_hardware"] == "t4-small"
    assert "https://huggingface.co/owner/model" in (space / "README.md").read_text()
    requirements = requirement_names(space)
    assert not any("@" in line or "git+" in line or "dfd" in line for line in requirements)
    names = {line.split("<")[0].split(">")[0].split("=")[0] for line in requirements}
    assert {"gradio", "torch", "torchvision", "transformers", "av", "matplotlib"} <= names
    app = (space / "app.py").read_text()
    assert 'get_class_from_dynamic_module("page_dfd.serve", MODEL)' in app
    assert "os.environ.get(\"DFD_MODEL\", 'owner/model')" in app
    assert "import dfd" not in app and "from dfd" not in app


def test_a_space_refuses_a_folder_without_the_page_a_bad_id_and_an_existing_folder(tiny_clip_dir, tmp_path):
    with pytest.raises(ValueError, match=r"not a detector export with its page \(no config.json, page_dfd.py\)"):
        write_space(str(tmp_path), tmp_path / "space")
    with pytest.raises(ValueError, match=r"no page_dfd.py\)"):
        write_space(str(tiny_clip_dir), tmp_path / "space")  # a checkpoint, not an export
    with pytest.raises(ValueError, match="no such folder, and not a Hub model id"):
        write_space("./runs/none", tmp_path / "space")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        write_space("owner/model", tmp_path / "taken")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_space_for_a_local_export_runs_in_a_fresh_venv_and_answers_an_upload(
    tiny_detector_dir, tiny_detector_scores, tmp_path
):
    """
    The venv is made without pip's access to this environment (no --system-site-packages: that would expose the
    editable install) and gets the Space's requirements.txt from the package index this machine's pip uses: minutes,
    torch being large.
    """
    space = tmp_path / "space"
    result = subprocess.run(
        [sys.executable, "-m", "dfd.tools.cli", "space", "--model", str(tiny_detector_dir), "--output", str(space)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "models" not in front_matter(space) and "DFD_MODEL" in (space / "README.md").read_text()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "-r", str(space / "requirements.txt")],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV", "DFD_"))}
    env = {**clean, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env["DFD_DTYPE"] = "fp32"  # as the reference scores are computed
    probe = subprocess.run([python, "-c", "import dfd"], cwd=space, env=env, capture_output=True, text=True)
    assert "No module named 'dfd'" in probe.stderr  # neither the package nor this checkout

    port = free_port()
    env.update(DFD_MODEL=str(tiny_detector_dir), GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    log = tmp_path / "space.log"
    with open(log, "w") as output:
        process = subprocess.Popen([python, "app.py"], cwd=space, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(1)
        from gradio_client import Client, handle_file

        video = write_video(tmp_path / "upload.mp4", numbered_frames(30, 48, 64))
        (record,) = json.loads(
            Client(url, verbose=False).predict([handle_file(str(video))], "", 0, api_name="/analyze")
        )
    finally:
        process.terminate()
        process.wait(timeout=60)
    (expected,) = tiny_detector_scores([video])
    assert record["path"] == "upload.mp4"
    assert record["windows"][0]["fake_probability"] == pytest.approx(expected["fake"], abs=1e-5)
    assert record["label"] in {"real", "fake"} and "Traceback" not in log.read_text()
