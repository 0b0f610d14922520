"""The pictures logged with a run: its confusion matrix and its learning curves, as PNG bytes.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, safe off the main thread), from
what the run folder holds: ``metrics.json``'s confusion matrix and ``history.csv``'s rows.
"""

from __future__ import annotations

import io
from typing import Optional

MAX_CLASSES_DRAWN = 50  # as the Results page: beyond this a matrix is unreadable


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def confusion_png(matrix: list[list[int]], class_names: list[str]) -> Optional[bytes]:
    """Rows: true class, columns: predicted; counts in the cells. None with no matrix or too many classes."""
    if not matrix or not class_names or len(class_names) > MAX_CLASSES_DRAWN:
        return None
    from matplotlib.figure import Figure

    n = len(class_names)
    side = min(3 + 0.45 * n, 16)
    figure = Figure(figsize=(side, side))
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(n), class_names, rotation=90)
    axes.set_yticks(range(n), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (validation)")
    top = max(max(row) for row in matrix) or 1
    if n <= 20:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axes.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    return _png(figure)


def curves_png(history: list[dict]) -> Optional[bytes]:
    """Loss and accuracy per epoch, training and validation, in the order the epochs ran (fine-tuning too)."""
    if not history:
        return None
    from matplotlib.figure import Figure

    steps = list(range(1, len(history) + 1))
    figure = Figure(figsize=(10, 4))
    for index, metric in enumerate(("loss", "accuracy")):
        axes = figure.add_subplot(1, 2, index + 1)
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            points = [(s, row[key]) for s, row in zip(steps, history) if isinstance(row.get(key), float)]
            if points:
                axes.plot(*zip(*points), marker="o", label=label)
        axes.set_xlabel("epoch")
        axes.set_title(metric)
        axes.legend()
    return _png(figure)
