"""The REST server's edges against hostile clients: the token before any body, deadlines for slow headers and
bodies, a cap on open connections, startup refusals, bad :predict bodies, a run whose model does not load.

Network behaviour is tested on real servers on 127.0.0.1 (uvicorn in a thread with the server's own
configuration, or a ``python -m tl_core serve`` process) with raw sockets or httpx; answers with FastAPI's
TestClient; startup refusals as subprocesses. Every loop and read is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from .factories import REPO, small_config

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BIG = 30_000_000  # bytes: under the default body limit, so only the token can turn it away


@contextlib.contextmanager
def served(app, **limits):
    """``app`` on a free loopback port with the server's own configuration (``server_config``); yields the port."""
    import uvicorn

    from tl_core.deploy.serving import server_config

    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=0, **limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    assert server.started, "the server did not start within 30 s"
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float, bool]:
    """What the server sends until it closes the connection or ``limit_s`` passes: (bytes, seconds, closed)."""
    start, received = time.monotonic(), b""
    while (left := limit_s - (time.monotonic() - start)) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received, time.monotonic() - start, True
        if not chunk:
            return received, time.monotonic() - start, True
        received += chunk
    return received, time.monotonic() - start, False


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def error_of(reply: bytes) -> str:
    return json.loads(reply.partition(b"\r\n\r\n")[2])["error"]


def request_head(method: str, path: str, length: int, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\n{extra}\r\n"
    ).encode()


# ---------------------------------------------------------------- the token before the body


