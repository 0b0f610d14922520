"""Predictions as answers: which images got one ("unknown" outside the run's scope, "not sure" below a
threshold), which were refused, and the table of answers a page shows or downloads.

Works on ``predict_each``'s results: per image, ``{"top_k": [{"label", "probability"}, ...], "unknown": true,
false or null, "distance": ...}`` (best first) or ``{"error": message}``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from tl_core.workspace import spreadsheet_safe

NOT_SURE = "not sure"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Answer:
    index: int  # position of the image among those predicted
    name: str  # the image's file name
    top: list[dict]  # top-k {"label", "probability"}, best first
    sure: bool  # the best probability reached the threshold
    unknown: Optional[bool] = None  # outside what the run was trained on; None: not measured (no scope)

    @property
    def label(self) -> str:
        if self.unknown:
            return UNKNOWN
        return self.top[0]["label"] if self.sure else NOT_SURE


def sort_results(names: Sequence[str], results: Sequence[dict], threshold: float) -> tuple[list[Answer], list[tuple]]:
    """(answers, refusals): an ``Answer`` per image with a top-k, and (name, error message) per image
    refused, both in the order given. An answer is sure when its best probability is at least
    ``threshold``."""
    if len(names) != len(results):
        raise ValueError(f"{len(names)} names for {len(results)} results")
    answers, refused = [], []
    for index, (name, result) in enumerate(zip(names, results)):
        if "error" in result:
            refused.append((name, result["error"]))
        else:
            top = result["top_k"]
            answers.append(Answer(index, name, top, top[0]["probability"] >= threshold, result.get("unknown")))
    return answers, refused


def answer_rows(answers: Sequence[Answer]) -> list[dict]:
    """One row per answer: image, answer (a label, "unknown" or "not sure"), whether it is unknown (no such column
    when not measured), then top1..topK labels and p1..pK probabilities (rounded to 4 places)."""
    return [
        {
            "image": answer.name,
            "answer": answer.label,
            **({"unknown": answer.unknown} if answer.unknown is not None else {}),
            **{f"top{i + 1}": guess["label"] for i, guess in enumerate(answer.top)},
            **{f"p{i + 1}": round(guess["probability"], 4) for i, guess in enumerate(answer.top)},
        }
        for answer in answers
    ]


def answers_csv(answers: Sequence[Answer]) -> str:
    """``answer_rows`` as CSV text for download, every text cell spreadsheet-safe (an upload named
    ``=HYPERLINK(...).jpg`` stays text)."""
    rows = answer_rows(answers)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows({key: spreadsheet_safe(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def batch_columns(top_k: int) -> list[str]:
    """A batch prediction CSV's header: the file, its predicted class and that class's probability, the top-k
    labels and probabilities, and why a file got no prediction (empty when it got one)."""
    return [
        "file",
        "predicted",
        "probability",
        *(f"top{i + 1}" for i in range(top_k)),
        *(f"p{i + 1}" for i in range(top_k)),
        "error",
    ]


def batch_row(name: str, top_k: int, top: Sequence[dict] = (), error: str = "") -> list:
    """One CSV row of ``batch_columns(top_k)``, every text cell spreadsheet-safe: an image's top-k (best
    first; probabilities to 6 places), or for a file that could not be read, its name and ``error``."""
    labels = [guess["label"] for guess in top] + [""] * (top_k - len(top))
    probs = [round(guess["probability"], 6) for guess in top] + [""] * (top_k - len(top))
    best = (labels[0], probs[0]) if top else ("", "")
    return [spreadsheet_safe(cell) for cell in (name, *best, *labels, *probs, error)]
