"""What `dfd predict` does (its command line is predict.py): label videos real or fake, on one device or split between
the processes of `accelerate launch`."""

import os
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from ...explaining_dfd import VideoExplainer
from ...plots_dfd import explanation_figure, timeline_figure
from ...results_dfd import VideoError
from ...scoring_dfd import VideoScorer, describe_error
from ..loading import load_scorer
from ..plots import save_png
from .common import CommandError, UsageError
from .formats import FORMATTERS
from .inputs import expand_inputs
from .predict import OUTPUT_FORMATS
from .results import ResultFiles, check_plot_folder, plot_file_names


def resolve_device(name: str, state: PartialState) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        return state.device if state.device.type == "cuda" else torch.device("cuda")
    return state.device  # accelerate's pick: this process's GPU under `accelerate launch`, else the best available


def scorer_for(args, device: torch.device) -> VideoScorer:
    try:
        return load_scorer(
            args.model,
            device,
            args.dtype,
            args.batch_size,
            args.num_workers,
            threshold=args.threshold,
            compile_blocks=args.compile,
        )
    except OSError as error:
        raise CommandError(str(error)) from None


def write_explanations(explainer: VideoExplainer, prediction, png_stem: Path):
    """`<png_stem>-window<N>.png` for each flagged window of a scored video: its frames with the heatmap overlaid."""
    method = explainer.method.replace("_", " ")
    for window in explainer.explain(prediction):
        png = png_stem.with_name(f"{png_stem.name}-window{window.window + 1}.png")
        save_png(explanation_figure(Path(prediction.path).name, window, method), png)


def plot_title(record: dict) -> str:
    return f"{Path(record['path']).name}: {record['label']} (fake score {record['fake_score']:.3f}, {record['rule']})"


def keep_result(result, path: str, plot: Path | None, results: ResultFiles | None) -> tuple[dict, bool]:
    """
    One video's record, plotted and streamed to the journal. A failure in these steps is this video's one-line error
    (the batch goes on); returns (record, whether every step succeeded).
    """
    try:
        record = result.to_dict()
    except Exception as error:  # noqa: BLE001 - whatever went wrong, it concerns this video only
        record = VideoError(path, f"cannot report its result ({describe_error(error)})").to_dict()
    succeeded = "error" not in record
    for note in record.get("notes", []):
        tqdm.write(f"warning: {path}: {note}", file=sys.stderr)
    if "error" in record:
        tqdm.write(f"error: {path}: {record['error']}", file=sys.stderr)
    elif plot is not None:
        try:
            save_png(timeline_figure(record, title=plot_title(record)), plot)
        except Exception as error:  # noqa: BLE001
            tqdm.write(f"error: {path}: plot {plot} not written ({describe_error(error)})", file=sys.stderr)
            succeeded = False
    if results is not None and (problem := results.append(record)):
        tqdm.write(f"error: {problem}", file=sys.stderr)
    return record, succeeded


def score_share(state, scorer, videos, args, plots: dict, explanations: dict, results, scored: dict) -> int:
    """
    Score this process's share of `videos` ((input index, path) pairs) into `scored` (input index -> record), as
    they come, so that an interrupted run keeps what it did; explain the flagged windows when asked. Returns how many
    of them failed.
    """
    explainer = VideoExplainer(scorer) if explanations else None
    failures = 0
    keep = explainer is not None
    with state.split_between_processes(list(range(len(videos)))) as positions:
        progress = tqdm(
            total=len(positions), unit="video", file=sys.stderr, disable=len(videos) <= 1 or not state.is_main_process
        )
        paths = [videos[position][1] for position in positions]
        predictions = scorer.predict(paths, args.windows, keep_pixel_values=keep) if paths else ()
        for position, result in zip(positions, predictions):
            index, path = videos[position]
            scored[index], succeeded = keep_result(result, path, plots.get(path), results)
            if succeeded and explainer is not None and result.flagged_windows:
                try:
                    write_explanations(explainer, result, explanations[path])
                except Exception as error:  # noqa: BLE001 - whatever went wrong, it concerns this video only
                    tqdm.write(f"error: {path}: cannot explain ({describe_error(error)})", file=sys.stderr)
                    succeeded = False
            failures += not succeeded
            progress.update()
        progress.close()
    return failures