def test_a_big_body_without_the_token_is_refused_before_it_is_read():
    """30 MB announced, 64 KB sent, no token: 401 at once and the connection closed, on :classify (whose
    multipart form FastAPI parses before route dependencies run) as on :predict. With the token the same
    request waits for its body: the token decided, not the size."""
    import httpx

    from tl_core.deploy.serving import create_app

    with served(create_app([], token=TOKEN)) as port:
        for route in ("/v1/models/any:classify", "/v1/models/any:predict"):
            for auth in ("", "Authorization: Bearer wrong\r\n", "Authorization: s3cret\r\n"):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(request_head("POST", route, BIG, auth) + b"\0" * 65536)
                    reply, seconds, closed = read_until_closed(sock, 10)
                assert status_of(reply) == 401 and closed and seconds < 5, (route, auth, reply[:200], seconds)
                assert b"www-authenticate: Bearer" in reply and "bearer token" in error_of(reply)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request_head("POST", "/v1/models/any:classify", BIG, f"Authorization: Bearer {TOKEN}\r\n"))
            assert read_until_closed(sock, 1.0)[0] == b""  # still reading the body: nothing answered yet

        sent = 0

        def body():  # a real client streaming 30 MB; counts what the server let it send
            nonlocal sent
            for _ in range(BIG // (1 << 20)):
                sent += 1 << 20
                yield b"\0" * (1 << 20)

        headers = {"content-length": str(BIG // (1 << 20) * (1 << 20)), "content-type": "multipart/form-data; b=x"}
        try:
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/models/any:classify", content=body(), headers=headers)
            status = reply.status_code
        except httpx.HTTPError:  # the server closed while the client was still writing: no 200 either way
            status = None
        assert status in (401, None) and sent < BIG // 2, (status, sent)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


# ---------------------------------------------------------------- slow clients and many connections


def test_slow_headers_and_bodies_get_408_within_the_deadline_and_idle_connections_close():
    from tl_core.deploy.serving import create_app

    with served(create_app([], token=TOKEN), header_timeout_s=1.0, body_timeout_s=1.5) as port:
        # headers never finished, one byte at a time (a deadline from the start, not from the last byte)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            for byte in b"Host: 127.0.0.1\r\nX-Slow: aaaaaaaa":
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if time.monotonic() - start > 4:
                    break
                time.sleep(0.1)
            reply, _, closed = read_until_closed(sock, 5)
            seconds = time.monotonic() - start
        assert status_of(reply) == 408 and closed and seconds < 3, (reply, seconds)
        assert "request headers did not arrive within 1 s" in error_of(reply)

        # a body that stops half way (FastAPI reads a form before the route looks for the model)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = request_head("POST", "/v1/models/any:classify", 1000, f"Authorization: Bearer {TOKEN}\r\n")
            sock.sendall(head + b"--xyz\r\n")
            reply, seconds, closed = read_until_closed(sock, 6)
        assert status_of(reply) == 408 and closed and 1.0 < seconds < 3.5, (reply, seconds)
        assert "request body did not arrive within 1.5 s" in error_of(reply)

        # an answer given before the body was read (no such model) closes the connection: no draining it
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = request_head("POST", "/v1/models/any:predict", BIG, f"Authorization: Bearer {TOKEN}\r\n")
            sock.sendall(head + b'{"instances": [')
            reply, seconds, closed = read_until_closed(sock, 5)
        assert status_of(reply) == 404 and closed and seconds < 1, (reply, seconds)

        # a connection that never says anything is closed without an answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            reply, seconds, closed = read_until_closed(sock, 5)
        assert reply == b"" and closed and seconds < 3, seconds

        # a well-behaved request on a fresh connection is untouched
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            reply, _, closed = read_until_closed(sock, 5)
        assert status_of(reply) == 200 and closed


def test_connections_past_the_limit_are_refused_and_headers_are_bounded_in_size():
    from tl_core.deploy.serving import create_app

    with served(create_app([], token=TOKEN), header_timeout_s=5.0, max_connections=4) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        try:
            for sock in held:
                sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # unfinished: each holds its place
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                reply, seconds, closed = read_until_closed(extra, 3)
            assert status_of(reply) == 503 and closed and "at most 4" in error_of(reply), reply
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)  # the server notices the closed ones; a new client gets in again
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert status_of(read_until_closed(sock, 5)[0]) == 200

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # fast but endless headers
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * (1 << 20))
            except OSError:
                pass
            reply, _, closed = read_until_closed(sock, 5)
        assert status_of(reply) == 431 and closed, reply[:200]


# ---------------------------------------------------------------- startup refusals


def serve_command(*args: str, env: dict, limit_s: float = 120) -> subprocess.CompletedProcess:
    """``python -m tl_core serve ARGS`` with exactly ``env`` (plus a quiet TensorFlow)."""
    return subprocess.run(
        [sys.executable, "-m", "tl_core", "serve", *args],
        capture_output=True,
        text=True,
        timeout=limit_s,
        cwd=REPO,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_an_empty_token_or_no_token_off_loopback_refuses_to_start(workspace):
    base = {k: v for k, v in os.environ.items() if not k.startswith("TL_API_")}
    empty = serve_command("--run", "some-run", env={**base, "TL_API_TOKEN": ""})
    assert empty.returncode == 2 and "TL_API_TOKEN is set but empty" in empty.stderr, empty.stderr
    blank = serve_command("--run", "some-run", env={**base, "TL_API_TOKEN": "  "})
    assert blank.returncode == 2 and "TL_API_TOKEN is set but empty" in blank.stderr, blank.stderr

    open_host = serve_command("--run", "some-run", "--host", "0.0.0.0", env=base)
    assert open_host.returncode == 2 and "Refusing to serve on 0.0.0.0 without TL_API_TOKEN" in open_host.stderr
    for text in (empty.stderr, open_host.stderr):
        assert "Traceback" not in text

    from tl_core.cli import build_parser
    from tl_core.deploy.serving import DEFAULT_PORT, startup_token

    assert startup_token("127.0.0.1") is None and startup_token("::1") is None and startup_token("localhost") is None
    assert startup_token("0.0.0.0", allow_no_token=True) is None
    assert DEFAULT_PORT != 8501  # the app's own port
    assert build_parser().parse_args(["serve", "--port", "9123"]).port == 9123


@pytest.mark.slow
def test_allowed_no_token_off_loopback_warns_and_goes_on(workspace):
    """The permission lets startup go past the token check (to the unknown run here), with a warning."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TL_API_")}
    for args, env in ((["--allow-no-token"], base), ([], {**base, "TL_API_ALLOW_NO_TOKEN": "1"})):
        done = serve_command("--run", "no-such-run", "--host", "0.0.0.0", *args, env=env)
        assert done.returncode == 2 and "warning: serving on 0.0.0.0 without TL_API_TOKEN" in done.stderr
        assert "no-such-run" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------- with a real model


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory, keras_home_copy):
    """One finished run (MobileNetV2 alpha 0.35 at 64 px, one epoch on synthetic colours) and a copy of it whose
    model.keras is cut short."""
    from .factories import colors_dataset

    root = tmp_path_factory.mktemp("serving_edges")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        colors_dataset(root, per_class=6, size=40)
        from tl_core.training.runner import train

        run, _ = train(small_config(epochs=1))
    broken = run.root.parent / f"{run.id}-truncated"
    shutil.copytree(run.root, broken)
    model = broken / "model.keras"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    return root / "home", run.id, broken.name


@pytest.fixture
def tiny_run(tiny_home, monkeypatch):
    from tl_core.runs.store import get_run

    home, run_id, _ = tiny_home
    monkeypatch.setenv("TL_HOME", str(home))
    return get_run(run_id)


@pytest.mark.slow
def test_hostile_predict_bodies_get_400_with_a_reason(tiny_run):
    from fastapi.testclient import TestClient

    from tl_core.deploy.serving import create_app

    http = TestClient(create_app([tiny_run], token=TOKEN))  # server exceptions would raise here
    url = f"/v1/models/{tiny_run.id}:predict"
    pixel = "[" + ",".join(["[" + ",".join(["[1,2,3]"] * 64) + "]"] * 64) + "]"
    cases = [  # (body, words of the reason)
        ('{"instances": [' + "[" * 100_000 + "]" * 100_000 + "]}", "nested too deeply"),
        ('{"instances": [' * 30_000 + "]}" * 30_000, "nested too deeply"),
        ('{"instances": [' + pixel.replace("1", "9" * 400, 1) + "]}", "too large a number"),
        ('{"instances": [' + pixel.replace("1", "9" * 5000, 1) + "]}", "not valid JSON"),
        ('{"instances": [' + pixel.replace("1", "1e400", 1) + "]}", "finite"),
        ('{"instances": [' + "[" * 200 + "1" + "]" * 200 + "]}", "64x64x3"),
        ('{"instances": "' + "9" * 400 + '"}', '"instances"'),
    ]
    for body, reason in cases:
        reply = http.post(url, content=body.encode(), headers={**AUTH, "content-type": "application/json"})
        assert reply.status_code == 400 and reason in reply.json()["error"], (body[:80], reply.text[:300])
    good = http.post(url, json={"instances": [np.full((64, 64, 3), 128).tolist()]}, headers=AUTH)
    classes = http.get(f"/v1/models/{tiny_run.id}/metadata", headers=AUTH).json()["metadata"]["class_names"]
    assert good.status_code == 200 and len(good.json()["predictions"][0]) == len(classes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_serve_all_skips_a_broken_run_and_stays_responsive_to_hostile_clients(tiny_home, tmp_path):
    """A real ``serve --all`` process: the run with a truncated model is skipped with a warning naming it;
    /healthz answers promptly while a 30 MB wrong-shaped :predict body is parsed; slow headers are dropped."""
    import httpx

    home, run_id, broken_id = tiny_home
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w+")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TL_API_")}
    env.update(TL_HOME=str(home), TL_API_TOKEN=TOKEN, TL_API_HEADER_TIMEOUT_S="2", TF_CPP_MIN_LOG_LEVEL="2")
    server = subprocess.Popen(
        [sys.executable, "-m", "tl_core", "serve", "--all", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        log.seek(0)
        assert server.poll() is None, log.read()
        models = httpx.get(f"{url}/v1/models", headers=AUTH, timeout=10).json()["models"]
        assert [m["model_spec"]["name"] for m in models] == [run_id]

        wrong = b'{"instances": [' + b",".join([b"[1,2,3]"] * 3_700_000) + b"]}"
        answer = {}

        def post_wrong():
            answer["reply"] = httpx.post(
                f"{url}/v1/models/{run_id}:predict",
                content=wrong,
                headers={**AUTH, "content-type": "application/json"},
                timeout=120,
            )

        poster = threading.Thread(target=post_wrong)
        posted = time.monotonic()
        poster.start()
        latencies = []
        with httpx.Client(timeout=30) as client:
            while poster.is_alive() and len(latencies) < 2000:
                start = time.monotonic()
                assert client.get(f"{url}/healthz").status_code == 200
                latencies.append(time.monotonic() - start)
                time.sleep(0.02)
        poster.join(120)
        predict_s = time.monotonic() - posted
        reply = answer["reply"]
        assert reply.status_code in (400, 413) and "instance" in reply.json()["error"], reply.text[:300]
        # parsed on the event loop, /healthz waited for the whole parse; a busy shared machine slows both alike
        assert len(latencies) > 5 and max(latencies) < predict_s / 3, (len(latencies), max(latencies), predict_s)

        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            reply, seconds, closed = read_until_closed(sock, 10)
        assert status_of(reply) == 408 and closed and seconds < 5, (reply, seconds)
    finally:
        server.terminate()
        server.wait(30)
        log.seek(0)
        output = log.read()
        log.close()
    assert f"warning: skipping run {broken_id!r}: its model does not load" in output, output
    assert "Traceback" not in output, output
