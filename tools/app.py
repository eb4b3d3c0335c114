"""`dfd serve`: a web page to drop videos on and read the detector's verdict, for moderators and Hub visitors.

    dfd serve --model Arko007/deepfake-detector-dfd-sota --port 7860

Per video the page shows the verdict by the model's decision rule (inference.DecisionRule) with the score it used,
the threshold and the flagged windows, the timeline of window scores with every flagged window shaded, the most
suspicious window's frames, where its fake evidence lies when it is flagged and explanations are on (`dfd predict
--explain`'s picture), and its JSON report (`dfd predict --format json`'s record).
Videos are scored by `VideoScorer`, as by `dfd predict` and the endpoint, under the endpoint handler's limits on size,
duration and windows (the same `DFD_MAX_*` variables). Gradio is an optional extra: `pip install "dfd-detector[app]"`.
"""

import argparse
import os
import tempfile
import uuid

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..explaining_dfd import VideoExplainer, pixels_to_images
from ..inputs_dfd import Limits, video_file
from ..results_dfd import VideoError, VideoPrediction
from ..scoring_dfd import VideoScorer, describe_error
from .files import write_json
from .loading import load_scorer
from .plots import write_explanation, write_plot


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: the app never phones home

DEFAULT_WINDOWS = 0  # windows of the model's training duration (its window_duration), up to DFD_MAX_WINDOWS
FRAME_THUMBNAIL_SIZE = 512


@dataclass
class VideoResult:
    """What the page shows for one video: its name and either its one-line error or its verdict and files."""

    name: str
    error: str | None = None
    record: dict | None = None
    timeline: str | None = None
    frames: list[tuple[str, str]] = field(default_factory=list)  # (image path, caption)
    explanation: str | None = None  # PNG of where the most suspicious window's fake evidence lies, when flagged
    report: str | None = None

    @property
    def verdict(self) -> str:
        if self.record is None:
            return f"**{self.name}**: error: {self.error}"
        record = self.record
        line = (
            f"**{self.name}**: verdict **{record['label']}**, fake score {record['fake_score']:.3f} ({record['rule']}, "
            f"threshold {record['threshold']:.3f})"
        )
        if len(record["windows"]) > 1:
            flagged = ", ".join(_time_range(window) for window in record["flagged_windows"]) or "none"
            line += f"; flagged windows: {flagged}; mean {record['mean_fake_probability']:.3f}"
        return line + (f" (error: {self.error})" if self.error else "")


def _time_range(window: dict) -> str:
    if window["start"] is None or window["end"] is None:
        return f"#{window['window'] + 1}"
    return f"{window['start']:.2f}-{window['end']:.2f} s"


