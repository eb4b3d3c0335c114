"""
The detector's web page: drop videos or paste links, and read for each whether it is likely fake, how sure the model
is and where; its API (`/analyze`) answers with the record of `dfd predict --format json`.

    dfd serve --model runs/dfd/model      # from the package, on 127.0.0.1
    python app.py                         # a Space written by `dfd space`: it loads this file from the model

A Hub file: it imports only public libraries (gradio, torch, PIL; matplotlib through plots_dfd) and its siblings,
relatively, so a Space loads it with the model's code and needs nothing of ours installed. Videos are scored by
`VideoScorer` under the server's `Limits`, and every one passes the input gate: a file the page received, or an
http(s) URL (public addresses, a deadline, the size cap); a path on the server is refused with the same line whether
it exists or not (unless the operator sets DFD_ALLOW_LOCAL_PATHS=1). The page keeps no files of its own (pictures and
reports travel inside it); Gradio's uploads are deleted at a bounded age and when the server stops.
"""

import io
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .cards_dfd import (
    CSS,
    Progress,
    Thumbnail,
    VideoReport,
    render_cards,
    render_notice,
    render_progress,
    render_summary,
)
from .decision_dfd import DecisionRule
from .explaining_dfd import VideoExplainer, pixels_to_images
from .inputs_dfd import Limits
from .plots_dfd import explanation_figure, png_bytes, timeline_figure
from .results_dfd import VideoError
from .scoring_dfd import VideoScorer, default_dtype, describe_error
from .settings_dfd import allow_local_paths, download_seconds, max_frame_pixels


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: the page never phones home
import gradio as gr  # noqa: E402


TITLE = "Deepfake check"
THUMBNAIL_SIDE = 240  # pixels, the longer side
TIMELINE_WIDTHS = (8.0, 3.6)  # inches: wide screens, phones
EXPLANATION_COLUMNS = (6, 3)
PICTURE_DPI = 150  # sharp on high-density screens
# Gradio's upload list cuts long file names short: they wrap instead, so that every upload can be told apart.
UPLOADS_CSS = """
.dfd-uploads .filename, .dfd-uploads .filename .stem { white-space: normal; overflow: visible; text-overflow: clip;
  overflow-wrap: anywhere; max-width: none; }
.dfd-uploads .filename { display: table-cell; font-size: 0; }  /* no gap between the name and its extension */
.dfd-uploads .filename .stem, .dfd-uploads .filename .ext { display: inline; font-size: var(--text-md); }
"""
# Gradio's copies of uploads: every CLEANUP_SECONDS, those older than UPLOAD_MAX_AGE_SECONDS are deleted.
CLEANUP_SECONDS = 300
UPLOAD_MAX_AGE_SECONDS = 1800


@dataclass
class VideoInput:
    """A video as the page got it: `name` as the user knows it, `source` to score, `uploaded`: a file received."""

    name: str
    source: str
    uploaded: bool


def page_inputs(files: list[str] | None, urls: str | None) -> list[VideoInput]:
    """Every uploaded file (named by its file name), then every non-empty line of the URL box, in order."""
    uploaded = [VideoInput(Path(path).name, path, True) for path in files or []]
    lines = [line.strip() for line in (urls or "").splitlines() if line.strip()]
    return uploaded + [VideoInput(line, line, False) for line in lines]


def checked_windows(value, limits: Limits) -> int | None:
    """The windows asked per video: None for automatic (0 or nothing), else a whole number within the limit."""
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ValueError(f"windows must be 0 (automatic) or a whole number of parts, got {value!r}")
    limits.check_windows(int(value))
    return int(value)


