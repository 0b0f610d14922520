"""Command line: ``python -m tl_core models | datasets | train | compare | lr-find | submit | wait | predict |
evaluate | classify | explain | suspects | inbox | runs | export | serve | monitor | mlflow-log | mlflow-register |
worker | execute``.

This package only parses and dispatches: each command lives with its arguments in the module of its group
(``catalog``, ``training``, ``jobs``, ``inference``, ``deploy``, ``inbox``, ``watch``, ``experiments``); the training flags are made from the settings'
schema (``settings``). An engine ``TLError`` becomes an ``error:`` line and exit code 2, as argparse's own are.
"""

from __future__ import annotations

import argparse
import sys

from tl_core.cli import catalog, deploy, experiments, inbox, inference, jobs, training, watch
from tl_core.errors import TLError

# In the order ``--help`` lists them.
COMMANDS = (
    catalog.add_models,
    catalog.add_datasets,
    training.add_train,
    training.add_submit,
    jobs.add_wait,
    inference.add_predict,
    inference.add_evaluate,
    training.add_compare,
    training.add_lr_find,
    inference.add_classify,
    inference.add_explain,
    catalog.add_suspects,
    inbox.add_inbox,
    jobs.add_runs,
    deploy.add_export,
    deploy.add_serve,
    watch.add_monitor,
    experiments.add_mlflow_log,
    experiments.add_mlflow_register,
    jobs.add_worker,
    jobs.add_execute,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tl_core", description="Transfer Learning Studio core")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for entry in getattr(exc, "skipped", ()):  # an import's report of rejected files
            print(f"  skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
        return 2
