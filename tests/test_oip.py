"""The Open Inference Protocol (KServe v2) routes, spoken to by a client nobody here wrote: tritonclient's HTTP
``InferenceServerClient`` against a real ``python -m tl_core serve`` process on a free loopback port, with its
token. One tiny run (MobileNetV2 alpha 0.35, 64 px, one epoch on synthetic colours) and one server for the
module; the photos asked about are real ones (shared samples and hymenoptera), and the answers must be
``:classify``'s for the same photos.

tritonclient is imported inside the tests only (it pulls in gevent, which patches nothing unless asked to, and
no other test module needs it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from .factories import HYMENOPTERA, REPO, SHARED, small_config

TOKEN = "v2-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _photos() -> list:
    return [
        *sorted((SHARED / "samples").glob("*.jpg")),
        *sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[:2],
        *sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[:2],
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, keras_home_copy):
    """A tiny finished run served by ``python -m tl_core serve --run RUN`` with ``TL_API_TOKEN`` (at most 4 images a
    request); yields (port, run id)."""
    import httpx

    from .factories import colors_dataset

    root = tmp_path_factory.mktemp("oip")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        colors_dataset(root, classes=("red", "blue", "green"), per_class=6, size=40)
        from tl_core.training.runner import train

        run, _ = train(small_config(epochs=1))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TL_API_")}
    env.update(TL_HOME=str(root / "home"), TL_API_TOKEN=TOKEN, TL_API_MAX_IMAGES="8", TF_CPP_MIN_LOG_LEVEL="2")
    log = (root / "serve.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "tl_core", "serve", "--run", run.id, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        log.seek(0)
        assert process.poll() is None, log.read()
        yield port, run.id
    finally:
        process.terminate()
        process.wait(30)
        log.seek(0)
        output = log.read()
        log.close()
    assert "Traceback" not in output, output


def _classify(port: int, name: str, photos: list, classes: list, unknown: bool = False):
    """``:classify``'s probabilities for ``photos``, in ``classes`` order (and its unknown flags, with ``unknown``)."""
    import httpx

    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    reply = httpx.post(
        f"http://127.0.0.1:{port}/v1/models/{name}:classify?top_k={len(classes)}", files=files, headers=AUTH, timeout=60
    )
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    probs = np.array([[{t["label"]: t["probability"] for t in r["top_k"]}[c] for c in classes] for r in results])
    return (probs, [r["unknown"] for r in results]) if unknown else probs


