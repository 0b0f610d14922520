"""Test-time augmentation: a prediction averaged over a few views of each image (a mirror image, and
optionally zoomed crops), at the cost of one forward pass per view."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tl_core.errors import TLError

MODES = {"none": 1, "flip": 2, "flip+crops": 6}  # views per image
CROP = 0.875  # the crops keep 87.5% of each side (centre and four corners), resized back


def views(pixels: np.ndarray, mode: str) -> np.ndarray:
    """(N, s, s, 3) -> (N, V, s, s, 3): the image, its mirror, and with crops the five zoomed crops."""
    if mode not in MODES:
        raise TLError(f"Unknown test-time augmentation {mode!r}; choose one of {list(MODES)}.")
    out = [pixels]
    if mode != "none":
        out.append(pixels[:, :, ::-1])
    if mode == "flip+crops":
        size = pixels.shape[1]
        side = int(round(size * CROP))
        corners = [((size - side) // 2,) * 2, (0, 0), (0, size - side), (size - side, 0), (size - side, size - side)]
        for top, left in corners[:4]:
            out.append(
                np.stack(
                    [
                        np.asarray(
                            Image.fromarray(image[top : top + side, left : left + side]).resize(
                                (size, size), Image.Resampling.BILINEAR
                            )
                        )
                        for image in pixels.astype(np.uint8)
                    ]
                )
            )
    return np.stack(out, axis=1)


def averaged(probabilities, pixels: np.ndarray, mode: str) -> np.ndarray:
    """Mean probabilities over the views, through ``probabilities((M, s, s, 3)) -> (M, classes)``."""
    if mode == "none" or not len(pixels):
        return probabilities(pixels)
    stacked = views(pixels, mode)
    count = stacked.shape[1]
    flat = probabilities(stacked.reshape(-1, *pixels.shape[1:]))
    return flat.reshape(len(pixels), count, -1).mean(axis=1)