class VideoAnalyzer:
    """
    Checks, scores and illustrates videos for the page. Every file it makes lives in a fresh folder per request under
    `work_dir`, as Gradio serves outputs from files.
    """

    def __init__(self, scorer: VideoScorer, limits: Limits | None = None, work_dir: str | None = None):
        self.scorer = scorer
        self.explainer = VideoExplainer(scorer)
        # An explanation costs dozens of forward and backward passes (benchmarks/bench_explain.py): on a CPU, with a
        # full-size model, minutes per video; so it is on by default only on a GPU.
        self.explain_by_default = scorer.device.type == "cuda"
        self.limits = limits or Limits()
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="dfd-app-"))

    def analyze(
        self, inputs: list[tuple[str, str, bool]], num_windows: int | None, progress=None, explain: bool | None = None
    ) -> list[VideoResult]:
        """
        One `VideoResult` per (name, source, uploaded) input, in order; a bad input becomes its one-line error. A
        source is an uploaded file (`uploaded`: a file the page received) or an http(s) URL: every one passes the
        input gate, which refuses paths on this server whether they exist or not. `num_windows`: windows per video,
        or None (or 0) for windows of the training duration, up to the limit. `progress(fraction, desc)` hears about
        each step. `explain`: show where a flagged video's fake evidence lies (default: `explain_by_default`).
        """
        progress = progress or (lambda fraction, desc: None)
        explain = self.explain_by_default if explain is None else explain
        num_windows = num_windows or None
        if num_windows is not None:
            self.limits.check_windows(num_windows)
        run_dir = self.work_dir / uuid.uuid4().hex
        run_dir.mkdir(parents=True)
        results = []
        for position, (name, source, uploaded) in enumerate(inputs):
            progress(position / len(inputs), f"Scoring {name}")
            result = VideoResult(name)
            results.append(result)
            try:
                with video_file(source, local_paths=uploaded, limits=self.limits) as path:
                    (prediction,) = self.scorer.predict([path], num_windows, keep_pixel_values=True)
            except ValueError as error:
                result.error = describe_error(error)
                continue
            self._illustrate(result, prediction, run_dir / str(position), explain)
        progress(1.0, "Done")
        return results

    def _illustrate(self, result: VideoResult, prediction: VideoPrediction | VideoError, folder: Path, explain: bool):
        if isinstance(prediction, VideoError):
            result.error = prediction.reason
            return
        folder.mkdir()
        record = prediction.to_dict()
        record["path"] = result.name  # the name the user knows, not the server's temporary file
        result.record = record
        write_plot(record, folder / "timeline.png")
        result.timeline = str(folder / "timeline.png")
        result.report = str(write_json(folder / f"{Path(result.name).stem or 'video'}.json", record))
        result.frames = self._suspicious_frames(prediction, folder)
        if explain and flagged_most_suspicious(prediction):
            (window,) = self.explainer.explain(prediction, flagged_most_suspicious(prediction))
            path = folder / "explanation.png"
            write_explanation(result.name, window, path, self.explainer.method.replace("_", " "))
            result.explanation = str(path)

    def _suspicious_frames(self, prediction: VideoPrediction, folder: Path):
        """The most suspicious window's distinct frames as the model saw them (face crops when it crops faces)."""
        window = prediction.windows[prediction.most_suspicious_window]
        processor = self.scorer.processor
        rows = prediction.pixel_values[prediction.most_suspicious_window][window.positions]
        frames = []
        for image, frame, time in zip(pixels_to_images(rows, processor.image_mean, processor.image_std), window.frames, window.timestamps):
            path = folder / f"frame-{frame:06d}.jpg"
            Image.fromarray(image).save(path, quality=90)
            caption = f"frame {frame}" + ("" if time is None else f" at {time:.2f} s")
            frames.append((str(path), caption))
        return frames


def flagged_most_suspicious(prediction: VideoPrediction) -> list[int]:
    """The most suspicious window, if it is flagged: the one the page explains."""
    return [window for window in prediction.flagged_windows if window == prediction.most_suspicious_window]


def _import_gradio():
    try:
        import gradio
    except ImportError:
        raise ImportError('the app needs Gradio: pip install "dfd-detector[app]"') from None
    return gradio


def _inputs(files: list[str] | None, urls: str | None) -> list[tuple[str, str, bool]]:
    """(name, source, uploaded) of every uploaded file and every non-empty line of the URL box."""
    named = [(Path(path).name, path, True) for path in files or []]
    return named + [(line.strip(), line.strip(), False) for line in (urls or "").splitlines() if line.strip()]


def _summary(results: list[VideoResult]) -> str:
    labels = [result.record["label"] for result in results if result.record is not None]
    counts = ", ".join(f"{labels.count(label)} {label}" for label in sorted(set(labels)))
    errors = len(results) - len(labels)
    return f"{len(results)} video(s): {counts or 'none scored'}" + (f", {errors} with errors" if errors else "")


