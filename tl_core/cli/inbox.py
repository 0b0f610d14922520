"""``inbox``: a dataset's unlabelled images: ``add`` (files, folders, zips), ``list`` (with a run's suggestions,
most uncertain first, one JSON line each), ``accept`` (one image with its class, or every suggestion above a
probability: a new dataset version), ``discard`` and ``restore``."""

from __future__ import annotations

import getpass
import json
import sys

from tl_core.errors import TLError


def _user() -> str:
    return f"cli:{getpass.getuser()}"


def _load_predictor(run):
    from tl_core.cli.common import load_tensorflow

    load_tensorflow()  # only when some image has no kept answer: a second listing reads a file
    from tl_core.inference.predict import Predictor

    return Predictor.from_run(run)


def cmd_inbox(args) -> int:
    from tl_core.data import inbox

    if args.action == "add":
        report = inbox.add_paths(args.data, args.paths)
        for row in report.skipped:
            print(f"  skipped {row['file']}: {row['reason']}", file=sys.stderr)
        pending = len(inbox.entries(args.data, "pending"))
        print(
            json.dumps(
                {"dataset": args.data, "added": len(report.added), "skipped": len(report.skipped), "pending": pending}
            )
        )
    elif args.action == "list":
        from tl_core.inference.suggest import LISTED, suggest

        listing = suggest(args.data, args.run, load=_load_predictor)
        for row in listing.rows:
            print(json.dumps({key: row[key] for key in LISTED}))
    elif args.action == "accept":
        if args.min_probability is not None:
            if args.id or args.label:
                raise TLError("Give either --id ID --label CLASS, or --min-probability P, not both.")
            from tl_core.inference.suggest import accept_confident

            saved = accept_confident(args.data, args.min_probability, args.run, load=_load_predictor, user=_user())
        else:
            if not args.id or not args.label:
                raise TLError("inbox accept needs --id ID --label CLASS (one image), or --min-probability P.")
            saved = inbox.accept(args.data, {args.id: args.label}, user=_user())
        added = saved.manifest.get("changes", {}).get("added", {})
        print(
            json.dumps(
                {
                    "dataset": f"{saved.name}@v{saved.version}",
                    "version": saved.version,
                    "accepted": len(added),
                    "images": saved.manifest["num_images"],
                }
            )
        )
    else:  # discard, restore
        change = {"discard": inbox.discard, "restore": inbox.restore}[args.action]
        changed = change(args.data, args.ids, user=_user())
        for row in changed:
            print(json.dumps({"id": row["id"], "file": row["file"], "state": row["state"]}))
    return 0


def add_inbox(sub) -> None:
    p = sub.add_parser("inbox", help="a dataset's unlabelled images: add, list with suggestions, accept, discard")
    isub = p.add_subparsers(dest="action", required=True)
    add = isub.add_parser("add", help="image files, folders or zips into the dataset's inbox (each image once)")
    add.add_argument("--data", required=True, help="the dataset's name")
    add.add_argument("paths", nargs="+")
    show = isub.add_parser("list", help="pending images with a run's suggestion, most uncertain first; JSON lines")
    show.add_argument("--data", required=True, help="the dataset's name")
    show.add_argument("--run", help="the run that suggests (default: the dataset's best finished run)")
    accept = isub.add_parser("accept", help="label inbox images into the dataset's next version")
    accept.add_argument("--data", required=True, help="the dataset's name")
    accept.add_argument("--id", help="one inbox image's id (from 'inbox list')")
    accept.add_argument("--label", help="its class")
    accept.add_argument(
        "--min-probability", type=float, help="accept every suggestion at least this probable (not 'unknown')"
    )
    accept.add_argument("--run", help="the run whose suggestions --min-probability accepts (default: the best)")
    for action, words in (
        ("discard", "set pending images aside (restorable)"),
        ("restore", "bring discarded images back"),
    ):
        q = isub.add_parser(action, help=words)
        q.add_argument("--data", required=True, help="the dataset's name")
        q.add_argument(
            "--id", dest="ids", action="append", required=True, help="an inbox image's id; repeat for several"
        )
    p.set_defaults(func=cmd_inbox)
