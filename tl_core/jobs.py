"""Background training jobs: a queue of run folders and one worker process that trains them.

The app never trains inside a page's script run. ``submit`` writes a queued run folder and makes
sure a worker is running; the worker (``python -m tl_core worker``, its own process session, so it
outlives a browser tab and even a Streamlit restart) takes queued runs oldest first and trains each
in a child process (``python -m tl_core execute RUN``), one at a time by default (one GPU; ``TL_MAX_JOBS``
allows more, each on its own GPU where there are several). Every
reader sees the same state because it is all in the workspace: a refresh, a second browser or a
teammate sees the same job. A run whose process died is marked interrupted by whoever looks next.
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

from .config import TrainConfig
from .device import gpu_names
from .runs import ACTIVE, Run, list_runs, new_run
from .workspace import TLError, home


def _lock_path() -> Path:
    return home() / "worker.lock"


def worker_running() -> bool:
    """True if some process holds the worker lock."""
    with open(_lock_path(), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def ensure_worker() -> bool:
    """Start a worker if none is running; returns True if one was started."""
    if worker_running():
        return False
    idle_exit = os.environ.get("TL_WORKER_IDLE_EXIT", "600")
    with open(home() / "worker.log", "a") as log:
        subprocess.Popen([sys.executable, "-m", "tl_core", "worker", "--idle-exit", idle_exit],
                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                         cwd=str(Path(__file__).resolve().parents[1]), env=os.environ.copy())
    return True


def worker_pid() -> Optional[int]:
    try:
        return int((home() / "worker.pid").read_text())
    except (OSError, ValueError):
        return None


def submit(cfg: TrainConfig, user: Optional[str] = None, start_worker: bool = True) -> Run:
    """Queue a training run (config checked first, so bad settings fail here, not in the worker)."""
    max_jobs()  # a bad TL_MAX_JOBS is reported to the person submitting, not buried in the worker's log
    run = new_run(cfg.resolved(), user=user)
    run.log(f"queued by {user or 'anonymous'}")
    if start_worker:
        ensure_worker()
    return run


def refresh_states() -> list[Run]:
    """All runs, newest first, with dead 'running' runs marked interrupted."""
    runs = list_runs()
    for run in runs:
        run.check_alive()
    return runs


def queue() -> list[Run]:
    """Queued runs in the order they will train."""
    return sorted((r for r in list_runs() if r.state == "queued"), key=lambda r: r.status().get("queued_at", 0))


def active() -> list[Run]:
    """Runs training now, oldest first (one unless TL_MAX_JOBS allows more)."""
    return [r for r in reversed(refresh_states()) if r.state == "running"]


def max_jobs() -> int:
    """How many runs train at once (``TL_MAX_JOBS``, default 1: one job never fights another for a GPU)."""
    raw = os.environ.get("TL_MAX_JOBS", "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise TLError(f"TL_MAX_JOBS={raw!r} is not a whole number of at least 1. Set it to 1 (one job at a time) "
                      "or to the number of GPUs on this host.")
    return value


def _slot_env(slot: int, slots: int) -> dict:
    """With several jobs and several GPUs, each job gets its own GPU; with one job, it sees them all."""
    env = os.environ.copy()
    gpus = gpu_names()
    if slots > 1 and len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % len(gpus))
    return env


@dataclass
class _Child:
    run: Run
    process: subprocess.Popen
    slot: int


def _start_child(run: Run, slot: int, slots: int) -> _Child:
    with open(run.path("process.log"), "ab") as err:  # the child keeps its own copy of the handle
        process = subprocess.Popen([sys.executable, "-m", "tl_core", "execute", str(run.root)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                   cwd=str(Path(__file__).resolve().parents[1]), env=_slot_env(slot, slots))
    return _Child(run, process, slot)


def _finish_child(child: _Child) -> None:
    """Record why a training process ended badly, if it did not say so itself."""
    code, run = child.process.returncode, child.run
    if code != 0 and run.state in ACTIVE:
        try:
            tail = run.path("process.log").read_text(errors="replace").strip().splitlines()[-3:]
        except OSError:
            tail = []
        run.set_status("failed" if code > 0 else "interrupted",
                       message=f"training process exited with code {code}: " + " | ".join(tail))
        run.log(f"training process exited with code {code}")


def worker_loop(idle_exit_s: Optional[float] = None, poll_s: float = 1.0) -> None:
    """Train queued runs, up to ``max_jobs()`` at once, until idle for ``idle_exit_s`` seconds (forever if None)."""
    slots = max_jobs()
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
            refresh_states()
            # a child marks its run 'running' a moment after it starts: skip runs we already started
            waiting = [run for run in queue() if run.id not in children and not run.cancel_requested()]
            free = sorted(set(range(slots)) - {child.slot for child in children.values()})
            for run, slot in zip(waiting, free):
                children[run.id] = _start_child(run, slot, slots)
            if children or waiting:
                idle_since = time.time()
            elif idle_exit_s is not None and time.time() - idle_since > idle_exit_s:
                return
            time.sleep(poll_s if not children else min(poll_s, 0.5))
