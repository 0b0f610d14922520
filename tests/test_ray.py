"""The Ray backend against a real local Ray head (127.0.0.1, 2 CPUs, stopped afterwards).

Runs go through the Jobs API exactly as on a cluster: one from the app's backend, one from the CLI (whose
model then predicts a zip as a batch prediction job);
one cancelled mid-run; one whose training process is killed, shown interrupted and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial

import pytest
from streamlit.testing.v1 import AppTest

from .factories import REPO, colors_dataset, make_class_folders, small_config, zip_folder

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head of this test's own, stopped afterwards without touching any other Ray on the machine: it runs
    as ``ray start --block`` in a session of its own, and SIGTERM makes it shut down the processes it started
    (``ray stop`` would end every Ray process of the machine)."""
    temp = tempfile.mkdtemp(prefix="tlray", dir="/tmp")  # short: Ray's socket paths live under it
    port, dashboard = _free_port(), _free_port()
    log = open(os.path.join(temp, "ray-start.log"), "wb")  # closed in the finally below
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts"]
        + [
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--num-gpus",
            "0",
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dashboard),
            "--disable-usage-stats",
            "--temp-dir",
            temp,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        from tl_core.backends.ray_jobs import RayBackend

        deadline = time.time() + 270
        while True:  # ready: the Jobs API answers and the cluster reports its CPUs
            if head.poll() is not None:
                with open(log.name, encoding="utf-8", errors="replace") as text:
                    pytest.fail(f"ray start exited with {head.returncode}:\n{text.read()[-3000:]}")
            try:
                RayBackend(address).client.list_jobs()
                if RayBackend(address).resources().get("CPU"):
                    break
            except Exception:
                if time.time() > deadline:
                    raise
            time.sleep(1)
        yield address
    finally:
        head.terminate()  # the head stops its raylet, GCS, dashboard and workers; jobs' drivers follow them
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # this head's own session only
            head.wait()
        log.close()


@pytest.fixture
def ray_backend(ray_head, monkeypatch, tmp_path):
    monkeypatch.setenv("TL_RAY_ADDRESS", ray_head)
    colors_dataset(tmp_path, per_class=8, size=48)
    from tl_core.backends import get_backend

    backend = get_backend()
    assert backend.name == "ray"
    return backend


_config = partial(small_config, epochs=3)


