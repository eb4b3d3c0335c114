"""
How faithful and how costly `VideoExplainer`'s explanations are, on a tiny detector trained here in seconds on
synthetic fakes whose manipulated region is known (tools/synthetic_videos.py: `manipulated_region_clip`).

    .venv/bin/python benchmarks/bench_explain.py [--json explain.json] [--quick]

Per method, on fakes written as mp4 files and explained through `VideoExplainer.explain` (the path `dfd predict
--explain` takes):
- region share: the mean share of a fake's heatmap inside its manipulated region, against the region's share of the
  frame (what a uniform heatmap gives);
- deletion: the fake probability left after blanking (to the processor's mean colour) the patches the heatmap ranks
  highest, as many as the region covers; lower is more faithful, against blanking as many random patches.
Then the wall time of explaining each video (decode, score, explain its flagged window) against predicting it.
Everything runs on the CPU, fp32, random tiny CLIP weights (nothing downloaded).
"""

import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from common import base_parser, format_table, goal, measure_interleaved, parse_arguments, report
from dfd.explaining_dfd import EXPLANATION_METHODS, VideoExplainer
from dfd.scoring_dfd import VideoScorer
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.tools.export import processor_for
from dfd.tools.synthetic_videos import TextureSettings, manipulated_region_clip, texture_clip, write_video


# A 2-block CLIP at 48 px with 8 px patches: a 6x6 patch grid, on which the 16 px region covers 2x2 patches.
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8)
IMAGE_SIZE = 48
NUM_FRAMES = 4
REGION_SIZE = 16
SETTINGS = TextureSettings(size=IMAGE_SIZE, num_frames=NUM_FRAMES)


def labelled_clips(count: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    """`count` clips, alternately real (0) and fake (1, with a manipulated region)."""
    rng = np.random.default_rng(seed)
    clips = [
        manipulated_region_clip(rng, SETTINGS, REGION_SIZE)[0] if index % 2 else texture_clip(rng, False, SETTINGS)
        for index in range(count)
    ]
    return clips, [index % 2 for index in range(count)]


def train_region_detector(work_dir: Path, steps: int = 200, seed: int = 0):
    """A tiny detector (frozen random CLIP, trained adapters and head) that finds the flickering region."""
    torch.manual_seed(seed)
    clip_dir = work_dir / "clip"
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP, image_size=32)).save_pretrained(clip_dir)
    model = DFDForVideoClassification.from_clip(
        clip_dir, image_size=IMAGE_SIZE, adapter_bottleneck=8, num_frames=NUM_FRAMES, classifier_dropout=0.0
    )
    processor = processor_for(model.config)
    clips, labels = labelled_clips(256, seed)
    pixel_values = processor(clips, do_sample_frames=False, return_tensors="pt")["pixel_values"]
    labels = torch.tensor(labels)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (32,), generator=generator)
        loss = model(pixel_values[batch], labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), processor


def write_fakes(folder: Path, count: int, seed: int) -> list[tuple[Path, tuple[int, int, int]]]:
    """`count` fakes as lossless mp4 files, each with its manipulated region (top, left, size) in pixels."""
    rng = np.random.default_rng(seed)
    fakes = []
    for index in range(count):
        frames, region = manipulated_region_clip(rng, SETTINGS, REGION_SIZE)
        fakes.append((write_video(folder / f"fake_{index:03d}.mp4", frames, fps=8), region))
    return fakes


