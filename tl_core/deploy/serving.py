"""REST serving: finished runs behind TensorFlow Serving's REST predict, plus image classify, on FastAPI.

| route | what |
|---|---|
| ``POST /v1/models/{name}:predict`` | TF Serving's body, ``{"instances": [...]}`` (or ``"inputs"``): raw RGB pixel arrays at the model's size -> ``{"predictions": [[p, ...], ...], "unknown": [...]}`` |
| ``POST /v1/models/{name}:classify`` | image files (multipart field ``files``, one or more) -> top-k labels, ``unknown`` and ``distance`` per file |
| ``GET /v1/models``, ``/v1/models/{name}``, ``/v1/models/{name}/metadata`` | what is served, TF Serving's status, classes and input |
| ``GET /healthz``, ``/readyz`` | liveness and readiness (no token needed, nothing named) |
| ``/v2/...`` | the Open Inference Protocol (KServe v2, as Triton speaks it): health, metadata, ``infer`` (``oip``) |

A model's name is its run id. With ``TL_API_TOKEN`` set every route but health and the API docs wants
``Authorization: Bearer <token>``, checked before any body is read; an empty ``TL_API_TOKEN`` refuses to start, and
so does no token on an address other than loopback unless allowed (``--allow-no-token``,
``TL_API_ALLOW_NO_TOKEN=1``). Requests are bounded (``TL_API_MAX_BYTES``, ``TL_API_MAX_IMAGES``; a ``:classify``'s
images by their headers before any is decoded: all together over ``TL_API_MAX_PIXELS`` is a 413, one over
``TL_MAX_SERVE_PIXELS`` a 422); a bad image or array gets a 4xx that says what is wrong. Both protocols share these
limits, the token, the parser process and the micro-batcher: the same pixels get the same probabilities from
either. Connections are bounded in number and time (``server_config``): headers and body must arrive within their
deadlines (``TL_API_HEADER_TIMEOUT_S``, ``TL_API_BODY_TIMEOUT_S``, else 408) and at most ``TL_API_MAX_CONNECTIONS``
are open at once (else 503). ``:predict`` and v2 ``infer`` bodies are parsed in a worker process, so a big one does
not hold up the server's other answers (a v2 body whose tensors come as binary data after a small JSON part is
parsed in a thread). Requests that arrive together share one forward pass (``MicroBatcher``).
Probabilities are the run's calibrated ones (its temperature is inside the model, ``LoadedModel``): the same
numbers as the app, the CLI and every export. Each image's answer says whether it is outside what the run was
trained on (``"unknown"``, with its ``"distance"``; null for a run without a scope, ``runs/scope.py``), and every
prediction (v1 and v2) is recorded for monitoring (``inference/monitoring.py``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from tl_core.data.images import ImageRejected, env_pixels, load_array, over_cap, read_header, serve_pixel_cap
from tl_core.deploy import oip
from tl_core.errors import TLError
from tl_core.inference import monitoring
from tl_core.inference.topk import top_k as top_labels
from tl_core.runs.scope import scope_for
from tl_core.runs.store import Run, get_run, list_runs

DEFAULT_PORT = 8600  # not 8501: that is the app's own (Streamlit's) port
DEFAULT_MAX_BYTES = 32 << 20
DEFAULT_MAX_IMAGES = 64
DEFAULT_MAX_PIXELS = 200_000_000  # one :classify request's images together, as their headers give them
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 256
MAX_HEADER_BYTES = 64 << 10
INLINE_JSON_BYTES = 64 << 10  # a v2 body's JSON part this small (binary data after it) is parsed in a thread
OPEN_PATHS = oip.OPEN_PATHS | {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
LOOPBACK_NAMES = ("localhost",)


class MicroBatcher:
    """Concurrent requests for one model share a forward pass: whatever arrived while the previous pass ran
    (or within ``max_wait_s`` of the first) goes into the next, up to ``max_batch`` images."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], max_batch: int = 64, max_wait_s: float = 0.004):
        self.forward, self.max_batch, self.max_wait_s = forward, max_batch, max_wait_s
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._drainer: Optional[asyncio.Task] = None
        self.passes = 0
        self.images = 0

    async def __call__(self, pixels: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((pixels, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.sleep(self.max_wait_s)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch):
                pixels, future = self._pending.pop(0)
                batch.append((pixels, future))
                size += len(pixels)
            try:
                probs = await asyncio.to_thread(self.forward, np.concatenate([p for p, _ in batch]))
            except Exception as exc:  # every waiting request hears about it; the server lives on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.passes += 1
            self.images += size
            start = 0
            for pixels, future in batch:
                if not future.done():  # a client that went away has a cancelled future
                    future.set_result(probs[start : start + len(pixels)])
                start += len(pixels)


class ServedModel:
    def __init__(self, run: Run):
        self.run = run
        self.loaded = run.load_model()
        self.loaded.warm_up()
        self.scope = scope_for(run)
        self.recorder = monitoring.Recorder(run.id)
        self.batcher = MicroBatcher(self._forward)

    def _forward(self, pixels: np.ndarray) -> np.ndarray:
        """Raw pixels -> one row per image: its probabilities, then its distance from the training images (NaN
        without a scope); in the batcher's thread, for the whole batch at once."""
        features = self.loaded.features(pixels)
        distances = self.scope.distances(features) if self.scope is not None else np.full(len(features), np.nan)
        return np.column_stack([self.loaded.head_probabilities(features).astype(np.float64), distances])

    async def answer(self, pixels: np.ndarray) -> tuple[np.ndarray, list, list]:
        """(probabilities, unknown flags, distances) for raw pixels (flags and distances None without a scope),
        recorded for monitoring."""
        rows = await self.batcher(pixels)
        probs, measured = rows[:, :-1], rows[:, -1]
        if self.scope is None:
            unknown = distances = [None] * len(probs)
        else:
            unknown, distances = self.scope.is_unknown(measured).tolist(), [round(float(d), 6) for d in measured]
        self.recorder.record(monitoring.records(probs.argmax(1), probs.max(1), unknown, distances, "rest"))
        return probs, unknown, distances

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.loaded.input_size, self.loaded.input_size, 3)

    def metadata(self) -> dict:
        metrics = self.run.artifacts.metrics()
        return {
            "model_spec": {"name": self.run.id, "version": "1"},
            "metadata": {
                "class_names": self.loaded.class_names,
                "base": self.run.config.base,
                "head": self.loaded.head_kind,
                "dataset": self.run.config.data,
                "val_accuracy": metrics.get("val_accuracy"),
                "input": {
                    "shape": [None, *self.input_shape],
                    "dtype": "float32",
                    "range": "0-255 RGB",
                    "resize": self.loaded.resize,
                },
                "output": "class probabilities in class_names order",
            },
            "serving": {"forward_passes": self.batcher.passes, "images": self.batcher.images},
        }

    def top_k(self, row: np.ndarray, k: int) -> list[dict]:
        return top_labels(row, self.loaded.class_names, k)


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _pixels_from_instances(body: object, shape: tuple, max_images: int) -> np.ndarray:
    if not isinstance(body, dict) or not ({"instances", "inputs"} & body.keys()):
        raise _error(400, 'The body must be a JSON object with "instances" (a list of pixel arrays).')
    instances = body.get("instances", body.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise _error(400, '"instances" must be a non-empty list of pixel arrays.')
    if len(instances) > max_images:
        raise _error(413, f"{len(instances)} instances in one request; at most {max_images}.")
    try:
        pixels = np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        raise _error(
            400,
            f"Each instance must be a {shape[0]}x{shape[1]}x3 array of numbers (RGB, 0-255); "
            "these are ragged or not numeric.",
        ) from None
    if pixels.shape[1:] != shape:
        raise _error(
            400, f"Each instance must have shape {list(shape)} (height, width, RGB); got {list(pixels.shape[1:])}."
        )
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise _error(400, "Pixel values must be finite RGB values between 0 and 255.")
    return pixels


def _env_number(name: str, default: float, kind: type = int) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value > 0:  # NaN too
        raise TLError(f"{name}={raw!r} is not a positive number.")
    return value


def api_token(token: Optional[str] = None) -> Optional[str]:
    """The bearer token the server wants: ``token``, else ``TL_API_TOKEN``; None where neither is set. An empty
    (or blank) token is a TLError: it would otherwise read as "no token" and open every route."""
    token = token if token is not None else os.environ.get("TL_API_TOKEN")
    if token is not None and not token.strip():
        raise TLError(
            "TL_API_TOKEN is set but empty, which would serve every model to anyone. Set it to a secret "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))"), or unset it to serve on 127.0.0.1 only.'
        )
    return token


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def startup_token(host: str, allow_no_token: bool = False) -> Optional[str]:
    """The token for a server on ``host``, or None where serving without one is allowed: on loopback, or where
    ``allow_no_token`` or ``TL_API_ALLOW_NO_TOKEN=1`` says so. TLError for an empty token, and for no token on
    any other address without that permission."""
    token = api_token()
    allowed = allow_no_token or os.environ.get("TL_API_ALLOW_NO_TOKEN", "").strip().lower() in ("1", "true", "yes")
    if token is None and not is_loopback(host) and not allowed:
        raise TLError(
            f"Refusing to serve on {host} without TL_API_TOKEN: anyone who reaches it could use these models. "
            "Set TL_API_TOKEN, serve on 127.0.0.1, or pass --allow-no-token (TL_API_ALLOW_NO_TOKEN=1) if an "
            "authenticating proxy stands in front."
        )
    return token


