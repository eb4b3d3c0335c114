"""
Inference speed of DFDForVideoClassification against its floor, the bare CLIPVisionModel forward on the same frames.

    .venv/bin/python benchmarks/bench_inference.py [--json inference.json] [--quick] [--compile yes]

Random weights (nothing downloaded). On a GPU: bf16, batch 1/4/16/32 of 12x384^2 videos, eager and compiled. On a
CPU: fp32, the tiny config at all batch sizes and the full ViT-L/14 config at batch 1 (one 12-frame video takes
~1 min there, so `--full-cpu-frames` frames, 2 by default: the adapter/backbone ratio does not depend on it).
"""

from functools import partial

import torch
from transformers import CLIPVisionModel

from common import (
    base_parser,
    format_table,
    goal,
    measure_interleaved,
    parse_arguments,
    report,
    resolve_device,
)
from dfd.modeling_dfd import DFDForVideoClassification, DFDSpatioTemporalAdapter
from models import benchmark_config


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_models(config, device, dtype):
    torch.manual_seed(0)
    with torch.device(device):  # initialise the weights where they will run (seconds instead of a minute on CPU)
        detector = DFDForVideoClassification(config).to(dtype).eval()
        backbone = CLIPVisionModel(config.vision_config).to(dtype).eval()
    return detector, backbone


def forward_rows(
    config_name, config, device, dtype, batch_sizes, num_frames, repeats, warmup, compile_batch_sizes, compile_backend
):
    """Eager rows for every batch size, then rows with every encoder block compiled (`compile_backend`)."""
    detector, backbone = build_models(config, device, dtype)
    size = config.image_size
    rows = []

    def time_side_by_side(models, batch_size):
        """`models`: variant -> (model, takes frames as images); timed in turns on the same pixels."""
        generator = torch.Generator().manual_seed(batch_size)
        pixel_values = torch.randn(batch_size, num_frames, 3, size, size, generator=generator).to(device, dtype)
        calls = {
            variant: partial(model, pixel_values.flatten(0, 1) if takes_images else pixel_values)
            for variant, (model, takes_images) in models.items()
        }
        with torch.inference_mode():
            # The first call pays for allocations, and compilation for compiled models.
            first_call_s = measure_interleaved(calls, 1, warmup=0, device=device)
            seconds = measure_interleaved(calls, repeats, warmup=warmup, device=device)
        floor = seconds[next(iter(seconds))]
        for variant in calls:
            rows.append(
                {
                    "config": config_name,
                    "variant": variant,
                    "batch": batch_size,
                    "frames": num_frames,
                    "latency_ms": seconds[variant] * 1e3,
                    "videos_per_s": batch_size / seconds[variant],
                    "first_call_s": first_call_s[variant],
                    "time_vs_clip": seconds[variant] / floor,
                }
            )

    for batch_size in batch_sizes:
        time_side_by_side({"clip (floor)": (backbone, True), "dfd": (detector, False)}, batch_size)
    if compile_batch_sizes:
        # Both compiled the same way, block by block (regional compilation): seconds to compile, not minutes.
        for layer in backbone.encoder.layers:
            layer.compile(backend=compile_backend)
        detector.compile_blocks(backend=compile_backend)
        compiled = {"clip, compiled blocks": (backbone, True), "dfd, compile_blocks()": (detector, False)}
        for batch_size in compile_batch_sizes:
            time_side_by_side(compiled, batch_size)
    eager_floor = {row["batch"]: row["latency_ms"] for row in rows if row["variant"] == "clip (floor)"}
    for row in rows:
        row["time_vs_eager_clip"] = row["latency_ms"] / eager_floor[row["batch"]]
    return rows


def adapter_layout_rows(config, device, dtype, batch_size, num_frames, repeats):
    """The adapter's depthwise conv on a channels-last view (what the model does) against a contiguous copy."""
    adapter = DFDSpatioTemporalAdapter(config).to(device, dtype)
    grid = config.image_size // config.vision_config.patch_size
    bottleneck = config.adapter_bottleneck
    tokens = torch.randn(batch_size, num_frames, grid, grid, bottleneck, device=device, dtype=dtype)
    channels_last = tokens.permute(0, 4, 1, 2, 3)
    with torch.inference_mode():
        seconds = measure_interleaved(
            {"view": lambda: adapter.conv(channels_last), "copy": lambda: adapter.conv(channels_last.contiguous())},
            repeats,
            warmup=2,
            device=device,
        )
    return [
        {"layout": "channels-last view (used)", "batch": batch_size, "conv_ms": seconds["view"] * 1e3, "vs_used": 1.0},
        {
            "layout": "contiguous copy + conv",
            "batch": batch_size,
            "conv_ms": seconds["copy"] * 1e3,
            "vs_used": seconds["copy"] / seconds["view"],
        },
    ]