class VideoAnalyzer:
    """
    Scores the page's videos one after another with the scorer's own pieces (`prepare`, `forward`, the pipeline's
    `predict_video`), so that it can say how far each video is and stop between batches of windows; draws what the
    page shows from the windows the model saw (no second decode).
    """

    def __init__(self, scorer: VideoScorer):
        self.scorer = scorer
        self.limits = scorer.limits or Limits()
        self.one_part_threshold = DecisionRule.from_config(scorer.model.config, scorer.threshold).threshold
        self.read_paths = allow_local_paths()  # DFD_ALLOW_LOCAL_PATHS: the operator lets the URL box name paths
        try:
            self.explainer = VideoExplainer(scorer)
        except ValueError:  # int8 layers pass no gradients
            self.explainer = None

    def analyze(
        self,
        inputs: list[VideoInput],
        windows: int | None = None,
        explain: bool = False,
        illustrate: bool = True,
        stop: threading.Event | None = None,
    ) -> Iterator[Progress | VideoReport]:
        """
        `Progress` as the work goes on and one `VideoReport` per input, in order. `windows`: parts per video (None:
        at the training density); `illustrate`: draw the timeline and thumbnails (the API needs only records);
        `explain`: show where a flagged video's fake evidence lies. Once `stop` is set, the video being scored is
        dropped and the rest are reported as not checked.
        """
        stop = stop or threading.Event()
        for position, video in enumerate(inputs):
            scored = yield from self._score(video, position, len(inputs), windows, stop)
            if scored is None:
                yield VideoReport(video.name, stopped=True)
                continue
            if isinstance(scored, VideoError):
                yield VideoReport(video.name, error=scored.reason)
                continue
            prediction, aspect = scored
            record = {**prediction.to_dict(), "path": video.name}
            report = VideoReport(video.name, record=record, one_part_threshold=self.one_part_threshold)
            explained = explain and self.explainer and prediction.most_suspicious_window in prediction.flagged_windows
            try:
                if illustrate:
                    self._draw(report, prediction, aspect)
                if illustrate and explained:
                    yield Progress(position, len(inputs), video.name, "finding where the fake evidence lies")
                    self._explain(report, prediction)
            except Exception as error:  # noqa: BLE001 - the verdict stands without its pictures
                record["notes"] = [*record["notes"], f"pictures not drawn: {describe_error(error)}"]
            yield report

    def _score(self, video: VideoInput, position: int, total: int, windows: int | None, stop: threading.Event):
        """Yields its progress; returns (prediction, frame aspect ratio), a `VideoError`, or None once stopped."""
        if stop.is_set():
            return None
        yield Progress(position, total, video.name, "reading the video" if video.uploaded else "downloading the video")
        items = self.scorer.prepare(video.source, windows, local_paths=video.uploaded or self.read_paths)
        if isinstance(items, VideoError):
            return items
        outputs, batch = [], self.scorer.batch_size
        try:
            for start in range(0, len(items), batch):
                if stop.is_set():
                    return None
                yield Progress(position, total, video.name, "checking its parts", start, len(items))
                outputs += self.scorer.forward(items[start : start + batch])
            prediction = self.scorer.pipeline.predict_video(outputs, self.scorer.threshold)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, it concerns this video only
            return VideoError(video.name, describe_error(error))
        prediction.pixel_values = torch.cat([item["pixel_values"] for item in items])
        metadata = items[0]["metadata"]
        whole_frames = getattr(self.scorer.processor, "crop", "frame") == "frame"  # face crops are square
        aspect = metadata.width / metadata.height if whole_frames and metadata.width and metadata.height else 1.0
        return prediction, aspect

    def _draw(self, report: VideoReport, prediction, aspect: float):
        """The timelines, and the thumbnails: the most suspicious window's distinct frames as the model saw them."""
        report.timelines = tuple(
            png_bytes(timeline_figure(report.record, width), PICTURE_DPI) for width in TIMELINE_WIDTHS
        )
        window = prediction.windows[prediction.most_suspicious_window]
        rows = prediction.pixel_values[window.row][window.positions]
        processor = self.scorer.processor
        size = (
            (THUMBNAIL_SIDE, round(THUMBNAIL_SIDE / aspect))
            if aspect >= 1
            else (round(THUMBNAIL_SIDE * aspect), THUMBNAIL_SIDE)
        )
        for image, frame, time_ in zip(
            pixels_to_images(rows, processor.image_mean, processor.image_std), window.frames, window.timestamps
        ):
            buffer = io.BytesIO()
            Image.fromarray(image).resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=85)
            report.thumbnails.append(Thumbnail(buffer.getvalue(), frame, time_))

    def _explain(self, report: VideoReport, prediction):
        (window,) = self.explainer.explain(prediction, [prediction.most_suspicious_window])
        method = self.explainer.method.replace("_", " ")
        report.explanations = tuple(
            png_bytes(explanation_figure(report.name, window, method, columns), PICTURE_DPI)
            for columns in EXPLANATION_COLUMNS
        )