def _json_refusal(status: int, message: str, headers: Optional[dict] = None) -> JSONResponse:
    # Connection: close, so uvicorn drops the connection rather than read and discard a body nobody wants.
    return JSONResponse({"error": message}, status_code=status, headers={**(headers or {}), "Connection": "close"})


class RequestGate:
    """Pure ASGI middleware that answers from the request line and headers alone, before anything reads the
    body (FastAPI parses a multipart form before route dependencies run): the bearer token on every path but
    ``OPEN_PATHS`` (401), then a POST's declared length (411 without one, 413 over ``max_bytes``)."""

    def __init__(self, app, token: Optional[str], max_bytes: int):
        self.app, self.token, self.max_bytes = app, token, max_bytes

    def refusal(self, scope) -> Optional[JSONResponse]:
        headers = Headers(scope=scope)
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self.token.encode()):
                return _json_refusal(
                    401,
                    "A valid bearer token is required (Authorization: Bearer <TL_API_TOKEN>).",
                    {"WWW-Authenticate": "Bearer"},
                )
        if scope["method"] == "POST":
            declared = headers.get("content-length")
            if declared is None:
                return _json_refusal(411, "Send a Content-Length header (chunked bodies are not accepted).")
            length = oip.whole_number(declared)
            if length is None or length > self.max_bytes:
                return _json_refusal(413, f"Request body of {declared} bytes; at most {self.max_bytes}.")
        return None

    async def __call__(self, scope, receive, send):
        refusal = self.refusal(scope) if scope["type"] == "http" else None
        await (refusal or self.app)(scope, receive, send)


