"""The Open Inference Protocol (KServe v2, as Triton, KServe and Seldon speak it) over REST, beside TF Serving's.

| route | what |
|---|---|
| ``GET /v2`` | server metadata: name, version, extensions |
| ``GET /v2/health/live``, ``/v2/health/ready`` | liveness and readiness (no token needed) |
| ``GET /v2/models/{name}[/versions/1]`` | model metadata: input ``image`` and outputs ``probabilities``, ``label`` (and ``unknown`` for a run with a scope) |
| ``GET /v2/models/{name}[/versions/1]/ready`` | 200 once the model is loaded (it is, or the server would not run) |
| ``GET /v2/models/{name}[/versions/1]/config`` | Triton's model configuration (not in the protocol; tritonclient asks for it) |
| ``POST /v2/models/{name}[/versions/1]/infer`` | raw RGB pixels ``[N, H, W, 3]`` (UINT8 or FP32, 0-255, at the model's size) -> probabilities ``[N, classes]`` (FP32), the top label ``[N]`` (BYTES) and, for a run with a scope, whether each image is outside it, ``unknown`` ``[N]`` (BOOL) |

Inputs come as JSON ``data`` (flat or nested, row-major) or in the binary tensor data extension
(``Inference-Header-Content-Length``, ``binary_data_size``); outputs come as JSON unless asked for in binary
(``binary_data`` on a requested output, or ``binary_data_output`` on the request, as tritonclient does). The
classification extension (``"classification": k`` on the requested ``probabilities`` output) answers BYTES
``[N, k]`` of ``"probability:index:label"``, best first. Errors are ``{"error": "..."}`` with a 4xx status.

This module owns the protocol's JSON: the body parse (``infer_pixels``, run in the server's parser process like
a ``:predict`` body) and the answers. ``serving.create_app`` mounts ``routes`` with its own token, limits and
micro-batcher, so both protocols give the same probabilities for the same pixels.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Awaitable, Callable
from typing import Optional

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from tl_core import __version__
from tl_core.inference.topk import top_k

VERSION = "1"  # each served run is one model with one version
INPUT = "image"
PROBABILITIES, LABEL, UNKNOWN = "probabilities", "label", "unknown"
OUTPUTS = (PROBABILITIES, LABEL, UNKNOWN)  # unknown (BOOL): outside the run's scope; only for a run that has one
DATATYPES = {"UINT8": np.dtype("<u1"), "FP32": np.dtype("<f4")}
EXTENSIONS = ["binary_tensor_data", "classification"]
HEADER_LENGTH = "Inference-Header-Content-Length"
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def _refuse(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def whole_number(text: str) -> Optional[int]:
    """A header's decimal number (ASCII digits, surrounding spaces allowed), else None: ``str.isdigit`` alone
    accepts characters such as "²" that ``int`` refuses."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def split_binary(raw: bytes, header_length: Optional[str]) -> tuple[bytes, bytes]:
    """The JSON part of an inference body and the binary tensor data after it (``b""`` without the extension)."""
    if header_length is None:
        return raw, b""
    length = whole_number(header_length)
    if length is None or length > len(raw):
        raise _refuse(
            400,
            f"{HEADER_LENGTH}: {header_length!r} is not the length of the JSON at the start of this "
            f"{len(raw)}-byte body.",
        )
    return raw[:length], raw[length:]


def _shape(given: object, expected: tuple, max_images: int) -> tuple:
    size = f"{expected[0]}x{expected[1]}"
    if (
        not isinstance(given, list)
        or len(given) != 4
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in given)
        or tuple(given[1:]) != expected
        or given[0] < 1
    ):
        raise _refuse(
            400,
            f"Input {INPUT!r} must have shape [N, {', '.join(map(str, expected))}] (N images of {size} RGB "
            f"pixels, the model's input size); got {json.dumps(given)[:200]}.",
        )
    if given[0] > max_images:
        raise _refuse(413, f"{given[0]} images in one request; at most {max_images}.")
    return tuple(given)


