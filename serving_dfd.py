"""
The serving container: a model folder's handler (handler.py) behind an HTTP server that batches the windows of
concurrent requests into shared forward passes, so that a GPU is kept fed.

    python serving_dfd.py --model /repository --host 0.0.0.0 --port 80    # the container's command (Dockerfile)
    dfd endpoint --model runs/dfd/model --port 8080                       # the same server, from the package

It speaks the Inference Endpoints protocol:

- `POST /` (or `/predict`) with JSON `{"inputs": <base64 video, data: URL or http(s) URL>, "parameters": {...}}`,
  in any charset spelling, or with the video's bytes as the body (`video/*`, `application/octet-stream`) and the
  parameters as query arguments (`?windows=2&threshold=0.9`); the answer is the handler's.
- `GET /health` (and `GET /`): 200 once the model is loaded (the server listens only then), with the requests in
  and the forward passes run and the windows they took (their ratio: how full batching keeps them).
- Errors are `{"error": "<one line>"}`: 400 for a bad request, naming the field (unknown parameters are refused with
  the accepted ones); 413 for a video above `DFD_MAX_INPUT_BYTES`, checked before the body is read whole; 415 for
  another Content-Type; 503 with Retry-After when `DFD_SERVE_MAX_QUEUE` requests are already in, or when a request
  passes its `DFD_SERVE_REQUEST_SECONDS` deadline (the server is overloaded: retrying later is what helps; 504 would
  blame an upstream, and this server is not a gateway); 500 says only that it failed: the log has the traceback,
  and no answer ever repeats the request body.

Requests pass the handler's checks (`parse`), then the scorer's gate and decoding (`prepare`) in a pool of decoding
threads; one batcher thread takes ready windows from any requests, waits up to `DFD_SERVE_BATCH_WAIT_MS` for more,
runs up to `DFD_SERVE_BATCH_SIZE` of them in one `forward`, and hands each request its outputs, which the scorer's
decision rule (`conclude`) and the handler's `answer` turn into the response. benchmarks/bench_serving.py measures
what batching buys.

This file imports only public packages (starlette, uvicorn, transformers; torch through the handler): handler.py
is loaded from the model folder, and loads the model, its processor and the scorer from there, as on an Endpoint.
"""

import argparse
import asyncio
import codecs
import importlib.util
import json
import logging
import queue
import socket
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from transformers.utils import logging as transformers_logging


LOG = logging.getLogger("uvicorn.error")  # uvicorn's own log, which its configuration prints
JSON_TYPES = ("application/json",)
RAW_TYPES = ("application/octet-stream",)  # and video/*
ACCEPTED_TYPES = (
    "application/json ({'inputs', 'parameters'}), or video/* or application/octet-stream (the video's bytes, "
    "parameters as query arguments)"
)
# Room in a JSON body for base64's 4/3 (with line breaks) and the rest of the request, beyond the video's size cap.
JSON_OVERHEAD = 1.5
JSON_EXTRA_BYTES = 65536
RETRY_AFTER_SECONDS = 1
MAX_INPUT_BYTES = "DFD_MAX_INPUT_BYTES"


class RequestError(Exception):
    """A request refused with `status` and a one-line `message` (`retry_after`: seconds, for a 503)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def error_response(error: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


def load_handler_module(folder: Path):
    """The model folder's handler.py, imported by its path as the Endpoints toolkit imports it."""
    path = folder / "handler.py"
    if not path.is_file():
        raise OSError(f"{folder}: no handler.py (a model folder exported by dfd has one)")
    spec = importlib.util.spec_from_file_location("handler", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "hub_module"):
        raise OSError(f"{path} predates the serving container: export the model again with this version of dfd")
    return module


def media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """A Content-Type's media type (lower case) and parameters (names in lower case, values unquoted)."""
    media, *parameters = (header or "").split(";")
    options = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        options[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), options


def parse_json(body: bytearray, charset: str | None):
    """The JSON document in `body`, read in `charset` (any spelling; default: UTF-8, -16 or -32 as JSON allows)."""
    if charset:
        try:
            codec = codecs.lookup(charset)
        except LookupError:
            raise RequestError(415, f"unsupported charset {charset[:40]!r} in the Content-Type") from None
        try:
            body = bytes(body).decode("utf-8-sig" if codec.name == "utf-8" else codec.name)
        except UnicodeDecodeError as error:
            raise RequestError(400, f"the request body is not valid {codec.name} (at byte {error.start})") from None
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:  # a JSONDecodeError's message has a position, never the text
        reason = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise RequestError(400, f"the request body is not valid JSON: {reason}") from None