class _BodyParser:
    """One worker process turns ``:predict`` and v2 ``infer`` bodies (``BODY_PARSERS``) into pixels.
    ``json.loads`` and ``np.asarray`` hold the interpreter lock for the whole of a big body, so in a thread they
    would still stall every other answer (``/healthz`` included); in a process they do not. Bodies are parsed
    one at a time, in arrival order.

    The worker is a plain ``python -c`` child speaking over its pipes (``_parse_worker``), not multiprocessing:
    spawn would re-import the main module of whatever script created the app, and fork would copy TensorFlow's
    threads half-alive. It starts with the app (or the first request), restarts after a crash and ends when
    this process does (its stdin closes)."""

    def __init__(self):
        self._process: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self._one_at_a_time = ThreadPoolExecutor(1, thread_name_prefix="predict-parser")

    def start(self) -> subprocess.Popen:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                code = "from tl_core.deploy.serving import _parse_worker; _parse_worker()"
                package_root = str(Path(__file__).resolve().parents[2])
                path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
                self._process = subprocess.Popen(
                    [sys.executable, "-c", code],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env={**os.environ, "PYTHONPATH": path},
                )
            return self._process

    def parse(self, kind: str, raw: bytes, shape: tuple, max_images: int, header_length: Optional[str] = None):
        """Blocking: the worker's answer, ``(pixels, meta)`` or ``(status, reason)``."""
        process = self.start()
        try:
            request = {"kind": kind, "shape": list(shape), "max_images": max_images, "bytes": len(raw)}
            request["header_length"] = header_length
            process.stdin.write(json.dumps(request).encode() + b"\n" + raw)
            process.stdin.flush()
            answer = json.loads(process.stdout.readline())
            data = process.stdout.read(answer["bytes"])
        except (OSError, ValueError):  # it died (out of memory?) mid-answer: the next request starts another
            process.kill()
            return 503, "The body parser stopped (out of memory?); send fewer instances per request."
        if "error" in answer:
            return answer["status"], answer["error"]
        return np.frombuffer(data, np.float32).reshape(answer["shape"]), answer["meta"]

    async def __call__(
        self, kind: str, raw: bytes, shape: tuple, max_images: int, header_length: Optional[str] = None
    ) -> tuple[np.ndarray, dict]:
        """``(pixels, meta)`` for a body of ``kind``; HTTPException with the worker's reason for a bad one."""
        loop = asyncio.get_running_loop()
        parsed = await loop.run_in_executor(
            self._one_at_a_time, self.parse, kind, raw, shape, max_images, header_length
        )
        if isinstance(parsed[0], int):
            raise _error(*parsed)
        return parsed


