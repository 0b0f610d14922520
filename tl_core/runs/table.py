"""The runs as tables: the rows the Results page shows and compares, which run a page opens first, and how a
run is named in a picker.

Rows are ``Run.summary()`` dictionaries (plain values, one per run), ready for any table widget. Two accuracies
per run, never to be confused: ``final_val_accuracy`` is the saved model's, evaluated on the validation images
after training (early stopping restored the best epoch's weights): the figure the run's page shows;
``best_val_accuracy`` is the best value logged for an epoch during training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

from tl_core.runs.store import Run

LEADERBOARD_COLUMNS = (
    "run",
    "name",
    "base",
    "head",
    "freeze_depth",
    "learning_rate",
    "epochs",
    "final_val_accuracy",
    "best_val_accuracy",
    "balanced_val_accuracy",
    "macro_f1",
    "duration_s",
    "features",
)


def runs_table(runs: Iterable[Run]) -> list[dict]:
    """One summary row per run, in the order given (``list_runs``: newest first)."""
    return [run.summary() for run in runs]


def finished_ids(runs: Iterable[Run]) -> list[str]:
    """The ids of the runs that were finished when listed, in the order given."""
    return [run.id for run in runs if run.listed_state == "finished"]


def best_run_id(runs: Sequence[Run], dataset: Optional[str] = None) -> Optional[str]:
    """The finished run with the highest final validation accuracy (the newest of equals) on ``dataset`` (a
    name, any version); without ``dataset``, on the dataset most recently trained on that has a finished run.
    None when no run qualifies."""
    finished = [run for run in runs if run.listed_state == "finished"]
    if dataset is None:  # ``runs`` arrive newest first (``list_runs``)
        dataset = next((_dataset_name(run) for run in finished), None)
    scored = [run for run in finished if _dataset_name(run) == dataset]
    if not scored:
        return None
    return max(scored, key=lambda run: run.summary()["final_val_accuracy"] or 0.0).id


def _dataset_name(run: Run) -> str:
    """The run's dataset without its version, from the remembered summary (no config read per call)."""
    return str(run.summary()["dataset"] or "").partition("@")[0]


def default_run_id(runs: Sequence[Run], requested: Optional[str] = None, remembered: Optional[str] = None) -> str:
    """The run a page opens: ``requested`` (a URL's ``?run=``) when it is one of ``runs``, else ``remembered``
    (the run this browser session chose last) when it is, else the best finished run (``best_run_id``), else the
    first run. ``runs`` must not be empty."""
    ids = [run.id for run in runs]
    if not ids:
        raise ValueError("default_run_id needs at least one run")
    for wanted in (requested, remembered):
        if wanted in ids:
            return wanted
    return best_run_id(runs) or ids[0]


def run_label(run: Run) -> str:
    """A run as a picker lists it: its name (or id), dataset and final validation accuracy (or state). Plain
    text: draw it inside Markdown only escaped."""
    row = run.summary()
    accuracy = row["final_val_accuracy"]
    result = f"val acc {accuracy:.3f}" if accuracy is not None else str(row["state"])
    named = f"{row['name']} ({run.id})" if row["name"] else run.id
    return f"{named} — {row['dataset']}, {result}"


def leaderboard(runs: Iterable[Run], chosen: Iterable[str]) -> list[dict]:
    """The chosen runs' rows with ``LEADERBOARD_COLUMNS`` only, best final validation accuracy first (runs
    without one last). An id in ``chosen`` that is not among ``runs`` is a ``KeyError`` naming it."""
    by_id = {run.id: run for run in runs}
    rows = [{column: by_id[run_id].summary()[column] for column in LEADERBOARD_COLUMNS} for run_id in chosen]
    return sorted(rows, key=lambda row: (row["final_val_accuracy"] is None, -(row["final_val_accuracy"] or 0.0)))


def finished_on_dataset(runs: Iterable[Run], dataset: str) -> list[Run]:
    """The finished runs trained on any version of dataset ``dataset`` (a name without ``@vN``)."""
    return [run for run in runs if run.listed_state == "finished" and run.dataset_name == dataset]
