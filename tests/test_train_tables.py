"""The rows a run reads, by split: manifests through the one manifest reader (a hand-written label,path CSV is one;
0/1 labels and JSON are refused, saying why), folders, Hub datasets (a real parquet dataset with embedded mp4 bytes),
and the one-line refusals of a source that is not one."""

import datasets
import pytest

from dfd.tools.data import Row
from dfd.tools.train.errors import TrainingError
from dfd.tools.train.tables import choose_split, load_hub_splits, load_splits
from training_fixtures import video_frames


def test_a_label_path_csv_is_a_manifest(tmp_path):
    """Only path and label are required: no split makes every row train, no crop whole frames; labels in any case."""
    manifest = tmp_path / "videos.csv"
    manifest.write_text("label,path\nreal,a.mp4\nFAKE,clips/b.mp4\n")
    assert load_splits(manifest) == {
        "train": [
            Row(str(tmp_path / "a.mp4"), "real", "train"),
            Row(str(tmp_path / "clips" / "b.mp4"), "fake", "train"),
        ]
    }


def test_excluded_rows_are_never_used(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,split,group,method,dataset,crop\n"
        "a.mp4,real,train,01,original,X,frame\n"
        "b.mp4,fake,excluded,01+02,M,X,frame\n"
        "c/,fake,validation,03+04,M,X,face\n"
    )
    splits = load_splits(manifest)
    assert sorted(splits) == ["train", "validation"]
    assert splits["validation"] == [Row(str(tmp_path / "c"), "fake", "validation", "03+04", "M", "X", "face")]
    manifest.write_text("path,label,split\nb.mp4,fake,excluded\n")
    with pytest.raises(TrainingError, match=r"m\.csv: every video is excluded"):
        load_splits(manifest)


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "flags.csv",
            "path,label\na.mp4,1\n",
            "flags.csv, row 2: label must be real or fake, got '1' (write real or fake: datasets disagree on what 1 "
            "means; Celeb-DF's test list writes 1 for real, DFDC's labels.csv 1 for fake)",
        ),
        ("m.csv", "path,label\na.mp4,maybe\n", "m.csv, row 2: label must be real or fake, got 'maybe'"),
        (
            "m.jsonl",
            '{"path": "a.mp4", "label": "real"}\n',
            "m.jsonl: a manifest is a CSV file with columns path,label,split,group,method,dataset,crop (only path "
            "and label are required); JSON is not read",
        ),
        (
            "videos.txt",
            "a.mp4\nb.mp4\n",
            "videos.txt: a manifest needs the columns path,label,split,group,method,dataset,crop (only path and label "
            "are required); missing path, label in the header 'a.mp4'",
        ),
        ("m.csv", "path,label,crop\na.mp4,real,faces\n", "m.csv, row 2: crop must be one of frame, face, got 'faces'"),
    ],
)
def test_what_is_not_a_manifest_is_one_line_saying_why(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(TrainingError) as error:
        load_splits(tmp_path / name)
    assert str(error.value) == f"{tmp_path / name}{message[len(name) :]}"


def test_a_folder_without_classes_is_refused(tmp_path):
    (tmp_path / "videos" / "misc").mkdir(parents=True)
    with pytest.raises(TrainingError, match="videos: expected real/ and fake/ subfolders"):
        load_splits(tmp_path / "videos")


def test_split_folders_and_a_missing_split(tmp_path, make_video):
    for split in ("train", "val"):
        (tmp_path / "data" / split / "real").mkdir(parents=True)
        make_video(f"data/{split}/real/a.mp4", video_frames("real", 1))
    splits = load_splits(tmp_path / "data")
    assert sorted(splits) == ["train", "validation"]
    assert splits["validation"] == [Row(str(tmp_path / "data" / "val" / "real" / "a.mp4"), "real", "validation")]
    assert choose_split(splits, None, "data") == "validation"  # no test split: validation comes first
    assert choose_split(splits, "VAL", "data") == "validation"
    with pytest.raises(TrainingError) as error:
        choose_split(splits, "test", "data")
    assert str(error.value) == "data: no 'test' split (it has: train, validation)"


def write_hub_dataset(root, features, videos, labels):
    (root / "data").mkdir(parents=True)
    dataset = datasets.Dataset.from_dict({"video": videos, "label": labels}, features=features)
    dataset.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


def test_hub_dataset_with_embedded_videos_and_class_label(tmp_path, make_video):
    """A `Video` column holding bytes, and a ClassLabel whose names are alphabetical (fake=0, real=1)."""
    real = make_video("real.mp4", video_frames("real", 1)).read_bytes()
    fake = make_video("fake.mp4", video_frames("fake", 2)).read_bytes()
    features = datasets.Features({"video": datasets.Video(), "label": datasets.ClassLabel(names=["fake", "real"])})
    videos = [{"bytes": real, "path": "r.mp4"}, {"bytes": fake, "path": "f.mp4"}]
    hub = write_hub_dataset(tmp_path / "hub", features, videos, [1, 0])

    splits = load_hub_splits(str(hub), None, None, "label", tmp_path / "files")
    assert [row.label for row in splits["train"]] == ["real", "fake"]  # by name, not by index
    assert [open(row.path, "rb").read() for row in splits["train"]] == [real, fake]
    assert {row.dataset for row in splits["train"]} == {"hub"}  # a local dataset by its folder's name, not its path

    with pytest.raises(TrainingError, match=r"--dataset_name .*missing: "):
        load_hub_splits(str(tmp_path / "missing"), None, None, "label", tmp_path / "files")


def test_hub_dataset_with_bare_flags_is_refused(tmp_path):
    features = datasets.Features({"video": datasets.Value("string"), "label": datasets.Value("int64")})
    hub = write_hub_dataset(tmp_path / "flags", features, ["a.mp4", "b.mp4"], [0, 1])
    with pytest.raises(TrainingError) as error:
        load_hub_splits(str(hub), None, None, "label", tmp_path / "files")
    assert str(error.value) == (
        f"{hub} [train], row 1: label must be real or fake, got 0 (bare 0/1 mean different things in different "
        "datasets: cast the column to ClassLabel(names=...))"
    )
