"""A run's suggestions for a dataset's inbox (``data/inbox.py``): a class for each pending image, with its
probability and the "unknown" flag, most uncertain first, so a person labels what teaches the model most.

A run answers each image once: its answer is kept in ``cache/suggestions/<run id>.jsonl`` (one JSON line per
image content hash, appended), so listing the inbox again, or after adding images, reads that file and runs the
model only on images it has not seen (the model is not even loaded when every image has an answer). The answers
are ``Predictor.predict_each``'s, the app's, CLI's and server's own: the same probabilities and unknown flag.

Most uncertain first: the smallest margin between the two most probable classes, then the lowest probability;
images the model could not read come last.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from tl_core.data import inbox
from tl_core.data.datasets import load_dataset
from tl_core.data.refs import parse_ref
from tl_core.errors import TLError
from tl_core.runs import table
from tl_core.runs.store import Run, get_run, list_runs
from tl_core.workspace import cache_dir

BATCH = 64  # images per forward pass when suggesting
LISTED = ("id", "file", "source", "suggested", "probability", "unknown")  # the CLI's JSON keys, a contract


def cache_file(run: Run) -> Path:
    return cache_dir() / "suggestions" / f"{run.id}.jsonl"


def read_cache(run: Run) -> dict[str, dict]:
    """The run's kept answers by image content hash (a line cut short by a crash is ignored)."""
    path, answers = cache_file(run), {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                answers[row["sha256"]] = row
            except (ValueError, KeyError, TypeError):
                continue
    return answers


def _append(run: Run, rows: list[dict]) -> None:
    path = cache_file(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, text)  # one write per batch: concurrent listings append whole lines
    finally:
        os.close(fd)


def suggesting_run(dataset: str, run: Union[Run, str, None] = None) -> Optional[Run]:
    """``run`` (a run, id or folder) when given, else the dataset's best finished run; None when it has none."""
    if isinstance(run, Run):
        return run
    if run:
        chosen = get_run(run)
        if chosen.state != "finished" or not chosen.artifacts.has_model():
            raise TLError(f"Run {chosen.id!r} is {chosen.state}, without a model to suggest with; name a finished run.")
        return chosen
    best = table.best_run_id(list_runs(), parse_ref(dataset).name)
    return get_run(best) if best else None


@dataclass
class Listing:
    """The pending images with their suggestions, most uncertain first; ``computed``: how many the model had to
    answer for this listing (0 when every answer came from the cache)."""

    run: Optional[Run]
    rows: list[dict]
    computed: int


def _row(entry: dict, answer: Optional[dict]) -> dict:
    top = (answer or {}).get("top_k") or []
    first = top[0] if top else {}
    second = top[1]["probability"] if len(top) > 1 else 0.0
    return {
        "id": entry["id"],
        "file": entry["file"],
        "source": entry["source"],
        "suggested": first.get("label"),
        "probability": first.get("probability"),
        "unknown": (answer or {}).get("unknown"),
        "margin": first["probability"] - second if first else None,
        "distance": (answer or {}).get("distance"),
        "top_k": top,
        "error": (answer or {}).get("error"),
        "sha256": entry["sha256"],
        "stored": entry["stored"],
        "added": entry["added"],
    }


def uncertainty_order(row: dict) -> tuple:
    """Sort key: most uncertain first (smallest top-two margin, then lowest probability); unanswered last."""
    if row["probability"] is None:
        return (1, math.inf, math.inf, row["added"])
    return (0, row["margin"], row["probability"], row["added"])


def suggest(
    dataset: str,
    run: Union[Run, str, None] = None,
    load: Optional[Callable[[Run], object]] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Listing:
    """The pending images of ``dataset``'s inbox with ``run``'s suggestions (default: the dataset's best run;
    without any finished run, no suggestions, oldest first). ``load(run)`` gives the predictor (default
    ``Predictor.from_run``; the app passes its shared one); it is called only when some image has no answer."""
    pending = inbox.entries(dataset, "pending")
    chosen = suggesting_run(dataset, run)
    if chosen is None:
        return Listing(None, [_row(entry, None) for entry in pending], 0)
    answers = read_cache(chosen)
    missing = [entry for entry in pending if entry["sha256"] not in answers]
    if missing:
        if load is None:
            from tl_core.inference.predict import Predictor

            load = Predictor.from_run
        predictor = load(chosen)
        top_k = min(3, len(predictor.class_names))
        for start in range(0, len(missing), BATCH):
            chunk = missing[start : start + BATCH]
            datas = [inbox.image_path(dataset, entry).read_bytes() for entry in chunk]
            results = predictor.predict_each(datas, top_k)
            rows = [
                {
                    "sha256": entry["sha256"],
                    **{key: result[key] for key in ("top_k", "error", "unknown", "distance") if key in result},
                }
                for entry, result in zip(chunk, results)
            ]
            _append(chosen, rows)
            answers.update((row["sha256"], row) for row in rows)
            if progress:
                progress(min(start + BATCH, len(missing)), len(missing))
    rows = sorted((_row(entry, answers.get(entry["sha256"])) for entry in pending), key=uncertainty_order)
    return Listing(chosen, rows, len(missing))


def check_probability(min_probability) -> float:
    if isinstance(min_probability, bool) or not isinstance(min_probability, (int, float)):
        raise TLError(f"The minimum probability must be a number from 0 to 1; got {min_probability!r}.")
    if not 0 <= min_probability <= 1:
        raise TLError(f"The minimum probability must be from 0 to 1 (say 0.9); got {min_probability!r}.")
    return float(min_probability)


def confident(listing: Listing, min_probability: float, classes: Optional[list[str]] = None) -> dict[str, str]:
    """id -> suggested class for every suggestion at or above ``min_probability`` that is not "unknown" (and,
    given the dataset's ``classes``, names one of them: a run trained on an older version may know others)."""
    check_probability(min_probability)
    return {
        row["id"]: row["suggested"]
        for row in listing.rows
        if row["probability"] is not None
        and row["probability"] >= min_probability
        and row["unknown"] is not True
        and (classes is None or row["suggested"] in classes)
    }


def accept_confident(
    dataset: str,
    min_probability: float,
    run: Union[Run, str, None] = None,
    load: Optional[Callable[[Run], object]] = None,
    user: Optional[str] = None,
):
    """Accept every pending suggestion of ``run`` at or above ``min_probability`` (images flagged unknown are
    left for a person) as the dataset's next version; TLError when there is none."""
    check_probability(min_probability)
    listing = suggest(dataset, run, load)
    labels = confident(listing, min_probability, load_dataset(parse_ref(dataset).name).classes)
    if listing.run is None:
        raise TLError(
            f"Dataset {parse_ref(dataset).name!r} has no finished run to suggest classes; train one, or accept "
            "images one by one with --id ID --label CLASS."
        )
    if not labels:
        raise TLError(
            f"No pending suggestion of run {listing.run.id!r} is at or above probability {min_probability!r} "
            f"({len(listing.rows)} pending); lower it or label images one by one."
        )
    note = f"{len(labels)} inbox suggestion(s) of run {listing.run.id} at or above {min_probability:g} accepted"
    return inbox.accept(dataset, labels, user=user, note=note)
