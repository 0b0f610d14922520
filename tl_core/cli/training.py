"""Commands that train or choose training settings: ``train``, ``submit``, ``compare``, ``lr-find``."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

from tl_core.cli.common import load_tensorflow
from tl_core.cli.inference import add_batch_io
from tl_core.cli.settings import add_settings, config_from_args
from tl_core.data import datasets
from tl_core.errors import TLError
from tl_core.inference.tta import MODES as TTA_MODES


def cmd_train(args) -> int:
    cfg = config_from_args(args)
    load_tensorflow()
    from tl_core.training.runner import RunFailed, train

    def progress(event):
        if event["kind"] == "epoch":
            parts = [f"{k}={event[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in event]
            print(
                f"[{event.get('phase')}] epoch {event['epoch']}/{event['total_epochs']} " + " ".join(parts),
                file=sys.stderr,
                flush=True,
            )
        elif event["kind"] == "stage":
            print(f"... {event['stage']}", file=sys.stderr, flush=True)
        elif event["kind"] == "features" and (event["done"] == event["total"]):
            print(f"... features ({event['what']}): {event['total']} ready", file=sys.stderr, flush=True)

    try:
        run, metrics = train(cfg, Path(args.run_dir) if args.run_dir else None, progress)
    except RunFailed as exc:  # not the input's fault (full disk, dataset deleted meanwhile): exit 1, not 2
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not metrics:
        print(f"run {run.root} was cancelled", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "run_dir": str(run.root),
                "val_accuracy": metrics["val_accuracy"],
                "training_path": metrics["training_path"],
                "duration_s": metrics["duration_s"],
                "class_names": metrics["class_names"],
                "confusion_matrix": metrics["confusion_matrix"],
            }
        )
    )
    return 0


def cmd_submit(args) -> int:
    from tl_core.backends import get_backend

    if args.predict:
        return submit_predict(args)
    if args.run or args.input or args.out:
        raise TLError("--run, --input and --out queue a prediction: add --predict (or drop them to train).")
    cfg = config_from_args(args)
    cfg.data = datasets.resolve_dataset(cfg.data).ref  # a folder or zip is imported here, once
    backend = get_backend()
    run = backend.submit(cfg, user=f"cli:{getpass.getuser()}")
    print(f"queued on the {backend.name} backend; follow it with: python -m tl_core wait {run.id}", file=sys.stderr)
    print(run.id)
    return 0


def submit_predict(args) -> int:
    """``submit --predict --run RUN --input DIR_OR_ZIP [--out FILE.csv]``: a batch prediction as a background
    job on the configured backend; prints the job id last (``wait`` and ``runs --predict`` follow it)."""
    from tl_core.backends import get_backend
    from tl_core.models.config import SETTINGS

    given = [SETTINGS[name].cli_flags[0] for name in SETTINGS if hasattr(args, name)]
    if given or args.config_file:
        raise TLError(f"--predict queues a prediction, not training: drop the training flags {given or ['--config']}.")
    if not (args.run and args.input):
        raise TLError("submit --predict needs --run RUN and --input DIR_OR_ZIP (and optionally --out FILE.csv).")
    backend = get_backend()
    job = backend.submit_predict(args.run, args.input, args.out, args.top_k, args.tta, user=f"cli:{getpass.getuser()}")
    print(
        f"queued on the {backend.name} backend; follow it with: python -m tl_core wait {job.id} (CSV: {job.out})",
        file=sys.stderr,
    )
    print(job.id)
    return 0


def cmd_compare(args) -> int:
    template = config_from_args(args)
    load_tensorflow()
    from tl_core.training import compare

    template.data = datasets.resolve_dataset(template.data).ref
    bases = compare.parse_bases(args.bases)
    if not bases:
        raise TLError(
            "No base has its ImageNet weights on disk; name bases with --bases A,B (they download) or put "
            f"weights in {str(compare.architectures.weights_dir())!r}."
        )
    if args.quick:
        scan = compare.quick_scan(
            datasets.load_dataset(template.data),
            bases,
            progress=lambda name: print(f"... probing {name}", file=sys.stderr, flush=True),
        )
        for row in scan["ranking"]:
            print(json.dumps(row))
        print(scan["why"], file=sys.stderr)
        return 0
    from tl_core.training.runner import train

    rows = []
    for cfg in compare.configs_for(template, bases):
        print(f"... training {cfg.base}", file=sys.stderr, flush=True)
        run, metrics = train(cfg)
        if metrics:
            compare.measure_latency(run)
            rows.append(compare.leaderboard_row(run))
    for row in sorted(rows, key=lambda r: (-(r["val_accuracy"] or 0), -(r["balanced_accuracy"] or 0))):
        print(json.dumps(row))
    return 0


def cmd_lr_find(args) -> int:
    cfg = config_from_args(args)
    load_tensorflow()
    from tl_core.training.lr_find import lr_find

    cfg.data = datasets.resolve_dataset(cfg.data).ref
    print(json.dumps(lr_find(cfg, args.start_lr, args.end_lr, args.steps)))
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier into a run folder, in this process")
    add_settings(p)
    p.add_argument("--run-dir")
    p.set_defaults(func=cmd_train)


def add_submit(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="queue a training run (or with --predict a batch prediction) on the configured backend "
        "(TL_RAY_ADDRESS: Ray); prints the run or job id last",
    )
    add_settings(p)
    p.add_argument(
        "--predict", action="store_true", help="queue a batch prediction instead: --run RUN --input DIR_OR_ZIP"
    )
    p.add_argument("--run", help="with --predict: the run (id or folder) whose model predicts")
    add_batch_io(p)
    p.add_argument("--top-k", type=int, default=3, help="with --predict: labels per image in the CSV")
    p.add_argument("--tta", default="none", choices=list(TTA_MODES), help="with --predict: test-time augmentation")
    p.set_defaults(func=cmd_submit)


def add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train the same settings on several bases; one JSON line per base, best first (leaderboard columns)",
    )
    add_settings(p, skip=("base",))  # --bases names them
    p.add_argument("--bases", help="comma-separated bases (default: every base whose weights are on disk)")
    p.add_argument("--quick", action="store_true", help="only rank the bases by a linear probe on cached features")
    p.set_defaults(func=cmd_compare)


def add_lr_find(sub) -> None:
    p = sub.add_parser(
        "lr-find", help="learning-rate range test for these train options; prints {suggested_lr, lrs, losses}"
    )
    add_settings(p)
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=80)
    p.set_defaults(func=cmd_lr_find)
