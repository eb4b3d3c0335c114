"""
The videos of a run: evaluation sets each read from their own source and named after it, readable videos only (a set
of none is refused), and the training sampler.
"""

import datasets
import numpy as np
import pytest
import torch
from accelerate import PartialState

from dfd.configuration_dfd import DFDConfig
from dfd.tools.data import Row
from dfd.tools.export import processor_for
from dfd.tools.train.arguments import parse_args
from dfd.tools.train.data import VideoData, load_frames, load_tables, make_train_dataloader
from dfd.tools.train.errors import TrainingError
from training_fixtures import video_frames


def write_folder(root, make_video, counts, seed):
    """root/real/*.mp4 and root/fake/*.mp4, `counts` = (reals, fakes)."""
    for label, count in zip(("real", "fake"), counts):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            make_video(root / label / f"{label}_{seed}_{index}.mp4", video_frames(label, seed + index))
    return root


def write_parquet_dataset(root, make_video):
    """A local `load_dataset` folder with a test split whose `path` column names two mp4 files."""
    (root / "data").mkdir(parents=True)
    videos = [make_video(root / f"{label}.mp4", video_frames(label, 7)) for label in ("real", "fake")]
    table = datasets.Dataset.from_dict({"path": [str(video) for video in videos], "label": ["real", "fake"]})
    table.to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


def test_a_dataset_and_two_folders_are_three_sets_each_with_its_own_videos(tmp_path, make_video):
    """--dataset_name X --eval_dir A B evaluates X, A and B, under their own names (X was evaluated as A and B)."""
    first = write_folder(tmp_path / "A", make_video, (1, 2), seed=0)
    second = write_folder(tmp_path / "B", make_video, (3, 1), seed=10)
    dataset = write_parquet_dataset(tmp_path / "X", make_video)
    args = parse_args(
        ["--do_eval", "--model_path", str(tmp_path), "--dataset_name", str(dataset), "--eval_dir", str(first),
         str(second), "--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache")]
    )  # fmt: skip
    tables = load_tables(args, PartialState())
    assert list(tables.evaluation) == ["X", "A", "B"]
    assert [len(evaluation.rows) for evaluation in tables.evaluation.values()] == [2, 3, 4]
    assert {evaluation.split for evaluation in tables.evaluation.values()} == {"test", "train"}
    assert {row.path for row in tables.evaluation["A"].rows} == {str(path) for path in first.rglob("*.mp4")}


def test_an_evaluation_split_the_set_lacks_is_one_line(tmp_path, make_video):
    folder = write_folder(tmp_path / "A", make_video, (1, 1), seed=0)
    args = parse_args(
        ["--do_eval", "--model_path", str(tmp_path), "--eval_dir", str(folder), "--eval_split", "test",
         "--output_dir", str(tmp_path / "out")]
    )  # fmt: skip
    with pytest.raises(TrainingError) as error:
        load_tables(args, PartialState())
    assert str(error.value) == f"{folder}: no 'test' split (it has: train)"


def test_a_set_of_unreadable_videos_is_refused(tmp_path, make_video):
    folder = write_folder(tmp_path / "A", make_video, (1, 0), seed=0)
    (folder / "fake" / "broken.mp4").write_bytes(b"not a video")
    broken = tmp_path / "B"
    (broken / "real").mkdir(parents=True)
    (broken / "real" / "broken.mp4").write_bytes(b"not a video either")
    args = parse_args(
        ["--do_eval", "--model_path", str(tmp_path), "--eval_dir", str(folder), str(broken), "--output_dir",
         str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--preprocessing_num_workers", "1"]
    )  # fmt: skip
    processor = processor_for(DFDConfig(image_size=32, num_frames=4))
    with pytest.raises(TrainingError, match=r"none of the 1 videos of evaluation set B could be read; the first: .*B"):
        load_frames(args, PartialState(), load_tables(args, PartialState()), processor)


def test_a_training_folder_without_videos_is_refused(tmp_path):
    for label in ("real", "fake"):
        (tmp_path / "videos" / label).mkdir(parents=True)
    args = parse_args(["--train_dir", str(tmp_path / "videos"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(TrainingError) as error:
        load_tables(args, PartialState())
    assert str(error.value) == f"{tmp_path / 'videos'}: no videos"


@pytest.mark.parametrize("balanced", [True, False])
def test_training_sampler(balanced, tmp_path):
    """Class-balanced: drawn with replacement, both classes about equally often. Off: each video once per epoch."""
    rows = [Row(f"video_{index}.mp4", "real" if index < 90 else "fake", "train") for index in range(100)]
    frames = datasets.Dataset.from_dict({"frames": np.arange(100).reshape(100, 1, 1, 1, 1)}).with_format("numpy")
    data = VideoData(frames, {f"video_{index}.mp4": index for index in range(100)}, {}, train=rows, validation=rows)
    sampling = "--class_balanced_sampling" if balanced else "--no-class_balanced_sampling"
    args = parse_args(
        ["--train_dir", str(tmp_path), "--output_dir", "out", "--per_device_train_batch_size", "10", sampling]
    )
    dataloader, _ = make_train_dataloader(args, data)
    drawn = torch.cat([batch["frames"].flatten() for batch in dataloader]).tolist()
    assert len(drawn) == 100
    if balanced:
        assert 30 < sum(index >= 90 for index in drawn) < 70  # fakes are 10% of the videos
        assert len(set(drawn)) < 100
    else:
        assert sorted(drawn) == list(range(100))
