"""`dfd data index` on tiny replicas of the field's datasets (tests/dataset_replicas.py): labels from the official
files, official splits kept, identity splits with no shared identity, one-line errors, and the manifest's guards."""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dfd.tools.cli import main
from dfd.tools.cli.inputs import expand_inputs
from dfd.tools.data import (
    LayoutError,
    ManifestError,
    Row,
    index,
    leakage,
    read_manifest,
    resolve,
    write_manifest,
)
from dfd.tools.data import dfd as dfd_format
from dfd.tools.data.splits import SplitError, split_by_identity
from dfd.tools.train.splits import stratified_split


def relative(rows, root) -> dict[str, Row]:
    return {Path(row.path).relative_to(root).as_posix(): row for row in rows}


def used(rows) -> list[Row]:
    return [row for row in rows if row.split != "excluded"]


def assert_no_shared_identity(rows):
    splits_of = {}
    for row in used(rows):
        for identity in row.identities:
            splits_of.setdefault(identity, set()).add(row.split)
    shared = {identity: splits for identity, splits in splits_of.items() if len(splits) > 1}
    assert not shared


def assert_both_classes(rows, splits):
    for split in splits:
        assert {row.label for row in rows if row.split == split} == {"real", "fake"}, split


def test_ffpp_rows_follow_the_official_pairs(ffpp_replicas):
    replica, _ = ffpp_replicas
    indexed = index("ffpp", replica.root)
    rows = relative(indexed.rows, replica.root)
    assert rows.keys() == replica.videos.keys()
    assert {name: (row.label, row.split) for name, row in rows.items()} == replica.videos
    fake = rows["manipulated_sequences/FaceShifter/c23/videos/672_720.mp4"]
    assert (fake.group, fake.method, fake.dataset) == ("672+720", "FaceShifter", "FaceForensics++")
    assert rows["original_sequences/youtube/c23/videos/720.mp4"].group == "720"
    assert indexed.notes == []
    assert Counter(row.split for row in indexed.rows if row.label == "real") == {"train": 6, "validation": 4, "test": 4}

    two = index("ffpp", replica.root, methods=("Deepfakes", "NeuralTextures"))
    assert {row.method for row in two.rows} == {"original", "Deepfakes", "NeuralTextures"}


def test_ffpp_methods_not_downloaded_and_split_files(ffpp_replicas, tmp_path):
    replica, _ = ffpp_replicas
    root = tmp_path / "FaceForensics++"
    shutil.copytree(replica.root / "original_sequences" / "youtube", root / "original_sequences" / "youtube")
    shutil.copytree(replica.root / "manipulated_sequences" / "Deepfakes", root / "manipulated_sequences" / "Deepfakes")
    with pytest.raises(LayoutError, match=r"train\.json, val\.json, test\.json .* ROOT/ or ROOT/splits/"):
        index("ffpp", root)
    shutil.copytree(replica.root / "splits", root, dirs_exist_ok=True)  # the split files in ROOT itself
    indexed = index("ffpp", root)
    assert {row.method for row in indexed.rows} == {"original", "Deepfakes"}
    assert len(indexed.notes) == 4 and all("not downloaded at c23" in note for note in indexed.notes)
    with pytest.raises(LayoutError, match="no Face2Face fakes at c23: .* found Deepfakes/"):
        index("ffpp", root, methods=("Face2Face",))
    with pytest.raises(LayoutError, match="expected original_sequences/youtube/c40/videos/.* found c23/ in "):
        index("ffpp", root, compression="c40")


