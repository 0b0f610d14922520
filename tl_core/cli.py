"""Command line: ``python -m tl_core models | datasets | train | compare | lr-find | submit | wait | predict | evaluate | classify | explain | suspects |
runs | export | serve | worker``."""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import os
import sys
from pathlib import Path

from tl_core.data import datasets
from tl_core.data.images import DEFAULT_MIN_COLORS
from tl_core.errors import TLError
from tl_core.inference.tta import MODES as TTA_MODES
from tl_core.models import architectures
from tl_core.models.config import CLASS_WEIGHTS, HEADS, OPTIMIZERS


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load_tensorflow() -> None:
    """For commands that run a model: TensorFlow's logging quieted, then Keras (and so TensorFlow) imported
    with the collector paused, and what the import made frozen out of its sight. Their few hundred thousand
    long-lived objects otherwise set off several full collections over the growing heap while importing, at the
    start of every such command and of every training job (each runs in its own process; figures in
    docs/performance.md). Module objects live as long as the process: freezing them loses nothing."""
    _quiet_tensorflow()
    if "keras" in sys.modules:  # an earlier command in this process imported it: nothing left to save
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        import keras  # noqa: F401
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def cmd_models(args) -> int:
    rows = architectures.availability()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Weights folder: {architectures.weights_dir()}")
    print(f"{'name':<18} {'size':>4}  {'preprocess':<10} {'offline weights':<22} alphas")
    for row in rows:
        offline = (
            ("yes" + (f" (alpha {', '.join(map(str, row['offline_alphas']))})" if row["alphas"] else ""))
            if row["weights_offline"]
            else "no (download)"
        )
        print(
            f"{row['name']:<18} {row['default_size']:>4}  {row['preprocessing']:<10} {offline:<22} "
            f"{', '.join(map(str, row['alphas'])) or '-'}"
        )
    if args.details:
        _load_tensorflow()
        from tl_core.models.freeze import describe as describe_base

        for row in rows:
            d = describe_base(row["name"])
            print(f"{row['name']}: {d['num_layers']} layers, {d['params']:,} parameters, features {d['feature_dim']}")
    return 0


def cmd_datasets(args) -> int:
    if args.action == "add":

        def progress(done, total):
            if done == total or done % 200 == 0:
                print(f"  checked {done}/{total} files", file=sys.stderr)

        ds = datasets.add_source(
            args.source,
            args.name,
            val_fraction=args.val_fraction,
            seed=args.seed,
            min_colors=DEFAULT_MIN_COLORS if args.drop_low_detail else 0,
            progress=progress,
        )
        print(datasets.format_report(ds))
    elif args.action == "list":
        for ds in datasets.list_datasets():
            m = ds.manifest
            print(f"{ds.name}\t{m['num_images']} images\t{len(m['classes'])} classes\t{m['source']}")
    elif args.action == "show":
        print(datasets.format_report(datasets.load_dataset(args.name)))
    elif args.action == "delete":
        datasets.delete_dataset(args.name, user=f"cli:{getpass.getuser()}")
        print(f"deleted {args.name}")
    return 0


def _config_from_args(args):
    from tl_core.models.config import TrainConfig

    fields = dict(
        data=args.data,
        base=getattr(args, "base", "MobileNetV2"),
        alpha=args.alpha,
        size=args.size,
        head=args.head,
        freeze_depth=args.freeze_depth,
        fine_tune_depth=args.fine_tune_depth,
        fine_tune_epochs=args.fine_tune_epochs or 0,
        fine_tune_lr=args.fine_tune_lr,
        seed=args.seed,
    )
    for name in (
        "learning_rate",
        "epochs",
        "batch_size",
        "optimizer",
        "dropout",
        "aug_views",
        "patience",
        "class_weights",
    ):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.no_augment:
        fields["augment"] = False
    if args.no_early_stopping:
        fields["early_stopping"] = False
    if args.weights == "none":
        fields["weights"] = None
    return TrainConfig(**fields)


def cmd_train(args) -> int:
    _load_tensorflow()
    from tl_core.training.runner import train

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

    cfg = _config_from_args(args)
    run, metrics = train(cfg, Path(args.run_dir) if args.run_dir else None, progress)
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


def cmd_compare(args) -> int:
    _load_tensorflow()
    from tl_core.training import compare

    template = _config_from_args(args)
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
    _load_tensorflow()
    from tl_core.training.lr_find import lr_find

    cfg = _config_from_args(args)
    cfg.data = datasets.resolve_dataset(cfg.data).ref
    print(json.dumps(lr_find(cfg, args.start_lr, args.end_lr, args.steps)))
    return 0


