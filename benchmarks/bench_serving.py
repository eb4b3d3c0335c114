"""
The serving container under load, with and without batching windows across requests.

    .venv/bin/python benchmarks/bench_serving.py [--clients 8] [--seconds 20] [--rounds 2] [--size 320x240]
                                                 [--config tiny|full] [--quick]

An export of a detector with random weights (the tiny config, or the full ViT-L/14 one) is served by its own
serving_dfd.py, as its Dockerfile runs it, twice: batched (DFD_SERVE_BATCH_SIZE windows per forward pass, collected
for DFD_SERVE_BATCH_WAIT_MS) and unbatched (one window per pass, no waiting). `--clients` threads each send a raw
video (`--windows` windows) and wait for the answer, again and again, for `--seconds`; the servers take turns for
`--rounds` rounds, so that a change in the machine's load hits both. Reported per mode: requests answered, errors,
answers that differ from the unloaded server's, throughput, p50/p99 latency, windows per forward pass and the
server's peak RSS; then batched / unbatched ratios.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from common import CACHE_DIR, base_parser, format_table, goal, parse_arguments, report
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.tools.export import processor_for, save_detector
from dfd.tools.synthetic_videos import write_video
from models import benchmark_config


MODES = {
    "batched": {"DFD_SERVE_BATCH_SIZE": "8", "DFD_SERVE_BATCH_WAIT_MS": "5"},
    "unbatched": {"DFD_SERVE_BATCH_SIZE": "1", "DFD_SERVE_BATCH_WAIT_MS": "0"},
}


def export(config_name: str, folder: Path) -> Path:
    """A detector with random weights, exported as training exports one (written once into the cache)."""
    if (
        not (folder / "serving_dfd.py").is_file()
        or (folder / "serving_dfd.py").read_bytes()
        != (Path(__file__).resolve().parents[1] / "serving_dfd.py").read_bytes()
    ):
        torch.manual_seed(0)
        model = DFDForVideoClassification(benchmark_config(config_name))
        save_detector(model, processor_for(model.config), folder)
    return folder


def videos(folder: Path, width: int, height: int) -> list[bytes]:
    """Three 2 s clips of different content at 25 fps."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for seed in range(3):
        path = folder / f"clip{seed}-{width}x{height}.mp4"
        if not path.is_file():
            frames = np.random.default_rng(seed).integers(0, 256, (50, height, width, 3), dtype=np.uint8)
            write_video(path, frames, fps=25, crf=28)
        clips.append(path.read_bytes())
    return clips


