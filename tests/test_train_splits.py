"""
How a run's videos are split and guarded, on the dataset replicas as downloaded: a validation split held out by
identity when rows have groups (stratified only without), the one-line refusal of sets that share videos or
identities (and --allow_overlap, recorded), and face crops (DeepfakeBench's frames) that make the model crop faces,
decoded as they are.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from accelerate import PartialState

from dfd.configuration_dfd import DFDConfig
from dfd.processing_dfd import DFDVideoProcessor
from dfd.tools.data import Row, index, write_manifest
from dfd.tools.export import processor_for
from dfd.tools.train.arguments import parse_args
from dfd.tools.train.data import load_frames, load_tables
from dfd.tools.train.errors import TrainingError
from dfd.tools.train.model import load_model_and_processor
from dfd.tools.train.splits import hold_out_validation, identities, leakage_figures
from training_fixtures import TINY_CONFIG


def test_validation_is_held_out_by_identity_when_rows_have_groups(ffpp_replicas):
    """DFD's actors appear in every scene: held out by identity, no actor is on both sides, and the fakes whose two
    actors fell apart are used by neither; the same videos without groups get the recipe's stratified split."""
    _, replica = ffpp_replicas
    rows = [
        Row(row.path, row.label, "train", row.group, row.method, row.dataset) for row in index("dfd", replica.root).rows
    ]
    train, validation, policy = hold_out_validation(rows, 15, seed=0)
    assert policy == {"validation": "identity", "percentage": 15, "seed": 0, "excluded": policy["excluded"]}
    assert policy["excluded"] > 0 and len(train) + len(validation) + policy["excluded"] == len(rows)
    assert not identities(train) & identities(validation)
    assert {row.label for row in validation} == {"real", "fake"}
    assert leakage_figures(train, validation)["shared_groups"] == 0
    assert hold_out_validation(rows, 15, seed=0) == (train, validation, policy)  # seeded

    ungrouped = [Row(row.path, row.label, "train") for row in rows]
    train, validation, policy = hold_out_validation(ungrouped, 10, seed=0)
    assert policy["validation"] == "stratified" and len(validation) == round(len(rows) / 10)
    assert leakage_figures(train, validation) == {
        "groups_known": False, "validation_groups": 0, "shared_groups": 0, "validation_videos": len(validation),
        "videos_sharing_a_group": 0, "shared_videos": 0,
    }  # fmt: skip


def training_args(tmp_path, *arguments):
    return parse_args(["--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), *arguments])


def test_sets_that_share_identities_or_videos_are_refused_in_one_line(celebdf_replica, tmp_path):
    """Celeb-DF's official test list shares celebrities with its training part: evaluating there what was trained
    on its training part is refused, with the counts; --allow_overlap proceeds and records them."""
    root = celebdf_replica.root
    rows = index("celebdf", root).rows
    tested = identities([row for row in rows if row.split == "test"])
    shared = {
        split: len(identities([row for row in rows if row.split == split]) & tested)
        for split in ("train", "validation")
    }
    assert min(shared.values()) > 0
    arguments = ["--train_dir", f"celebdf:{root}", "--eval_dir", f"celebdf:{root}"]
    with pytest.raises(TrainingError) as error:
        load_tables(training_args(tmp_path, *arguments), PartialState())
    assert str(error.value) == (
        f"train and evaluation set Celeb-DF share 0 videos and {shared['train']} identity groups; validation and "
        f"evaluation set Celeb-DF share 0 videos and {shared['validation']} identity groups: a model validated or "
        "tested on videos or identities it trained on measures recognition, not detection; pass --allow_overlap to "
        "proceed anyway (recorded in metrics.json and the model card)"
    )
    tables = load_tables(training_args(tmp_path, *arguments, "--allow_overlap"), PartialState())
    assert tables.overlaps == [
        {"first": role, "second": "evaluation set Celeb-DF", "videos": 0, "groups": shared[role]}
        for role in ("train", "validation")
    ]

    # A validation set that lists training videos shares them, whatever its groups.
    training = [row for row in rows if row.split == "train"]
    write_manifest(tmp_path / "train.csv", training)
    write_manifest(tmp_path / "again.csv", [Row(row.path, row.label, "validation") for row in training[:3]])
    with pytest.raises(TrainingError, match=r"^train and validation share 3 videos and 0 identity groups: "):
        load_tables(training_args(tmp_path, "--train_dir", str(tmp_path / "train.csv"), "--validation_dir",
                                  str(tmp_path / "again.csv")), PartialState())  # fmt: skip


def test_face_crops_make_the_model_crop_faces_and_are_decoded_as_they_are(
    deepfakebench_replica, tiny_clip_dir, tmp_path, monkeypatch
):
    """DeepfakeBench's frame folders are face crops (`crop: face` in the manifest): the model trained on them crops
    faces at inference (its saved processor says so), and the cache holds their frames as they are, the face
    detector never run on them. --crop frame is refused."""
    rgb = deepfakebench_replica.root.parent.parent / "rgb"
    manifest = write_manifest(
        tmp_path / "dfb.csv", index("deepfakebench", deepfakebench_replica.root, frames_root=rgb).rows
    )
    base = ["--train_dir", str(manifest), "--init_from", str(tiny_clip_dir), "--config_overrides", TINY_CONFIG,
            "--preprocessing_num_workers", "1"]  # fmt: skip
    with pytest.raises(TrainingError) as error:
        load_tables(training_args(tmp_path, *base, "--crop", "frame"), PartialState())
    assert str(error.value).startswith("--crop frame: 7 of the 7 training videos are face crops (e.g. ")
    assert str(error.value).endswith(
        "a model trained on them must crop faces when it predicts: leave --crop out, or pass --crop face"
    )

    args = training_args(tmp_path, *base)
    tables = load_tables(args, PartialState())
    assert tables.crop == "face"
    _, processor = load_model_and_processor(args, tables.crop)
    processor.save_pretrained(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "video_preprocessor_config.json").read_text())["crop"] == "face"
    assert DFDVideoProcessor.from_pretrained(tmp_path / "export").crop == "face"

    def no_detector():
        raise AssertionError("a face crop was cropped again")

    monkeypatch.setattr("dfd.faces_dfd.load_face_detector", no_detector)
    data = load_frames(args, PartialState(), tables, processor)
    as_they_are = processor_for(DFDConfig(**json.loads(TINY_CONFIG)))
    for row in data.train + data.validation:
        expected = as_they_are(videos=row.path, do_rescale=False, do_normalize=False, return_tensors="np")
        assert np.array_equal(data.frames[data.row_of_video[row.path]]["frames"], expected["pixel_values"][0])
    assert Path(row.path).is_dir()  # frame folders
