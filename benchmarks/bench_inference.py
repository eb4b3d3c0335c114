"""
Inference speed of DFDForVideoClassification against its floor, the bare CLIPVisionModel forward on the same frames.

    .venv/bin/python benchmarks/bench_inference.py [--json inference.json] [--quick] [--compile yes]

Random weights (nothing downloaded). On a GPU: batch 1/4/16/32 of 12x384^2 videos, eager and compiled, with weights
in bf16 and with fp32 weights under bf16 autocast (what `dfd predict` runs). On a CPU: fp32, the tiny config at all
batch sizes and the full ViT-L/14 config at batch 1 (one 12-frame video takes ~1 min there, so `--full-cpu-frames`
frames, 2 by default: the adapter/backbone ratio does not depend on it); then the precisions a CPU can run the
detector in, side by side (`cpu_precision_rows`), which `scoring_dfd.default_dtype` chooses from.
"""

import copy
from contextlib import nullcontext
from functools import partial

import torch
from torch._dynamo.utils import counters
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


# precision -> (dtype of the weights and inputs, whether the forward runs under bf16 autocast)
PRECISIONS = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False), "autocast": (torch.float32, True)}
# Compiled outputs may differ from eager ones by this fraction of the largest output (bf16 rounding).
OUTPUT_TOLERANCE = 0.05
LATENCY_GOAL_MS = 15


def build_models(config, device, dtype):
    torch.manual_seed(0)
    with torch.device(device):  # initialise the weights where they will run (seconds instead of a minute on CPU)
        detector = DFDForVideoClassification(config).to(dtype).eval()
        backbone = CLIPVisionModel(config.vision_config).to(dtype).eval()
    return detector, backbone


def output_tensor(output) -> torch.Tensor:
    """The detector's logits, the backbone's pooled features: what is compared between eager and compiled."""
    return (output.logits if hasattr(output, "logits") else output.pooler_output).float()


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def forward_rows(
    config_name,
    config,
    device,
    precision,
    batch_sizes,
    num_frames,
    repeats,
    warmup,
    compile_batch_sizes,
    compile_backend,
):
    """Eager rows for every batch size, then rows with every encoder block compiled (`compile_backend`)."""
    dtype, autocast = PRECISIONS[precision]
    detector, backbone = build_models(config, device, dtype)
    run_context = partial(torch.autocast, device.type, dtype=torch.bfloat16) if autocast else nullcontext
    size = config.image_size
    rows = []
    eager_outputs = {}

    def time_side_by_side(models, batch_size, compiled):
        """`models`: variant -> (model, takes frames as images); timed in turns on the same pixels."""
        generator = torch.Generator().manual_seed(batch_size)
        pixel_values = torch.randn(batch_size, num_frames, 3, size, size, generator=generator).to(device, dtype)
        calls = {
            variant: partial(model, pixel_values.flatten(0, 1) if takes_images else pixel_values)
            for variant, (model, takes_images) in models.items()
        }
        with torch.inference_mode(), run_context():
            # The first call pays for allocations, and compilation for compiled models.
            first_call_s = measure_interleaved(calls, 1, warmup=0, device=device)
            seconds = measure_interleaved(calls, repeats, warmup=warmup, device=device)
            outputs = {variant: output_tensor(call()) for variant, call in calls.items()}
        floor = seconds[next(iter(seconds))]
        for model_index, variant in enumerate(calls):
            row = {
                "config": config_name,
                "precision": precision,
                "variant": variant,
                "batch": batch_size,
                "frames": num_frames,
                "latency_ms": seconds[variant] * 1e3,
                "videos_per_s": batch_size / seconds[variant],
                "first_call_s": first_call_s[variant],
                "time_vs_clip": seconds[variant] / floor,
            }
            if compiled:
                row["output_diff_vs_eager"] = relative_difference(
                    outputs[variant], eager_outputs[model_index, batch_size]
                )
            else:
                eager_outputs[model_index, batch_size] = outputs[variant]
            rows.append(row)

    for batch_size in batch_sizes:
        time_side_by_side({"clip (floor)": (backbone, True), "dfd": (detector, False)}, batch_size, compiled=False)
    if compile_batch_sizes:
        # Both compiled the same way, block by block (regional compilation): seconds to compile, not minutes. Static
        # shapes: each batch size gets the graph a process that only sees that batch size would get.
        for layer in backbone.encoder.layers:
            layer.compile(backend=compile_backend, dynamic=False)
        detector.compile_blocks(backend=compile_backend, dynamic=False)
        compiled_models = {"clip, compiled blocks": (backbone, True), "dfd, compile_blocks()": (detector, False)}
        for batch_size in compile_batch_sizes:
            time_side_by_side(compiled_models, batch_size, compiled=True)
    return rows