def test_dfd_is_split_by_actor(ffpp_replicas):
    _, replica = ffpp_replicas
    rows = index("dfd", replica.root).rows
    named = relative(rows, replica.root)
    assert {name: row.label for name, row in named.items()} == {
        name: label for name, (label, _) in replica.videos.items()
    }
    assert_no_shared_identity(rows)
    assert_both_classes(rows, ("train", "validation", "test"))
    split_of_actor = {row.group: row.split for row in rows if row.label == "real"}
    for row in rows:
        target, source = (row.identities * 2)[:2]
        same = split_of_actor[target] == split_of_actor[source]
        assert row.split == (split_of_actor[target] if same else "excluded")
    excluded = sum(row.split == "excluded" for row in rows)
    assert 0 < excluded < sum(row.label == "fake" for row in rows)
    # Seeded: the same seed gives the same split, another seed another one.
    assert index("dfd", replica.root).rows == rows
    assert index("dfd", replica.root, seed=1).rows != rows


def test_the_card_split_leaks_identities_and_scenes_the_identity_split_does_not(ffpp_replicas):
    """The card's plain stratified 90/10 split (what training does for videos without groups) against ours on DFD's
    layout."""
    _, replica = ffpp_replicas
    ours = index("dfd", replica.root).rows
    train, validation = stratified_split(ours, 10, seed=42)
    card = [Row(**{**vars(row), "split": "train"}) for row in train]
    card += [Row(**{**vars(row), "split": "validation"}) for row in validation]

    card_leak = leakage(card, "validation", dfd_format.scene)
    assert card_leak.shared_identities == card_leak.identities > 0
    assert 0 < card_leak.videos_sharing_scene <= card_leak.videos_sharing_identity == card_leak.videos
    for split in ("validation", "test"):
        our_leak = leakage(ours, split, dfd_format.scene)
        assert our_leak.identities > 0 and our_leak.videos > 0
        assert (our_leak.shared_identities, our_leak.videos_sharing_identity, our_leak.videos_sharing_scene) == (
            0,
            0,
            0,
        )


def test_celebdf_labels_come_from_folders_and_its_inverted_flag_is_checked(celebdf_replica, tmp_path):
    replica = celebdf_replica
    indexed = index("celebdf", replica.root)
    rows = relative(indexed.rows, replica.root)
    assert {name: row.label for name, row in rows.items()} == {
        name: label for name, (label, _) in replica.videos.items()
    }
    tested = {name for name, (_, split) in replica.videos.items() if split == "test"}
    assert {name for name, row in rows.items() if row.split == "test"} == tested
    # The list flags 1 = real: copied into a label column it would invert every test label.
    flags = dict(line.split()[::-1] for line in (replica.root / "List_of_testing_videos.txt").read_text().splitlines())
    assert all(rows[name].label == ("real" if flag == "1" else "fake") for name, flag in flags.items())
    assert rows["Celeb-synthesis/id5_id1_0001.mp4"].group == "id5+id1"
    assert rows["YouTube-real/00005.mp4"].group == "YouTube-real/00005"
    training = [row for row in indexed.rows if row.split != "test"]
    assert_no_shared_identity(training)
    assert_both_classes(indexed.rows, ("train", "validation", "test"))

    copy = tmp_path / "Celeb-DF-v2"
    shutil.copytree(replica.root, copy)
    text = (copy / "List_of_testing_videos.txt").read_text()
    (copy / "List_of_testing_videos.txt").write_text(
        text.replace("1 YouTube-real/00005.mp4", "0 YouTube-real/00005.mp4")
    )
    with pytest.raises(LayoutError, match=r"line \d+: flag 0 says fake .*1 = real.* YouTube-real/ holds real"):
        index("celebdf", copy)


def test_dfdc_splits_training_parts_by_original_and_reads_the_test_labels(dfdc_replica):
    replica = dfdc_replica
    rows = index("dfdc", replica.root).rows
    named = relative(rows, replica.root)
    assert {name: row.label for name, row in named.items()} == {
        name: label for name, (label, _) in replica.videos.items()
    }
    assert {name for name, row in named.items() if row.split == "test"} == {
        name for name, (_, split) in replica.videos.items() if split == "test"
    }
    for part in ("dfdc_train_part_0", "dfdc_train_part_1"):
        metadata = json.loads((replica.root / part / "metadata.json").read_text())
        for name, entry in metadata.items():
            assert named[f"{part}/{name}"].group == Path(entry["original"] or name).stem
    assert_no_shared_identity(rows)
    assert not any(row.split == "excluded" for row in rows)  # each fake has one original: nothing is lost
    assert_both_classes(rows, ("train", "validation", "test"))
    # Either part alone.
    test_only = index("dfdc", replica.root / "test")
    assert {row.split for row in test_only.rows} == {"test"} and "training parts" in test_only.notes[0]


