"""
Scoring videos end to end, and what the redesign of the scoring path changed, each measured in one run:

- batching: the pipeline with `batch_size=8` against `batch_size=1` (windows of several videos share forward passes);
- before/after: the code of an earlier revision (default: the last commit before the redesign) against this checkout,
  on the same videos and weights: decoding (`read_video` of the card's 12 frames) and scoring (`VideoScorer.predict`,
  decode + windows + model + rule).

    .venv/bin/python benchmarks/bench_scoring.py [--json scoring.json] [--quick] [--old-revision REV]

The earlier revision's Hub files are taken from git into a temporary folder and imported as the package `dfd_before`,
beside this checkout's `dfd` (common.import_revision). The model is a small random CLIP-shaped detector, so the
timings weigh decoding and the scoring loop, not ViT-L/14 (benchmarks/bench_inference.py measures the model).
"""

import tempfile
from pathlib import Path

import torch
from transformers import pipeline

from bench_decode import VideoSpec, ensure_video
from common import CACHE_DIR, base_parser, format_table, import_revision, interleaved_times, parse_arguments, report
from dfd.decoding_dfd import read_video
from dfd.configuration_dfd import DFDConfig
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.processing_dfd import DFDVideoProcessor, sample_frame_indices
from dfd.scoring_dfd import VideoScorer
from dfd.tools.export import processor_for, save_detector


# The last commit before the scoring path was redesigned (issue 21).
BEFORE_REDESIGN = "7a1debd"
SMALL_VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, patch_size=16)


def videos(quick: bool) -> list[str]:
    """Videos of several lengths (so they get different numbers of windows), generated once into the cache."""
    seconds = (2, 4) if quick else (2, 4, 6, 8, 10, 12)
    specs = [VideoSpec(f"scoring_{length}s", "scoring video", 640, 360, length, 25, 50) for length in seconds]
    return [str(ensure_video(spec, CACHE_DIR / "videos", quiet=True)) for spec in specs]


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--old-revision", default=BEFORE_REDESIGN, help="git revision measured as 'before'")
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_arguments(parser, argv)
    repeats = 1 if args.quick else args.repeats
    paths = videos(args.quick)
    device = torch.device("cpu")

    with tempfile.TemporaryDirectory(prefix="dfd-bench-scoring-") as work:
        work = Path(work)
        torch.manual_seed(0)
        config = DFDConfig(vision_config=SMALL_VISION, image_size=224, adapter_bottleneck=16, window_duration=4.0)
        model_dir = save_detector(DFDForVideoClassification(config), processor_for(config), work / "detector")
        model = DFDForVideoClassification.from_pretrained(model_dir).eval()
        processor = DFDVideoProcessor.from_pretrained(model_dir)

        # Batching windows across videos in the pipeline.
        classifier = pipeline("video-classification", model=str(model_dir), trust_remote_code=True, device=device)
        batching = interleaved_times(
            {f"batch_size={size}": (lambda size=size: classifier(paths, batch_size=size)) for size in (1, 8)}, repeats
        )
        windows = sum(len(entries[0]["windows"]) for entries in classifier(paths))
        batching_row = {
            "videos": len(paths),
            "windows": windows,
            "batch 1 s": min(batching["batch_size=1"]),
            "batch 8 s": min(batching["batch_size=8"]),
            "batch 1 / batch 8 (min)": min(batching["batch_size=1"]) / min(batching["batch_size=8"]),
        }

        # The code before the redesign against this checkout.
        before = import_revision(
            args.old_revision, work, "dfd_before", ["modeling_dfd", "processing_dfd", "decoding_dfd", "inference"]
        )
        old_model = before.modeling_dfd.DFDForVideoClassification.from_pretrained(model_dir).eval()
        old_processor = before.processing_dfd.DFDVideoProcessor.from_pretrained(model_dir)
        old_scorer = before.inference.VideoScorer(old_model, old_processor, num_workers=2)
        new_scorer = VideoScorer(model, processor, num_workers=2)

        def card_frames(info):
            return sample_frame_indices(info.total_frames, 12)

        timed = interleaved_times(
            {
                "decode before": lambda: [before.decoding_dfd.read_video(path) for path in paths],
                "decode after": lambda: [read_video(path, card_frames) for path in paths],
                "score before": lambda: list(old_scorer.predict(paths)),
                "score after": lambda: list(new_scorer.predict(paths)),
            },
            repeats,
        )
        old_scores = [prediction.score for prediction in old_scorer.predict(paths)]
        new_scores = [prediction.fake_score for prediction in new_scorer.predict(paths)]

    rows = []
    for part in ("decode", "score"):
        old, new = timed[f"{part} before"], timed[f"{part} after"]
        rows.append(
            {
                "part": part,
                "before min s": min(old),
                "after min s": min(new),
                "before / after (min)": min(old) / min(new),
                "before / after (median)": sorted(old)[len(old) // 2] / sorted(new)[len(new) // 2],
            }
        )
    agreement = {
        "videos": len(paths),
        "max |fake score before - after|": max(abs(old - new) for old, new in zip(old_scores, new_scores)),
    }
    tables = [
        format_table("Pipeline batching (CPU, small random detector)", list(batching_row), [batching_row]),
        format_table(f"Before ({args.old_revision}) and after, same videos and weights", list(rows[0]), rows),
        format_table("Same answers", list(agreement), [agreement]),
    ]
    return report(args, "scoring", device, tables, [], batching=batching_row, before_after=rows, agreement=agreement)


if __name__ == "__main__":
    main()
