"""Helpers shared by the benchmark scripts: timing, machine facts, ratio tables and the JSON report."""

import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from datetime import date
from io import BytesIO
from pathlib import Path

import torch

import dfd
from dfd.tools.files import write_json


BENCHMARKS_DIR = Path(__file__).resolve().parent

# Generated inputs (test videos, frame caches); gitignored, reused between runs. Tests point it elsewhere.
CACHE_DIR = Path(os.environ.get("DFD_BENCHMARK_CACHE", BENCHMARKS_DIR / ".cache"))


def resolve_device(name: str) -> torch.device:
    """`auto` picks the GPU when there is one: the same command line measures whatever machine it runs on."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_interleaved(
    functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[str, float]:
    """
    Best (minimum) wall time in seconds of each function over `repeats` runs, after `warmup` untimed runs. The runs
    take turns (A, B, A, B, ...) so that a change in the machine's load hits every function alike, and the minimum is
    the run least disturbed by other processes (see `timeit`): both matter on a shared 2-core machine.
    """
    return {name: min(times) for name, times in interleaved_times(functions, repeats, warmup, device).items()}


def interleaved_times(
    functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: torch.device | None = None
) -> dict[str, list[float]]:
    """Every wall time in seconds of each function, run in turns as `measure_interleaved` explains."""
    device = device or torch.device("cpu")
    for _ in range(warmup):
        for function in functions.values():
            function()
    synchronize(device)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def measure(function: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Best wall time of one function (see `measure_interleaved`)."""
    return measure_interleaved({"function": function}, repeats, warmup, device)["function"]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def nvidia_driver_version() -> str | None:
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def gpu_facts(device: torch.device) -> dict:
    properties = torch.cuda.get_device_properties(device)
    return {
        "gpu_memory_gb": properties.total_memory / 1e9,
        "compute_capability": f"{properties.major}.{properties.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "driver": nvidia_driver_version(),
    }


def machine_facts(device: torch.device) -> dict:
    """What the numbers depend on, stored next to them, and which checkout of the package measured them."""
    import transformers

    facts = {
        "date": date.today().isoformat(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "dfd_package": str(Path(dfd.__file__).parent),
    }
    if device.type == "cuda":
        facts.update(gpu_facts(device))
    # The optional packages' versions, None where they cannot be imported (found without importing them).
    for name in ("triton", "av", "datasets"):
        facts[name] = importlib.metadata.version(name) if importlib.util.find_spec(name) else None
    return facts


def import_revision(revision: str, folder: Path, package: str, modules: list[str]):
    """
    The Hub files of git `revision` (the flat `*.py` files at the repository root) imported as the package `package`
    from `folder`, beside this checkout's `dfd`: an earlier version measured against today's in one run. Imports
    `modules` of it and returns the package.
    """
    archive = subprocess.run(
        ["git", "-C", str(BENCHMARKS_DIR.parent), "archive", revision, "--", "*.py"], capture_output=True, check=True
    ).stdout
    root = folder / package
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, members=[member for member in tar if "/" not in member.name], filter="data")
    (root / "__init__.py").touch()
    spec = importlib.util.spec_from_file_location(package, root / "__init__.py", submodule_search_locations=[str(root)])
    sys.modules[package] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[package])
    for module in modules:
        importlib.import_module(f"{package}.{module}")
    return sys.modules[package]


def format_table(title: str, columns: list[str], rows: list[dict]) -> str:
    """A plain-text (Markdown) table of `rows` (dicts keyed by `columns`), floats with 3 significant digits."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, bool):
            return "yes" if value else "no"
        return "-" if value is None else str(value)

    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path, help="Also write the results to this JSON file.")
    parser.add_argument(
        "--quick", action="store_true", help="Tiny inputs and one repeat: checks the script runs, measures nothing."
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads. 1 keeps CPU ratios steady on a shared machine, where threads that wait for each "
        "other stall whenever another process takes a core.",
    )
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def goal(name: str, value: float | None, target: str, met: bool | None, note: str = "") -> dict:
    """One of the project's performance goals and its measured value; `met=None` when this run cannot tell (no GPU)."""
    return {"goal": name, "measured": value, "target": target, "met": met, "note": note}


GOAL_COLUMNS = ["goal", "measured", "target", "met", "note"]


def report(args, benchmark: str, device: torch.device, tables: list[str], goals: list[dict], **results) -> dict:
    """Print the benchmark's tables and its goals, and save everything as JSON with `--json`."""
    for table in tables:
        print(table)
    print(format_table("Goals", GOAL_COLUMNS, goals))
    result = {"benchmark": benchmark, "quick": args.quick, "machine": machine_facts(device), **results, "goals": goals}
    if args.json:
        write_json(args.json, result)
    return result
