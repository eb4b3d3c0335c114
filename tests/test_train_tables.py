"""Video tables from folders, manifests and Hub datasets (a real parquet dataset with embedded mp4 bytes), and the
one-line refusals of a source that is not one."""

import datasets
import pytest

from dfd.tools.train.errors import TrainingError
from dfd.tools.train.tables import choose_split, load_hub_video_tables, load_video_tables
from training_fixtures import video_frames


def test_manifest_tables(tmp_path, make_video):
    make_video("a.mp4", video_frames("real", 1))
    make_video("b.mp4", video_frames("fake", 2))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,split\na.mp4,real,train\nb.mp4,1,train\na.mp4,0,val\n")
    tables = load_video_tables(manifest)
    assert sorted(tables) == ["train", "validation"]
    assert list(tables["train"]["video"]) == [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    assert list(tables["train"]["label"]) == [0, 1] and list(tables["validation"]["label"]) == [0]

    jsonl = tmp_path / "manifest.jsonl"
    jsonl.write_text('{"path": "a.mp4", "label": "real"}\n{"path": "b.mp4", "label": "fake"}\n')
    assert list(load_video_tables(jsonl)["train"]["label"]) == [0, 1]

    manifest.write_text("path,label\na.mp4,maybe\n")
    with pytest.raises(TrainingError, match="manifest.csv, row 1: label must be 0/1 or real/fake"):
        load_video_tables(manifest)


def test_a_text_list_is_refused_not_read_as_json(tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text("a.mp4\nb.mp4\n")
    with pytest.raises(TrainingError) as error:
        load_video_tables(listing)
    assert str(error.value) == (
        f"{listing}: not a folder nor a manifest; a manifest is a .csv or .jsonl file with columns path, label and "
        "optionally split"
    )


def test_a_folder_without_classes_is_refused(tmp_path):
    (tmp_path / "videos" / "misc").mkdir(parents=True)
    with pytest.raises(TrainingError, match="videos: expected real/ and fake/ subfolders"):
        load_video_tables(tmp_path / "videos")


def test_split_folders_and_a_missing_split(tmp_path, make_video):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "real").mkdir(parents=True)
        make_video(f"data/{split}/real/a.mp4", video_frames("real", 1))
    tables = load_video_tables(tmp_path / "data")
    assert sorted(tables) == ["train", "validation"]
    assert choose_split(tables, None, "data") is tables["validation"]  # no test split: validation comes first
    assert choose_split(tables, "VAL", "data") is tables["validation"]
    with pytest.raises(TrainingError) as error:
        choose_split(tables, "test", "data")
    assert str(error.value) == "data: no 'test' split (it has: train, validation)"


def test_hub_dataset_with_embedded_videos_and_class_label(tmp_path, make_video):
    """A `Video` column holding bytes, and a ClassLabel whose names are alphabetical (fake=0, real=1)."""
    real = make_video("real.mp4", video_frames("real", 1)).read_bytes()
    fake = make_video("fake.mp4", video_frames("fake", 2)).read_bytes()
    features = datasets.Features({"video": datasets.Video(), "label": datasets.ClassLabel(names=["fake", "real"])})
    dataset = datasets.Dataset.from_dict(
        {"video": [{"bytes": real, "path": "r.mp4"}, {"bytes": fake, "path": "f.mp4"}], "label": [1, 0]},
        features=features,
    )
    (tmp_path / "hub" / "data").mkdir(parents=True)
    dataset.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))

    tables = load_hub_video_tables(str(tmp_path / "hub"), None, None, "label", tmp_path / "files")
    assert list(tables["train"]["label"]) == [0, 1]  # by name: real -> 0, fake -> 1
    videos = list(tables["train"]["video"])
    assert [open(video, "rb").read() for video in videos] == [real, fake]

    with pytest.raises(TrainingError, match=r"--dataset_name .*missing: "):
        load_hub_video_tables(str(tmp_path / "missing"), None, None, "label", tmp_path / "files")
