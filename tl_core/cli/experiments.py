"""Runs in MLflow from the command line: ``mlflow-log`` (a finished run, after the fact) and ``mlflow-register``
(its model under a name). Both print one JSON object."""

from __future__ import annotations

import json

from tl_core.cli.common import load_tensorflow


def cmd_mlflow_log(args) -> int:
    from tl_core.runs.store import get_run
    from tl_core.tracking import settings
    from tl_core.tracking.mlflow_runs import log_finished

    run = get_run(args.run)
    settings.required_uri()  # refused before TensorFlow loads
    load_tensorflow()
    print(json.dumps(log_finished(run, again=args.again)))
    return 0


def cmd_mlflow_register(args) -> int:
    from tl_core.runs.store import get_run
    from tl_core.tracking import settings
    from tl_core.tracking.mlflow_runs import check_model_name, register

    run = get_run(args.run)
    check_model_name(args.name)
    uri = settings.required_uri()
    if run.mlflow().get("tracking_uri") != uri or not run.mlflow().get("model_uri"):
        load_tensorflow()  # the run is logged first, its model with it
    print(json.dumps(register(run, args.name)))
    return 0


def add_mlflow_log(sub) -> None:
    p = sub.add_parser(
        "mlflow-log",
        help="log a finished run to MLflow (TL_MLFLOW_TRACKING_URI): params, per-epoch metrics, final metrics, "
        "files, model; prints {run, mlflow_run_id, experiment_id, url} as JSON",
    )
    p.add_argument("run", help="run id or folder")
    p.add_argument("--again", action="store_true", help="log another copy of a run already logged there")
    p.set_defaults(func=cmd_mlflow_log)


def add_mlflow_register(sub) -> None:
    p = sub.add_parser(
        "mlflow-register",
        help="register a run's model in MLflow's model registry (logging the run first if needed); prints "
        "{run, name, version, url, model_uri} as JSON",
    )
    p.add_argument("run", help="run id or folder")
    p.add_argument("--name", required=True, help="the registered model's name (a new version when it exists)")
    p.set_defaults(func=cmd_mlflow_register)