def cmd_evaluate(args) -> int:
    _load_tensorflow()
    import time

    import numpy as np

    from tl_core.deploy.parity import validation_pixels
    from tl_core.inference.predict import Predictor
    from tl_core.runs.store import get_run

    run = get_run(args.run)
    predictor = Predictor.from_run(run)
    pixels, labels = validation_pixels(run, predictor.loaded)
    result = {"run": run.id, "images": int(len(labels)), "tta": args.tta}
    for mode in ("none", args.tta):
        start = time.perf_counter()
        predicted = predictor.probabilities(pixels, tta=mode).argmax(axis=1)
        result[f"accuracy_{mode}"] = float(np.mean(predicted == labels))
        result[f"seconds_{mode}"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result))
    return 0


def cmd_classify(args) -> int:
    _load_tensorflow()
    from tl_core.data.images import ImageRejected
    from tl_core.inference.pretrained import KerasApplicationClassifier, TFLiteClassifier

    if bool(args.tflite) == bool(args.base):
        raise TLError("Name one classifier: --tflite MODEL --labels LABELS, or --base NAME (a Keras application).")
    if args.tflite:
        if not args.labels:
            raise TLError("--tflite needs --labels LABELS (the labels file that came with the model).")
        for path in (args.tflite, args.labels):
            if not Path(path).is_file():
                raise TLError(f"File not found: {path!r}")
        classifier = TFLiteClassifier(args.tflite, args.labels)
    else:
        classifier = KerasApplicationClassifier(args.base, args.alpha)
    for image in args.images:
        try:
            top = classifier.top_k([image], args.top_k)[0]
            print(json.dumps({"image": image, "top_k": top}))
        except (ImageRejected, OSError) as exc:
            print(json.dumps({"image": image, "error": str(exc)}))
    return 0


