"""Load test of the REST server: N concurrent clients each posting M images to ``:classify``, loopback only.

    python benchmarks/load_serve.py                     # trains a hymenoptera run, serves it, 50 clients x 20 images
    python benchmarks/load_serve.py --run RUN_ID        # an existing run of $TL_HOME
    python benchmarks/load_serve.py --clients 5 --images 4

The server runs in its own process (``python -m tl_core serve``); clients send one image per request, the
validation photos of the run's dataset in turn. Prints one JSON object: requests, errors, throughput, p50,
p95, and how many forward passes the server made for them (requests batched together share one).
Bounded: every request has a timeout, and the whole test stops after ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
LOOPBACK = "127.0.0.1"


async def load_test(
    url: str,
    model: str,
    photos: list[tuple[str, bytes]],
    clients: int,
    per_client: int,
    token: str | None = None,
    timeout_s: float = 60,
    deadline_s: float = 600,
) -> dict:
    """``clients`` concurrent clients, each posting ``per_client`` single-image requests to ``model:classify``."""
    import httpx

    assert url.startswith(f"http://{LOOPBACK}:"), "load tests target this machine only"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    errors: list[str] = []

    async def client(index: int, session: httpx.AsyncClient) -> None:
        for step in range(per_client):
            name, data = photos[(index * per_client + step) % len(photos)]
            start = time.perf_counter()
            try:
                reply = await session.post(
                    f"{url}/v1/models/{model}:classify",
                    files=[("files", (name, data))],
                    headers=headers,
                    timeout=timeout_s,
                )
                if reply.status_code != 200:
                    errors.append(f"{reply.status_code}: {reply.text[:200]}")
                    continue
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients)
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits) as session:
        await asyncio.wait_for(asyncio.gather(*(client(i, session) for i in range(clients))), deadline_s)
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) if ordered else None

    return {
        "clients": clients,
        "images_per_client": per_client,
        "requests": clients * per_client,
        "ok": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(elapsed, 2),
        "throughput_req_s": round(len(latencies) / elapsed, 2),
        "p50_s": pct(0.5),
        "p95_s": pct(0.95),
    }


def validation_photos(run_dir: Path, limit: int = 200) -> list[tuple[str, bytes]]:
    """The run's own validation photos (as files a client would send)."""
    sys.path.insert(0, str(REPO))
    from tl_core.data.datasets import load_dataset
    from tl_core.runs.store import get_run

    run = get_run(run_dir)
    dataset = load_dataset(run.config.data)
    files = run.interpretation().files[:limit]
    return [(Path(f).name, (dataset.root / f).read_bytes()) for f in files]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, limit_s: float = 180) -> None:
    import httpx

    end = time.time() + limit_s
    while time.time() < end:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer /readyz within {limit_s} s")


def train_run(env: dict) -> str:
    data = SHARED / "datasets" / "hymenoptera_data"
    out = subprocess.run(
        [sys.executable, "-m", "tl_core", "train", "--data", str(data), "--alpha", "0.35"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["run_dir"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run id or folder in $TL_HOME (default: train one on hymenoptera)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--images", type=int, default=20, help="images (requests) per client")
    parser.add_argument("--deadline", type=float, default=900)
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TL_API_TOKEN="load-test-token")
    scratch = None
    if not args.run:
        scratch = tempfile.TemporaryDirectory(prefix="tl-load-serve-")
        keras_home = Path(scratch.name) / "keras_home"
        subprocess.run(["cp", "-r", str(SHARED / "keras_home"), str(keras_home)], check=True)
        env.update(TL_HOME=str(Path(scratch.name) / "home"), KERAS_HOME=str(keras_home))
        os.environ.update(TL_HOME=env["TL_HOME"])
        args.run = train_run(env)
    run_dir = Path(args.run)
    photos = validation_photos(run_dir)
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "tl_core", "serve", "--run", str(run_dir), "--port", str(port)], cwd=REPO, env=env
    )
    try:
        wait_ready(url, server)
        import httpx

        model = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer load-test-token"}).json()
        name = model["models"][0]["model_spec"]["name"]
        result = asyncio.run(
            load_test(url, name, photos, args.clients, args.images, token="load-test-token", deadline_s=args.deadline)
        )
        stats = httpx.get(
            f"{url}/v1/models/{name}/metadata", headers={"Authorization": "Bearer load-test-token"}
        ).json()["serving"]
        result.update(forward_passes=stats["forward_passes"], images_served=stats["images"])
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait(30)
        if scratch:
            scratch.cleanup()


if __name__ == "__main__":
    main()
