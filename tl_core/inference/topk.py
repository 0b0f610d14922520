"""Top-k: the k most probable labels of one row of probabilities, as every answer shows them (Predict, the
CLI's predict and classify, the REST server's classify)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(row: np.ndarray, labels: Sequence[str], k: int) -> list[dict]:
    """``[{"label", "probability"}, ...]``, most probable first (ties in label order); k is kept within
    1..len(labels)."""
    row = np.asarray(row)
    order = np.argsort(-row, kind="stable")[: max(1, min(int(k), len(labels)))]
    return [{"label": labels[i], "probability": float(row[i])} for i in order]
