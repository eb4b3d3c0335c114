"""
The detector's pipeline keeps transformers' contract: `preprocess` is the processor (one item per window), `_forward`
the model on batches of windows, `postprocess` calibration and the decision rule. A folder made by the model's and
processor's own `save_pretrained` (or what `push_to_hub` uploads) serves it with nothing of ours installed.
"""

import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from transformers import pipeline

from conftest import WITHOUT_DFD, numbered_frames, write_video
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.processing_dfd import DFDVideoProcessor


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Videos of 1, 2 and 3 windows of their own frames, so that batches mix videos of several windows."""
    folder = tmp_path_factory.mktemp("pipeline_videos")
    return [
        str(write_video(folder / f"clip{frames}.mp4", numbered_frames(frames, 48, 48), fps=10))
        for frames in (20, 24, 36)
    ]


@pytest.fixture(scope="module")
def classifier(tiny_detector_dir):
    return pipeline("video-classification", model=str(tiny_detector_dir), trust_remote_code=True)


def test_pipeline_classifies_a_real_mp4_as_processor_and_model_do(classifier, tiny_detector_scores, videos):
    assert type(classifier).__name__ == "DFDVideoClassificationPipeline"  # config.json's custom_pipelines
    verdict, other = classifier(videos[0])
    assert sorted([verdict["label"], other["label"]]) == ["fake", "real"]
    assert verdict["score"] + other["score"] == pytest.approx(1.0)
    # The verdict first, with the whole record; without a stored threshold it is 0.5 for one window.
    assert verdict["threshold"] == 0.5 and verdict["rule"] == "top window"
    assert verdict["score"] == (verdict["fake_score"] if verdict["label"] == "fake" else 1 - verdict["fake_score"])
    assert len(verdict["windows"]) == 1 and "path" not in verdict
    # One window of a training-length video: the numbers of processor + model by hand.
    assert verdict["fake_score"] == pytest.approx(tiny_detector_scores([videos[0]])[0]["fake"], abs=1e-5)


def test_batch_size_batches_windows_across_videos_with_the_same_answers(classifier, videos):
    one_by_one = classifier(videos, windows=3, batch_size=1)
    batched = classifier(videos, windows=3, batch_size=8)
    assert [len(entries[0]["windows"]) for entries in batched] == [1, 2, 3]  # 12 distinct frames per window
    for single, batch in zip(one_by_one, batched):
        assert [entry["label"] for entry in single] == [entry["label"] for entry in batch]
        assert batch[0]["fake_score"] == pytest.approx(single[0]["fake_score"], abs=1e-6)
        for window, batch_window in zip(single[0]["windows"], batch[0]["windows"]):
            assert batch_window["fake_probability"] == pytest.approx(window["fake_probability"], abs=1e-6)
            assert batch_window["frames"] == window["frames"]


def test_call_arguments_are_checked_and_clips_is_deprecated(classifier, videos):
    (verdict,) = classifier(videos[2], windows=2, threshold=0.99, top_k=1)
    assert verdict["threshold"] >= 0.99 and len(verdict["windows"]) == 2
    assert verdict["label"] == "real"
    with pytest.warns(FutureWarning, match="`clips` is deprecated: pass `windows`"):
        (old,) = classifier(videos[2], clips=2, top_k=1)
    assert len(old["windows"]) == 2
    with pytest.raises(ValueError, match=r"threshold must lie in \(0, 1\)"):
        classifier(videos[0], threshold=1.5)
    with pytest.raises(ValueError, match="clip.mp4: file not found"):
        classifier(videos[0].replace("clip20", "clip"))


def saved_with_save_pretrained(tiny_detector_dir, folder):
    """What a user gets with the model's and the processor's own `save_pretrained`, nothing else."""
    DFDForVideoClassification.from_pretrained(tiny_detector_dir).save_pretrained(folder)
    DFDVideoProcessor.from_pretrained(tiny_detector_dir).save_pretrained(folder)
    return folder


LOAD_WITHOUT_DFD = WITHOUT_DFD + """
import json
from transformers import AutoModelForVideoClassification, AutoVideoProcessor, pipeline

folder, videos = sys.argv[1], sys.argv[2:]
AutoModelForVideoClassification.from_pretrained(folder, trust_remote_code=True)
AutoVideoProcessor.from_pretrained(folder, trust_remote_code=True)
classifier = pipeline("video-classification", model=folder, trust_remote_code=True)
print(json.dumps(classifier(videos, batch_size=4)))
"""


def test_save_pretrained_makes_a_folder_the_pipeline_loads_with_nothing_of_ours_installed(
    tiny_detector_dir, classifier, videos, tmp_path
):
    folder = saved_with_save_pretrained(tiny_detector_dir, tmp_path / "saved")
    names = {path.name for path in folder.iterdir()}
    assert {"pipeline_dfd.py", "scoring_dfd.py"} - names == {"scoring_dfd.py"}  # the pipeline, not the Endpoint's
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_DFD, str(folder), *videos],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # outside the checkout
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    for answer, expected in zip(answers, classifier(videos)):
        assert answer[0]["label"] == expected[0]["label"]
        assert answer[0]["fake_score"] == pytest.approx(expected[0]["fake_score"], abs=1e-6)


def test_push_to_hub_uploads_what_save_pretrained_writes(tiny_detector_dir, tmp_path, monkeypatch):
    """The network is the only thing replaced: huggingface_hub's repo creation, commit and card download."""
    uploaded = {}

    def create_commit(self, repo_id, operations, **kwargs):
        for operation in operations:
            if isinstance(operation, CommitOperationAdd):  # read now: the pushed folder is a temporary one
                with operation.as_file() as file:
                    uploaded[operation.path_in_repo] = file.read()

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: type("Url", (), {"repo_id": repo_id}))
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, *args, **kwargs: ModelCard("---\n---\n")))
    DFDForVideoClassification.from_pretrained(tiny_detector_dir).push_to_hub("someone/detector")
    DFDVideoProcessor.from_pretrained(tiny_detector_dir).push_to_hub("someone/detector")
    saved = saved_with_save_pretrained(tiny_detector_dir, tmp_path / "saved")
    assert set(uploaded) - {"README.md"} == {path.name for path in saved.iterdir()}
    assert "pipeline_dfd.py" in uploaded
    for name, content in uploaded.items():
        if name.endswith(".py"):
            assert content == (saved / name).read_bytes(), name


def test_windows_are_scored_in_one_forward_pass_per_batch(tiny_detector_dir, videos, monkeypatch):
    classifier = pipeline("video-classification", model=str(tiny_detector_dir), trust_remote_code=True)
    batches = []
    forward = classifier.model.forward
    monkeypatch.setattr(
        classifier.model,
        "forward",
        lambda pixel_values, **kwargs: batches.append(len(pixel_values)) or forward(pixel_values, **kwargs),
    )
    with torch.no_grad():
        classifier(videos, windows=3, batch_size=4)
    assert batches == [4, 2]  # six windows of three videos in two forward passes