_parse_body = _BodyParser()


def _parse_worker() -> None:
    """The parser process: a JSON header line (``kind``, ``shape``, ``max_images``, ``bytes``, ``header_length``)
    and that many body bytes on stdin; answers a header line (``shape`` and ``meta``, or ``status`` and ``error``;
    and ``bytes``) and the float32 pixels on stdout; until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C stops the server, whose exit closes our stdin
    source, sink = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the answers
    while line := source.readline():
        request = json.loads(line)
        raw = source.read(request["bytes"])
        parsed = _parse_pixels(
            request["kind"], raw, tuple(request["shape"]), request["max_images"], request["header_length"]
        )
        if isinstance(parsed[0], int):
            head, data = {"status": parsed[0], "error": parsed[1]}, b""
        else:
            pixels = np.ascontiguousarray(parsed[0], np.float32)
            head, data = {"shape": list(pixels.shape), "meta": parsed[1]}, pixels.tobytes()
        sink.write(json.dumps({**head, "bytes": len(data)}).encode() + b"\n" + data)
        sink.flush()


BODY_PARSERS: dict[str, Callable[[object, bytes, tuple, int], tuple[np.ndarray, dict]]] = {
    # kind -> (JSON body, binary data after it, input shape, max images) -> (pixels, what the answer needs)
    "predict": lambda body, binary, shape, max_images: (_pixels_from_instances(body, shape, max_images), {}),
    "infer": oip.infer_pixels,
}


def _parse_pixels(kind: str, raw: bytes, shape: tuple, max_images: int, header_length: Optional[str] = None):
    """A body of ``kind`` as ``(pixels, meta)``, or ``(status, reason)`` for a bad one."""
    try:
        head, binary = oip.split_binary(raw, header_length)
        try:
            body = json.loads(head)
        except RecursionError:
            return 400, "The JSON is nested too deeply; pixels are height x width x 3 arrays of numbers."
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, f"The body is not valid JSON ({exc})."
        return BODY_PARSERS[kind](body, binary, shape, max_images)
    except HTTPException as exc:
        return exc.status_code, exc.detail
    except OverflowError:
        return 400, "A pixel value is too large a number; pixel values are RGB values between 0 and 255."


def create_app(
    runs: list[Run],
    token: Optional[str] = None,
    max_bytes: Optional[int] = None,
    max_images: Optional[int] = None,
    skip_unloadable: bool = False,
    capture: Optional[Callable[[list[tuple[str, bytes]], str], object]] = None,
) -> FastAPI:
    """The server's app for ``runs``. A run whose model does not load is a TLError naming it, or with
    ``skip_unloadable`` a warning on stderr and the run left out (TLError when none is left). ``capture``
    (``inbox.Capturer.offer``) is handed each answered ``:classify`` request's images; it must not block."""
    token = api_token(token)
    max_bytes = max_bytes or _env_number("TL_API_MAX_BYTES", DEFAULT_MAX_BYTES)
    max_images = max_images or _env_number("TL_API_MAX_IMAGES", DEFAULT_MAX_IMAGES)
    models = _load_models(runs, skip_unloadable)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _parse_body.start()
        yield

    app = FastAPI(
        title="Transfer Learning Studio model server",
        description="TensorFlow Serving's REST predict for the studio's trained runs, plus image classify.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestGate, token=token, max_bytes=max_bytes)

    @app.exception_handler(HTTPException)
    async def as_tf_serving_error(request: Request, exc: HTTPException):  # TF Serving's error body
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect):  # nobody to answer (a deadline closed it): no traceback
        return Response(status_code=400)

    def model_named(name: str) -> ServedModel:
        if name not in models:
            raise _error(404, f"No model named {name!r} is served here; GET /v1/models lists them.")
        return models[name]

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> dict:
        return {"status": "ready", "models": len(models)}

    @app.get("/v1/models")
    def list_models() -> dict:
        return {"models": [served.metadata() for served in models.values()]}

    @app.get("/v1/models/{name}")
    def model_status(name: str) -> dict:
        model_named(name)
        return {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }

    @app.get("/v1/models/{name}/metadata")
    def model_metadata(name: str) -> dict:
        return model_named(name).metadata()

    predict_body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "instances": {
                                "type": "array",
                                "items": {"type": "array"},
                                "description": "raw RGB pixel arrays, height x width x 3",
                            }
                        },
                    }
                }
            },
        }
    }

    @app.post("/v1/models/{name}:predict", openapi_extra=predict_body)
    async def predict(name: str, request: Request) -> dict:
        served = model_named(name)
        pixels, _ = await _parse_body("predict", await request.body(), served.input_shape, max_images)
        probs, unknown, _ = await served.answer(pixels)
        return {"predictions": probs.tolist(), "unknown": unknown}

    per_image, budget = serve_pixel_cap(), env_pixels("TL_API_MAX_PIXELS", DEFAULT_MAX_PIXELS)

    @app.post("/v1/models/{name}:classify")
    async def classify(name: str, files: list[UploadFile] = File(...), top_k: int = 3) -> dict:
        served = model_named(name)
        if len(files) > max_images:
            raise _error(413, f"{len(files)} files in one request; at most {max_images}.")
        datas = [await upload.read() for upload in files]
        total = 0
        for upload, data in zip(files, datas):  # every header first: nothing is decoded for a refused request
            try:
                header = read_header(data)
            except ImageRejected as exc:
                raise _error(422, f"{upload.filename or 'file'}: {exc}") from None
            problem = over_cap(header, per_image)
            if problem:
                raise _error(422, f"{upload.filename or 'file'}: {problem}")
            total += header.pixels
        if total > budget:
            raise _error(
                413,
                f"{len(files)} images of {total / 1e6:.1f} megapixels together in one request; at most "
                f"{budget / 1e6:g} megapixels (TL_API_MAX_PIXELS). Send fewer or smaller images per request.",
            )
        pixels = []
        for upload, data in zip(files, datas):
            try:
                pixels.append(
                    await asyncio.to_thread(load_array, data, served.loaded.input_size, served.loaded.resize, per_image)
                )
            except ImageRejected as exc:
                raise _error(422, f"{upload.filename or 'file'}: {exc}") from None
        probs, unknown, distances = await served.answer(np.stack(pixels))
        if capture is not None:  # queued for a dataset's inbox (serve --capture), written off this path
            capture([(upload.filename or "image", data) for upload, data in zip(files, datas)], f"serve:{name}")
        return {
            "model": name,
            "results": [
                {"file": upload.filename, "top_k": served.top_k(row, top_k), "unknown": flag, "distance": distance}
                for upload, row, flag, distance in zip(files, probs, unknown, distances)
            ],
        }

    async def infer(served: ServedModel, raw: bytes, header_length: Optional[str]) -> tuple[np.ndarray, dict, list]:
        length = None if header_length is None else oip.whole_number(header_length)
        if length is not None and length <= INLINE_JSON_BYTES:
            # binary tensor data after a small JSON part: a thread parses it at once, concurrent requests reach
            # the micro-batcher together instead of one parse apart
            parsed = await asyncio.to_thread(_parse_pixels, "infer", raw, served.input_shape, max_images, header_length)
            if isinstance(parsed[0], int):
                raise _error(*parsed)
            pixels, meta = parsed
        else:
            pixels, meta = await _parse_body("infer", raw, served.input_shape, max_images, header_length)
        probs, unknown, _ = await served.answer(pixels)  # recorded for monitoring, as v1 answers are
        return probs, meta, unknown

    app.include_router(oip.routes(models, infer, max_images))
    app.state.models = models
    return app


