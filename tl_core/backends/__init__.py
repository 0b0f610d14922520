"""Execution backends: the one seam between the app (pages, CLI) and whatever executes training jobs.

A backend queues runs, starts them, cancels them, tells whether a run's process is alive, and gives
its logs. Run folders stay the shared record: any backend writes progress and results into the
workspace, so pages read runs the same way whoever trained them.

- ``local.LocalBackend`` (the default): a worker process on this host trains queued runs, each in
  its own child process, ``TL_MAX_JOBS`` at a time.
- ``ray_jobs.RayBackend``, when ``TL_RAY_ADDRESS`` is set: each run is a job on a Ray cluster.
"""

from __future__ import annotations

import os

from tl_core.backends.base import ExecutionBackend


def get_backend() -> ExecutionBackend:
    """The backend this server uses: a Ray cluster when ``TL_RAY_ADDRESS`` is set, else this host."""
    address = os.environ.get("TL_RAY_ADDRESS", "").strip()
    if address:
        from tl_core.backends.ray_jobs import RayBackend

        return RayBackend(address)
    from tl_core.backends.local import LocalBackend

    return LocalBackend()


__all__ = ["ACTIVE", "ExecutionBackend", "get_backend"]