class WindowBatcher:
    """
    One thread runs the model: it takes the first ready window, waits up to `wait` seconds for more from any request
    until it has `batch_size`, runs them in one `forward`, and settles each window's future. A window whose request
    gave up (its deadline passed, its client left) is cancelled and dropped before the forward.
    """

    def __init__(self, forward, batch_size: int, wait: float):
        self.forward, self.batch_size, self.wait = forward, batch_size, wait
        self.waiting = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="dfd-batcher", daemon=True)
        self.passes = self.windows = 0  # forward passes run, and the windows they took

    def start(self):
        self.thread.start()

    def stop(self):
        self.waiting.put(None)
        self.thread.join()

    def submit(self, items: list[dict]) -> list[Future]:
        """A future of each window's output, in order."""
        futures = [Future() for _ in items]
        for item, future in zip(items, futures):
            self.waiting.put((item, future))
        return futures

    def _collect(self) -> list | None:
        """The next batch of (item, future) pairs whose requests still wait for them; None once stopped."""
        batch, end = [], None
        while len(batch) < self.batch_size:
            try:
                entry = self.waiting.get(timeout=None if end is None else max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            if entry is None:
                if not batch:
                    return None
                self.waiting.put(None)  # stop once this batch is done
                break
            if entry[1].set_running_or_notify_cancel():
                batch.append(entry)
                end = end or time.monotonic() + self.wait
        return batch

    def _run(self):
        while (batch := self._collect()) is not None:
            try:
                outputs = self.forward([item for item, _ in batch])
            except BaseException as error:  # noqa: BLE001 - each request answers it (500), the server goes on
                for _, future in batch:
                    future.set_exception(error)
                continue
            self.passes, self.windows = self.passes + 1, self.windows + len(batch)
            for (_, future), output in zip(batch, outputs):
                future.set_result(output)


class Server:
    """
    The HTTP side around a loaded handler: reads and checks requests, holds at most `max_queue` at once, each for
    at most `request_seconds`, and scores them through `decoders` (the scorer's `num_workers` threads) and the
    batcher.
    """

    def __init__(self, handler, inputs, batch_size: int, batch_wait: float, max_queue: int, request_seconds: float):
        self.handler, self.scorer, self.limits, self.is_url = handler, handler.scorer, handler.limits, inputs.is_url
        self.max_queue, self.request_seconds = max_queue, request_seconds
        self.batcher = WindowBatcher(self.scorer.forward, batch_size, batch_wait)
        self.decoders = ThreadPoolExecutor(self.scorer.num_workers, thread_name_prefix="dfd-decode")
        self.held = 0  # requests in the server; only the event loop's thread changes it

    @asynccontextmanager
    async def lifespan(self, app):
        self.batcher.start()
        try:
            yield
        finally:
            self.batcher.stop()
            self.decoders.shutdown(wait=False, cancel_futures=True)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.predict, methods=["POST"]),
                Route("/predict", self.predict, methods=["POST"]),
                Route("/", self.health, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self.http_error},
            lifespan=self.lifespan,
        )

    async def health(self, request: Request) -> JSONResponse:
        """Ready (the model is loaded), with the requests in and how full the forward passes have been."""
        batcher = self.batcher
        return JSONResponse(
            {"status": "ok", "requests": self.held, "forward_passes": batcher.passes, "windows": batcher.windows}
        )

    async def http_error(self, request: Request, error: HTTPException) -> JSONResponse:
        """Starlette's own refusals (no such route, wrong method) as JSON, like every other error."""
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    async def predict(self, request: Request) -> JSONResponse:
        if self.held >= self.max_queue:
            return error_response(
                RequestError(
                    503,
                    f"the server holds its most requests ({self.max_queue}, DFD_SERVE_MAX_QUEUE); retry later",
                    RETRY_AFTER_SECONDS,
                )
            )
        self.held += 1
        try:
            return JSONResponse(await asyncio.wait_for(self.score(request), self.request_seconds))
        except RequestError as error:
            return error_response(error)
        except asyncio.TimeoutError:
            message = f"the request took over {self.request_seconds:g} s (DFD_SERVE_REQUEST_SECONDS); retry later"
            return error_response(RequestError(503, message, RETRY_AFTER_SECONDS))
        except Exception:
            LOG.exception("a request failed")  # the traceback stays in the log; the answer never shows the body
            return error_response(RequestError(500, "the server failed to score this request (see its log)"))
        finally:
            self.held -= 1

    async def score(self, request: Request) -> list[dict]:
        video, parameters = await self.read(request)
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self.decoders, self.scorer.prepare, video, parameters["windows"])
        del video  # the body: the windows are all that is needed now
        if not isinstance(prepared, self.handler.video_error):
            outputs = await asyncio.gather(*map(asyncio.wrap_future, self.batcher.submit(prepared)))
            prepared = self.scorer.conclude(prepared, outputs, parameters["threshold"])
        try:
            return self.handler.answer(prepared, parameters)
        except ValueError as error:
            raise RequestError(400, str(error)) from None

    async def read(self, request: Request) -> tuple[object, dict]:
        """The request's video and checked parameters, from a JSON body or a raw one with query arguments."""
        media, options = media_type(request.headers.get("content-type"))
        is_json = media in JSON_TYPES or media.endswith("+json")
        if not is_json and not (media in RAW_TYPES or media.startswith("video/")):
            shown = f"{media[:60]!r}" if media else "none"
            raise RequestError(415, f"unsupported Content-Type {shown}: send {ACCEPTED_TYPES}")
        if is_json and request.query_params:
            raise RequestError(400, "query arguments are for raw video bodies: put them in the JSON 'parameters'")
        body = await self.read_body(request, is_json)
        try:
            if is_json:
                data = await asyncio.get_running_loop().run_in_executor(None, parse_json, body, options.get("charset"))
                video, parameters = self.handler.parse(data)
            else:
                if not body:
                    raise ValueError("'inputs': the request body is empty (send the video's bytes)")
                video, parameters = self.handler.parse({"inputs": body, "parameters": query_parameters(request)})
        except ValueError as error:
            raise RequestError(400, str(error)) from None
        if isinstance(video, str) and not self.is_url(video):
            try:  # base64 is measured before it is decoded, as the gate measures it
                self.limits.check_size(len(video) * 3 // 4)
            except ValueError as error:
                raise RequestError(413, f"'inputs': {error}") from None
        return video, parameters

    async def read_body(self, request: Request, is_json: bool) -> bytearray:
        """
        The body, refused (413) as soon as it is known to be above the size cap, by its Content-Length or while it
        streams in, so that no body is read whole to be refused. A JSON body's cap leaves room for base64.
        """
        cap = self.limits.max_input_bytes
        if is_json:
            cap = int(cap * JSON_OVERHEAD) + JSON_EXTRA_BYTES
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdecimal() else None
        body = bytearray()
        if size is None or size <= cap:
            async for chunk in request.stream():
                body += chunk
                if len(body) > cap:
                    break
            else:
                return body
        if not is_json:
            try:
                self.limits.check_size(size or len(body))  # the gate's own words
            except ValueError as error:
                reason = str(error) if size else f"the video is above the {cap:,} byte limit ({MAX_INPUT_BYTES})"
                raise RequestError(413, f"'inputs': {reason}") from None
        shown = f" ({size:,} bytes)" if size else ""
        raise RequestError(
            413, f"the request body{shown} is above the {cap:,} byte limit (base64 of {MAX_INPUT_BYTES})"
        )


def query_parameters(request: Request) -> dict:
    """A raw body's parameters: the query arguments, each given once."""
    names = [name for name, _ in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"parameter {repeated[0][:40]!r} is given more than once")
    return dict(request.query_params)


def build_server(model: str) -> Server:
    """The server of the model folder `model`: its settings are read (a bad one refused) before the model loads."""
    transformers_logging.disable_progress_bar()  # a server's log is read line by line
    folder = Path(model)
    if not folder.is_dir():
        raise OSError(f"{model}: no such folder (the model folder to serve, e.g. /repository)")
    handler_module = load_handler_module(folder)
    settings, inputs = (handler_module.hub_module(str(folder), name) for name in ("settings_dfd", "inputs_dfd"))
    options = {
        "batch_size": settings.serve_batch_size(),
        "batch_wait": settings.serve_batch_wait_ms() / 1000,
        "max_queue": settings.serve_max_queue(),
        "request_seconds": settings.serve_request_seconds(),
    }
    handler = handler_module.EndpointHandler(str(folder), batch_size=options["batch_size"])
    return Server(handler, inputs, **options)


def serve(model: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """
    Load the model folder `model`, then serve it on `host`:`port` (0: any free port) until SIGINT or SIGTERM. Prints
    `listening on http://HOST:PORT` once the port is open.
    """
    server = build_server(model)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"listening on http://{shown}:{listener.getsockname()[1]}", flush=True)
    config = uvicorn.Config(server.app(), timeout_graceful_shutdown=int(server.request_seconds) + 1)
    uvicorn.Server(config).run(sockets=[listener])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="the model folder (/repository in a container)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080; 0: any free port)")
    args = parser.parse_args(argv)
    try:
        serve(args.model, args.host, args.port)
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
