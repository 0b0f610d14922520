"""Faults: a training process killed mid-run, a whole restart, two users at once; runs record who started them."""

import json
import os
import signal
import threading
import time
from functools import partial

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.backends import local
from tl_core.device import process_start_time
from tl_core.errors import TLError

from .factories import REPO, small_config

pytestmark = [
    pytest.mark.usefixtures("server_past_pages_folder_mode", "stop_worker"),
    pytest.mark.colors(classes=("red", "blue"), per_class=20, size=64),
]


@pytest.fixture(autouse=True)
def idle_workers_exit(monkeypatch):
    monkeypatch.setenv("TL_WORKER_IDLE_EXIT", "15")


backend = local.LocalBackend()


slow_cfg = partial(small_config, size=96, batch_size=4, freeze_depth=116, augment=True, epochs=6, early_stopping=False)


def wait_for(condition, timeout=240, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_killed_training_process_is_marked_interrupted_keeps_history_and_resumes(colors):
    victim = backend.submit(slow_cfg())
    follower = backend.submit(slow_cfg(epochs=1))
    wait_for(lambda: len(victim.history()) >= 2 and victim.state == "running", what="two epochs")
    os.kill(victim.status()["pid"], signal.SIGKILL)
    wait_for(lambda: victim.state == "interrupted", what="interrupted state")
    assert "exited with code -9" in victim.status()["message"]
    kept = victim.history()
    assert len(kept) >= 2 and victim.path("checkpoint.weights.h5").exists()
    assert not victim.artifacts.model_path.exists(), "an interrupted run must not look finished"
    wait_for(lambda: follower.state == "finished", what="the next queued job")  # the queue moves on

    checkpoint_epoch = json.loads(victim.path("checkpoint.json").read_text())["epoch"]
    backend.resume(victim)
    wait_for(lambda: victim.state == "finished", what="resumed run to finish")
    history = victim.history()
    assert [row["epoch"] for row in history] == list(range(1, 7))
    assert history[:checkpoint_epoch] == kept[:checkpoint_epoch]
    assert any("resuming from the checkpoint" in line for line in victim.log_text().splitlines())


@pytest.mark.slow
def test_restart_mid_job_marks_it_interrupted_and_a_new_worker_takes_the_queue(colors):
    victim = backend.submit(slow_cfg())
    waiting = backend.submit(slow_cfg(epochs=1))
    wait_for(lambda: len(victim.history()) >= 1 and victim.state == "running", what="first epoch")
    worker = local.worker_pid()
    os.killpg(os.getpgid(worker), signal.SIGKILL)  # the worker and its training child, as in a reboot
    # SIGKILL lands asynchronously: a TF process takes a moment to tear down after its parent is gone
    wait_for(lambda: not local.worker_running(), what="worker gone")
    wait_for(lambda: process_start_time(victim.status()["pid"]) is None, what="training child gone")
    assert waiting.state == "queued"
    states = {run.id: run.state for run in backend.refresh()}  # what the app does on every page load
    assert states[victim.id] == "interrupted"
    assert victim.history(), "history so far is kept"
    backend.ensure_running()
    wait_for(lambda: waiting.state == "finished", what="queued job after restart")


def test_queue_is_first_come_first_served_within_the_same_second(colors):
    runs = [backend.submit(slow_cfg(), start_worker=False) for _ in range(5)]
    assert [r.id for r in backend.queue()] == [r.id for r in runs]


@pytest.mark.parametrize("max_jobs", [1, 2])
@pytest.mark.slow
def test_two_users_starting_at_once_both_run_one_at_a_time_unless_configured(colors, monkeypatch, max_jobs):
    monkeypatch.setenv("TL_MAX_JOBS", str(max_jobs))
    submitted = []
    threads = [threading.Thread(target=lambda: submitted.append(backend.submit(slow_cfg(epochs=2)))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(submitted) == 2
    max_running = 0
    deadline = time.time() + 300
    while any(run.state in ("queued", "running") for run in submitted) and time.time() < deadline:
        max_running = max(max_running, sum(run.state == "running" for run in submitted))
        time.sleep(0.1)
    assert [run.state for run in submitted] == ["finished", "finished"]
    assert max_running == max_jobs


def test_bad_max_jobs_setting_is_refused_when_submitting(colors, monkeypatch):
    monkeypatch.setenv("TL_MAX_JOBS", "two")
    with pytest.raises(TLError, match="TL_MAX_JOBS='two'.*at least 1"):
        backend.submit(slow_cfg(), start_worker=False)
    assert backend.queue() == []


from .test_gate import OIDC  # noqa: E402


@pytest.mark.slow
def test_openid_connect_gates_pages_with_st_login_and_runs_record_who_started_them(colors, monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "ignored when OpenID Connect is configured")
    monkeypatch.setattr(local, "start_worker", lambda: False)  # the queued run is what this test reads
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    at.secrets.update(OIDC)
    at.user.update({"is_logged_in": False})
    at.run()
    assert [b.label for b in at.button] == ["Log in"] and not at.text_input  # st.login, not the password
    assert not at.subheader and not at.sidebar.caption

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    at.secrets.update(OIDC)
    at.user.update({"is_logged_in": True, "email": "ana@example.com", "name": "Ana"})
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    run = backend.queue()[0]
    assert run.status()["user"] == "ana@example.com"
    assert "queued by ana@example.com" in run.log_text()
