"""Commands about training jobs once queued: ``wait``, ``runs``, ``worker``, ``execute``."""

from __future__ import annotations

import argparse
import json

from tl_core.cli.common import load_tensorflow, quiet_tensorflow
from tl_core.errors import TLError


def cmd_wait(args) -> int:
    import time

    from tl_core.backends import get_backend
    from tl_core.runs.store import DONE, get_run

    backend, run = get_backend(), get_run(args.run)
    deadline = None if args.timeout is None else time.time() + args.timeout
    while (state := backend.check_alive(run)) not in DONE:
        if deadline is not None and time.time() > deadline:
            break
        time.sleep(args.poll)
    val_accuracy = run.artifacts.metrics().get("val_accuracy") if state == "finished" else None
    print(json.dumps({"run": run.id, "state": state, "val_accuracy": val_accuracy}))
    return 0 if state == "finished" else 1


def cmd_runs(args) -> int:
    from tl_core.backends import get_backend

    for run in get_backend().refresh():
        row = run.summary()
        acc = row["final_val_accuracy"]
        print(f"{row['run']}\t{row['state']}\t{row['dataset']}\t{row['base']}\t{'' if acc is None else f'{acc:.4f}'}")
    return 0


def cmd_worker(args) -> int:
    quiet_tensorflow()  # for the job processes it starts; it imports no TensorFlow itself
    from tl_core.backends.local import worker_loop

    worker_loop(idle_exit_s=args.idle_exit)
    return 0


def cmd_execute(args) -> int:
    load_tensorflow()
    from tl_core.runs.store import get_run
    from tl_core.training.runner import execute

    run = get_run(args.run)
    if run.state != "queued":
        raise TLError(f"Run {run.id!r} is {run.state}, not queued.")
    execute(run)
    return 0


def add_wait(sub) -> None:
    p = sub.add_parser("wait", help="wait for a run to end; prints {run, state, val_accuracy} as JSON")
    p.add_argument("run", help="run id or folder")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (state is then the current one)")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_wait)


def add_runs(sub) -> None:
    p = sub.add_parser("runs", help="list training runs")
    p.set_defaults(func=cmd_runs)


def add_worker(sub) -> None:
    p = sub.add_parser("worker", help="train queued runs, TL_MAX_JOBS at a time (default 1; the app starts this)")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    p.set_defaults(func=cmd_worker)


def add_execute(sub) -> None:
    p = sub.add_parser("execute", help="train one queued run in this process (the worker calls this)")
    p.add_argument("run")
    p.set_defaults(func=cmd_execute)