def write_results(records: list[dict], args, output_format: str, results: ResultFiles | None, complete: bool):
    text = FORMATTERS[output_format](records)
    if results is not None:
        results.write(text, complete)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def prepare_outputs(args, state, entries, output_format: str) -> tuple[ResultFiles | None, dict[str, dict]]:
    """
    Check --output and --plot before any video is scored (an input or an unwritable place is refused), and read the
    videos already scored for --resume. Returns this process's result files and path -> done record.
    """
    inputs = [entry for entry in entries if isinstance(entry, str)]
    results, done = None, {}
    if args.output:
        results = ResultFiles(args.output, output_format, state.process_index)
        results.check(inputs, args.resume)
        done = results.read_done() if args.resume else {}
    elif args.resume:
        raise UsageError("--resume needs --output: it continues the run whose results are in that file")
    if args.plot:
        check_plot_folder(args.plot, "--plot")
    if args.explain:
        check_plot_folder(args.explain, "--explain")
        if args.dtype == "int8":
            raise UsageError("--explain needs gradients, which int8 layers do not pass: use --dtype fp32 or bf16")
    state.wait_for_everyone()  # every process has read the journals before any writes to its own
    if results is not None:
        results.open()
    return results, done


def end_early(error: BaseException, state, args, entries, output_format, results, done: dict, scored: dict):
    """
    Ctrl-C or a crash while scoring: write the results there are (the journals stay, for --resume), then leave.
    After Ctrl-C the process exits at once: decodes still running are abandoned rather than waited for.
    """
    if results is not None:
        results.close()
    records = []
    if state.is_main_process:
        # Every process's records are in its journal (the interrupt may fall between a record's journal line and
        # `scored`); without --output, this process's are in `scored` only.
        found = {**done, **(results.read_all_journals() if results else {})}
        found.update((entries[index], record) for index, record in scored.items())
        records = [found[entry] for entry in entries if isinstance(entry, str) and entry in found]
    if records:
        try:
            write_results(records, args, output_format, results, complete=False)
        except CommandError as write_error:
            print(f"error: {write_error}", file=sys.stderr)
        where = f" to {args.output}; --resume scores the rest" if args.output else ""
        print(f"wrote the {len(records)} results there are{where}", file=sys.stderr)
    if isinstance(error, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(130)


def run(args) -> int:
    if args.clips is not None:
        print("warning: --clips is deprecated: use --windows", file=sys.stderr)
        args.windows = args.windows or args.clips
    if args.device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Launched processes on the CPU: hide the GPUs before anything initialises CUDA, since accelerate's barriers
        # name a GPU per process even for CPU (gloo) runs and fail with fewer GPUs than processes.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    # Under `accelerate launch` (or torchrun), every process scores its share of the videos and the main one writes
    # the merged result. Without GPUs, processes talk through gloo, which PartialState only picks with cpu=True.
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    output_format = args.format or OUTPUT_FORMATS.get(Path(args.output or "").suffix.lower(), "table")
    entries = expand_inputs(args.paths)
    results, done = prepare_outputs(args, state, entries, output_format)
    paths = [entry for entry in entries if isinstance(entry, str)]
    plots = dict(zip(paths, (Path(args.plot) / name for name in plot_file_names(paths)))) if args.plot else {}
    explanations = {}
    if args.explain:  # <video's plot name without .png>-window<N>.png
        names = plot_file_names(paths)
        explanations = {path: Path(args.explain) / name.removesuffix(".png") for path, name in zip(paths, names)}
    videos = [(index, entry) for index, entry in enumerate(entries) if isinstance(entry, str) and entry not in done]
    if state.is_main_process:
        for entry in entries:
            if isinstance(entry, VideoError):
                print(f"error: {entry}", file=sys.stderr)
        if len(videos) < len(paths):
            print(f"--resume: {len(paths) - len(videos)} videos already scored in {args.output}", file=sys.stderr)

    device = resolve_device(args.device, state)
    scored, failures = {}, 0
    try:
        if videos:
            with state.main_process_first():  # the first load copies the model's code into the modules cache
                scorer = scorer_for(args, device)
            failures = score_share(state, scorer, videos, args, plots, explanations, results, scored)
    except BaseException as error:
        end_early(error, state, args, entries, output_format, results, done, scored)
        raise
    if results is not None:
        results.close()
    scored = dict(gather_object(list(scored.items())))
    failures = sum(gather_object([failures]))
    records = [
        scored.get(index) or done.get(entry) if isinstance(entry, str) else entry.to_dict()
        for index, entry in enumerate(entries)
    ]
    if state.is_main_process:
        write_results(records, args, output_format, results, complete=True)
    # A launcher stops every process as soon as one exits with an error: keep them all alive until the result is out.
    state.wait_for_everyone()
    return 1 if failures or any("error" in record for record in records) else 0
