"""Commands about training jobs once queued: ``wait``, ``runs``, ``worker``, ``execute``."""

from __future__ import annotations

import argparse
import json

from tl_core.cli.common import load_tensorflow, quiet_tensorflow
from tl_core.errors import TLError


def cmd_wait(args) -> int:
    import time

    from tl_core.backends import get_backend
    from tl_core.runs.jobs import PredictJob, get_run_or_job
    from tl_core.runs.store import DONE

    backend, run = get_backend(), get_run_or_job(args.run)
    deadline = None if args.timeout is None else time.time() + args.timeout
    while (state := backend.check_alive(run)) not in DONE:
        if deadline is not None and time.time() > deadline:
            break
        time.sleep(args.poll)
    if isinstance(run, PredictJob):  # a prediction job: what it wrote, how many predicted and skipped
        row = run.summary()
        keys = ("out", "total", "predicted", "skipped", "images_per_s", "message")
        print(
            json.dumps(
                {"run": run.id, "state": state, "val_accuracy": None, "kind": "predict"}
                | {key: row[key] for key in keys}
            )
        )
        return 0 if state == "finished" else 1
    val_accuracy = run.artifacts.metrics().get("val_accuracy") if state == "finished" else None
    print(json.dumps({"run": run.id, "state": state, "val_accuracy": val_accuracy}))
    return 0 if state == "finished" else 1


def cmd_runs(args) -> int:
    from tl_core.backends import get_backend

    if args.predict:
        for job in get_backend().refresh_jobs():
            row = job.summary()
            done = f"{row['done'] or 0}/{row['total'] if row['total'] is not None else '?'}"
            print(f"{row['job']}\t{row['state']}\tpredict\t{row['input']}\t{done}\t{row['out']}")
        return 0
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
    from tl_core.runs.jobs import PredictJob, get_run_or_job

    run = get_run_or_job(args.run)
    if run.state != "queued":
        raise TLError(f"Run {run.id!r} is {run.state}, not queued.")
    if isinstance(run, PredictJob):
        from tl_core.inference.batch import execute_job

        execute_job(run)
        return 0
    from tl_core.training.runner import execute

    execute(run)
    return 0


def add_wait(sub) -> None:
    p = sub.add_parser(
        "wait", help="wait for a run (or prediction job) to end; prints {run, state, val_accuracy} as JSON"
    )
    p.add_argument("run", help="run or prediction job: id or folder")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (state is then the current one)")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_wait)


def add_runs(sub) -> None:
    p = sub.add_parser("runs", help="list training runs (--predict: prediction jobs)")
    p.add_argument("--predict", action="store_true", help="list batch prediction jobs: id, state, input, done, CSV")
    p.set_defaults(func=cmd_runs)


def add_worker(sub) -> None:
    p = sub.add_parser("worker", help="train queued runs, TL_MAX_JOBS at a time (default 1; the app starts this)")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    p.set_defaults(func=cmd_worker)


def add_execute(sub) -> None:
    p = sub.add_parser(
        "execute", help="train one queued run (or run one prediction job) in this process (the worker calls this)"
    )
    p.add_argument("run")
    p.set_defaults(func=cmd_execute)