def cmd_explain(args) -> int:
    _load_tensorflow()
    from tl_core.inference.explain import explain
    from tl_core.runs.store import get_run

    if not Path(args.image).is_file():
        raise TLError(f"Image file not found: {args.image!r}")
    result = explain(get_run(args.run).load_model(), args.image, args.class_name)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise TLError(f"--out must name a .png file; got {args.out!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.overlay().save(out)
    print(json.dumps({"image": args.image, **result.summary(), "out": str(out)}))
    return 0


def cmd_suspects(args) -> int:
    _load_tensorflow()
    from tl_core.inspection.suspects import suspects_of

    name = datasets.resolve_dataset(args.data).ref
    rows = suspects_of(name, args.base, args.alpha, args.size)
    for row in rows[: args.top] if args.top else rows:
        print(json.dumps(row))
    return 0


def cmd_submit(args) -> int:
    from tl_core.backends import get_backend

    cfg = _config_from_args(args)
    cfg.data = datasets.resolve_dataset(cfg.data).ref  # a folder or zip is imported here, once
    backend = get_backend()
    run = backend.submit(cfg, user=f"cli:{getpass.getuser()}")
    print(f"queued on the {backend.name} backend; follow it with: python -m tl_core wait {run.id}", file=sys.stderr)
    print(run.id)
    return 0


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


def cmd_predict(args) -> int:
    _load_tensorflow()
    from tl_core.inference.predict import Predictor

    predictor = Predictor.from_run(args.run)
    missing = [f for f in args.images if not Path(f).is_file()]
    if missing:
        raise TLError(f"Image file(s) not found: {missing}")
    from tl_core.data.images import ImageRejected

    for image in args.images:
        try:
            top = predictor.predict([image], args.top_k, tta=args.tta)[0]
            print(json.dumps({"image": image, "top_k": top}))
        except ImageRejected as exc:
            print(json.dumps({"image": image, "error": str(exc)}))
    return 0


def cmd_runs(args) -> int:
    from tl_core.backends import get_backend

    for run in get_backend().refresh():
        row = run.summary()
        acc = row["final_val_accuracy"]
        print(f"{row['run']}\t{row['state']}\t{row['dataset']}\t{row['base']}\t{'' if acc is None else f'{acc:.4f}'}")
    return 0


def cmd_export(args) -> int:
    _load_tensorflow()
    from tl_core.deploy.export import export_run
    from tl_core.runs.store import get_run

    result = export_run(get_run(args.run), args.format, Path(args.out) if args.out else None, check=not args.no_check)
    print(json.dumps(result))
    parity = result.get("parity") or {}
    return 1 if parity.get("passed") is False else 0


def cmd_serve(args) -> int:
    _load_tensorflow()
    from tl_core.deploy.serving import serve

    serve(args.run or [], all_runs=args.all, host=args.host, port=args.port)
    return 0


def cmd_worker(args) -> int:
    _quiet_tensorflow()  # for the job processes it starts; it imports no TensorFlow itself
    from tl_core.backends.local import worker_loop

    worker_loop(idle_exit_s=args.idle_exit)
    return 0


def cmd_execute(args) -> int:
    _load_tensorflow()
    from tl_core.runs.store import get_run
    from tl_core.training.runner import execute

    run = get_run(args.run)
    if run.state != "queued":
        raise TLError(f"Run {run.id!r} is {run.state}, not queued.")
    execute(run)
    return 0


def _train_options(p: argparse.ArgumentParser, with_base: bool = True) -> None:
    p.add_argument("--data", required=True, help="dataset name, or a folder / zip to import")
    if with_base:
        p.add_argument("--base", default="MobileNetV2")
    p.add_argument("--alpha", type=float)
    p.add_argument("--size", type=int)
    p.add_argument("--freeze-depth", default="all", help="frozen base layers from the input: N, a fraction or 'all'")
    p.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--optimizer", type=str.lower, choices=OPTIMIZERS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--aug-views", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--no-early-stopping", action="store_true")
    p.add_argument("--head", default="keras", choices=list(HEADS))
    p.add_argument(
        "--class-weights",
        choices=CLASS_WEIGHTS,
        help="weight classes by rarity: auto (default) when the largest has 3x the smallest's images",
    )
    p.add_argument("--fine-tune-depth")
    p.add_argument("--fine-tune-epochs", type=int)
    p.add_argument("--fine-tune-lr", type=float)
    p.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    p.add_argument("--seed", type=int, default=42)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tl_core", description="Transfer Learning Studio core")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the base models and whether their weights are on disk")
    p.add_argument("--json", action="store_true")
    p.add_argument("--details", action="store_true", help="also build each base to count layers and parameters")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("datasets", help="add, list, show or delete datasets")
    dsub = p.add_subparsers(dest="action", required=True)
    add = dsub.add_parser("add", help="import a zip or a folder of class folders")
    add.add_argument("source")
    add.add_argument("--name")
    add.add_argument("--val-fraction", type=float, default=0.2)
    add.add_argument("--seed", type=int, default=42)
    add.add_argument(
        "--drop-low-detail",
        action="store_true",
        help="skip images with very few colours (by default they are kept and flagged)",
    )
    dsub.add_parser("list")
    show = dsub.add_parser("show")
    show.add_argument("name")
    delete = dsub.add_parser("delete")
    delete.add_argument("name")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("train", help="train a classifier into a run folder, in this process")
    _train_options(p)
    p.add_argument("--run-dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "submit", help="queue a training run on the configured backend (TL_RAY_ADDRESS: Ray); prints the run id last"
    )
    _train_options(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("wait", help="wait for a run to end; prints {run, state, val_accuracy} as JSON")
    p.add_argument("run", help="run id or folder")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (state is then the current one)")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("predict", help="top-k labels for images, one JSON line each")
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--tta", default="none", choices=list(TTA_MODES), help="test-time augmentation views to average")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "evaluate",
        help="a finished run's accuracy on its validation images, with and without "
        "test-time augmentation; one JSON object",
    )
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("--tta", default="flip", choices=list(TTA_MODES))
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        help="train the same settings on several bases; one JSON line per base, best first (leaderboard columns)",
    )
    _train_options(p, with_base=False)
    p.add_argument("--bases", help="comma-separated bases (default: every base whose weights are on disk)")
    p.add_argument("--quick", action="store_true", help="only rank the bases by a linear probe on cached features")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "lr-find", help="learning-rate range test for these train options; prints {suggested_lr, lrs, losses}"
    )
    _train_options(p)
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=80)
    p.set_defaults(func=cmd_lr_find)

    p = sub.add_parser(
        "classify", help="a pretrained classifier as it is (ImageNet labels, no training); one JSON line per image"
    )
    p.add_argument("--tflite", help="a TFLite image classifier")
    p.add_argument("--labels", help="its labels file, one per line")
    p.add_argument("--base", help="a Keras application with its top, e.g. MobileNetV2")
    p.add_argument("--alpha", type=float)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("explain", help="Grad-CAM of a run on one image: writes the overlay, prints class and bbox")
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("image")
    p.add_argument("--class", dest="class_name", help="the class to explain (default: the predicted one)")
    p.add_argument("--out", required=True, help="PNG file to write the overlay to")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "suspects", help="likely mislabelled, leaked, outlying or blank images; JSON lines, most suspect first"
    )
    p.add_argument("--data", required=True, help="dataset name, or a folder / zip to import")
    p.add_argument("--base", default="MobileNetV2")
    p.add_argument("--alpha", type=float)
    p.add_argument("--size", type=int)
    p.add_argument("--top", type=int, help="only the N most suspect")
    p.set_defaults(func=cmd_suspects)

    p = sub.add_parser("runs", help="list training runs")
    p.set_defaults(func=cmd_runs)

    from tl_core.deploy.formats import FORMATS

    p = sub.add_parser("export", help="write a finished run in a deployable format and check it in its runtime")
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--out", help="folder to write into (default: the run's export/FORMAT)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check on the validation images")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="serve finished runs over REST (TF Serving's predict, plus classify)")
    p.add_argument("--run", action="append", help="run folder or run id; repeat for several")
    p.add_argument("--all", action="store_true", help="serve every finished run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="train queued runs, TL_MAX_JOBS at a time (default 1; the app starts this)")
    p.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("execute", help="train one queued run in this process (the worker calls this)")
    p.add_argument("run")
    p.set_defaults(func=cmd_execute)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
