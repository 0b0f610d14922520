"""The Inspect page's rows: suspects filtered for display, and the embedding map's points.

Plain lists of dictionaries: the caller picks the table or chart that shows them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

import numpy as np


def shown_suspects(rows: Iterable[dict], kinds: Collection[str], limit: int) -> list[dict]:
    """The first ``limit`` suspects of the chosen ``kinds``, in the order given (``suspects.analyse``: most
    suspect first)."""
    return [row for row in rows if row["kind"] in kinds][: max(limit, 0)]


def map_points(
    items: Sequence[dict], coords: np.ndarray, flagged: Collection[str], splits: Collection[str]
) -> list[dict]:
    """One point per dataset item in ``splits``: its 2-D coordinates (row i of ``coords`` is item i), class,
    split, file, and ``flag`` "misclassified" for the files in ``flagged`` (else "")."""
    if len(coords) != len(items):
        raise ValueError(f"{len(coords)} coordinates for {len(items)} items: project the same items' features")
    return [
        {
            "x": float(xy[0]),
            "y": float(xy[1]),
            "class": item["class"],
            "split": item["split"],
            "file": item["path"],
            "flag": "misclassified" if item["path"] in flagged else "",
        }
        for item, xy in zip(items, coords)
        if item["split"] in splits
    ]
