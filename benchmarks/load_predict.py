"""Load test: many users predicting at once through the running app, in real browser pages.

    python benchmarks/load_predict.py [DATASET_DIR] [--users 20] [--images 10] [--size 224]

Trains one model with the CLI (default settings, MobileNetV2 alpha 0.35, weights from
../shared/keras_home) in a fresh temporary workspace, starts the app with the README's command on a
free localhost port, then opens ``--users`` pages at once in one headless Chromium (Debian's
``chromium``, driven by Playwright). When every user has Predict open, all of them at once drop
``--images`` validation photos into the uploader one after another, waiting for each one's label to
show before the next, as a person would. Every upload is one request; its latency runs from choosing the file to its label on
screen. The work is bounded: users x images requests, each with a timeout.

Prints one line per user, then ``key=value`` lines: requests, errors, throughput_rps, p50_s, p95_s,
max_s, p50_first_s and p50_later_s (each user's first upload, and the others), labels_right (shown label
equals the photo's folder) and server_cpu_s_per_request. The browser pages share this machine's CPU
with the server, so latencies include the client's rendering too; the server's own CPU per request says
what it could serve with the browsers elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    # every user's page is active at once: no throttling of pages in the background
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
]


@dataclass
class UserResult:
    user: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    right: int = 0
    open_s: float = float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def val_photos(data: Path) -> list[tuple[Path, str]]:
    """(photo, its class folder) from the validation split, classes interleaved so every user gets a mix."""
    val = next(data / name for name in ("val", "validation", "test") if (data / name).is_dir())
    per_class = [
        sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for folder in sorted(val.iterdir())
        if folder.is_dir()
    ]
    mixed = [photo for group in zip(*per_class) for photo in group]
    return [(photo, photo.parent.name) for photo in mixed]


def prepare_model(env: dict, data: Path, size: int | None) -> None:
    """Import the dataset and train one model with the CLI, as a user of the app would get by default."""
    cli = [sys.executable, "-m", "tl_core"]
    subprocess.run(
        cli + ["datasets", "add", str(data), "--name", "load"], env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL
    )
    extra = ["--size", str(size)] if size else []
    subprocess.run(cli + ["train", "--data", "load", *extra], env=env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)


@contextmanager
def app_server(env: dict, log_path: Path, extra_args: tuple = ()):
    """The README's app command on a free loopback port; yields (URL, server process)."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "streamlit_app.py",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                *extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("app did not become healthy:\n" + log_path.read_text()[-3000:]) from None
                time.sleep(0.5)
        yield url, server
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


