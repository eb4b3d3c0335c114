"""
How far each precision a CPU can run moves a trained detector's scores: `VideoScorer` on labelled videos (a `real/`
and a `fake/` folder: the demo's held-out test split) in fp32, bf16 autocast (`dfd predict --dtype bf16`) and int8
dynamic quantization (`--dtype int8`); per precision, the AUC and how far the fake probabilities and verdicts move
from fp32's. The speed of each on the full-size model is benchmarks/bench_inference.py's "CPU precisions" table.

    dfd demo --output-dir demo_output      # trains the model this measures
    .venv/bin/python benchmarks/bench_cpu_precision.py --model demo_output/runs/adapters/model \
        --videos demo_output/data/test
"""

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from common import base_parser, format_table, parse_arguments, report
from dfd.scoring_dfd import DTYPES, VideoScorer, cpu_has_bf16
from dfd.tools.loading import load_detector


def labelled_videos(folder: Path, per_class: int | None) -> tuple[list[str], np.ndarray]:
    paths, labels = [], []
    for label, name in enumerate(("real", "fake")):
        found = sorted((folder / name).glob("*.mp4"))[:per_class]
        if not found:
            raise SystemExit(f"{folder / name}: no mp4 files (--videos needs a real/ and a fake/ folder)")
        paths += [str(path) for path in found]
        labels += [label] * len(found)
    return paths, np.array(labels)


def main(argv=None):
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo_output/runs/adapters/model", help="a dfd demo export")
    parser.add_argument("--videos", default="demo_output/data/test", help="a folder with real/ and fake/ videos")
    args = parse_arguments(parser, argv)
    paths, labels = labelled_videos(Path(args.videos), 4 if args.quick else None)
    results = {}
    for name, dtype in DTYPES.items():
        model, processor = load_detector(args.model)  # each scorer gets its own copy: int8 quantizes it in place
        scorer = VideoScorer(model, processor, "cpu", dtype, batch_size=64, num_workers=1)
        predictions = list(scorer.predict(paths))
        results[name] = (
            np.array([video.fake_score for video in predictions]),
            np.array([video.label == "fake" for video in predictions]),
        )
    reference, reference_verdicts = results["fp32"]
    rows = [
        {
            "precision": name,
            "auc": roc_auc_score(labels, scores),
            "max_probability_diff": float(np.abs(scores - reference).max()),
            "mean_probability_diff": float(np.abs(scores - reference).mean()),
            "verdicts_changed": int((verdicts != reference_verdicts).sum()),
        }
        for name, (scores, verdicts) in results.items()
    ]
    title = (
        f"Scores of {args.model} on {len(paths)} videos ({labels.sum()} fake) against fp32, CPU "
        f"({'bf16 units' if cpu_has_bf16() else 'no bf16 units'})"
    )
    return report(args, "cpu_precision", torch.device("cpu"), [format_table(title, list(rows[0]), rows)], [], rows=rows)


if __name__ == "__main__":
    main()