def _size_words(limits: Limits) -> str:
    """The limits a video is held to, as they are enforced (inputs_dfd.Limits), in a moderator's words."""
    duration = limits.max_duration
    duration = f"{duration / 60:g} minutes" if duration >= 60 and duration % 60 == 0 else f"{duration:g} seconds"
    return (
        f"Each video may be up to {limits.max_input_bytes / 1e6:g} MB and {duration} long, with pictures of up to "
        f"{max_frame_pixels() / 1e6:.0f} megapixels; links must answer within {download_seconds():g} seconds. "
        f"Reading the frames it checks may take at most {limits.max_decoded_frames:,} decoded frames, which a long "
        "video with few keyframes (a screen recording, say) can pass: then check it in fewer parts, or cut a clip."
    )


def _intro(scorer: VideoScorer, title: str, limits: Limits) -> str:
    frames = scorer.processor.num_frames
    window = getattr(scorer.model.config, "window_duration", None)
    parts = f"in parts of about {window:g} seconds" if window else "as one part"
    return (
        f"# {title}\n"
        "Drop videos or paste links: for each video the detector says whether it is **likely fake** or **likely "
        "real**, how sure it is, and which part looks manipulated. A score is a probability, not a proof: check the "
        f"suspicious part yourself.\n\nIt checks each video {parts}, looking at {frames} evenly spaced frames of each "
        f"part. {_size_words(limits)} Files on the server cannot be named: upload them."
    )


def build_page(scorer: VideoScorer, windows: int = 0, title: str = TITLE):
    """The Gradio page around `scorer`, its parts per video preset to `windows` (0: automatic)."""
    analyzer = VideoAnalyzer(scorer)
    limits = analyzer.limits
    stops: dict[str, threading.Event] = {}  # the running analysis of each browser session
    window = getattr(scorer.model.config, "window_duration", None)
    with gr.Blocks(
        title=title, analytics_enabled=False, delete_cache=(CLEANUP_SECONDS, UPLOAD_MAX_AGE_SECONDS)
    ) as page:
        gr.Markdown(_intro(scorer, title, limits))
        with gr.Row(equal_height=False):
            with gr.Column(min_width=300):
                # Any file is taken, so that one that is not a video is named in the results with the reason.
                files = gr.File(label="Videos", file_count="multiple", type="filepath", elem_classes="dfd-uploads")
            with gr.Column(min_width=300):
                urls = gr.Textbox(
                    label="Or links to videos, one per line", placeholder="https://example.com/video.mp4", lines=3
                )
                with gr.Accordion("Options", open=False):
                    automatic = f"a part per {window:g} seconds" if window else "one part"
                    parts = gr.Slider(
                        0,
                        limits.max_windows,
                        value=min(windows, limits.max_windows),
                        step=1,
                        label="Parts per video",
                        info=f"0: automatic, {automatic} of video. More parts place a fake stretch more precisely, "
                        "but each must look more fake to be flagged.",
                    )
                    slow = " Slow on this server (no graphics card): minutes per video."
                    slow = "" if scorer.device.type == "cuda" else slow
                    explain = gr.Checkbox(
                        value=scorer.device.type == "cuda" and analyzer.explainer is not None,
                        visible=analyzer.explainer is not None,
                        label="Show where the fake evidence lies in a likely fake video",
                        info="Tints the regions of its frames that drove the score." + slow,
                    )
                with gr.Row():
                    analyze = gr.Button("Analyze", variant="primary")
                    stop = gr.Button("Stop", variant="stop", interactive=False)
        status = gr.HTML()
        summary = gr.HTML()
        cards = gr.HTML()
        records = gr.Textbox(visible=False)

        def start(request: gr.Request):
            stops[request.session_hash] = threading.Event()
            notice = render_notice("Waiting for the detector…")
            return gr.update(interactive=False), gr.update(interactive=True), notice

        def run(files, urls, windows, explain, request: gr.Request):
            inputs = page_inputs(files, urls)
            if not inputs:
                yield render_notice("Add a video file or a link first."), "", ""
                return
            stopping = stops.setdefault(request.session_hash, threading.Event())
            started, reports = time.monotonic(), []
            try:
                for event in analyzer.analyze(inputs, checked_windows(windows, limits), bool(explain), stop=stopping):
                    if isinstance(event, Progress):
                        yield render_progress(event), gr.skip(), gr.skip()
                        continue
                    reports.append(event)
                    yield gr.skip(), render_summary(reports, len(inputs)), render_cards(reports)
            finally:
                stops.pop(request.session_hash, None)
            checked = sum(report.record is not None for report in reports)
            if stopping.is_set():
                done = f"Stopped: {checked} of {len(inputs)} videos checked; the results below are those."
            else:
                done = f"Done: {checked} of {len(inputs)} videos checked in {time.monotonic() - started:.0f} s."
            yield render_notice(done), gr.skip(), gr.skip()

        def finish():
            return gr.update(interactive=True), gr.update(interactive=False)

        def stop_run(request: gr.Request):
            if request.session_hash in stops:
                stops[request.session_hash].set()
            return gr.update(interactive=False), render_notice("Stopping after the current step…")

        private = {"queue": False, "api_visibility": "private"}
        analyze.click(start, None, [analyze, stop, status], **private).then(
            run,
            [files, urls, parts, explain],
            [status, summary, cards],
            api_visibility="private",
            show_progress="hidden",
            concurrency_id="detector",
        ).then(finish, None, [analyze, stop], **private)
        stop.click(stop_run, None, [stop, status], **private)

        def analyze_api(videos: list[str] | None, urls: str | None, windows: float | None) -> str:
            """
            A JSON list with, per video (the uploaded files, then each non-empty line of `urls`, an http(s) URL), the
            record of `dfd predict --format json` (label, score, fake_score, threshold, flagged_windows, windows, ...)
            or {"path", "error"}. `windows`: parts per video, 0 for automatic. JSON text rather than objects:
            gradio_client takes every object with a "path" in an answer for a file to download.
            """
            inputs = page_inputs(videos, urls)
            if not inputs:
                raise gr.Error("no video: upload files or give http(s) URLs, one per line", print_exception=False)
            try:
                windows = checked_windows(windows, limits)
            except ValueError as error:
                raise gr.Error(str(error), print_exception=False) from None
            reports = analyzer.analyze(inputs, windows, illustrate=False)
            return json.dumps([report.to_dict() for report in reports if isinstance(report, VideoReport)], indent=2)

        # The API's own windows input: the slider would refuse an out-of-range value with a logged traceback.
        api_windows = gr.Number(0, precision=0, visible=False, label="windows")
        gr.Button(visible=False).click(
            analyze_api, [files, urls, api_windows], records, api_name="analyze", concurrency_id="detector"
        )
    return page


