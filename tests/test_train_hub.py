"""
--push_to_hub against a stand-in for the Hub's API on 127.0.0.1 (training_fixtures.fake_hub): the credentials and the
repo's namespace checked before training, refused as one line; and an upload that fails after training keeps the
export and says how to retry.
"""

import os

import pytest
from accelerate import PartialState
from huggingface_hub import constants

from dfd.tools.train.errors import TrainingError
from dfd.tools.train.hub import check_hub_access
from training_fixtures import FakeHubHandler, last_line, run_script


@pytest.fixture
def hub(fake_hub, monkeypatch, tmp_path):
    """This process talks to the stand-in Hub, with no token unless a test sets HF_TOKEN."""
    PartialState()  # the training modules log through accelerate, which needs its state
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return monkeypatch


@pytest.mark.parametrize("repo_id", ["dfd-tests/tiny-dfd", "tester/tiny-dfd", "tiny-dfd"])
def test_a_writer_may_push_under_their_name_and_organizations(hub, repo_id):
    hub.setenv("HF_TOKEN", "hf_writer")
    check_hub_access(repo_id)
    assert ("GET", "/api/whoami-v2") in FakeHubHandler.requests


@pytest.mark.parametrize(
    "token, repo_id, error",
    [
        (None, "dfd-tests/tiny-dfd", r"the Hub can't be used \(Token is required .*\); log in with `hf auth login`"),
        ("hf_unknown", "dfd-tests/tiny-dfd", r"the Hub can't be used \(Invalid user token\..*\)"),
        ("hf_reader", "reader/tiny-dfd", r"^--push_to_hub: the Hub token of reader is read-only"),
        (
            "hf_writer",
            "someone-else/tiny-dfd",
            r"^--hub_model_id someone-else/tiny-dfd: the Hub token of tester can't create repos under 'someone-else' "
            r"\(it can under: dfd-tests, tester\)$",
        ),
    ],
)
def test_what_would_fail_the_push_is_refused(hub, token, repo_id, error):
    if token:
        hub.setenv("HF_TOKEN", token)
    with pytest.raises(TrainingError, match=error):
        check_hub_access(repo_id)


def test_offline_the_push_is_refused_before_training(train_args, tmp_path):
    """conftest sets HF_HUB_OFFLINE: the run ends at once with the line, before any data or model is read."""
    arguments = [*train_args, "--output_dir", tmp_path / "out", "--cache_dir", tmp_path / "cache"]
    environment = {**os.environ, "HF_TOKEN": "hf_writer"}
    result = run_script(
        *arguments, "--push_to_hub", "--hub_model_id", "dfd-tests/tiny-dfd", env=environment, check=False
    )
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("error: --push_to_hub: the Hub can't be used (Cannot reach ")
    assert "offline mode is enabled" in last_line(result.stderr)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_failed_push_keeps_the_export_and_says_how_to_retry(bf16_run_with_failed_push):
    output_dir, result = bf16_run_with_failed_push
    assert "--push_to_hub: the Hub token of tester can create dfd-tests/never-uploaded" in result.stderr
    assert ("POST", "/api/repos/create") in FakeHubHandler.requests
    assert result.returncode == 1
    line = last_line(result.stderr)
    assert line.startswith("error: Upload to the Hub failed: ")
    assert line.endswith(
        f"The exported model is intact in {output_dir / 'model'}. To retry: hf upload dfd-tests/never-uploaded "
        f"{output_dir / 'model'} ."
    )
    assert "Traceback" not in result.stderr
    assert {path.name for path in (output_dir / "model").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "README.md",
        "metrics.json",
    }
