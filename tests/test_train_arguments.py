"""The training script's command line: defaults shown, and combinations that would fail late or silently do
something else refused before anything loads, as one line."""

import re

import pytest

from dfd.tools.train.arguments import parse_args


@pytest.fixture
def videos(tmp_path):
    (tmp_path / "videos" / "real").mkdir(parents=True)
    return str(tmp_path / "videos")


@pytest.mark.parametrize(
    "extra_args, error",
    [
        (["--config_overrides", '{"adaptr_layers": [0]}'], "unknown DFDConfig field(s): adaptr_layers"),
        (["--model_path", "some/detector", "--config_overrides", '{"image_size": 224}'], "can't reshape"),
        (["--num_train_epochs", "0"], "argument --num_train_epochs: must be at least 1, got 0"),
        (["--max_train_steps", "0"], "argument --max_train_steps: must be at least 1, got 0"),
        (
            ["--per_device_train_batch_size", "-4"],
            "argument --per_device_train_batch_size: must be at least 1, got -4",
        ),
        (["--target_false_positive_rate", "1.5"], "argument --target_false_positive_rate: must lie in (0, 1), got 1.5"),
        (["--config_overrides", "[1, 2]"], "argument --config_overrides: expected a JSON object"),
        # Would be ignored: --eval_split without a set to pick from, and --dataset_name beside --train_dir.
        (["--eval_split", "test"], "--eval_split picks the split of each --eval_dir: give --eval_dir"),
        (["--dataset_name", "org/videos"], "--train_dir and --dataset_name are two sources of training data"),
        (["--augment", "heavy"], "argument --augment: invalid choice: 'heavy' (choose from"),
        # Found missing before any model loads (or, for a Hub id, Hub retries start); FORMAT:ROOT by its ROOT.
        (
            ["--validation_dir", "no/such/../folder"],
            "--validation_dir no/such/../folder: no such folder, manifest or dataset root",
        ),
        (["--eval_dir", "celebdf:no/such/root"], "--eval_dir celebdf:no/such/root: no such folder, manifest or"),
        (["--model_path", "./no_such_checkpoint"], "--model_path ./no_such_checkpoint: no such folder"),
        (["--push_to_hub"], "--push_to_hub needs --hub_model_id ORG/NAME"),
        (["--push_to_hub", "--hub_model_id", "org/bad--name"], "--hub_model_id: Cannot have -- or .. in repo_id"),
    ],
)
def test_arguments_that_would_be_ignored_misfit_or_train_nothing_are_refused(videos, extra_args, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--train_dir", videos, "--output_dir", "out", *extra_args])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()  # one line, not the usage of every option
    assert line.startswith("train_accelerate.py: error: ") and error in line and line.endswith("(see --help)")


@pytest.mark.parametrize(
    "arguments, error",
    [
        (["--train_dir", "missing_videos"], "--train_dir missing_videos: no such folder, manifest or dataset root"),
        (["--do_eval", "--eval_dir", "."], "--do_eval needs --model_path and --eval_dir (and/or --dataset_name)"),
        ([], "training needs --train_dir (or --dataset_name)"),
    ],
)
def test_missing_data_is_refused(arguments, error, capsys):
    with pytest.raises(SystemExit):
        parse_args([*arguments, "--output_dir", "out"])
    assert error in capsys.readouterr().err


def test_training_takes_dataset_roots_and_evaluation_sets(videos, tmp_path):
    """FORMAT:ROOT names a dataset as downloaded (checked by its ROOT); --eval_dir after training is evaluated by
    the export, with the robust augmentation and --allow_overlap as asked."""
    args = parse_args(
        ["--train_dir", f"ffpp:{tmp_path}", "--eval_dir", f"celebdf:{videos}", videos, "--eval_split", "test",
         "--augment", "robust", "--allow_overlap", "--output_dir", "out"]
    )  # fmt: skip
    assert args.train_dir == f"ffpp:{tmp_path}" and args.eval_dir == [f"celebdf:{videos}", videos]
    assert args.augment == "robust" and args.allow_overlap
    assert parse_args(["--train_dir", videos, "--output_dir", "out"]).augment == "card"


def test_evaluation_takes_sets_from_folders_and_a_dataset(videos, tmp_path):
    args = parse_args(
        ["--do_eval", "--model_path", str(tmp_path), "--eval_dir", videos, videos, "--dataset_name", "org/videos",
         "--eval_split", "test", "--output_dir", "out"]
    )  # fmt: skip
    assert args.eval_dir == [videos, videos] and args.dataset_name == "org/videos"
    assert args.config_overrides == {}


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Peak learning rate of AdamW. (default: 5e-06)" in help_text
    assert "--num_train_epochs NUM_TRAIN_EPOCHS Passes over the training data. (default: 12)" in help_text
    assert re.search(
        r"--no-class_balanced_sampling Draw both classes .*? \(default: True\) --brightness_jitter", help_text
    )
    # Options without a default say nothing about it.
    assert "(default: None)" not in help_text and "(default: False)" not in help_text