def load_scorer(model: str) -> VideoScorer:
    """A scorer of the detector in folder or Hub repo `model`, on the GPU if there is one, under the server's limits."""
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    detector = AutoModelForVideoClassification.from_pretrained(model, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(model, trust_remote_code=True)
    return VideoScorer(detector, processor, device, default_dtype(device), limits=Limits(), local_paths=False)


def serve(
    model, host: str | None = None, port: int | None = None, share: bool = False, windows: int = 0, title: str = TITLE
):
    """
    Serve the page until Ctrl-C or SIGTERM. `model`: a detector folder, a Hub id, or a `VideoScorer`; `host` and
    `port` None: Gradio's defaults (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, else 127.0.0.1:7860). Uploads go to a
    folder of this server's own, removed when it stops.
    """
    scorer = load_scorer(model) if isinstance(model, (str, os.PathLike)) else model
    uploads = tempfile.mkdtemp(prefix="dfd-page-", dir=os.environ.get("GRADIO_TEMP_DIR"))
    os.environ["GRADIO_TEMP_DIR"] = uploads  # read as components are made
    stopping = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set()) if main else None
    page = None
    try:
        page = build_page(scorer, windows, title)
        page.queue(default_concurrency_limit=1).launch(
            server_name=host,
            server_port=port,
            share=share,
            show_error=False,
            prevent_thread_lock=True,
            css=CSS + UPLOADS_CSS,
            i18n=gr.I18n(en={"common.upload": "Upload videos"}),  # Gradio's upload button lacks this name
        )
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if page is not None:
            page.close()
        if main:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(uploads, ignore_errors=True)


__all__ = ["VideoAnalyzer", "VideoInput", "build_page", "checked_windows", "load_scorer", "page_inputs", "serve"]
