"""How far to trust an accuracy measured on few images (no scikit-learn: pages import it)."""

from __future__ import annotations

import math

FEW_VALIDATION_IMAGES = 30  # below this an accuracy is a rough guide: one image moves it by over 3 points


def accuracy_interval(accuracy: float, images: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy measured on ``images`` images: honest at 0 and 1 and on
    a handful of images (2 of 2 right gives 0.34-1.00), where the plain normal interval says 1.00 +- 0."""
    if images <= 0:
        return 0.0, 1.0
    centre = (accuracy + z * z / (2 * images)) / (1 + z * z / images)
    half = z / (1 + z * z / images) * math.sqrt(accuracy * (1 - accuracy) / images + z * z / (4 * images * images))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
