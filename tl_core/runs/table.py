"""The runs as tables: the rows the Results page shows and compares, and which run it opens first.

Rows are ``Run.summary()`` dictionaries (plain values, one per run), ready for any table widget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

from tl_core.runs.store import Run

LEADERBOARD_COLUMNS = (
    "run",
    "base",
    "head",
    "freeze_depth",
    "learning_rate",
    "epochs",
    "best_val_accuracy",
    "final_val_accuracy",
    "balanced_val_accuracy",
    "macro_f1",
    "duration_s",
)


def runs_table(runs: Iterable[Run]) -> list[dict]:
    """One summary row per run, in the order given (``list_runs``: newest first)."""
    return [run.summary() for run in runs]


def finished_ids(runs: Iterable[Run]) -> list[str]:
    """The ids of the runs that were finished when listed, in the order given."""
    return [run.id for run in runs if run.listed_state == "finished"]


def default_run_id(runs: Sequence[Run], requested: Optional[str] = None) -> str:
    """The run a page opens: ``requested`` (a URL's ``?run=``) when it is one of ``runs``, else the first
    finished run, else the first run. ``runs`` must not be empty."""
    ids = [run.id for run in runs]
    if not ids:
        raise ValueError("default_run_id needs at least one run")
    if requested in ids:
        return requested
    return (finished_ids(runs) or ids)[0]


def leaderboard(runs: Iterable[Run], chosen: Iterable[str]) -> list[dict]:
    """The chosen runs' rows with ``LEADERBOARD_COLUMNS`` only, best final validation accuracy first (runs
    without one last). An id in ``chosen`` that is not among ``runs`` is a ``KeyError`` naming it."""
    by_id = {run.id: run for run in runs}
    rows = [{column: by_id[run_id].summary()[column] for column in LEADERBOARD_COLUMNS} for run_id in chosen]
    return sorted(rows, key=lambda row: (row["final_val_accuracy"] is None, -(row["final_val_accuracy"] or 0.0)))


def finished_on_dataset(runs: Iterable[Run], dataset: str) -> list[Run]:
    """The finished runs trained on any version of dataset ``dataset`` (a name without ``@vN``)."""
    return [run for run in runs if run.listed_state == "finished" and run.dataset_name == dataset]
