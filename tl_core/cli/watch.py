"""``monitor``: what a deployed run has been asked and whether its inputs drift (``inference/monitoring.py``)."""

from __future__ import annotations

import json


def cmd_monitor(args) -> int:
    from tl_core.inference.monitoring import report
    from tl_core.runs.store import get_run

    print(json.dumps(report(get_run(args.run), days=args.days)))
    return 0


def add_monitor(sub) -> None:
    p = sub.add_parser(
        "monitor",
        help="a run's recorded predictions (app and REST server): count, unknown rate, drift tests and "
        "warnings; one JSON object",
    )
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("--days", type=float, default=7.0, help="the recent window the drift tests look at")
    p.set_defaults(func=cmd_monitor)