def _tensor(spec: dict, binary: bytes, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """The input's values as ``dtype``, from its binary data or its JSON ``data``, checked against ``shape``."""
    count = math.prod(shape)
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _refuse(400, f'Input {INPUT!r}: "parameters" must be an object; got {json.dumps(parameters)[:100]}.')
    if binary and "binary_data_size" not in parameters:
        raise _refuse(400, f"{len(binary)} bytes follow the JSON but no input has binary_data_size.")
    if "binary_data_size" in parameters:
        if len(binary) != count * dtype.itemsize or parameters["binary_data_size"] != len(binary):
            raise _refuse(
                400,
                f"Input {INPUT!r} of shape {list(shape)} in {spec['datatype']} is {count * dtype.itemsize} bytes of "
                f"binary data; binary_data_size says {json.dumps(parameters['binary_data_size'])[:40]} and "
                f"{len(binary)} bytes follow the JSON.",
            )
        values = np.frombuffer(binary, dtype)
    else:
        values = _json_values(spec, shape, dtype == np.uint8)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:
        raise _refuse(400, f"Input {INPUT!r}: pixel values must be finite RGB values between 0 and 255.")
    return values.astype(dtype, copy=False)


def _json_values(spec: dict, shape: tuple, whole: bool) -> np.ndarray:
    count = math.prod(shape)
    if "data" not in spec:
        raise _refuse(400, f'Input {INPUT!r} has no "data" (nor binary_data_size).')
    try:
        values = np.asarray(spec["data"], dtype=np.float64).reshape(-1)
    except (ValueError, TypeError):
        raise _refuse(
            400,
            f'Input {INPUT!r}: "data" must be numbers (flat or nested, row-major); these are ragged or not numeric.',
        ) from None
    if values.size != count:
        raise _refuse(400, f'Input {INPUT!r}: "data" holds {values.size} numbers; shape {list(shape)} needs {count}.')
    if whole and (values != np.round(values)).any():
        raise _refuse(400, f"Input {INPUT!r} is UINT8: its values must be whole numbers between 0 and 255.")
    return values


def _requested_outputs(body: dict) -> list[dict]:
    """The outputs to answer, each ``{"name", "binary", "classification"}``: those the request names, else all."""
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _refuse(400, f'"parameters" must be an object; got {json.dumps(parameters)[:100]}.')
    binary_default = parameters.get("binary_data_output") is True
    requested = body.get("outputs")
    if requested is None:  # every output (the unknown flags only where the run has a scope: infer_answer)
        return [{"name": name, "binary": binary_default, "classification": 0, "default": True} for name in OUTPUTS]
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise _refuse(400, f'"outputs" must be a list of objects with a "name"; got {json.dumps(requested)[:100]}.')
    outputs = []
    for output in requested:
        name, options = output.get("name"), output.get("parameters") or {}
        if name not in OUTPUTS:
            raise _refuse(400, f"No output named {json.dumps(name)[:60]}; the outputs are {list(OUTPUTS)}.")
        count = options.get("classification", 0) if isinstance(options, dict) else None
        if not isinstance(count, int) or isinstance(count, bool) or count < 0 or (count and name != PROBABILITIES):
            raise _refuse(
                400,
                f"classification: {json.dumps(count)[:40]} on output {name!r}; ask for a whole number of classes "
                f"on {PROBABILITIES!r}.",
            )
        outputs.append(
            {"name": name, "binary": options.get("binary_data", binary_default) is True, "classification": count}
        )
    return outputs


def infer_pixels(body: object, binary: bytes, shape: tuple, max_images: int) -> tuple[np.ndarray, dict]:
    """An inference request (its JSON ``body`` and the binary data after it) as float32 pixels ``(N, *shape)``
    and what the answer needs (``id``, ``outputs``). HTTPException (400, 413) quoting what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise _refuse(400, f'The body must be a JSON object with "inputs": a list of one tensor, named {INPUT!r}.')
    inputs = body["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _refuse(400, f'"inputs" must hold exactly one tensor, {INPUT!r}; got {len(inputs)} items.')
    spec = inputs[0]
    if spec.get("name") != INPUT:
        raise _refuse(400, f"No input named {json.dumps(spec.get('name'))[:60]}; the model's input is {INPUT!r}.")
    if spec.get("datatype") not in DATATYPES:
        raise _refuse(
            400, f"Input {INPUT!r} has datatype {json.dumps(spec.get('datatype'))[:40]}; send UINT8 or FP32 pixels."
        )
    full = _shape(spec.get("shape"), shape, max_images)
    outputs = _requested_outputs(body)
    pixels = _tensor(spec, binary, full, DATATYPES[spec["datatype"]])
    request_id = body.get("id")
    return pixels.reshape(full).astype(np.float32), {
        "id": request_id if isinstance(request_id, str) else None,
        "outputs": outputs,
    }


def _as_bytes_tensor(values: list[str]) -> bytes:
    """BYTES elements in the binary extension's layout: each a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(data)) + data for data in (v.encode() for v in values))


def _classification(row: np.ndarray, class_names: list[str], k: int) -> list[str]:
    """The classification extension's answer for one image: Triton's ``"value:index:label"`` strings for the top
    ``k`` (at most every class), ranked as every top-k is (``inference.topk``)."""
    index = {label: i for i, label in enumerate(class_names)}
    return [
        f"{np.format_float_positional(np.float32(t['probability']), unique=True)}:{index[t['label']]}:{t['label']}"
        for t in top_k(row, class_names, k)
    ]


def infer_answer(name: str, class_names: list[str], probs: np.ndarray, meta: dict, unknown: list) -> Response:
    """The inference response for ``probs`` (N, classes) and the ``unknown`` flags (None each for a run without a
    scope): the outputs ``meta`` asks for, JSON or binary. HTTPException (400) when the unknown flags are asked
    of a run that has none."""
    probs = np.asarray(probs, np.float32)
    outputs, chunks = [], []
    for request in meta["outputs"]:
        if request["name"] == UNKNOWN:
            if any(flag is None for flag in unknown):
                if request.get("default"):
                    continue
                raise _refuse(
                    400,
                    f"Model {name!r} answers no {UNKNOWN!r}: it was trained before runs learned their scope; "
                    "train it again, or ask for the other outputs.",
                )
            values = np.array(unknown, dtype=bool)
            tensor = {"name": UNKNOWN, "datatype": "BOOL", "shape": [len(probs)]}
        elif request["classification"]:
            values = [text for row in probs for text in _classification(row, class_names, request["classification"])]
            tensor = {"name": PROBABILITIES, "datatype": "BYTES", "shape": [len(probs), len(values) // len(probs)]}
        elif request["name"] == PROBABILITIES:
            values = probs
            tensor = {"name": PROBABILITIES, "datatype": "FP32", "shape": list(probs.shape)}
        else:
            values = [top_k(row, class_names, 1)[0]["label"] for row in probs]
            tensor = {"name": LABEL, "datatype": "BYTES", "shape": [len(probs)]}
        if request["binary"]:
            if isinstance(values, np.ndarray):  # FP32 little-endian, BOOL one byte each
                data = values.astype("u1" if values.dtype == bool else "<f4").tobytes()
            else:
                data = _as_bytes_tensor(values)
            tensor["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            tensor["data"] = values.reshape(-1).tolist() if isinstance(values, np.ndarray) else values
        outputs.append(tensor)
    answer = {"model_name": name, "model_version": VERSION, "outputs": outputs}
    if meta.get("id") is not None:
        answer["id"] = meta["id"]
    head = json.dumps(answer).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(
        head + b"".join(chunks), media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(head))}
    )


def model_metadata(served) -> dict:
    """A served model (``serving.ServedModel``) as the protocol describes models."""
    loaded = served.loaded
    return {
        "name": served.run.id,
        "versions": [VERSION],
        "platform": "keras_tensorflow",
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *served.input_shape]}],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(loaded.class_names)]},
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
            *([{"name": UNKNOWN, "datatype": "BOOL", "shape": [-1]}] if served.scope is not None else []),
        ],
        "parameters": {
            "class_names": loaded.class_names,
            "input_datatypes": list(DATATYPES),
            "input_range": "0-255 RGB",
            "resize": loaded.resize,
            "base": served.run.config.base,
        },
    }


