"""The detector a run loads: a checkpoint that numbers its classes otherwise is refused, and a model that can't be
loaded is one line naming the option."""

import json
import shutil

import pytest

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
