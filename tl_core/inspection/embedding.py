"""Embeddings in two dimensions, for the embedding map: PCA always, t-SNE (scikit-learn) on request."""

from __future__ import annotations

import numpy as np

from tl_core.errors import TLError

METHODS = ("PCA", "t-SNE")
TSNE_MAX_POINTS = 5000  # t-SNE is quadratic-ish; PCA first keeps it to seconds up to this size


def project(features: np.ndarray, method: str = "PCA", seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) coordinates."""
    from sklearn.decomposition import PCA

    if method not in METHODS:
        raise TLError(f"Unknown projection {method!r}; choose one of {METHODS}.")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if len(unit) < 3:
        return np.zeros((len(unit), 2))
    if method == "PCA":
        return PCA(2, random_state=seed).fit_transform(unit)
    if len(unit) > TSNE_MAX_POINTS:
        raise TLError(f"t-SNE is limited to {TSNE_MAX_POINTS} images here ({len(unit)} in this dataset); use PCA.")
    from sklearn.manifold import TSNE

    reduced = PCA(min(50, unit.shape[1], len(unit) - 1), random_state=seed).fit_transform(unit)
    return TSNE(2, perplexity=min(30.0, (len(unit) - 1) / 3), init="pca", random_state=seed).fit_transform(reduced)
