"""
`dfd predict`'s inputs and outputs under hostile conditions, on real files, links, mounts and signals: symlink loops,
outputs that would destroy an input or cannot be written, colliding plot names, results streamed as they come and
resumed, Ctrl-C with long decodes in flight, and folders of frame images.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import REPO_ROOT, error_lines, numbered_frames, write_video
from dfd.tools.cli.inputs import expand_inputs


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One short real video, copied wherever a test needs a video."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", numbered_frames(30), fps=25)


def copy(source: Path, *targets: Path) -> list[Path]:
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return list(targets)


def predict_command(*args, model):
    return [sys.executable, "-m", "dfd.tools.cli", "predict", *map(str, args), "--model", str(model), "--device", "cpu"]


def test_symlink_loops_end_and_each_real_file_is_scored_once(clip, tmp_path, tiny_detector_dir):
    loop = tmp_path / "loop"
    copy(clip, loop / "a.mp4", loop / "sub" / "b.mp4")
    (loop / "self").symlink_to(loop)  # a folder that holds itself
    (loop / "sub" / "up").symlink_to("..")  # and a link back to its parent
    (loop / "alias.mp4").symlink_to(loop / "a.mp4")  # the same file under another name
    (loop / "elsewhere").symlink_to(tmp_path / "outside")  # a link to a real folder elsewhere is followed, once
    copy(clip, tmp_path / "outside" / "c.mp4")

    expected = [str(loop / "a.mp4"), str(loop / "elsewhere" / "c.mp4"), str(loop / "sub" / "b.mp4")]
    assert expand_inputs([str(loop)]) == expected
    assert expand_inputs([str(loop), f"{loop}/sub/b.mp4", f"{loop}/self/self/a.mp4"]) == expected
    globbed = expand_inputs([f"{loop}/**/*.mp4"])
    assert sorted(map(os.path.realpath, globbed)) == sorted(map(os.path.realpath, expected))
    assert len(globbed) == 3

    result = subprocess.run(
        predict_command(f"{loop}/**/*.mp4", "--format", "jsonl", model=tiny_detector_dir),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["path"] for record in records] == globbed


def test_output_that_is_an_input_or_cannot_be_written_is_refused_before_scoring(clip, tmp_path, run_dfd):
    """Every case fails on the output, before the (missing) model is even looked for, and leaves the input intact."""
    victim = copy(clip, tmp_path / "victim.mp4")[0]
    content = victim.read_bytes()
    (tmp_path / "link.csv").symlink_to(victim)
    (tmp_path / "afile").write_text("a regular file")
    (tmp_path / "folder.json").mkdir()
    model = tmp_path / "no-model"
    cases = {
        str(victim): f"error: --output {victim}: {victim} is one of the inputs ({victim}); writing the results there "
        "would destroy it",
        str(tmp_path / "link.csv"): f"error: --output {tmp_path / 'link.csv'}: {tmp_path / 'link.csv'} is one of the "
        f"inputs ({victim}); writing the results there would destroy it",
        f"{tmp_path}/folder.json/../victim.mp4": "is one of the inputs",
        str(tmp_path / "afile" / "out.json"): f"error: --output {tmp_path / 'afile' / 'out.json'}: cannot write there "
        f"({tmp_path / 'afile'} is not a folder)",
        str(tmp_path / "folder.json"): f"error: --output {tmp_path / 'folder.json'}: is a folder; give the name of the "
        "file to write",
    }
    for output, message in cases.items():
        status, out, err = run_dfd("predict", victim, "--model", model, "--output", output)
        assert (status, out) == (1, ""), output
        assert len(err.splitlines()) == 1 and message in err, err
    status, _, err = run_dfd("predict", victim, "--model", model, "--plot", tmp_path / "afile")
    assert status == 1 and err.startswith(f"error: --plot {tmp_path / 'afile'}: cannot write there (")
    assert victim.read_bytes() == content
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile", "folder.json", "link.csv", "victim.mp4"]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no one may write in, even root: a read-only tmpfs (needs root; skipped elsewhere)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount).returncode:
        pytest.skip("mounting a read-only tmpfs needs root")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_output_in_a_read_only_folder_is_refused_before_scoring(clip, tmp_path, read_only_folder, run_dfd):
    output = read_only_folder / "results.csv"
    status, out, err = run_dfd("predict", clip, "--model", tmp_path / "no-model", "--output", output)
    assert (status, out) == (1, "")
    assert err == f"error: --output {output}: cannot write there (Read-only file system: {output}.partial.jsonl)\n"


def test_plots_never_collide_and_a_failed_plot_does_not_stop_the_batch(clip, tmp_path, tiny_detector_dir):
    """a/x.mp4, b/x.mp4 and x-2.mp4 get three plots; one plot that cannot be written is that video's error only, as
    is an unreadable video between good ones."""
    root = tmp_path / "videos"
    videos = copy(clip, root / "a" / "x.mp4", root / "b" / "x.mp4", root / "x-2.mp4", root / "z.mp4")
    truncated = root / "m" / "truncated.mp4"
    truncated.parent.mkdir()
    truncated.write_bytes(clip.read_bytes()[:3000])
    plots, output = tmp_path / "plots", tmp_path / "results.json"
    (plots / "z.mp4.png").mkdir(parents=True)  # a folder where z.mp4's plot would go: that plot fails
    inputs = [videos[0], truncated, *videos[1:]]
    result = subprocess.run(
        predict_command(*inputs, "--output", output, "--plot", plots, model=tiny_detector_dir),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    errors = error_lines(result.stderr)
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {truncated}: ")
    assert errors[1].startswith(f"error: {root / 'z.mp4'}: plot {plots / 'z.mp4.png'} not written (")
    records = json.loads(output.read_text())
    assert [record["path"] for record in records] == list(map(str, inputs))
    assert ["error" in record for record in records] == [False, True, False, False, False]
    pngs = sorted(str(path.relative_to(plots)) for path in plots.rglob("*.png") if path.is_file())
    assert pngs == ["a/x.mp4.png", "b/x.mp4.png", "x-2.mp4.png"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plots", "results.json", "videos"]  # no journal left


def test_resume_skips_the_videos_already_in_the_output(clip, tmp_path, tiny_detector_dir, run_dfd):
    first, second, third = copy(clip, tmp_path / "1.mp4", tmp_path / "2.mp4", tmp_path / "3.mp4")
    output = tmp_path / "results.jsonl"
    status, _, _ = run_dfd("predict", first, second, "--model", tiny_detector_dir, "--output", output)
    assert status == 0
    before = output.read_text().splitlines()
    assert [json.loads(line)["path"] for line in before] == [str(first), str(second)]

    status, _, err = run_dfd(
        "predict", first, second, third, "--model", tiny_detector_dir, "--output", output, "--resume"
    )
    assert status == 0
    assert f"--resume: 2 videos already scored in {output}" in err
    after = output.read_text().splitlines()
    assert after[:2] == before  # kept as they were, not scored again
    assert json.loads(after[2])["path"] == str(third)

    csv_output = tmp_path / "results.csv"
    assert run_dfd("predict", first, "--model", tiny_detector_dir, "--output", csv_output)[0] == 0
    status, _, err = run_dfd("predict", first, "--model", tiny_detector_dir, "--output", csv_output, "--resume")
    assert status == 2 and "is a finished csv file, which does not keep whole results" in err


def noise_video(path: Path, num_frames: int) -> Path:
    """
    A video that takes seconds to decode: one keyframe, then noise coded finely enough (tens of kilobytes a frame) that
    reaching the end costs every frame's full decoding.
    """
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(8)]
    return write_video(path, (noise[index % 8] for index in range(num_frames)), gop=num_frames, crf=30)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory, clip):
    """A short clip followed by four copies (four real files) of a long one."""
    folder = tmp_path_factory.mktemp("long")
    long = noise_video(folder / "long-0.mp4", 1000)
    copy(long, *(folder / f"long-{index}.mp4" for index in range(1, 4)))
    return [copy(clip, folder / "short.mp4")[0], *(folder / f"long-{index}.mp4" for index in range(4))]


def test_ctrl_c_exits_at_once_with_long_decodes_in_flight_and_keeps_the_results(
    long_videos, tmp_path, tiny_detector_dir
):
    """
    Long decodes share one CPU (seconds each) when Ctrl-C comes: the command exits within seconds anyway, writing the
    result it has to --output and keeping its journal, which --resume then takes up. Two workers: the short clip shares
    the CPU with one long decode, so its result comes well before the long ones can finish.
    """
    output = tmp_path / "results.json"
    journal = tmp_path / "results.json.partial.jsonl"
    command = predict_command(
        *long_videos, "--output", output, "--batch-size", "1", "--num-workers", "2", model=tiny_detector_dir
    )
    environment = {**os.environ, "DFD_DECODE_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cpu = min(os.sched_getaffinity(0))
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # The signal must reach Python's handler, whatever disposition the test runner was started with.
        preexec_fn=lambda: (os.sched_setaffinity(0, {cpu}), signal.signal(signal.SIGINT, signal.SIG_DFL)),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        # Results are streamed as they are scored (the short clip's first), while long ones are still decoding.
        while not (journal.exists() and journal.read_text().strip()) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        _, stderr = process.communicate(timeout=120)
        seconds_to_exit = time.monotonic() - interrupted_at
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert seconds_to_exit < 4, f"{seconds_to_exit:.1f} s from SIGINT to exit"
    assert "error: interrupted" in stderr and "Traceback" not in stderr
    # How many were scored by then depends on the machine (the short clip's, maybe a long one's), never all of them.
    records = json.loads(output.read_text())
    assert 1 <= len(records) < len(long_videos)
    assert f"wrote the {len(records)} results there are to {output}; --resume scores the rest" in stderr
    assert [record["path"] for record in records] == list(map(str, long_videos[: len(records)]))
    assert all("error" not in record for record in records)
    assert [json.loads(line) for line in journal.read_text().splitlines()] == records

    # A new run does not start over on the interrupted one's results...
    result = subprocess.run(predict_command(long_videos[0], "--output", output, model=tiny_detector_dir),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 1
    assert error_lines(result.stderr) == [
        f"error: --output {output}: {journal} holds the results of an interrupted run: pass --resume to skip the "
        "videos in it, or delete it to start over"
    ]
    # ...but --resume takes them up (here with the videos already scored only, to keep the test short) and ends the
    # journal.
    result = subprocess.run(
        predict_command(*long_videos[: len(records)], "--output", output, "--resume", model=tiny_detector_dir),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(output.read_text()) == records
    assert not journal.exists()


def frame_folder(folder: Path, frames: np.ndarray, extension=".png") -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(frames):
        PIL.Image.fromarray(frame).save(folder / f"frame_{index}{extension}")
    return folder


def test_frame_folders_are_videos(clip, tmp_path, tiny_detector_dir, tiny_detector_scores):
    """A folder that directly holds frame images (and no videos or subfolders) is one video, given or found in a walk,
    scored exactly as the processor reads it."""
    frames = numbered_frames(24, 48, 64)
    given = frame_folder(tmp_path / "given", frames)
    dataset = tmp_path / "dataset"
    found = frame_folder(dataset / "real" / "clip_1", frames[::-1], ".jpg")
    copy(clip, dataset / "fake" / "clip.mp4")
    (dataset / "fake" / "poster.png").write_bytes((given / "frame_0.png").read_bytes())  # beside a video: not frames

    assert expand_inputs([str(given), str(dataset)]) == [
        str(given), str(dataset / "fake" / "clip.mp4"), str(found)
    ]  # fmt: skip
    result = subprocess.run(
        predict_command(given, dataset, "--format", "json", "--windows", "2", model=tiny_detector_dir),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads(result.stdout)
    assert [record["path"] for record in records] == [str(given), str(dataset / "fake" / "clip.mp4"), str(found)]
    for record in (records[0], records[2]):  # untimed: no seconds; two windows of 12 frames each
        assert record["duration"] is None and len(record["windows"]) == 2
        assert all(window["start"] is None and window["timestamps"] == [None] * 12 for window in record["windows"])

    one_window = subprocess.run(predict_command(given, found, "--format", "json", model=tiny_detector_dir),
                                capture_output=True, text=True, timeout=300)  # fmt: skip
    reference = tiny_detector_scores([given, found])
    for record, scores in zip(json.loads(one_window.stdout), reference):
        assert record["fake_score"] == pytest.approx(scores["fake"], abs=1e-5)
