"""
The frozen prefix: the frozen embeddings and the frozen blocks in front of the first adapter run without autograd,
unless the input itself needs a gradient. Times a training step (forward and backward, default input) of a model whose
adapters sit in the second half of the blocks, in one run:

- `current`: this checkout's model;
- `input needs grad`: the same with `pixel_values.requires_grad`, where the prefix builds its graph (what the
  shortcut saves);
- `baseline` (with `--baseline REV`): modeling_dfd.py and configuration_dfd.py of git revision REV, with the same
  weights (checks that a change to the model did not slow the default path).

    .venv/bin/python benchmarks/bench_frozen_prefix.py --threads 1 [--baseline e00e7c0] [--configs tiny,full]

Random weights (nothing downloaded), fp32 on the CPU, bf16 autocast on a GPU.
"""

import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

from common import base_parser, format_table, goal, import_revision, measure_interleaved, parse_arguments, report
from common import resolve_device
from dfd.modeling_dfd import DFDForVideoClassification
from models import benchmark_config


def training_step(model, pixel_values, labels, device, input_needs_grad=False):
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step():
        inputs = pixel_values.clone().requires_grad_() if input_needs_grad else pixel_values
        with autocast:
            loss = model(inputs, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (GPU when present).")
    parser.add_argument("--configs", default="tiny", help="Comma-separated: tiny,full (full: slow on a CPU).")
    parser.add_argument("--baseline", metavar="REV", help="Also time the model code of this git revision.")
    parser.add_argument("--batch-size", type=int, default=None, help="Videos per step (default 8 tiny, 1 full).")
    parser.add_argument("--num-frames", type=int, default=None, help="Frames per video (default 12 tiny, 2 full).")
    parser.add_argument("--repeats", type=int, default=10)
    args = parse_arguments(parser, argv)
    if args.quick:
        args.configs, args.repeats = "tiny", 1
    device = resolve_device(args.device)

    with tempfile.TemporaryDirectory(prefix="dfd-bench-prefix-") as folder:
        baseline = (
            import_revision(args.baseline, Path(folder), "dfd_baseline", ["modeling_dfd"]) if args.baseline else None
        )
        baseline_module = baseline.modeling_dfd if baseline else None
        rows = []
        for name in args.configs.split(","):
            num_layers = benchmark_config(name).vision_config.num_hidden_layers
            config = benchmark_config(name, adapter_layers=list(range(num_layers // 2, num_layers)))
            batch_size = args.batch_size or (8 if name == "tiny" else 1)
            num_frames = args.num_frames or (12 if name == "tiny" else 2)
            if args.quick:
                batch_size, num_frames = 1, 2
            torch.manual_seed(0)
            with torch.device(device):
                model = DFDForVideoClassification(config).train()
            generator = torch.Generator().manual_seed(0)
            size = config.image_size
            pixel_values = torch.randn(batch_size, num_frames, 3, size, size, generator=generator).to(device)
            labels = torch.arange(batch_size, device=device) % 2
            steps = {
                "current": training_step(model, pixel_values, labels, device),
                "input needs grad": training_step(model, pixel_values, labels, device, input_needs_grad=True),
            }
            if baseline_module is not None:
                baseline_config = baseline_module.DFDConfig(**config.to_diff_dict())
                baseline_config.vision_config._attn_implementation = config.vision_config._attn_implementation
                with torch.device(device):
                    baseline = baseline_module.DFDForVideoClassification(baseline_config).train()
                baseline.load_state_dict(model.state_dict())
                steps["baseline"] = training_step(baseline, pixel_values, labels, device)
            times = measure_interleaved(steps, args.repeats, warmup=1, device=device)
            for variant, seconds in times.items():
                rows.append(
                    {
                        "config": name,
                        "adapters": f"blocks {num_layers // 2}-{num_layers - 1}",
                        "videos x frames": f"{batch_size}x{num_frames}",
                        "variant": variant,
                        "step_ms": seconds * 1000,
                        "vs_current": seconds / times["current"],
                    }
                )

    columns = ["config", "adapters", "videos x frames", "variant", "step_ms", "vs_current"]
    tables = [format_table("Training step with a frozen prefix (best of the runs, interleaved)", columns, rows)]
    goals = []
    for row in rows:
        if row["variant"] == "baseline":
            slowdown = 1 / row["vs_current"]
            goals.append(
                goal(
                    f"{row['config']}: current step time / baseline {args.baseline}",
                    slowdown,
                    "<= 1.05 (no slower)",
                    slowdown <= 1.05,
                )
            )
        if row["variant"] == "input needs grad":
            goals.append(goal(f"{row['config']}: step time saved by the shortcut (x)", row["vs_current"], "> 1", None))
    return report(args, "frozen_prefix", device, tables, goals, rows=rows, baseline=args.baseline)


if __name__ == "__main__":
    main()