def model_config(served, max_images: int) -> dict:
    """Triton's model configuration for a served model (``tritonclient``'s ``get_model_config``): the same
    tensors in its terms, the batch dimension left out of ``dims`` and bounded by ``max_batch_size``."""
    metadata = model_metadata(served)
    return {
        "name": metadata["name"],
        "platform": metadata["platform"],
        "max_batch_size": max_images,
        "input": [
            {"name": t["name"], "data_type": f"TYPE_{t['datatype'].replace('BYTES', 'STRING')}", "dims": t["shape"][1:]}
            for t in metadata["inputs"]
        ],
        "output": [
            {"name": t["name"], "data_type": f"TYPE_{t['datatype'].replace('BYTES', 'STRING')}", "dims": t["shape"][1:]}
            for t in metadata["outputs"]
        ],
    }


def routes(
    models: dict,
    infer: Callable[[object, bytes, Optional[str]], Awaitable[tuple[np.ndarray, dict, list]]],
    max_images: int,
) -> APIRouter:
    """The v2 routes over ``models`` (name -> ``ServedModel``); ``infer(served, body, header_length)`` is the
    server's own path from a body to probabilities (parser process, limits, micro-batcher), which takes at most
    ``max_images`` images a request."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol (v2)"])

    def model_named(name: str, version: Optional[str] = None):
        if name not in models:
            raise _refuse(404, f"No model named {name!r} is served here; GET /v1/models lists them.")
        if version is not None and version != VERSION:
            raise _refuse(404, f"Model {name!r} has no version {version!r}; its one version is {VERSION!r}.")
        return models[name]

    @router.get("")
    def server_metadata() -> dict:
        return {"name": "tl_core", "version": __version__, "extensions": EXTENSIONS}

    @router.get("/health/live")
    def live() -> dict:
        return {"live": True}

    @router.get("/health/ready")
    def ready() -> dict:
        return {"ready": True}

    @router.get("/models/{name}")
    @router.get("/models/{name}/versions/{version}")
    def metadata(name: str, version: Optional[str] = None) -> dict:
        return model_metadata(model_named(name, version))

    @router.get("/models/{name}/config")
    @router.get("/models/{name}/versions/{version}/config")
    def config(name: str, version: Optional[str] = None) -> dict:
        return model_config(model_named(name, version), max_images)

    @router.get("/models/{name}/ready")
    @router.get("/models/{name}/versions/{version}/ready")
    def model_ready(name: str, version: Optional[str] = None) -> dict:
        model_named(name, version)
        return {"name": name, "ready": True}

    body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "example": {
                            "inputs": [{"name": INPUT, "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [0] * 12}]
                        },
                    }
                }
            },
        }
    }

    @router.post("/models/{name}/infer", openapi_extra=body)
    @router.post("/models/{name}/versions/{version}/infer", openapi_extra=body)
    async def infer_route(name: str, request: Request, version: Optional[str] = None) -> Response:
        served = model_named(name, version)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise _refuse(415, f"Content-Encoding {encoding!r} is not accepted; send the body uncompressed.")
        probs, meta, unknown = await infer(served, await request.body(), request.headers.get(HEADER_LENGTH))
        return infer_answer(name, served.loaded.class_names, probs, meta, unknown)

    return router
