"""Background training jobs: a queue of run folders and one worker process that trains them.

The app never trains inside a page's script run. ``submit`` writes a queued run folder and makes
sure a worker is running; the worker (``python -m tl_core worker``, its own process session, so it
outlives a browser tab and even a Streamlit restart) takes queued runs oldest first and trains each
in a child process (``python -m tl_core execute RUN``), one at a time by default (one GPU). Every
reader sees the same state because it is all in the workspace: a refresh, a second browser or a
teammate sees the same job. A run whose process died is marked interrupted by whoever looks next.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from .config import TrainConfig
from .runs import Run, list_runs, new_run
from .workspace import home


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


def active() -> Optional[Run]:
    return next((r for r in refresh_states() if r.state == "running"), None)


def _train_child(run: Run) -> int:
    child = subprocess.Popen([sys.executable, "-m", "tl_core", "execute", str(run.root)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             cwd=str(Path(__file__).resolve().parents[1]))
    _, err = child.communicate()
    if child.returncode != 0 and run.state in ("running", "queued"):
        tail = (err or b"").decode(errors="replace").strip().splitlines()[-3:]
        run.set_status("failed" if child.returncode > 0 else "interrupted",
                       message=f"training process exited with code {child.returncode}: " + " | ".join(tail))
        run.log(f"training process exited with code {child.returncode}")
    return child.returncode


def worker_loop(idle_exit_s: Optional[float] = None, poll_s: float = 1.0) -> None:
    """Train queued runs until idle for ``idle_exit_s`` seconds (forever if None)."""
    with open(_lock_path(), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another worker owns the queue
        (home() / "worker.pid").write_text(str(os.getpid()))
        idle_since = time.time()
        while True:
            refresh_states()
            waiting = queue()
            if waiting:
                run = waiting[0]
                if not run.cancel_requested():
                    _train_child(run)
                idle_since = time.time()
                continue
            if idle_exit_s is not None and time.time() - idle_since > idle_exit_s:
                return
            time.sleep(poll_s)