def test_dfdcp_keeps_its_sets_and_carves_validation_by_actor(dfdcp_replica):
    replica = dfdcp_replica
    rows = index("dfdcp", replica.root).rows
    named = relative(rows, replica.root)
    metadata = json.loads((replica.root / "dataset.json").read_text())
    assert {name: row.label for name, row in named.items()} == {key: entry["label"] for key, entry in metadata.items()}
    assert {name for name, row in named.items() if row.split == "test"} == {
        key for key, entry in metadata.items() if entry["set"] == "test"
    }
    fake = named["method_A/643049/643049_A/1224068_643049_A_001.mp4"]
    assert (fake.group, fake.method) == ("643049+1224068", "method_A")
    assert_no_shared_identity([row for row in rows if row.split != "test"])
    assert_both_classes(rows, ("train", "validation", "test"))


def test_deepfakebench_json_rows_are_frame_folders_once_each(deepfakebench_replica):
    replica = deepfakebench_replica
    rgb = replica.root.parent.parent / "rgb"
    indexed = index("deepfakebench", replica.root, frames_root=rgb)
    rows = relative(indexed.rows, rgb)
    assert {name: (row.label, row.split) for name, row in rows.items()} == replica.videos
    assert {row.crop for row in indexed.rows} == {"face"}  # DeepfakeBench's frames are face crops
    assert {row.crop for row in indexed.rows} == {"face"}  # DeepfakeBench's frames are face crops
    # Celeb-DF's 3 test videos are also in train and val; DFD's 3 videos in all three splits.
    assert indexed.deduplicated == 6
    assert any("6 videos listed in several splits" in note for note in indexed.notes)
    assert rows["Celeb-DF-v2/Celeb-synthesis/frames/id3_id0_0000"].group == "id3+id0"
    assert (
        rows["FaceForensics++/manipulated_sequences/DeepFakeDetection/c23/frames/01_02__kitchen_pan__YVGY8LOK"].group
        == "01+02"
    )
    # Without --frames_root the relative frame paths are looked up beside the JSON, and nothing is there.
    with_default = index("deepfakebench", replica.root)
    assert with_default.rows == [] and "--frames_root" in with_default.notes[-1]
    with pytest.raises(LayoutError, match="no c40 videos; the levels are c23"):
        index("deepfakebench", replica.root, compression="c40", frames_root=rgb)


def test_deepfakebench_label_names_mean_what_its_label_dict_says(tmp_path):
    frames = tmp_path / "Celeb-DF-v2" / "Celeb-real" / "frames" / "id0_0000"
    frames.mkdir(parents=True)
    (frames / "000.png").write_bytes(b"")
    entry = {"frames": ["Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png"]}
    for name, expected in (("CelebDFv2_real", "real"), ("CelebDFv2_fake", "fake")):
        (tmp_path / "d.json").write_text(
            json.dumps({"Celeb-DF-v2": {name: {"test": {"id0_0000": {**entry, "label": name}}}}})
        )
        assert [row.label for row in index("deepfakebench", tmp_path / "d.json").rows] == [expected]
    (tmp_path / "d.json").write_text(
        json.dumps({"Celeb-DF-v2": {"real": {"test": {"id0_0000": {**entry, "label": "real"}}}}})
    )
    with pytest.raises(LayoutError, match="label 'real' is not one that DeepfakeBench's .*label_dict names"):
        index("deepfakebench", tmp_path / "d.json")