class Server:
    def __init__(self, folder: Path, environment: dict, threads: int | None):
        # No deadline: on a CPU, the full model takes minutes per request under load.
        environment = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "DFD_DTYPE": "fp32",
            "DFD_SERVE_REQUEST_SECONDS": "3600",
            **environment,
        }
        if threads:
            environment["OMP_NUM_THREADS"] = str(threads)
        self.log = open(folder.parent / "server.log", "w")
        command = [sys.executable, "serving_dfd.py", "--model", str(folder), "--port", "0"]
        self.process = subprocess.Popen(
            command, cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the server did not start: {(folder.parent / 'server.log').read_text()[-2000:]}")
        self.url = line.split()[-1]

    def rss(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024

    def health(self) -> dict:
        return httpx.get(self.url + "/health").json()

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def fake_scores(answer: list[dict]) -> list[float]:
    return [window["fake_probability"] for window in answer[0]["windows"]]


def load(server: Server, clips: list[bytes], references: list, clients: int, seconds: float, windows: int) -> dict:
    """`clients` closed-loop clients for `seconds`: latencies, errors, wrong answers, windows per pass, peak RSS."""
    latencies, errors, wrong = [], [], []
    before, peak_rss = server.health(), [server.rss()]
    end = time.monotonic() + seconds

    def client(seed: int):
        order = np.random.default_rng(seed)
        with httpx.Client(timeout=600) as session:
            while time.monotonic() < end:
                index = int(order.integers(len(clips)))
                start = time.perf_counter()
                response = session.post(
                    server.url, params={"windows": windows}, content=clips[index], headers={"Content-Type": "video/mp4"}
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors.append(response.text)
                elif not np.allclose(fake_scores(response.json()), references[index], atol=1e-5):
                    wrong.append(index)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak_rss.append(server.rss())
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    after = server.health()
    passes, window_count = (after[key] - before[key] for key in ("forward_passes", "windows"))
    for error in sorted(set(errors))[:3]:
        print(f"error: {error}", file=sys.stderr)
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "wrong": len(wrong),
        "elapsed": elapsed,
        "latencies": latencies,
        "passes": passes,
        "windows": window_count,
        "peak_rss": max(peak_rss),
        "idle_rss": peak_rss[0],
    }


def summary(mode: str, runs: list[dict]) -> dict:
    latencies = np.concatenate([run["latencies"] for run in runs])
    elapsed = sum(run["elapsed"] for run in runs)
    return {
        "mode": mode,
        "requests": sum(run["requests"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
        "wrong answers": sum(run["wrong"] for run in runs),
        "requests/s": sum(run["requests"] for run in runs) / elapsed,
        "windows/s": sum(run["windows"] for run in runs) / elapsed,
        "p50 latency (s)": float(np.percentile(latencies, 50)),
        "p99 latency (s)": float(np.percentile(latencies, 99)),
        "windows per pass": sum(run["windows"] for run in runs) / max(1, sum(run["passes"] for run in runs)),
        "peak RSS (MB)": max(run["peak_rss"] for run in runs) / 1e6,
        "RSS growth (MB)": max(run["peak_rss"] - run["idle_rss"] for run in runs) / 1e6,
    }


def main(argv=None):
    parser = base_parser(__doc__.strip().split("\n\n")[0])
    parser.add_argument("--config", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--windows", type=int, default=2, help="windows per request (default: 2)")
    parser.add_argument(
        "--size",
        default="320x240",
        help="the videos' WIDTHxHEIGHT (default: 320x240); small ones leave the time to the model, not to decoding",
    )
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR / "serving")
    args = parse_arguments(parser, argv)
    folder = export(args.config, args.cache_dir / f"export-{args.config}" / "repository")
    clips = videos(args.cache_dir / "videos", *map(int, args.size.split("x")))
    if args.quick:  # the full model takes about a minute per window on a CPU
        args.clients, args.seconds, args.rounds, args.windows, clips = 2, 3, 1, 1, clips[:1]

    runs = {mode: [] for mode in MODES}
    references = None
    for _ in range(args.rounds):
        for mode, environment in MODES.items():
            server = Server(folder, environment, args.threads)
            try:
                answers = [
                    httpx.post(
                        server.url,
                        params={"windows": args.windows},
                        content=clip,
                        headers={"Content-Type": "video/mp4"},
                        timeout=600,
                    ).json()
                    for clip in clips
                ]  # one request at a time: the reference answers, and a warm-up
                references = references or [fake_scores(answer) for answer in answers]
                runs[mode].append(load(server, clips, references, args.clients, args.seconds, args.windows))
            finally:
                server.stop()

    rows = [summary(mode, mode_runs) for mode, mode_runs in runs.items()]
    batched, unbatched = rows
    ratios = {
        "mode": "batched / unbatched",
        "requests/s": batched["requests/s"] / unbatched["requests/s"],
        "windows/s": batched["windows/s"] / unbatched["windows/s"],
        "p50 latency (s)": batched["p50 latency (s)"] / unbatched["p50 latency (s)"],
        "p99 latency (s)": batched["p99 latency (s)"] / unbatched["p99 latency (s)"],
    }
    columns = list(batched)
    title = (
        f"Serving the {args.config} detector: {args.clients} clients, {args.size} videos, {args.windows} windows per "
        f"request, {args.rounds} x {args.seconds:g} s per mode"
    )
    correct = all(row["errors"] == 0 and row["wrong answers"] == 0 for row in rows)
    goals = [goal("every answer right under load", float(correct), "all", correct)]
    report(
        args,
        "bench_serving",
        torch.device("cpu"),
        [format_table(title, columns, [*rows, ratios])],
        goals,
        config=args.config,
        clients=args.clients,
        seconds=args.seconds,
        rounds=args.rounds,
        windows=args.windows,
        size=args.size,
        rows=rows,
        ratios=ratios,
    )
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