def _wait(backend, run, states, timeout=240.0, until=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = backend.check_alive(run)
        if state in states and (until is None or until()):
            return state
        time.sleep(0.5)
    raise AssertionError(f"{run.id} still {run.state} after {timeout} s:\n{backend.logs(run)[-2000:]}")


# a run slow enough to act on mid-run: the whole base trains, many epochs
SLOW = dict(freeze_depth="none", epochs=60, early_stopping=False, augment=False)


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_runs_from_the_app_and_the_cli_finish_on_the_cluster_and_a_batch_prediction_too(ray_backend, capsys, tmp_path):
    from tl_core import cli
    from tl_core.runs.store import get_run

    from_app = ray_backend.submit(_config(), user="alice")
    assert cli.main(["submit", "--data", "colors", "--alpha", "0.35", "--size", "64", "--epochs", "3"]) == 0
    from_cli = get_run(capsys.readouterr().out.strip().splitlines()[-1])

    train_page = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    assert any(c.value.startswith("Cluster: **CPU") for c in train_page.sidebar.caption), train_page.sidebar.caption
    assert any("Ray cluster at http://127.0.0.1" in c.value for c in train_page.sidebar.caption)
    train_page.switch_page("pages/train.py").run()
    listed = "\n".join(m.value for m in train_page.markdown)
    assert from_app.id in listed and from_cli.id in listed, listed

    assert cli.main(["wait", from_cli.id, "--timeout", "300"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["run"] == from_cli.id and answer["state"] == "finished" and 0 <= answer["val_accuracy"] <= 1
    assert _wait(ray_backend, from_app, {"finished", "failed"}) == "finished", ray_backend.logs(from_app)
    for run in (from_app, from_cli):
        assert run.artifacts.metrics()["num_val_images"] > 0
        assert run.status()["ray_job"] == f"tl-{run.id}-1"
        deadline = time.time() + 60  # the run folder says finished a moment before its process has exited
        while ray_backend.job_status(run) == "RUNNING" and time.time() < deadline:
            time.sleep(0.5)
        assert ray_backend.job_status(run) == "SUCCEEDED"
        assert f"--- Ray job tl-{run.id}-1 ---" in ray_backend.logs(run)

    # a finished run's model predicts a zip as a Ray job of its own (submit --predict), followed by wait
    archive = zip_folder(make_class_folders(tmp_path / "new", per_class=3, size=48), tmp_path / "new.zip")
    out = tmp_path / "predictions.csv"
    argv = ["submit", "--predict", "--run", from_cli.id, "--input", str(archive), "--out", str(out), "--top-k", "1"]
    assert cli.main(argv) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli.main(["wait", job_id, "--timeout", "240"]) == 0, ray_backend.logs(ray_backend.refresh_jobs()[0])
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (answer["state"], answer["predicted"], answer["skipped"]) == ("finished", 6, 0)
    assert out.read_text().splitlines()[0] == "file,predicted,probability,unknown,distance,top1,p1,error"
    job = ray_backend.refresh_jobs()[0]
    assert job.status()["ray_job"] == f"tl-{job_id}-1" and f"--- Ray job tl-{job_id}-1 ---" in ray_backend.logs(job)


def test_cancel_stops_a_job_mid_run_and_a_killed_process_shows_interrupted_and_resumes(ray_backend):
    """Two runs at once (one CPU each): one is cancelled mid-run, the other's process is killed."""
    cancelled = ray_backend.submit(_config(**SLOW))
    killed = ray_backend.submit(_config(**{**SLOW, "epochs": 5}))
    _wait(ray_backend, cancelled, {"running"}, until=lambda: cancelled.progress().get("epoch"))
    ray_backend.cancel(cancelled, user="bob")
    assert cancelled.state == "cancelled"
    assert ray_backend.job_status(cancelled) in ("STOPPED", "SUCCEEDED")  # stopped, or it read the request first
    assert not ray_backend.is_alive(cancelled)

    _wait(ray_backend, killed, {"running"}, until=lambda: killed.artifacts.checkpoint() is not None)
    os.kill(killed.status()["pid"], signal.SIGKILL)
    assert _wait(ray_backend, killed, {"interrupted"}, timeout=60) == "interrupted"
    assert ray_backend.job_status(killed) == "FAILED"
    ray_backend.resume(killed)
    assert killed.status()["ray_job"] == f"tl-{killed.id}-2"
    assert _wait(ray_backend, killed, {"finished", "failed"}) == "finished", ray_backend.logs(killed)
    epochs = [row["epoch"] for row in killed.history()]
    assert epochs == sorted(epochs) and epochs[-1] == 5  # continued from the checkpoint, not from epoch 1


def test_without_the_address_nothing_changes(monkeypatch):
    from tl_core.backends import get_backend

    monkeypatch.delenv("TL_RAY_ADDRESS", raising=False)
    assert get_backend().name == "local"
    monkeypatch.setenv("TL_RAY_ADDRESS", f"http://127.0.0.1:{_free_port()}")
    from tl_core.errors import TLError

    with pytest.raises(TLError, match="No Ray cluster answers at TL_RAY_ADDRESS=.*unset TL_RAY_ADDRESS"):
        get_backend().submit(_config())
    # a head that stops answering interrupts nothing: its runs stay as they were, the sidebar says so
    from tl_core.runs.store import new_run

    run = new_run(_config().resolved())
    run.set_status("running", ray_job=f"tl-{run.id}-1")
    backend = get_backend()
    assert backend.check_alive(run) == "running" and [r.listed_state for r in backend.refresh()] == ["running"]
    assert backend.describe()["cluster"].startswith("cluster not answering")