def region_mask(region: tuple[int, int, int], grid: int, patch: int) -> torch.Tensor:
    """(grid, grid) bool: the patches inside a patch-aligned region."""
    top, left, size = (value // patch for value in region)
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    return mask


def region_share(heatmaps: np.ndarray, region: tuple[int, int, int], patch: int) -> float:
    """The share of a window's heatmaps (frames, grid, grid) inside the region, over all its frames."""
    mask = region_mask(region, heatmaps.shape[-1], patch).numpy()
    return float(heatmaps[:, mask].sum() / max(heatmaps.sum(), 1e-30))


def fake_probability_after_deletion(model, pixel_values: torch.Tensor, ranking: torch.Tensor, count: int, patch: int):
    """Fake probability of one window once the `count` patches ranked highest (over all frames) are blanked."""
    frames, grid_height, grid_width = ranking.shape
    keep = torch.ones(frames * grid_height * grid_width)
    keep[ranking.flatten().argsort(descending=True)[:count]] = 0
    keep = keep.view(frames, 1, grid_height, 1, grid_width, 1).expand(-1, -1, -1, patch, -1, patch)
    keep = keep.reshape(frames, 1, grid_height * patch, grid_width * patch)
    with torch.no_grad():
        logits = model(pixel_values=(pixel_values * keep)[None]).logits
    return logits.softmax(-1)[0, model.config.label2id["fake"]].item()


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--videos", type=int, default=24, help="Fakes explained per method (default 24).")
    parser.add_argument("--steps", type=int, default=200, help="Training steps of the tiny detector.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of predicting and explaining.")
    args = parse_arguments(parser, argv)
    if args.quick:
        args.videos, args.steps, args.repeats = 4, 20, 1

    with tempfile.TemporaryDirectory(prefix="dfd-bench-explain-") as work_dir:
        work_dir = Path(work_dir)
        model, processor = train_region_detector(work_dir, args.steps)
        scorer = VideoScorer(model, processor, num_workers=1)
        fakes = write_fakes(work_dir, args.videos, seed=1)
        paths = [path for path, _ in fakes]
        patch = model.config.vision_config.patch_size
        region_patches = (REGION_SIZE // patch) ** 2
        grid = IMAGE_SIZE // patch
        uniform = region_patches / grid**2

        predictions = list(scorer.predict(paths, keep_pixel_values=True))
        rows = []
        for method in EXPLANATION_METHODS + ("random",):
            heatmap_method = "integrated_gradients" if method == "random" else method  # random: any, then replaced
            explainer = VideoExplainer(scorer, heatmap_method)
            shares, deleted, fake_probabilities = [], [], []
            generator = torch.Generator().manual_seed(0)
            for (path, region), prediction in zip(fakes, predictions):
                (window,) = explainer.explain(prediction, [0])
                heatmaps = window.heatmaps
                if method == "random":
                    heatmaps = torch.rand(heatmaps.shape, generator=generator).numpy()
                    heatmaps /= heatmaps.sum()
                shares.append(region_share(heatmaps, region, patch))
                pixel_values = prediction.pixel_values[0]
                deleted.append(
                    fake_probability_after_deletion(
                        model, pixel_values, torch.from_numpy(heatmaps), region_patches * NUM_FRAMES, patch
                    )
                )
                fake_probabilities.append(window.fake_probability)
            rows.append(
                {
                    "method": method,
                    "region_share": float(np.mean(shares)),
                    "region_share_min": float(np.min(shares)),
                    "uniform_share": uniform,
                    "times_uniform": float(np.mean(shares)) / uniform,
                    "fake_probability": float(np.mean(fake_probabilities)),
                    "after_deletion": float(np.mean(deleted)),
                }
            )

        default = VideoExplainer(scorer)  # the default method, on the flagged windows, as `dfd predict --explain`
        times = measure_interleaved(
            {
                "predict": lambda: list(scorer.predict(paths)),
                "explain": lambda: [
                    default.explain(prediction) for prediction in scorer.predict(paths, keep_pixel_values=True)
                ],
            },
            args.repeats,
        )
        timing = {
            "method": default.method,
            "videos": len(paths),
            "predict_s": times["predict"],
            "explain_s": times["explain"],
            "explain_vs_predict": times["explain"] / times["predict"],
        }

    columns = ["method", "region_share", "region_share_min", "uniform_share", "times_uniform"]
    columns += ["fake_probability", "after_deletion"]
    tables = [
        format_table(
            f"Faithfulness on {args.videos} synthetic fakes (tiny detector, {args.steps} steps)", columns, rows
        ),
        format_table("Cost of an explanation (decode + score + explain vs decode + score)", list(timing), [timing]),
    ]
    best = max((row for row in rows if row["method"] != "random"), key=lambda row: row["region_share"])
    goals = [
        goal(
            "default method is the most faithful",
            best["region_share"],
            f"{default.method} has the largest region share",
            best["method"] == default.method,
        ),
        goal("explanation cost vs plain prediction (x)", timing["explain_vs_predict"], "reported", None),
    ]
    return report(args, "explain", torch.device("cpu"), tables, goals, rows=rows, timing=timing)


if __name__ == "__main__":
    main()