def cpu_precision_rows(config_name, config, num_frames, repeats, compile_backend=None, skip_bf16=False):
    """
    One video of `num_frames` frames through the detector on the CPU in every precision it can run in, timed in turns
    on the same pixels: fp32 eager (the reference), bf16 weights and input, bf16 autocast over fp32 weights (`dfd
    predict --dtype bf16`), int8 dynamic quantization of nn.Linear (`--dtype int8`), and, with `compile_backend`,
    fp32 `compile_blocks()`. Each row: time against fp32 and the largest logit difference from fp32's (absolute and
    relative to the largest fp32 logit). `skip_bf16`: leave out the bf16 rows (a CPU without bf16 units emulates
    them several times slower than fp32, which adds many minutes on the full config).
    """
    from dfd.scoring_dfd import quantize_linear_layers  # dfd.scoring_dfd needs PyAV, which the GPU image lacks

    torch.manual_seed(0)
    detector = DFDForVideoClassification(config).eval()
    size = config.image_size
    pixel_values = torch.randn(1, num_frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    bf16_pixel_values = pixel_values.bfloat16()

    def autocast(model):
        def call():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(pixel_values=pixel_values)

        return call

    calls = {"fp32 eager": partial(detector, pixel_values=pixel_values)}
    if not skip_bf16:
        bf16_detector = copy.deepcopy(detector).to(torch.bfloat16)
        calls["bf16 weights and input"] = partial(bf16_detector, pixel_values=bf16_pixel_values)
        calls["bf16 autocast, fp32 weights (--dtype bf16)"] = autocast(detector)
    int8_detector = quantize_linear_layers(copy.deepcopy(detector))
    calls["int8 dynamic nn.Linear (--dtype int8)"] = partial(int8_detector, pixel_values=pixel_values)
    if compile_backend:
        compiled = copy.deepcopy(detector)
        compiled.compile_blocks(backend=compile_backend, dynamic=False)
        calls["fp32 compile_blocks()"] = partial(compiled, pixel_values=pixel_values)
    with torch.inference_mode():
        first_call_s = measure_interleaved(calls, 1, warmup=0)  # allocations; compilation for compile_blocks()
        seconds = measure_interleaved(calls, repeats, warmup=0)
        logits = {variant: call().logits.float() for variant, call in calls.items()}
    reference = logits["fp32 eager"]
    return [
        {
            "config": config_name,
            "frames": num_frames,
            "variant": variant,
            "latency_ms": seconds[variant] * 1e3,
            "time_vs_fp32": seconds[variant] / seconds["fp32 eager"],
            "first_call_s": first_call_s[variant],
            "max_logit_diff": (logits[variant] - reference).abs().max().item(),
            "relative_logit_diff": relative_difference(logits[variant], reference),
        }
        for variant in calls
    ]


def add_anchor_ratios(rows, anchor_precision):
    """`time_vs_eager_clip`: against the eager bare CLIP of the same config and batch in `anchor_precision`."""
    anchors = {
        (row["config"], row["batch"]): row["latency_ms"]
        for row in rows
        if row["variant"] == "clip (floor)" and row["precision"] == anchor_precision
    }
    for row in rows:
        anchor = anchors.get((row["config"], row["batch"]))
        row["time_vs_eager_clip"] = row["latency_ms"] / anchor if anchor else None


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


def find_row(rows, variant, batch):
    return next((row for row in rows if (row["variant"], row["batch"]) == (variant, batch)), None)


def inference_goals(rows, device, precision):
    """
    The goals of the reference precision's rows (bf16 on a GPU), at batch 16 where measured: adapter cost over bare
    CLIP (<= 5% GPU, <= 10% CPU) eager and compiled, compiled detector >= 1.4x eager bare CLIP, batch-1 latency of
    the compiled detector <= 15 ms (GPU), and compiled outputs equal to eager ones within bf16 rounding (all rows).
    """
    on_gpu = device.type == "cuda"
    config = "full" if any(row["config"] == "full" for row in rows) else "tiny"
    reference = [row for row in rows if (row["config"], row["precision"]) == (config, precision)]
    batch = 16 if find_row(reference, "dfd", 16) else max(row["batch"] for row in reference)
    note = f"{config} config, {precision}, batch {batch}, {'GPU' if on_gpu else 'CPU'}"
    limit_percent = 5 if on_gpu else 10

    def overhead_goal(name, detector_row, backbone_row):
        if detector_row is None:
            return goal(name, None, f"<= {limit_percent}", None, "not compiled in this run")
        percent = (detector_row["latency_ms"] / backbone_row["latency_ms"] - 1) * 100
        return goal(name, percent, f"<= {limit_percent}", percent <= limit_percent, note)

    goals = [
        overhead_goal(
            "adapter cost over bare CLIP, eager (%)",
            find_row(reference, "dfd", batch),
            find_row(reference, "clip (floor)", batch),
        ),
        overhead_goal(
            "adapter cost over bare CLIP, compiled (%)",
            find_row(reference, "dfd, compile_blocks()", batch),
            find_row(reference, "clip, compiled blocks", batch),
        ),
    ]
    compiled = find_row(reference, "dfd, compile_blocks()", batch)
    if compiled:
        speedup = 1 / compiled["time_vs_eager_clip"]
        goals.append(
            goal("compiled dfd vs eager bare CLIP", speedup, ">= 1.4x (GPU)", speedup >= 1.4 if on_gpu else None, note)
        )
    else:
        goals.append(goal("compiled dfd vs eager bare CLIP", None, ">= 1.4x (GPU)", None, "not compiled in this run"))
    latency = find_row(reference, "dfd, compile_blocks()", 1)
    latency_note = f"{config} config, {precision}, compiled"
    goals.append(
        goal(
            "latency, batch 1 (ms)",
            latency and latency["latency_ms"],
            f"<= {LATENCY_GOAL_MS} (GPU)",
            latency["latency_ms"] <= LATENCY_GOAL_MS if latency and on_gpu else None,
            latency_note if latency else "batch 1 not compiled in this run",
        )
    )
    compared = [row for row in rows if "output_diff_vs_eager" in row]
    if compared:
        worst = max(compared, key=lambda row: row["output_diff_vs_eager"])
        worst_note = f"worst: {worst['variant']}, {worst['config']}, {worst['precision']}, batch {worst['batch']}"
        difference = worst["output_diff_vs_eager"]
        goals.append(
            goal(
                "compiled vs eager outputs, max |diff| / max |eager|",
                difference,
                f"<= {OUTPUT_TOLERANCE}",
                difference <= OUTPUT_TOLERANCE,
                worst_note,
            )
        )
    return goals


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (GPU when present).")
    parser.add_argument(
        "--precisions",
        help="Comma-separated, the first is the goals' reference: fp32, bf16 (weights and inputs), autocast (fp32 "
        "weights, bf16 autocast, as `dfd predict`). Default: bf16,autocast on GPU, fp32 on CPU.",
    )
    parser.add_argument(
        "--configs", default=None, help="Comma-separated: tiny,full. Default: full on GPU, both on CPU."
    )
    parser.add_argument("--batch-sizes", default="1,4,16,32")
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--full-cpu-frames", type=int, default=2, help="Frames per video for the full config on CPU.")
    parser.add_argument("--repeats", type=int, default=None, help="Timed runs per point (default 10 GPU, 5 CPU).")
    parser.add_argument(
        "--no-cpu-precisions",
        dest="cpu_precisions",
        action="store_false",
        help="On a CPU, leave out the table of precisions (the GPU suite: dfd.scoring_dfd needs PyAV, which it lacks).",
    )
    parser.add_argument(
        "--emulated-bf16",
        action="store_true",
        help="On a CPU without bf16 units, also time the full config in bf16 (emulated: several times fp32's time).",
    )
    parser.add_argument(
        "--compile", choices=["auto", "yes", "no"], default="auto", help="Also time torch.compile (auto: GPU only)."
    )
    parser.add_argument(
        "--compile-batch-sizes", default="1,16", help="Batch sizes timed compiled (each compiles once per precision)."
    )
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: quick check).")
    args = parse_arguments(parser, argv)

    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    precisions = (args.precisions or ("bf16,autocast" if on_gpu else "fp32")).split(",")
    if unknown := set(precisions) - set(PRECISIONS):
        parser.error(f"--precisions: unknown {sorted(unknown)}; choose from {', '.join(PRECISIONS)}")
    config_names = (args.configs or ("full" if on_gpu else "tiny,full")).split(",")
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    repeats = args.repeats or (10 if on_gpu else 5)
    compile_enabled = args.compile == "yes" or (args.compile == "auto" and on_gpu)
    compile_batch_sizes = [int(size) for size in args.compile_batch_sizes.split(",")] if compile_enabled else []
    warmup = 2
    if args.quick:
        config_names, batch_sizes, repeats, warmup = ["tiny"], [1, 2], 1, 1
        compile_batch_sizes = [1, 2] if compile_enabled else []
    if unmatched := sorted(set(compile_batch_sizes) - set(batch_sizes)):
        parser.error(
            f"--compile-batch-sizes {unmatched}: compiled outputs are compared with eager ones, so each must also be "
            f"in --batch-sizes {batch_sizes}"
        )

    graphs_before = counters["stats"]["unique_graphs"]
    rows = []
    for name in config_names:
        config = benchmark_config(name)
        for precision in precisions:
            if name == "full" and not on_gpu:
                # ~1 min per 12-frame video here: batch 1, fewer frames, 5 timed runs (the first call is the warmup).
                rows += forward_rows(name, config, device, precision, [1], args.full_cpu_frames, 5, 0, [], None)
            else:
                rows += forward_rows(
                    name,
                    config,
                    device,
                    precision,
                    batch_sizes,
                    args.num_frames,
                    repeats,
                    warmup,
                    compile_batch_sizes,
                    args.compile_backend,
                )
    add_anchor_ratios(rows, precisions[0])
    reference_dtype = PRECISIONS[precisions[0]][0]
    layout_config = benchmark_config("tiny" if args.quick else "full")
    layout_rows = adapter_layout_rows(
        layout_config, device, reference_dtype, 16 if on_gpu else 1, args.num_frames, repeats
    )
    goals = inference_goals(rows, device, precisions[0])
    cpu_rows, has_bf16 = [], None
    if not on_gpu and args.cpu_precisions:
        from dfd.scoring_dfd import cpu_has_bf16  # see cpu_precision_rows

        has_bf16 = cpu_has_bf16()
        compile_backend = args.compile_backend if compile_enabled else None
        for name in config_names:
            full = name == "full"
            frames = args.full_cpu_frames if full else args.num_frames
            skip_bf16 = full and not has_bf16 and not args.emulated_bf16
            cpu_rows += cpu_precision_rows(name, benchmark_config(name), frames, repeats, compile_backend, skip_bf16)

    columns = [
        "config",
        "precision",
        "variant",
        "batch",
        "frames",
        "latency_ms",
        "videos_per_s",
        "time_vs_clip",
        "time_vs_eager_clip",
        "first_call_s",
        "output_diff_vs_eager",
    ]
    title = f"Inference, {device.type}, random weights (best of {repeats}; time_vs_eager_clip: vs {precisions[0]})"
    tables = [
        format_table(title, columns, rows),
        format_table("Adapter depthwise conv layout", ["layout", "batch", "conv_ms", "vs_used"], layout_rows),
    ]
    if cpu_rows:
        cpu_columns = [
            "config",
            "frames",
            "variant",
            "latency_ms",
            "time_vs_fp32",
            "first_call_s",
            "max_logit_diff",
            "relative_logit_diff",
        ]
        units = "bf16 units" if has_bf16 else "no bf16 units: bf16 is emulated"
        title = f"CPU precisions, batch 1, interleaved, best of {repeats} ({units})"
        tables.append(format_table(title, cpu_columns, cpu_rows))
    return report(
        args,
        "inference",
        device,
        tables,
        goals,
        precisions=precisions,
        # Graphs torch.compile made: the identical blocks share one per model, precision and batch size.
        compiled_graphs=counters["stats"]["unique_graphs"] - graphs_before,
        rows=rows,
        adapter_layout=layout_rows,
        cpu_has_bf16=has_bf16,
        cpu_precisions=cpu_rows,
    )


if __name__ == "__main__":
    main()