def build_app(analyzer: VideoAnalyzer, default_windows: int = DEFAULT_WINDOWS, title: str = "DFD deepfake detector"):
    """The Gradio Blocks page around `analyzer`."""
    gr = _import_gradio()
    limits = analyzer.limits
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(
            f"# {title}\nDrop one or more videos, or paste video URLs (one per line). Each video is cut into time "
            "windows as long as the model's training videos (or as many as the slider says, 0: automatic), 12 evenly "
            "spaced frames each; it is fake when its top window's fake probability reaches the model's threshold. "
            f"Up to {limits.max_input_bytes / 1e6:g} MB and {limits.max_duration:g} s per video."
        )
        with gr.Row():
            files = gr.File(label="Videos", file_count="multiple", file_types=["video"], type="filepath")
            with gr.Column():
                urls = gr.Textbox(label="Video URLs", placeholder="https://example.com/video.mp4", lines=3)
                windows = gr.Slider(
                    0,
                    limits.max_windows,
                    value=min(default_windows, limits.max_windows),
                    step=1,
                    label="Time windows (0: windows of the training duration)",
                )
                explain = gr.Checkbox(
                    value=analyzer.explain_by_default,
                    label="Show where the fake evidence lies in a flagged video (dozens of passes per video: "
                    "minutes on a CPU)",
                )
                button = gr.Button("Analyze", variant="primary")
        results = gr.State([])
        summary = gr.Markdown()

        def analyze(files, urls, num_windows, explain, progress=gr.Progress()):
            inputs = _inputs(files, urls)
            if not inputs:
                raise gr.Error("Add a video file or a URL first.")
            report = lambda fraction, desc: progress(fraction, desc=desc)  # noqa: E731
            analyzed = analyzer.analyze(inputs, int(num_windows), report, bool(explain))
            return analyzed, _summary(analyzed)

        button.click(analyze, inputs=[files, urls, windows, explain], outputs=[results, summary], show_progress="full")

        @gr.render(inputs=results)
        def show(results: list[VideoResult]):
            for result in results:
                with gr.Group():
                    gr.Markdown(result.verdict, elem_classes="dfd-verdict")
                    if result.record is None:
                        continue
                    gr.Image(result.timeline, label="Fake probability over time", elem_classes="dfd-timeline")
                    if result.explanation:
                        gr.Image(
                            result.explanation,
                            label="Where the fake evidence lies in the most suspicious window (red, outlined)",
                            elem_classes="dfd-explanation",
                        )
                    if result.frames:
                        gr.Gallery(
                            result.frames,
                            label="Frames of the most suspicious window",
                            columns=6,
                            height="auto",
                            object_fit="contain",
                            elem_classes="dfd-frames",
                        )
                    gr.DownloadButton("Download JSON report", value=result.report, size="sm")

    return app


def serve(model: str, port: int | None = None, share: bool = False, host: str | None = None, windows=DEFAULT_WINDOWS):
    """Load the detector and serve the page until interrupted. `host`/`port` None: Gradio's (env) defaults."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    analyzer = VideoAnalyzer(load_scorer(model, device, limits=Limits()))
    build_app(analyzer, windows).queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=share, show_error=False
    )


def run(args) -> int:
    max_windows = Limits().max_windows
    if not 0 <= args.windows <= max_windows:
        raise ValueError(f"--windows {args.windows} is outside [0, {max_windows}] (DFD_MAX_WINDOWS)")
    serve(args.model, args.port, args.share, "127.0.0.1", args.windows)
    return 0


def add_parser(subparsers, parent: argparse.ArgumentParser):
    from .cli.common import positive_int
    from .cli.predict import DEFAULT_MODEL

    parser = subparsers.add_parser(
        "serve",
        parents=[parent],
        help="start a web page to drop videos on (Gradio, on 127.0.0.1)",
        description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2].replace("\n", " "),
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"local folder or Hub repo id of a detector (default: {DEFAULT_MODEL})"
    )
    parser.add_argument("--port", type=positive_int, default=7860, help="port on 127.0.0.1 (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also publish the page through a public gradio.live link")
    parser.add_argument(
        "--windows",
        type=int,
        default=DEFAULT_WINDOWS,
        help="the page's default time windows per video (default: 0, windows of the model's training duration)",
    )
    parser.set_defaults(run=run)