def _load_models(runs: list[Run], skip_unloadable: bool) -> dict[str, ServedModel]:
    models = {}
    for run in runs:
        try:
            models[run.id] = ServedModel(run)
        except Exception as exc:  # a truncated or missing model file fails in Keras with one of many types
            reason = f"run {run.id!r}: its model does not load ({type(exc).__name__}: {exc})"
            if not skip_unloadable:
                raise TLError(f"Cannot serve {reason}. Retrain or leave it out.") from None
            print(f"warning: skipping {reason}", file=sys.stderr)
    if runs and not models:
        raise TLError("Nothing to serve: no finished run's model loads (see the warnings above).")
    return models


def runs_to_serve(run_refs: list[str], all_runs: bool = False) -> list[Run]:
    """The runs named, or with ``all_runs`` every finished run (one whose model is missing or does not load
    is skipped later, with a warning, by ``create_app``)."""
    runs = [r for r in list_runs() if r.state == "finished"] if all_runs else [get_run(ref) for ref in run_refs]
    if not runs:
        raise TLError("Nothing to serve: name runs with --run RUN (repeatable) or use --all with a finished run.")
    for run in runs:
        if not all_runs and (run.state != "finished" or not run.artifacts.has_model()):
            raise TLError(f"Run {run.id!r} is {run.state}; only finished runs can be served.")
    return runs