@pytest.mark.slow
def test_tritonclient_health_metadata_and_infer_answer_like_classify(server):
    import tritonclient.http as triton

    from tl_core.data.images import load_batch

    port, name = server
    client = triton.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
    try:
        assert client.is_server_live() and client.is_server_ready()  # open, as probes want them
        server_meta = client.get_server_metadata(headers=AUTH)
        assert {"binary_tensor_data", "classification"} <= set(server_meta["extensions"])
        meta = client.get_model_metadata(name, headers=AUTH)
        assert meta["name"] == name and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 64, 64, 3]}]
        classes = meta["parameters"]["class_names"]
        assert sorted(classes) == ["blue", "green", "red"]
        assert meta["outputs"] == [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "unknown", "datatype": "BOOL", "shape": [-1]},
        ]
        assert client.get_model_metadata(name, "1", headers=AUTH) == meta
        config = client.get_model_config(name, headers=AUTH)  # Triton's own, beside the protocol
        assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [64, 64, 3]
        assert [(o["name"], o["data_type"]) for o in config["output"]] == [
            ("probabilities", "TYPE_FP32"),
            ("label", "TYPE_STRING"),
            ("unknown", "TYPE_BOOL"),
        ]
        assert client.is_model_ready(name, headers=AUTH) and client.is_model_ready(name, "1", headers=AUTH)
        assert not client.is_model_ready(name, "2", headers=AUTH) and not client.is_model_ready("nobody", headers=AUTH)

        photos = _photos()
        expected, expected_unknown = _classify(port, name, photos, classes, unknown=True)
        pixels = load_batch(photos, 64, resize=meta["parameters"]["resize"])
        assert pixels.dtype == np.uint8 and len(photos) == 8

        # UINT8 in the binary extension, every output in binary: tritonclient's defaults. (infer adds
        # Inference-Header-Content-Length to the headers dict it is given: a fresh one each call.)
        tensor = triton.InferInput("image", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        result = client.infer(name, [tensor], headers=dict(AUTH))
        probs = result.as_numpy("probabilities")
        assert probs.dtype == np.float32 and probs.shape == (8, 3)
        np.testing.assert_allclose(probs, expected, atol=1e-6)
        labels = [label.decode() for label in result.as_numpy("label")]
        assert labels == [classes[i] for i in expected.argmax(1)]
        flags = result.as_numpy("unknown")  # the same flags as :classify's, in the BOOL binary layout
        assert flags.dtype == np.bool_ and flags.tolist() == expected_unknown
        assert all(isinstance(flag, bool) for flag in expected_unknown)
        assert result.get_response()["model_name"] == name

        # FP32 as JSON, one requested output as JSON, the top 2 as Triton's classification strings, a version
        tensor = triton.InferInput("image", [3, 64, 64, 3], "FP32")
        tensor.set_data_from_numpy(pixels[:3].astype(np.float32), binary_data=False)
        wanted = [
            triton.InferRequestedOutput("probabilities", binary_data=False),
            triton.InferRequestedOutput("probabilities", binary_data=False, class_count=2),
        ]
        result = client.infer(name, [tensor], model_version="1", outputs=wanted, headers=dict(AUTH), request_id="r-7")
        answer = result.get_response()
        assert answer["id"] == "r-7" and [o["name"] for o in answer["outputs"]] == ["probabilities"] * 2
        np.testing.assert_allclose(answer["outputs"][0]["data"], expected[:3].reshape(-1), atol=1e-6)
        top2 = np.array(answer["outputs"][1]["data"]).reshape(3, 2)
        for row, probs_row in zip(top2, expected[:3]):
            best = np.argsort(-probs_row)[:2]
            assert [int(s.split(":")[1]) for s in row] == list(best)
            assert [s.split(":", 2)[2] for s in row] == [classes[i] for i in best]
            np.testing.assert_allclose([float(s.split(":")[0]) for s in row], probs_row[best], atol=1e-6)
    finally:
        client.close()


@pytest.mark.slow
def test_tritonclient_hears_the_token_and_a_bad_tensor_refused_with_its_reason(server):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    port, name = server
    client = triton.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)

    def refusal(shape, datatype="UINT8", headers=AUTH, data=None, binary=True) -> InferenceServerException:
        tensor = triton.InferInput("image", shape, datatype)
        dtype = {"UINT8": np.uint8, "FP32": np.float32, "INT32": np.int32}[datatype]
        tensor.set_data_from_numpy(np.zeros(shape, dtype) if data is None else data, binary_data=binary)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(name, [tensor], headers=dict(headers))  # infer adds its own headers to the dict
        return caught.value

    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            error = refusal([1, 64, 64, 3], headers=headers)
            assert error.status() == "401" and "bearer token" in error.message()
            with pytest.raises(InferenceServerException, match="bearer token"):
                client.get_model_metadata(name, headers=headers)
        cases = [  # (refusal, status, words of the reason)
            (
                refusal([1, 32, 32, 3]),
                "400",
                "must have shape [N, 64, 64, 3] (N images of 64x64 RGB pixels, the model's",
            ),
            (refusal([1, 32, 32, 3], binary=False), "400", "input size); got [1, 32, 32, 3]"),
            (refusal([2, 64, 64]), "400", "got [2, 64, 64]"),
            (refusal([1, 64, 64, 3], "INT32"), "400", 'datatype "INT32"; send UINT8 or FP32'),
            (refusal([9, 64, 64, 3]), "413", "9 images in one request; at most 8"),
            (refusal([1, 64, 64, 3], "FP32", data=np.full((1, 64, 64, 3), 300, np.float32)), "400", "0 and 255"),
            (refusal([1, 64, 64, 3], "FP32", data=np.full((1, 64, 64, 3), np.nan, np.float32)), "400", "finite"),
            (refusal([1, 64, 64, 3], "FP32", data=np.full((1, 64, 64, 3), -1, np.float32), binary=False), "400", "0"),
        ]
        for error, status, reason in cases:
            assert error.status() == status and reason in error.message(), (status, reason, error)
        with pytest.raises(InferenceServerException, match="No model named 'nobody'"):
            client.get_model_metadata("nobody", headers=AUTH)
    finally:
        client.close()


