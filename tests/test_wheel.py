"""
The package as users get it: the wheel built from this checkout, installed (not editable) into a fresh venv, run from
a folder outside the checkout. The editable install the other tests use would hide a file the wheel leaves out.
"""

import base64
import json
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO_ROOT, numbered_frames, write_video

UNTRACKED = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "demo_output", ".cache")


@pytest.fixture(scope="module")
def wheel_python(tmp_path_factory):
    """A venv holding only our wheel; the dependencies come from the test venv (nothing is downloaded)."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ in the source folder, whose stale files a later wheel would take.
    source = shutil.copytree(REPO_ROOT, root / "source", ignore=shutil.ignore_patterns(*UNTRACKED))
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", root / "dist"]
    subprocess.run([*map(str, build), str(source)], check=True)
    (wheel,) = (root / "dist").glob("dfd_detector-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A path in a .pth file is added to sys.path, but the .pth files in it (the editable install's finder) are not run.
    with open(f"{site_packages}/dependencies.pth", "w") as file:
        file.write(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*install, str(wheel)], check=True)
    return python


def run(python, *args, cwd, **kwargs):
    environment = {"HF_HUB_OFFLINE": "1", "PATH": f"{python.parent}:/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [str(python), *map(str, args)], cwd=cwd, env=environment, capture_output=True, text=True, **kwargs
    )


def test_the_wheel_holds_the_package_and_nothing_of_the_checkout(wheel_python, tmp_path):
    result = run(wheel_python, "-c", "import dfd, dfd.handler, dfd.tools.cli; print(dfd.__file__)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout and str(REPO_ROOT) not in result.stdout


def test_demo_training_eval_predict_and_endpoint_from_the_installed_wheel(wheel_python, tmp_path):
    """The fast demo trains, evaluates (--do_eval, with the packaged metrics) and exports; its export then scores a
    video through `dfd predict` and deploys as an Inference Endpoint does."""
    demo = run(wheel_python.parent / "dfd", "demo", "--fast", "--output-dir", "demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "PASS" in demo.stdout
    export = tmp_path / "demo" / "runs" / "adapters" / "model"
    exported = {
        "handler.py",
        "scoring_dfd.py",
        "pipeline_dfd.py",
        "processing_dfd.py",
        "decoding_dfd.py",
        "inputs_dfd.py",
    }
    assert exported | {"requirements.txt", "README.md"} <= {path.name for path in export.iterdir()}

    video = write_video(tmp_path / "video.mp4", numbered_frames(30, 48, 48))
    predict = run(wheel_python.parent / "dfd", "predict", video, "--model", export, "--format", "json", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr
    (record,) = json.loads(predict.stdout)
    assert record["label"] in {"real", "fake"}

    endpoint = (
        "import base64, json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from handler import EndpointHandler\n"
        "print(json.dumps(EndpointHandler(sys.argv[1])({'inputs': sys.stdin.read()})))\n"
    )
    request = base64.b64encode(video.read_bytes()).decode()
    answer = run(wheel_python, "-c", endpoint, export, cwd=tmp_path, input=request)
    assert answer.returncode == 0, answer.stderr
    verdict, _ = json.loads(answer.stdout)
    assert verdict["fake_score"] == pytest.approx(record["fake_score"], abs=1e-5)


def test_accelerate_launches_the_training_module_from_the_installed_wheel(wheel_python, tmp_path):
    """`accelerate launch -m dfd.train_accelerate`, as the README runs it, with no checkout anywhere: the help, and
    data refused as one line before any model loads."""
    launch = ["-m", "accelerate.commands.launch", "--quiet", "--cpu", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]  # fmt: skip
    help_text = run(wheel_python, *launch, "-m", "dfd.train_accelerate", "--help", cwd=tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    assert "--class_balanced_sampling" in help_text.stdout

    (tmp_path / "videos").mkdir()
    refused = run(wheel_python, *launch, "-m", "dfd.train_accelerate", "--train_dir", "videos", "--output_dir", "out",
                  cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        "error: videos: expected real/ and fake/ subfolders (or train/ and validation/ holding them)"
    )
