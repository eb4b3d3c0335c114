"""
The GPU parts of the benchmarks in one process and one JSON: inference (eager and compiled, bf16 weights and fp32
weights under autocast), training step, data pipeline. Sized to finish in under 6 minutes on one H100/H200 with
random weights and no network.

    benchmarks/gpu_suite.sh [OUTPUT.json]          # on the GPU machine ($OUT/gpu_suite.json by default)
    benchmarks/gpu_suite.sh OUTPUT.json --tiny     # the same code path with the tiny config (CPU check)

The JSON is rewritten after each part, so a run cut short keeps what it measured; a part that fails is recorded
with its error and the others still run. The data part needs PyAV and 🤗 Datasets: where either is missing (the GPU
image has neither) it is skipped, with the reason in the JSON. The benchmark modules are imported only when their
part runs, so a missing package stops no other part.
"""

import argparse
import gc
import importlib
import importlib.util
import time
import traceback
from pathlib import Path

import torch._dynamo

from common import machine_facts, resolve_device, write_json


def parts(tiny: bool) -> list[tuple[str, str, list[str], tuple[str, ...]]]:
    """
    (name, benchmark module, its arguments, the optional packages it needs) in the order they run. `--tiny` runs
    the real suite's code paths (inductor, both precisions, batch 1 compiled) on the tiny config; on a CPU inductor
    generates C++ instead of Triton kernels.
    """
    if tiny:
        return [
            (
                "inference",
                "bench_inference",
                ["--quick", "--compile", "yes", "--precisions", "bf16,autocast", "--no-cpu-precisions"],
                (),
            ),
            ("train_step", "bench_train_step", ["--quick", "--precision", "bf16"], ()),
            ("data", "bench_data", ["--quick", "--workers", "0"], ("av", "datasets")),
        ]
    inference = ["--configs", "full", "--batch-sizes", "1,16,32", "--compile", "yes", "--compile-batch-sizes", "1,16"]
    return [
        ("inference", "bench_inference", [*inference, "--precisions", "bf16,autocast", "--repeats", "5"], ()),
        ("train_step", "bench_train_step", ["--config", "full", "--batch-size", "16", "--repeats", "3"], ()),
        ("data", "bench_data", ["--workers", "1,4,16", "--num-videos", "96"], ("av", "datasets")),
    ]


def release_memory():
    """Drop what a part left behind (compiled graphs and the models they hold, cached GPU memory) before the next."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def missing_packages(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if importlib.util.find_spec(name) is None]


def run_part(module_name: str, arguments: list[str], needs: tuple[str, ...]) -> dict:
    if missing := missing_packages(needs):
        return {"skipped": f"needs {', '.join(missing)}, not installed here (carry wheels to run this part)"}
    return importlib.import_module(module_name).main(arguments)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="Where to write the suite's JSON.")
    parser.add_argument("--tiny", action="store_true", help="Tiny config and inputs: checks the suite on any machine.")
    args = parser.parse_args(argv)

    device = resolve_device("auto")
    suite = {"benchmark": "gpu_suite", "tiny": args.tiny, "machine": machine_facts(device), "parts": {}}
    suite_start = time.perf_counter()
    failed = []
    for name, module_name, arguments, needs in parts(args.tiny):
        print(f"== {name}: {' '.join(arguments)}", flush=True)
        start = time.perf_counter()
        try:
            suite["parts"][name] = run_part(module_name, arguments, needs)
        except Exception as error:  # noqa: BLE001 - one failing part must not lose the others' numbers
            traceback.print_exc()
            suite["parts"][name] = {"error": f"{type(error).__name__}: {error}"}
            failed.append(name)
        release_memory()
        suite["parts"][name]["wall_s"] = time.perf_counter() - start
        if "skipped" in suite["parts"][name]:
            print(f"skipped: {suite['parts'][name]['skipped']}", flush=True)
        suite["wall_s"] = time.perf_counter() - suite_start
        write_json(args.json, suite)
    print(f"wrote {args.json} ({suite['wall_s']:.0f} s)")
    if failed:
        raise SystemExit(f"failed parts: {', '.join(failed)}")


if __name__ == "__main__":
    main()