@pytest.mark.slow
def test_hand_written_v2_bodies_get_oip_errors_and_nested_json_works(server):
    """What tritonclient would never send: bodies that are wrong in each part, each a 4xx ``{"error": ...}``
    quoting the bad value; and nested JSON ``data``, which the protocol allows."""
    import httpx

    port, name = server
    url = f"http://127.0.0.1:{port}/v2/models/{name}"
    image = {"name": "image", "datatype": "UINT8", "shape": [1, 64, 64, 3]}
    flat = [7] * (64 * 64 * 3)
    head = json.dumps({"inputs": [{**image, "parameters": {"binary_data_size": 5}}]}).encode()
    cases = [  # (body, headers, status, words of the reason)
        (b"{nope", {}, 400, "not valid JSON"),
        (json.dumps({"rows": []}).encode(), {}, 400, '"inputs"'),
        (json.dumps({"inputs": [{**image, "name": "input_1", "data": flat}]}).encode(), {}, 400, '"input_1"'),
        (json.dumps({"inputs": [{**image, "data": flat[:-1]}]}).encode(), {}, 400, "holds 12287 numbers"),
        (json.dumps({"inputs": [{**image, "data": [0.5] + flat[1:]}]}).encode(), {}, 400, "whole numbers"),
        (
            json.dumps({"inputs": [{**image, "data": flat}], "outputs": [{"name": "logits"}]}).encode(),
            {},
            400,
            "logits",
        ),
        (head + b"12345", {"Inference-Header-Content-Length": "x"}, 400, "Inference-Header-Content-Length: 'x'"),
        (head + b"12345", {"Inference-Header-Content-Length": str(len(head))}, 400, "binary_data_size says 5"),
        (json.dumps({"inputs": [{**image, "data": flat}]}).encode(), {"Content-Encoding": "gzip"}, 415, "gzip"),
    ]
    with httpx.Client(timeout=60, headers=AUTH) as http:
        for body, headers, status, reason in cases:
            reply = http.post(f"{url}/infer", content=body, headers={"content-type": "application/json", **headers})
            assert reply.status_code == status and reason in reply.json()["error"], (body[:80], reply.text[:300])
        assert http.post(f"{url}/versions/2/infer", json={"inputs": []}).json()["error"].startswith("Model")
        nested = np.full((1, 64, 64, 3), 7).tolist()
        reply = http.post(f"{url}/infer", json={"inputs": [{**image, "data": nested}]})
        flat_reply = http.post(f"{url}/infer", json={"inputs": [{**image, "data": flat}]})
        assert reply.status_code == 200 and reply.json() == flat_reply.json()
        assert {o["name"] for o in reply.json()["outputs"]} == {"probabilities", "label", "unknown"}
        predict = http.post(f"http://127.0.0.1:{port}/v1/models/{name}:predict", json={"instances": nested})
        np.testing.assert_allclose(reply.json()["outputs"][0]["data"], predict.json()["predictions"][0], atol=1e-6)
        assert http.get(f"http://127.0.0.1:{port}/v2").json()["name"] == "tl_core"
    assert httpx.get(f"http://127.0.0.1:{port}/v2", timeout=10).status_code == 401


def _answer(sock: socket.socket) -> tuple[int, dict]:
    """One HTTP/1.1 response read off ``sock``: its status and JSON body."""
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed before answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed before the whole answer"
        body += chunk
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.mark.slow
def test_v2_and_v1_requests_that_arrive_together_share_forward_passes(server):
    """Eight v2 ``infer`` requests and one v1 ``:predict`` of the same pixels, each held back by its last byte
    and then completed at once: the server's forward-pass counters (v1 metadata) show the nine images in fewer
    than nine passes (one micro-batcher for both protocols), and every answer is the same."""
    import httpx

    port, name = server
    pixels = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "UINT8",
                    "shape": [1, 64, 64, 3],
                    "parameters": {"binary_data_size": pixels.nbytes},
                }
            ]
        }
    ).encode()

    def request(path: str, body: bytes, extra: str = "") -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/octet-stream\r\n{extra}\r\n"
        ).encode() + body

    v2 = request(
        f"/v2/models/{name}/infer", head + pixels.tobytes(), f"Inference-Header-Content-Length: {len(head)}\r\n"
    )
    v1 = request(f"/v1/models/{name}:predict", json.dumps({"instances": pixels.tolist()}).encode())

    def counters() -> dict:
        url = f"http://127.0.0.1:{port}/v1/models/{name}/metadata"
        return httpx.get(url, headers=AUTH, timeout=30).json()["serving"]

    before = counters()
    requests = [v2] * 8 + [v1]
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in requests]
    try:
        for sock, raw in zip(sockets, requests):
            sock.sendall(raw[:-1])
        time.sleep(0.2)
        for sock, raw in zip(sockets, requests):
            sock.sendall(raw[-1:])
        answers = [_answer(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    after = counters()
    assert [status for status, _ in answers] == [200] * 9, answers
    predicted = answers[-1][1]["predictions"]
    for _, answer in answers[:-1]:
        np.testing.assert_allclose(answer["outputs"][0]["data"], predicted[0], atol=1e-6)
    assert after["images"] - before["images"] == 9
    assert after["forward_passes"] - before["forward_passes"] < 9, (before, after)


def test_a_header_length_that_is_not_ascii_digits_is_a_400_not_a_crash():
    """``str.isdigit`` is true for "²", which ``int`` refuses: a parser process must answer 400, not die."""
    from fastapi import HTTPException

    from tl_core.deploy import oip

    assert [oip.whole_number(text) for text in ("12", " 7 ", "²", " ²", "١", "-3", "")] == [
        12,
        7,
        None,
        None,
        None,
        None,
        None,
    ]
    for header in ("²", " ²", "x"):
        with pytest.raises(HTTPException) as refused:
            oip.split_binary(b'{"inputs": []}', header)
        assert refused.value.status_code == 400 and repr(header) in refused.value.detail
