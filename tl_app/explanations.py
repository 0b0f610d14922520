"""Grad-CAM beside the image, for the Predict page and the Results page's mistakes.

Maps are computed on the shared loaded model when a user asks for one, and remembered by image content
and class, so a rerun redraws without recomputing.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import streamlit as st

from tl_core.errors import TLError
from tl_core.models.heads import HEAD_KINDS, head_kind
from tl_core.runs.store import Run

from .models import predictor_for
from .widgets import md_escape


@st.cache_data(max_entries=256, show_spinner="Computing Grad-CAM…")
def _overlay(run_path: str, model_mtime: float, digest: str, class_name: str, _image: bytes) -> tuple[bytes, dict]:
    from tl_core.inference.explain import explain

    run = Run(Path(run_path))
    result = explain(predictor_for(run).loaded, _image, class_name)
    buffer = io.BytesIO()
    result.overlay().save(buffer, "PNG")
    return buffer.getvalue(), result.summary()


def gradcam_view(run: Run, image: bytes, default_class: str, key: str) -> None:
    """The image, and where the model found evidence for a class the user picks (default: ``default_class``)."""
    kind = head_kind(run.config.head)
    if not kind.grad_cam:
        able = " and ".join(k.label for k in HEAD_KINDS.values() if k.grad_cam)
        st.caption(
            f"Grad-CAM is not defined for this run's head ({kind.label}): it has no per-class direction over "
            f"the features. These heads have one: {able}."
        )
        return
    classes = run.artifacts.class_names()
    chosen = st.selectbox(
        "Class to explain",
        classes,
        index=classes.index(default_class) if default_class in classes else 0,
        key=f"{key}_class",
    )
    try:
        png, summary = _overlay(
            str(run.root), run.artifacts.model_path.stat().st_mtime, hashlib.sha256(image).hexdigest(), chosen, image
        )
    except TLError as exc:
        st.error(md_escape(str(exc)))
        return
    left, right = st.columns(2)
    left.image(image, caption="image", width="stretch")
    right.image(
        png,
        width="stretch",
        caption=f"Grad-CAM for {chosen} (p={summary['probability']:.2f}); box: the map's top 20% of mass",
    )
