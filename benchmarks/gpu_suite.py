"""
The GPU parts of the benchmarks in one process and one JSON: inference (eager and compiled), training step, data
pipeline. Sized to finish in under 6 minutes on one H100/H200 with random weights and no network.

    benchmarks/gpu_suite.sh [OUTPUT.json]          # on the GPU machine ($OUT/gpu_suite.json by default)
    benchmarks/gpu_suite.sh OUTPUT.json --tiny     # the same code path with the tiny config (CPU check)

The JSON is rewritten after each part, so a run cut short keeps what it measured; a part that fails is recorded
with its error and the others still run.
"""

import argparse
import time
import traceback
from pathlib import Path

import bench_data
import bench_inference
import bench_train_step
from common import machine_facts, resolve_device, write_json


def parts(tiny: bool) -> list[tuple[str, object, list[str]]]:
    """(name, benchmark module, its arguments) in the order they run: the slowest to compile goes first."""
    if tiny:
        compile_quickly = ["--compile", "yes", "--compile-backend", "aot_eager"]
        return [
            ("inference", bench_inference, ["--quick", *compile_quickly]),
            ("train_step", bench_train_step, ["--quick"]),
            ("data", bench_data, ["--quick", "--workers", "0"]),
        ]
    return [
        ("inference", bench_inference, ["--configs", "full", "--batch-sizes", "1,4,16,32", "--compile", "yes"]),
        ("train_step", bench_train_step, ["--config", "full", "--batch-size", "16"]),
        ("data", bench_data, ["--workers", "1,4,16", "--num-videos", "96"]),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="Where to write the suite's JSON.")
    parser.add_argument("--tiny", action="store_true", help="Tiny config and inputs: checks the suite on any machine.")
    args = parser.parse_args(argv)

    device = resolve_device("auto")
    suite = {"benchmark": "gpu_suite", "tiny": args.tiny, "machine": machine_facts(device), "parts": {}}
    failed = []
    for name, module, part_arguments in parts(args.tiny):
        print(f"== {name}: {' '.join(part_arguments)}", flush=True)
        start = time.perf_counter()
        try:
            suite["parts"][name] = module.main(part_arguments)
        except Exception as error:  # noqa: BLE001 - one failing part must not lose the others' numbers
            traceback.print_exc()
            suite["parts"][name] = {"error": f"{type(error).__name__}: {error}"}
            failed.append(name)
        suite["parts"][name]["wall_s"] = time.perf_counter() - start
        write_json(args.json, suite)
    print(f"wrote {args.json}")
    if failed:
        raise SystemExit(f"failed parts: {', '.join(failed)}")


if __name__ == "__main__":
    main()
