"""
Training step (forward, backward, AdamW step) of DFDForVideoClassification: time and memory with adapters in all
blocks, with and without gradient checkpointing (all or some blocks), and with adapters only in the last blocks
(the frozen prefix runs without autograd).

    .venv/bin/python benchmarks/bench_train_step.py [--json train_step.json] [--quick]

On a GPU: the full config, 16 videos x 12 frames x 384^2 in bf16 as train_accelerate.py runs it (frozen CLIP weights
stored in bf16, trainable weights in fp32, bf16 autocast); peak memory from the CUDA allocator (allocated and
reserved) and what the device holds for the process besides (CUDA context, library workspaces), which together
must fit a 24 GB card. On a CPU: the tiny config in fp32 (a full-size step takes minutes there). Everywhere, the
activation memory autograd keeps for the backward pass is counted exactly (saved-tensor hooks), so the CPU run
already shows the memory trade-offs.
"""

import gc
from contextlib import nullcontext

import torch

from common import (
    base_parser,
    format_table,
    goal,
    measure,
    parse_arguments,
    report,
    resolve_device,
)
from dfd.modeling_dfd import DFDForVideoClassification
from models import benchmark_config


def variants(num_layers: int) -> list[dict]:
    """The comparisons behind the project's performance goals, scaled to the number of blocks (24 for ViT-L/14)."""
    every = list(range(num_layers))
    half, sixth = max(1, num_layers // 2), max(1, num_layers // 6)
    three_quarters = max(1, num_layers * 3 // 4)
    all_blocks = f"adapters in all {num_layers} blocks"
    return [
        {"name": all_blocks, "adapter_layers": every, "checkpoint": []},
        {"name": f"{all_blocks}, checkpoint all", "adapter_layers": every, "checkpoint": None},
        {
            "name": f"{all_blocks}, checkpoint first {three_quarters}",
            "adapter_layers": every,
            "checkpoint": list(range(three_quarters)),
        },
        {"name": f"adapters in last {half} of {num_layers} blocks", "adapter_layers": every[-half:], "checkpoint": []},
        {
            "name": f"adapters in last {sixth} of {num_layers} blocks",
            "adapter_layers": every[-sixth:],
            "checkpoint": [],
        },
    ]


def saved_activation_bytes(model, forward) -> int:
    """Bytes of the tensors autograd keeps from the forward for the backward pass, weights excluded."""
    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = forward()
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(saved.values())


def cuda_memory(device) -> dict:
    """
    Peaks of the allocator since its last reset, and `peak_device_gb`: the peak it reserved plus what the device
    holds for this process outside it (the CUDA context, cuBLAS/cuDNN workspaces), i.e. what the card must hold.
    Read from the whole device's free memory, so it assumes no other process uses the GPU.
    """
    free, total = torch.cuda.mem_get_info(device)
    outside_allocator = total - free - torch.cuda.memory_reserved(device)
    peak_reserved = torch.cuda.max_memory_reserved(device)
    return {
        "peak_allocated_gb": torch.cuda.max_memory_allocated(device) / 1e9,
        "peak_reserved_gb": peak_reserved / 1e9,
        "peak_device_gb": (peak_reserved + outside_allocator) / 1e9,
    }


def measure_variant(config_name, variant, device, precision, batch_size, num_frames, repeats, warmup) -> dict:
    config = benchmark_config(config_name, adapter_layers=variant["adapter_layers"])
    row = {"variant": variant["name"], "config": config_name, "batch": batch_size, "frames": num_frames}
    torch.manual_seed(0)
    with torch.device(device):
        model = DFDForVideoClassification(config).train()
    if precision == "bf16":
        model.cast_frozen_weights(torch.bfloat16)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    model.set_checkpointed_blocks(variant["checkpoint"])
    row["checkpointed_blocks"] = sum(layer.gradient_checkpointing for layer in model.dfd.encoder.layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    size = config.image_size
    pixel_values = torch.randn(batch_size, num_frames, 3, size, size, device=device)
    labels = torch.arange(batch_size, device=device) % 2

    def forward():
        with autocast:
            return model(pixel_values, labels=labels).loss

    def step():
        forward().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        row["saved_activations_gb"] = saved_activation_bytes(model, forward) / 1e9
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row["step_s"] = measure(step, repeats, warmup=warmup, device=device)
        row["videos_per_s"] = batch_size / row["step_s"]
        if device.type == "cuda":
            row.update(cuda_memory(device))
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
    return row


def train_goals(rows, device):
    """<= 0.8 s per step on an H100 and <= 24 GB on the device with adapters in all blocks (the best such variant)."""
    if device.type != "cuda":
        return [goal("step time, all-block adapters (s)", None, "<= 0.8 on H100", None, "needs a GPU")]
    all_blocks = [r for r in rows if r["variant"].startswith("adapters in all") and "step_s" in r]
    fitting = [r for r in all_blocks if r["peak_device_gb"] <= 24]
    best = min(fitting, key=lambda r: r["step_s"], default=None)
    if best is None:
        return [goal("all-block adapters within 24 GB", None, "<= 24 GB", False, "no variant fits")]
    note = f"{best['variant']} on {torch.cuda.get_device_name(device)}"
    return [
        goal("step time, all-block adapters (s)", best["step_s"], "<= 0.8 on H100", best["step_s"] <= 0.8, note),
        goal("peak device memory, same variant (GB)", best["peak_device_gb"], "<= 24", True, note),
    ]


def main(argv=None):
    parser = base_parser(__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (GPU when present).")
    parser.add_argument("--config", choices=["tiny", "full"], help="Default: full on GPU, tiny on CPU.")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="bf16: as train_accelerate.py. Default: bf16 on GPU, fp32 on CPU.",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_arguments(parser, argv)

    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    config_name = args.config or ("full" if on_gpu else "tiny")
    precision = args.precision or ("bf16" if on_gpu else "fp32")
    batch_size, num_frames, repeats, warmup = args.batch_size, args.num_frames, args.repeats, 2
    if args.quick:
        batch_size, num_frames, repeats, warmup = 2, 4, 1, 1
    num_layers = benchmark_config(config_name).vision_config.num_hidden_layers

    rows = []
    for variant in variants(num_layers):
        # Whatever ran before (the previous variant's model, optimizer state and activations) gives its memory back,
        # so that each variant's peak counts its own memory alone.
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        rows.append(measure_variant(config_name, variant, device, precision, batch_size, num_frames, repeats, warmup))
    reference = rows[0]
    for row in rows:
        if "step_s" in row and "step_s" in reference:
            row["time_vs_no_checkpointing"] = row["step_s"] / reference["step_s"]
            row["activations_vs_no_checkpointing"] = row["saved_activations_gb"] / reference["saved_activations_gb"]
    goals = train_goals(rows, device)

    columns = [
        "variant",
        "checkpointed_blocks",
        "step_s",
        "videos_per_s",
        "saved_activations_gb",
        "peak_allocated_gb",
        "peak_reserved_gb",
        "peak_device_gb",
        "time_vs_no_checkpointing",
        "activations_vs_no_checkpointing",
        "error",
    ]
    title = f"Training step, {config_name} config, {batch_size} x {num_frames} frames, {device.type} {precision}"
    return report(
        args,
        "train_step",
        device,
        [
            format_table(f"{title} (best of {repeats})", columns, rows),
        ],
        goals,
        precision=precision,
        rows=rows,
    )


if __name__ == "__main__":
    main()
