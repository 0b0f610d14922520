"""Commands that ship a finished run: ``export`` (a deployable format, checked in its runtime), ``serve`` (REST)."""

from __future__ import annotations

import json
from pathlib import Path

from tl_core.cli.common import load_tensorflow
from tl_core.deploy.formats import FORMATS


def cmd_export(args) -> int:
    load_tensorflow()
    from tl_core.deploy.export import export_run
    from tl_core.runs.store import get_run

    result = export_run(get_run(args.run), args.format, Path(args.out) if args.out else None, check=not args.no_check)
    print(json.dumps(result))
    parity = result.get("parity") or {}
    return 1 if parity.get("passed") is False else 0


def cmd_serve(args) -> int:
    from tl_core.deploy.serving import DEFAULT_PORT, serve, startup_token

    startup_token(args.host, args.allow_no_token)  # a refusal comes before the slow TensorFlow import
    if args.capture:
        from tl_core.data.datasets import load_dataset

        load_dataset(args.capture)  # an unknown dataset too
    load_tensorflow()
    serve(
        args.run or [],
        all_runs=args.all,
        host=args.host,
        port=DEFAULT_PORT if args.port is None else args.port,
        allow_no_token=args.allow_no_token,
        capture=args.capture,
    )
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a finished run in a deployable format and check it in its runtime")
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--out", help="folder to write into (default: the run's export/FORMAT)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check on the validation images")
    p.set_defaults(func=cmd_export)


def add_serve(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve finished runs over REST (TF Serving's predict, classify, and the Open Inference Protocol v2)",
    )
    p.add_argument("--run", action="append", help="run folder or run id; repeat for several")
    p.add_argument(
        "--all", action="store_true", help="serve every finished run (skipping, with a warning, any that does not load)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default 8600 (the app itself is on 8501)")
    p.add_argument(
        "--allow-no-token",
        action="store_true",
        help="serve on a non-loopback host without TL_API_TOKEN (behind an authenticating proxy); also TL_API_ALLOW_NO_TOKEN=1",
    )
    p.add_argument("--capture", metavar="DATASET", help="keep the images of :classify requests in DATASET's inbox")
    p.set_defaults(func=cmd_serve)