@pytest.mark.parametrize("format", ["ffpp", "dfd", "celebdf", "dfdc", "dfdcp", "deepfakebench"])
def test_a_folder_of_another_layout_is_one_line_saying_what_was_expected_and_found(
    format, dfdcp_replica, celebdf_replica
):
    other = celebdf_replica if format == "dfdcp" else dfdcp_replica
    with pytest.raises(LayoutError) as error:
        index(format, other.root)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{other.root}: not a ")
    found = message.split(": expected ", 1)[1].split(", found ")[1]
    if format == "deepfakebench":
        assert found == "a folder"
    else:  # the entries the folder holds
        assert all(f"{name}/" in found for name in {path.split("/")[0] for path in other.videos})


def test_the_command_writes_the_manifest_from_outside_the_checkout(ffpp_replicas, tmp_path):
    _, replica = ffpp_replicas
    command = [sys.executable, "-m", "dfd.tools.cli", "data", "index"]
    done = subprocess.run(
        [*command, "dfd", replica.root, "--output", "dfd.csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = read_manifest(tmp_path / "dfd.csv")
    assert rows == index("dfd", replica.root).rows
    excluded = sum(row.split == "excluded" for row in rows)
    assert f"excluded: {excluded} videos" in done.stdout and "deduplicated: 0" in done.stdout
    real, fake = (sum(row.split == "train" and row.label == label for row in rows) for label in ("real", "fake"))
    assert f"  train{real:>15}{fake:>8}{real + fake:>8}" in done.stdout
    assert "validation: 0 of " in done.stdout and "wrote dfd.csv" in done.stdout

    again = subprocess.run(
        [*command, "ffpp", replica.root / "original_sequences", "--output", "x.csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert again.stderr.startswith("error: ") and "not a FaceForensics++ folder: expected" in again.stderr
    assert "found actors/, youtube/" in again.stderr
    assert not (tmp_path / "x.csv").exists()


def test_the_command_keeps_an_existing_manifest_and_checks_its_options(ffpp_replicas, tmp_path, capsys):
    _, replica = ffpp_replicas
    output = tmp_path / "dfd.csv"
    output.write_text("mine\n")
    assert main(["data", "index", "dfd", str(replica.root), "--output", str(output)]) == 1
    assert "already exists (pass --overwrite" in capsys.readouterr().err and output.read_text() == "mine\n"
    assert main(["data", "index", "dfd", str(replica.root), "--output", str(output), "--methods", "Deepfakes"]) == 2
    assert "dfd does not take --methods" in capsys.readouterr().err
    assert main(["data", "index", "dfd", str(replica.root), "--output", str(output), "--overwrite"]) == 0
    assert len(read_manifest(output)) == len(replica.videos)
    with pytest.raises(SystemExit):
        main(["data", "index", "ffpp", str(replica.root), "--output", str(output), "--methods", "DeepFakeDetection"])
    assert "DeepFakeDetection, with its actors, is the dfd format" in capsys.readouterr().err


def test_manifest_round_trip_and_guards(tmp_path):
    (tmp_path / "videos").mkdir()
    rows = [
        Row(str(tmp_path / "videos" / "a.mp4"), "real", "train", "01", "original", "X"),
        Row(str(tmp_path / "videos" / "b.mp4"), "fake", "excluded", "01+02", "M", "X"),
        Row("/elsewhere/c.mp4", "fake", "test", "03", "M", "X"),
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    lines = manifest.read_text().splitlines()
    assert lines[0] == "path,label,split,group,method,dataset,crop"
    assert lines[1].startswith("videos/a.mp4,") and lines[3].startswith("/elsewhere/c.mp4,")  # relative when below
    assert read_manifest(manifest) == rows

    def refused(text, pattern):
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(ManifestError, match=pattern) as error:
            read_manifest(tmp_path / "bad.csv")
        assert "\n" not in str(error.value) and str(tmp_path / "bad.csv") in str(error.value)

    refused(
        "path,label,split\na.mp4,real,train\nvideos/../a.mp4,fake,test\n", r"row 3: .*a\.mp4 is already listed in row 2"
    )
    refused(
        "path,label,split\nvideos/a.mp4,1,train\n", r"row 2: label must be real or fake, got '1' \(write real or fake"
    )
    refused(
        "path,label,split\nvideos/a.mp4,real,val\n", r"row 2: split must be one of train, validation, test, excluded"
    )
    refused("path,split\na.mp4,train\n", "missing label")
    refused("path,label,split\n,real,train\n", "row 2: empty path")
    refused("path,label,split\na.mp4,real\n", "row 2: 2 fields, the header has 3")
    refused("path,label,split\n", "no videos")
    os.symlink(tmp_path / "videos" / "a.mp4", tmp_path / "link.mp4")
    refused("path,label,split\nvideos/a.mp4,real,train\nlink.mp4,real,train\n", "row 3: .* already listed in row 2")
    with pytest.raises(ManifestError, match="already listed"):
        write_manifest(tmp_path / "twice.csv", [rows[0], rows[0]])
    assert not (tmp_path / "twice.csv").exists()


def test_resolve_takes_a_manifest_or_format_root(dfdc_replica, tmp_path):
    rows = resolve(f"dfdc:{dfdc_replica.root}")
    assert rows == index("dfdc", dfdc_replica.root).rows
    write_manifest(tmp_path / "dfdc.csv", rows)
    assert resolve(tmp_path / "dfdc.csv") == rows
    with pytest.raises(LayoutError, match="not a FaceForensics\\+\\+ folder"):
        resolve(f"ffpp:{dfdc_replica.root}")
    with pytest.raises(ManifestError, match="no such manifest"):
        resolve(tmp_path / "missing.csv")


def test_identity_split_refuses_what_cannot_hold_both_classes():
    rows = [Row(f"/v/{n}.mp4", "real", "train", f"a{n}") for n in range(5)] + [Row("/v/f.mp4", "fake", "train", "a0")]
    with pytest.raises(SplitError, match="cannot split 5 real and 1 fake videos"):
        split_by_identity(rows, {"validation": 0.2}, seed=0)


def test_predict_scores_videos_not_the_frame_folders_extracted_beside_them(deepfakebench_replica, tmp_path):
    rgb = deepfakebench_replica.root.parent.parent / "rgb"
    celeb = rgb / "Celeb-DF-v2"
    videos = sorted(str(path) for path in celeb.rglob("*.mp4"))
    assert sorted(expand_inputs([str(celeb)])) == videos and len(videos) == 10
    # Frame folders without their videos are videos.
    frames_only = expand_inputs([str(rgb / "FaceForensics++")])
    assert len(frames_only) == 3 and all(os.path.isdir(path) for path in frames_only)
    # A frame folder whose video is elsewhere (not below its parent's parent) is kept.
    shutil.copytree(celeb / "Celeb-real" / "frames" / "id0_0000", tmp_path / "a" / "frames" / "id0_0000")
    shutil.copy(celeb / "Celeb-real" / "id0_0000.mp4", tmp_path / "id0_0000.mp4")
    expected = [str(tmp_path / "a" / "frames" / "id0_0000"), str(tmp_path / "id0_0000.mp4")]
    assert sorted(expand_inputs([str(tmp_path)])) == expected


def test_predict_on_a_dataset_root_with_frame_folders_scores_each_video_once(deepfakebench_replica, tiny_detector_dir):
    celeb = deepfakebench_replica.root.parent.parent / "rgb" / "Celeb-DF-v2"
    command = [sys.executable, "-m", "dfd.tools.cli", "predict", celeb, "--model", tiny_detector_dir]
    result = subprocess.run(
        [*map(str, command), "--device", "cpu", "--format", "jsonl"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scored = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert sorted(scored) == sorted(str(path) for path in celeb.rglob("*.mp4"))
