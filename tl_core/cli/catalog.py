"""Commands about what the workspace holds: ``models`` (the bases), ``datasets``, ``suspects`` (a dataset's
likely mislabelled or leaked images)."""

from __future__ import annotations

import getpass
import json
import sys

from tl_core.cli.common import load_tensorflow
from tl_core.cli.settings import add_setting
from tl_core.data import datasets
from tl_core.data.images import DEFAULT_MIN_COLORS
from tl_core.data.refs import parse_ref
from tl_core.models import architectures
from tl_core.models.config import SETTINGS


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
        load_tensorflow()
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
        from tl_core.backends import get_backend
        from tl_core.runs.store import runs_using

        name = parse_ref(args.name).name
        busy = [run.id for run in runs_using(name, get_backend().refresh())]
        datasets.delete_dataset(args.name, user=f"cli:{getpass.getuser()}", active_runs=busy)
        print(f"deleted {name}")
    return 0


def cmd_suspects(args) -> int:
    load_tensorflow()
    from tl_core.inspection.suspects import suspects_of

    name = datasets.resolve_dataset(args.data).ref
    rows = suspects_of(name, args.base, args.alpha, args.size)
    for row in rows[: args.top] if args.top else rows:
        print(json.dumps(row))
    return 0


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the base models and whether their weights are on disk")
    p.add_argument("--json", action="store_true")
    p.add_argument("--details", action="store_true", help="also build each base to count layers and parameters")
    p.set_defaults(func=cmd_models)


def add_datasets(sub) -> None:
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


def add_suspects(sub) -> None:
    p = sub.add_parser(
        "suspects", help="likely mislabelled, leaked, outlying or blank images; JSON lines, most suspect first"
    )
    add_setting(p, "data", default=None, required=True)
    for name in ("base", "alpha", "size"):  # the features are the ones a run with these settings would use
        add_setting(p, name, default=SETTINGS[name].default)
    p.add_argument("--top", type=int, help="only the N most suspect")
    p.set_defaults(func=cmd_suspects)
