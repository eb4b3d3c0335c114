"""
The decision rule on long videos: how often real videos of several lengths are flagged, and how often a short fake
stretch inside a 30 s real video is found, under the stored rule (top window, threshold held higher for more
windows), its top-k variants, and what `dfd predict` did before (one window over the whole video, or the mean of the
windows, against 0.5). Videos are the demo's synthetic textures (tools/synthetic_videos.py), spliced with the same
recipe; the model is a `dfd demo` export.

    dfd demo --output-dir demo_output      # trains the model this measures
    .venv/bin/python benchmarks/bench_decision_rule.py --model demo_output/runs/adapters/model [--videos 30]
"""

import tempfile
from pathlib import Path

import numpy as np

from common import base_parser, format_table, parse_arguments, report
from dfd.decision_dfd import DecisionRule
from dfd.scoring_dfd import VideoScorer
from dfd.tools.loading import load_detector
from dfd.tools.synthetic_videos import TextureSettings, texture_clip, write_video


FPS, SIZE = 8, 32  # the demo's videos
REAL_SECONDS = (2, 10, 30, 60)
FAKE_STRETCHES = ((11, 11.5), (11, 12), (10, 16))  # seconds, inside a 30 s real video


def make_videos(folder: Path, count: int) -> dict[str, list[Path]]:
    def video(name, seconds, stretch, seed):
        settings = TextureSettings(size=SIZE, num_frames=int(seconds * FPS))
        frames = None if stretch is None else (int(stretch[0] * FPS), int(stretch[1] * FPS))
        clip = texture_clip(np.random.default_rng(seed), fake=False, settings=settings, fake_frames=frames)
        return write_video(folder / f"{name}.mp4", clip, fps=FPS)

    sets = {}
    for seconds in REAL_SECONDS:
        sets[f"real, {seconds} s"] = [video(f"real{seconds}_{i}", seconds, None, (1, seconds, i)) for i in range(count)]
    for start, end in FAKE_STRETCHES:
        name = f"30 s, fake {start:g}-{end:g} s"
        seed = (2, int(start * 10))
        sets[name] = [video(f"spliced{start}_{end}_{i}", 30, (start, end), (*seed, i)) for i in range(count)]
    return sets


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo_output/runs/adapters/model", help="a dfd demo export")
    parser.add_argument("--videos", type=int, default=30, help="videos per row")
    args = parse_arguments(parser, argv)
    count = 2 if args.quick else args.videos
    model, processor = load_detector(args.model)
    scorer = VideoScorer(model, processor, num_workers=1, batch_size=64)
    stored = DecisionRule.from_config(model.config)
    rules = {f"top {k}": DecisionRule(stored.threshold, k, stored.real_log_odds) for k in (1, 2, 3)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, paths in make_videos(Path(folder), count).items():
            windows = [[window.fake_probability for window in video.windows] for video in scorer.predict(paths)]
            whole = [video.windows[0].fake_probability for video in scorer.predict(paths, windows=1)]
            row = {"videos": name, "windows": len(windows[0])}
            for rule_name, rule in rules.items():
                row[rule_name] = float(np.mean([rule.decide(video).fake for video in windows]))
            row["top 1, one threshold"] = float(np.mean([max(video) >= stored.threshold for video in windows]))
            row["mean >= 0.5 (before)"] = float(np.mean([np.mean(video) >= 0.5 for video in windows]))
            row["1 window >= 0.5 (before)"] = float(np.mean([probability >= 0.5 for probability in whole]))
            rows.append(row)
    columns = list(rows[0])
    title = (
        f"Share of videos called fake ({count} per row); threshold {stored.threshold:.4f} for one window, "
        + ", ".join(f"{stored.threshold_for(n):.4f} for {n}" for n in (5, 15, 30))
    )
    report(args, "decision_rule", scorer.device, [format_table(title, columns, rows)], [], rows=rows)


if __name__ == "__main__":
    main()
