"""The local backend: one worker process on this host trains queued runs.

``submit`` writes a queued run folder and makes sure a worker is running; the worker
(``python -m tl_core worker``, its own process session, so it outlives a browser tab and even a
Streamlit restart) takes queued runs oldest first and trains each in a child process
(``python -m tl_core execute RUN``), one at a time by default (one GPU; ``TL_MAX_JOBS`` allows more,
each on its own GPU where there are several). A file lock in the workspace makes sure one worker
owns the queue. A run's process is identified by its PID and start time, so a PID reused after a
reboot does not keep a dead run 'running'.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tl_core.backends.base import ExecutionBackend
from tl_core.device import describe as describe_device
from tl_core.device import gpu_names, process_start_time
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.runs.jobs import list_jobs
from tl_core.runs.store import ACTIVE, PROCESS_LOG, Run
from tl_core.workspace import home

REPO_ROOT = Path(__file__).resolve().parents[2]


def max_jobs() -> int:
    """How many runs train at once (``TL_MAX_JOBS``, default 1: one job never fights another for a GPU)."""
    raw = os.environ.get("TL_MAX_JOBS", "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise TLError(
            f"TL_MAX_JOBS={raw!r} is not a whole number of at least 1. Set it to 1 (one job at a time) "
            "or to the number of GPUs on this host."
        )
    return value


def _lock_path() -> Path:
    return home() / "worker.lock"


def _process_env() -> dict:
    """The environment for processes we start: the workspace as this process resolved it (absolute),
    so a worker started from another directory reads and writes the same runs."""
    return {**os.environ, "TL_HOME": str(home())}


def worker_running() -> bool:
    """True if some process holds the worker lock."""
    with open(_lock_path(), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def worker_pid() -> Optional[int]:
    try:
        return int((home() / "worker.pid").read_text())
    except (OSError, ValueError):
        return None


class LocalBackend(ExecutionBackend):
    name = "local"

    def submit(self, cfg: TrainConfig, user: Optional[str] = None, start_worker: bool = True) -> Run:
        max_jobs()  # a bad TL_MAX_JOBS is reported to the person submitting, not buried in the worker's log
        run = self.queued_run(cfg, user)
        if start_worker:
            self.ensure_running()
        return run

    def cancel(self, run: Run, user: Optional[str] = None) -> None:
        self.request_cancel(run, user)
        if run.state == "running" and not self.is_alive(run):  # nobody is left to read the request
            run.set_status("cancelled", message="Cancelled; its training process had already stopped.")

    def resume(self, run: Run) -> None:
        run.queue_resume()
        self.ensure_running()

    def is_alive(self, run: Run) -> bool:
        status = run.status()
        pid = status.get("pid")
        if not pid:
            return False
        started = process_start_time(pid)
        if started is None:
            return False
        return status.get("pid_start") in (None, started)  # runs from before start times were recorded

    def logs(self, run: Run) -> str:
        text = run.log_text()
        try:
            process = run.path(PROCESS_LOG).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            process = ""
        return text + (f"\n--- training process output ---\n{process}\n" if process else "")

    def ensure_running(self) -> None:
        if self.queue() or self.queue(list_jobs()):
            start_worker()

    def describe(self) -> dict:
        return {"backend": "local worker", "device": describe_device(), "max_jobs": max_jobs()}


def start_worker() -> bool:
    """Start a worker if none is running; returns True if one was started."""
    if worker_running():
        return False
    idle_exit = os.environ.get("TL_WORKER_IDLE_EXIT", "600")
    with open(home() / "worker.log", "a") as log:
        subprocess.Popen(
            [sys.executable, "-m", "tl_core", "worker", "--idle-exit", idle_exit],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(REPO_ROOT),
            env=_process_env(),
        )
    return True


# ---------------------------------------------------------------- the worker process
@dataclass
class _Child:
    run: Run
    process: subprocess.Popen
    slot: int


def _slot_env(slot: int, slots: int) -> dict:
    """With several jobs and several GPUs, each job gets its own GPU; with one job, it sees them all."""
    env = _process_env()
    gpus = gpu_names()
    if slots > 1 and len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % len(gpus))
    return env


def _start_child(run: Run, slot: int, slots: int) -> _Child:
    with open(run.path(PROCESS_LOG), "ab") as err:  # the child keeps its own copy of the handle
        process = subprocess.Popen(
            [sys.executable, "-m", "tl_core", "execute", str(run.root)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=str(REPO_ROOT),
            env=_slot_env(slot, slots),
        )
    return _Child(run, process, slot)


def _finish_child(child: _Child) -> None:
    """Record why a training process ended badly, if it did not say so itself."""
    code, run = child.process.returncode, child.run
    if code != 0 and run.state in ACTIVE:
        try:
            tail = run.path(PROCESS_LOG).read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            tail = []
        run.set_status(
            "failed" if code > 0 else "interrupted",
            message=f"training process exited with code {code}: " + " | ".join(tail),
        )
        run.log(f"training process exited with code {code}")


def worker_loop(idle_exit_s: Optional[float] = None, poll_s: float = 1.0) -> None:
    """Train queued runs, up to ``max_jobs()`` at once, until idle for ``idle_exit_s`` seconds (forever if None)."""
    backend, slots = LocalBackend(), max_jobs()
    with open(_lock_path(), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another worker owns the queue
        (home() / "worker.pid").write_text(str(os.getpid()))
        children: dict[str, _Child] = {}
        idle_since = time.time()
        while True:
            for run_id, child in list(children.items()):
                if child.process.poll() is not None:
                    _finish_child(children.pop(run_id))
            queued = backend.queue(backend.refresh()) + backend.queue(backend.refresh_jobs())  # runs, then jobs
            # a child marks its run 'running' a moment after it starts: skip runs we already started
            waiting = [run for run in queued if run.id not in children and not run.cancel_requested()]
            free = sorted(set(range(slots)) - {child.slot for child in children.values()})
            for run, slot in zip(waiting, free):
                children[run.id] = _start_child(run, slot, slots)
            if children or waiting:
                idle_since = time.time()
            elif idle_exit_s is not None and time.time() - idle_since > idle_exit_s:
                return
            time.sleep(poll_s if not children else min(poll_s, 0.5))