def guarded_http_protocol(
    header_timeout_s: float, body_timeout_s: float, max_connections: int, max_header_bytes: int = MAX_HEADER_BYTES
) -> type:
    """Uvicorn's HTTP protocol with the limits it lacks: uvicorn answers ``limit_concurrency`` only once a
    request's headers are complete and has no deadline for headers or body, so a client that never finishes
    either holds its connection forever. Here a connection past ``max_connections`` open ones gets 503 at once;
    headers must be complete within ``header_timeout_s`` of the connection (or of the request's first byte) and
    ``max_header_bytes``, a body within ``body_timeout_s`` of its headers, else 408 (431 for headers too large)
    and the connection is closed. A connection that sent nothing is closed without an answer."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # uvicorn without httptools
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    limits = {"headers": header_timeout_s, "body": body_timeout_s}

    class GuardedHttpProtocol(Base):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline, self._watched, self._header_bytes = None, None, 0
            if len(self.connections) > max_connections:
                self._refuse(503, f"Too many open connections (at most {max_connections}); try again shortly.")
            else:
                self._watch()

        def data_received(self, data: bytes) -> None:
            if self._stage()[0] == "headers":
                self._header_bytes += len(data)
            super().data_received(data)
            if self._stage()[0] != "headers":
                self._header_bytes = 0
            elif self._header_bytes > max_header_bytes:
                self._refuse(431, f"Request headers over {max_header_bytes} bytes.")
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _stage(self) -> tuple:
            """What the connection waits for, with the request it belongs to: ``headers`` (of a next request),
            ``body``, ``answer`` (the app's), or ``drain`` (the rest of a body after its answer)."""
            cycle = self.cycle
            if cycle is None or (cycle.response_complete and not cycle.more_body):
                return "headers", cycle
            if cycle.response_complete:
                return "drain", cycle
            return ("body" if cycle.more_body else "answer"), cycle

        def _watch(self) -> None:
            stage = self._stage()
            if stage[0] == "drain":  # answered already: reading the rest would only feed a discard
                self.transport.close()
            if stage == self._watched or self.transport.is_closing():
                return
            if self._deadline is not None:
                self._deadline.cancel()
            self._watched, self._deadline = stage, None
            if stage[0] in limits:
                self._deadline = asyncio.get_running_loop().call_later(limits[stage[0]], self._expire, stage)

        def _expire(self, stage: tuple) -> None:
            if self.transport.is_closing() or self._stage() != stage:
                return
            if stage[0] == "headers" and not self._header_bytes:
                self.transport.close()  # an idle connection: nobody is waiting for an answer
                return
            what = "request headers" if stage[0] == "headers" else "request body"
            self._refuse(408, f"The {what} did not arrive within {limits[stage[0]]:g} s; the connection is closed.")

        def _refuse(self, status: int, message: str) -> None:
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                body = json.dumps({"error": message}).encode()
                head = (
                    f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
                )
                self.transport.write(head.encode() + body)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app's reads now end, and what it sends goes nowhere
                cycle.message_event.set()
            self.transport.close()

    return GuardedHttpProtocol


def server_config(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    header_timeout_s: Optional[float] = None,
    body_timeout_s: Optional[float] = None,
    max_connections: Optional[int] = None,
):
    """Uvicorn's configuration for ``app`` with the connection limits (``guarded_http_protocol``); limits not
    given come from ``TL_API_HEADER_TIMEOUT_S``, ``TL_API_BODY_TIMEOUT_S`` and ``TL_API_MAX_CONNECTIONS``."""
    import uvicorn

    protocol = guarded_http_protocol(
        header_timeout_s or _env_number("TL_API_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S, float),
        body_timeout_s or _env_number("TL_API_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S, float),
        max_connections or _env_number("TL_API_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
    )
    return uvicorn.Config(app, host=host, port=port, http=protocol, log_level="warning")


def serve(
    run_refs: list[str],
    all_runs: bool = False,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    allow_no_token: bool = False,
    capture: Optional[str] = None,
) -> None:
    """Serve ``run_refs`` (or every finished run) until stopped. Refuses (TLError) before loading anything when
    ``startup_token`` does; with ``all_runs`` a run whose model does not load is skipped with a warning. With
    ``capture`` (a dataset's name) the images of answered ``:classify`` requests go to that dataset's inbox."""
    import uvicorn

    token = startup_token(host, allow_no_token)
    if token is None and not is_loopback(host):
        print(
            f"warning: serving on {host} without TL_API_TOKEN (allowed by --allow-no-token): anyone who reaches "
            f"port {port} can use these models unless a proxy in front authenticates them.",
            file=sys.stderr,
        )
    from tl_core.data.inbox import Capturer

    capturer = Capturer(capture) if capture else None
    runs = runs_to_serve(run_refs, all_runs)
    app = create_app(runs, token=token, skip_unloadable=all_runs, capture=capturer.offer if capturer else None)
    config = server_config(app, host, port)
    print(f"serving {', '.join(config.app.state.models)} on http://{host}:{port} (API docs at /docs)", file=sys.stderr)
    uvicorn.Server(config).run()
