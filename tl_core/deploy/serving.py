"""REST serving: finished runs behind TensorFlow Serving's REST predict, plus image classify, on FastAPI.

| route | what |
|---|---|
| ``POST /v1/models/{name}:predict`` | TF Serving's body, ``{"instances": [...]}`` (or ``"inputs"``): raw RGB pixel arrays at the model's size -> ``{"predictions": [[p, ...], ...]}`` |
| ``POST /v1/models/{name}:classify`` | image files (multipart field ``files``, one or more) -> top-k labels per file |
| ``GET /v1/models``, ``/v1/models/{name}``, ``/v1/models/{name}/metadata`` | what is served, TF Serving's status, classes and input |
| ``GET /healthz``, ``/readyz`` | liveness and readiness (no token needed, nothing named) |

A model's name is its run id. With ``TL_API_TOKEN`` set every ``/v1`` route wants ``Authorization: Bearer
<token>``. Requests are bounded (``TL_API_MAX_BYTES``, ``TL_API_MAX_IMAGES``; a ``:classify``'s images by their
headers before any is decoded: all together over ``TL_API_MAX_PIXELS`` is a 413, one over
``TL_MAX_SERVE_PIXELS`` a 422); a bad image or array gets a 4xx that says what is wrong. Requests that arrive
together share one forward pass (``MicroBatcher``).
Probabilities are the run's calibrated ones (its temperature is inside the model, ``LoadedModel``): the same
numbers as the app, the CLI and every export.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sys
from collections.abc import Callable
from typing import Optional

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from tl_core.data.images import ImageRejected, env_pixels, load_array, over_cap, read_header, serve_pixel_cap
from tl_core.errors import TLError
from tl_core.inference.topk import top_k as top_labels
from tl_core.runs.store import Run, get_run, list_runs

DEFAULT_MAX_BYTES = 32 << 20
DEFAULT_MAX_IMAGES = 64
DEFAULT_MAX_PIXELS = 200_000_000  # one :classify request's images together, as their headers give them


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
        self.batcher = MicroBatcher(self.loaded.probabilities)

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


def create_app(
    runs: list[Run], token: Optional[str] = None, max_bytes: Optional[int] = None, max_images: Optional[int] = None
) -> FastAPI:
    token = token if token is not None else os.environ.get("TL_API_TOKEN") or None
    max_bytes = max_bytes or int(os.environ.get("TL_API_MAX_BYTES", DEFAULT_MAX_BYTES))
    max_images = max_images or int(os.environ.get("TL_API_MAX_IMAGES", DEFAULT_MAX_IMAGES))
    models = {run.id: ServedModel(run) for run in runs}
    app = FastAPI(
        title="Transfer Learning Studio model server",
        description="TensorFlow Serving's REST predict for the studio's trained runs, plus image classify.",
    )

    @app.exception_handler(HTTPException)
    async def as_tf_serving_error(request: Request, exc: HTTPException):  # TF Serving's error body
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        if request.method == "POST":
            declared = request.headers.get("content-length")
            if declared is None:
                return JSONResponse(
                    {"error": "Send a Content-Length header (chunked bodies are not accepted)."}, status_code=411
                )
            if not declared.isdigit() or int(declared) > max_bytes:
                return JSONResponse(
                    {"error": f"Request body of {declared} bytes; at most {max_bytes}."}, status_code=413
                )
        return await call_next(request)

    def authorized(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "A valid bearer token is required (Authorization: Bearer <TL_API_TOKEN>).",
                headers={"WWW-Authenticate": "Bearer"},
            )

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

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    def list_models() -> dict:
        return {"models": [served.metadata() for served in models.values()]}

    @app.get("/v1/models/{name}", dependencies=[Depends(authorized)])
    def model_status(name: str) -> dict:
        model_named(name)
        return {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }

    @app.get("/v1/models/{name}/metadata", dependencies=[Depends(authorized)])
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

    @app.post("/v1/models/{name}:predict", dependencies=[Depends(authorized)], openapi_extra=predict_body)
    async def predict(name: str, request: Request) -> dict:
        served = model_named(name)
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise _error(400, "The body is not valid JSON.") from None
        pixels = _pixels_from_instances(body, served.input_shape, max_images)
        return {"predictions": (await served.batcher(pixels)).tolist()}

    per_image, budget = serve_pixel_cap(), env_pixels("TL_API_MAX_PIXELS", DEFAULT_MAX_PIXELS)

    @app.post("/v1/models/{name}:classify", dependencies=[Depends(authorized)])
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
        probs = await served.batcher(np.stack(pixels))
        return {
            "model": name,
            "results": [
                {"file": upload.filename, "top_k": served.top_k(row, top_k)} for upload, row in zip(files, probs)
            ],
        }

    app.state.models = models
    return app


def runs_to_serve(run_refs: list[str], all_runs: bool = False) -> list[Run]:
    runs = [r for r in list_runs() if r.state == "finished"] if all_runs else [get_run(ref) for ref in run_refs]
    if not runs:
        raise TLError("Nothing to serve: name runs with --run RUN (repeatable) or use --all with a finished run.")
    for run in runs:
        if run.state != "finished" or not run.artifacts.has_model():
            raise TLError(f"Run {run.id!r} is {run.state}; only finished runs can be served.")
    return runs


def serve(run_refs: list[str], all_runs: bool = False, host: str = "127.0.0.1", port: int = 8501) -> None:
    import uvicorn

    runs = runs_to_serve(run_refs, all_runs)
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("TL_API_TOKEN"):
        print(
            f"warning: serving on {host} without TL_API_TOKEN: anyone who reaches port {port} can use these "
            "models. Set TL_API_TOKEN or put the server behind an authenticating proxy.",
            file=sys.stderr,
        )
    app = create_app(runs)
    print(f"serving {', '.join(app.state.models)} on http://{host}:{port} (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