def find_row(rows, config, variant, batch):
    return next((r for r in rows if (r["config"], r["variant"], r["batch"]) == (config, variant, batch)), None)


def inference_goals(rows, device):
    """Adapter cost over bare CLIP (<= 5% GPU, <= 10% CPU); compiled detector vs eager bare CLIP (>= 1.4x GPU)."""
    on_gpu = device.type == "cuda"
    config = "full" if any(r["config"] == "full" for r in rows) else "tiny"
    batch = 16 if find_row(rows, config, "dfd", 16) else max(r["batch"] for r in rows if r["config"] == config)
    overhead_percent = (find_row(rows, config, "dfd", batch)["time_vs_eager_clip"] - 1) * 100
    limit_percent = 5 if on_gpu else 10
    note = f"{config} config, batch {batch}, {'GPU' if on_gpu else 'CPU'}"
    goals = [
        goal(
            "adapter cost over bare CLIP (%)",
            overhead_percent,
            f"<= {limit_percent}",
            overhead_percent <= limit_percent,
            note,
        )
    ]
    compiled = find_row(rows, config, "dfd, compile_blocks()", batch)
    if compiled:
        speedup = 1 / compiled["time_vs_eager_clip"]
        goals.append(
            goal("compiled dfd vs eager bare CLIP", speedup, ">= 1.4x (GPU)", speedup >= 1.4 if on_gpu else None, note)
        )
    else:
        goals.append(goal("compiled dfd vs eager bare CLIP", None, ">= 1.4x (GPU)", None, "not compiled in this run"))
    return goals


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (GPU when present).")
    parser.add_argument("--dtype", choices=DTYPES, help="Default: bf16 on GPU, fp32 on CPU.")
    parser.add_argument(
        "--configs", default=None, help="Comma-separated: tiny,full. Default: full on GPU, both on CPU."
    )
    parser.add_argument("--batch-sizes", default="1,4,16,32")
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--full-cpu-frames", type=int, default=2, help="Frames per video for the full config on CPU.")
    parser.add_argument("--repeats", type=int, default=None, help="Timed runs per point (default 10 GPU, 5 CPU).")
    parser.add_argument(
        "--compile", choices=["auto", "yes", "no"], default="auto", help="Also time torch.compile (auto: GPU only)."
    )
    parser.add_argument("--compile-batch-sizes", default="16", help="Batch sizes timed compiled (each compiles once).")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (aot_eager: quick check)."
    )
    args = parse_arguments(parser, argv)

    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    dtype = DTYPES[args.dtype or ("bf16" if on_gpu else "fp32")]
    config_names = (args.configs or ("full" if on_gpu else "tiny,full")).split(",")
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    repeats = args.repeats or (10 if on_gpu else 5)
    compile_enabled = args.compile == "yes" or (args.compile == "auto" and on_gpu)
    compile_batch_sizes = [int(size) for size in args.compile_batch_sizes.split(",")] if compile_enabled else []
    warmup = 2
    if args.quick:
        config_names, batch_sizes, repeats, warmup = ["tiny"], [1, 2], 1, 1
        compile_batch_sizes = [2] if compile_enabled else []

    rows = []
    for name in config_names:
        config = benchmark_config(name)
        if name == "full" and not on_gpu:
            # ~1 min per 12-frame video here: batch 1, fewer frames, 5 timed runs (the first call is the warmup).
            rows += forward_rows(name, config, device, dtype, [1], args.full_cpu_frames, 5, 0, [], None)
        else:
            rows += forward_rows(
                name,
                config,
                device,
                dtype,
                batch_sizes,
                args.num_frames,
                repeats,
                warmup,
                compile_batch_sizes,
                args.compile_backend,
            )
    layout_config = benchmark_config("tiny" if args.quick else "full")
    layout_rows = adapter_layout_rows(layout_config, device, dtype, 16 if on_gpu else 1, args.num_frames, repeats)
    goals = inference_goals(rows, device)

    dtype_name = str(dtype).removeprefix("torch.")
    columns = [
        "config",
        "variant",
        "batch",
        "frames",
        "latency_ms",
        "videos_per_s",
        "time_vs_clip",
        "time_vs_eager_clip",
        "first_call_s",
    ]
    return report(
        args,
        "inference",
        device,
        [
            format_table(f"Inference, {device.type} {dtype_name}, random weights (best of {repeats})", columns, rows),
            format_table("Adapter depthwise conv memory layout", ["layout", "batch", "conv_ms", "vs_used"], layout_rows),
        ],
        goals,
        dtype=dtype_name,
        rows=rows,
        adapter_layout=layout_rows,
    )


if __name__ == "__main__":
    main()