async def open_predict_page(browser, url: str, result: UserResult, timeout_s: float):
    """A user's page on Predict, ready for uploads; None (and an error recorded) if it never got there."""
    context = await browser.new_context(viewport={"width": 1200, "height": 1600})
    page = await context.new_page()
    page.on("pageerror", lambda err: result.errors.append(f"page error: {err}"))
    start = time.perf_counter()
    try:
        await page.goto(f"{url}/predict", timeout=timeout_s * 1000)
        await page.get_by_text("Upload one or more images").wait_for(timeout=timeout_s * 1000)
    except Exception as exc:
        result.errors.append(f"opening Predict: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        await page.screenshot(path=str(Path(tempfile.gettempdir()) / f"tl_load_user{result.user}.png"))
        await context.close()
        return None
    result.open_s = time.perf_counter() - start
    return page


async def predict_one_by_one(page, result: UserResult, photos: list[tuple[Path, str]], timeout_s: float) -> None:
    """Drop the photos into the uploader one after another, each waiting for its label on screen."""
    uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]').first
    captions = page.locator('[data-testid="stImageCaption"]')
    labels = page.locator('[data-testid="stMain"] [data-testid="stImageCaption"] strong')  # the answer, in bold
    try:
        for count, (photo, truth) in enumerate(photos, start=1):
            start = time.perf_counter()
            try:
                await uploader.set_input_files(str(photo), timeout=timeout_s * 1000)
                # this upload's result is on screen when its thumbnail's caption shows, with the label in it
                await captions.nth(count - 1).wait_for(timeout=timeout_s * 1000)
                await labels.nth(count - 1).wait_for(timeout=timeout_s * 1000)
                result.latencies.append(time.perf_counter() - start)
                result.right += (await labels.nth(count - 1).inner_text(timeout=timeout_s * 1000)).strip() == truth
            except Exception as exc:  # a timeout or a broken page is an error of this request
                result.errors.append(f"{photo.name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                await page.screenshot(path=str(Path(tempfile.gettempdir()) / f"tl_load_user{result.user}.png"))
                return
        shown = await page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count()
        if shown:
            result.errors.append(f"{shown} error box(es) on the page")
    finally:
        await page.context.close()


async def drive(
    url: str,
    users: int,
    per_user: int,
    photos: list[tuple[Path, str]],
    timeout_s: float,
    chromium: str,
    all_open=lambda: None,
) -> tuple[list[UserResult], float]:
    """Open every user's page, then have all of them predict at once; returns results and the wall time."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        results = [UserResult(u) for u in range(users)]
        pages = await asyncio.gather(*(open_predict_page(browser, url, r, timeout_s) for r in results))
        # each user gets its own slice of photos (wrapping round when there are fewer photos than requests)
        work = [[photos[(u * per_user + i) % len(photos)] for i in range(per_user)] for u in range(users)]
        all_open()
        start = time.perf_counter()
        await asyncio.gather(
            *(
                predict_one_by_one(page, r, work[r.user], timeout_s)
                for page, r in zip(pages, results)
                if page is not None
            )
        )
        wall = time.perf_counter() - start
        await browser.close()
    return results, wall


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, quiet_share: float = 0.05, limit_s: float = 120) -> float:
    """Wait until the server uses under ``quiet_share`` of a core over a second (the first page to open
    Predict loads the model, once); returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        if cpu_seconds(pid) - before < quiet_share:
            break
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_load(
    data: Path,
    users: int,
    per_user: int,
    size: int | None = None,
    timeout_s: float = 120,
    keras_home: Path | None = None,
) -> dict:
    """Set up, load the app, and return the summary (also printed)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Debian's chromium is needed (apt-get install chromium).")
    with tempfile.TemporaryDirectory(prefix="tl_load_") as tmp:
        tmp = Path(tmp)
        home = tmp / "keras_home"
        shutil.copytree(keras_home or SHARED / "keras_home", home, dirs_exist_ok=True)
        env = {
            **os.environ,
            "TL_HOME": str(tmp / "workspace"),
            "KERAS_HOME": str(home),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TL_WORKER_IDLE_EXIT": "5",
        }
        env.pop("TL_PASSWORD", None)
        t0 = time.perf_counter()
        prepare_model(env, data, size)
        print(f"model trained in {time.perf_counter() - t0:.1f}s", flush=True)
        photos = val_photos(data)
        with app_server(env, tmp / "app.log") as (url, server):
            cpu_at = []  # server CPU when every page is open and the model loaded, to count predictions only

            def all_open() -> None:
                print(f"server idle after {wait_until_idle(server.pid):.1f} s (model loaded)", flush=True)
                cpu_at.append(cpu_seconds(server.pid))

            results, wall = asyncio.run(drive(url, users, per_user, photos, timeout_s, chromium, all_open=all_open))
            server_cpu = cpu_seconds(server.pid) - cpu_at[0]
        if any(r.errors for r in results):
            print("server log (last lines):\n" + (tmp / "app.log").read_text()[-4000:])
    latencies = [x for r in results for x in r.latencies]
    for r in results:
        print(
            f"user {r.user:2d}: page open {r.open_s:.1f}s, {len(r.latencies)} predictions, "
            f"median {statistics.median(r.latencies or [0]):.2f}s, {r.right} right, errors: {r.errors or 'none'}"
        )
    summary = {
        "users": users,
        "images_per_user": per_user,
        "requests": users * per_user,
        "completed": len(latencies),
        "errors": sum(len(r.errors) for r in results),
        "page_open_max_s": round(max((r.open_s for r in results), default=float("nan")), 2),
        "wall_s": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_s": round(percentile(latencies, 0.50), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "max_s": round(max(latencies, default=float("nan")), 3),
        # the first upload is each page's first drawing of answers: apart, it tells the p95's tail
        "p50_first_s": round(percentile([r.latencies[0] for r in results if r.latencies], 0.50), 3),
        "p50_later_s": round(percentile([x for r in results for x in r.latencies[1:]], 0.50), 3),
        "labels_right": sum(r.right for r in results),
        # what the server itself spent per prediction: its capacity if the browsers ran elsewhere
        "server_cpu_s_per_request": round(server_cpu / max(1, len(latencies)), 3),
    }
    for key, value in summary.items():
        print(f"{key}={value}")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", default=str(SHARED / "datasets" / "hymenoptera_data"))
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--images", type=int, default=10, help="images each user predicts, one at a time")
    parser.add_argument("--size", type=int, help="input size of the trained model (default: the app's default)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one request may take")
    args = parser.parse_args(argv)
    summary = run_load(Path(args.data), args.users, args.images, args.size, args.timeout)
    return 0 if summary["errors"] == 0 and summary["completed"] == summary["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
