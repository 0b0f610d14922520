"""Loaded models, shared by every user of this server."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from tl_core.runs import Run

from .streamlit_internals import keep_tensorflow_warm_between_reruns


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def _load_predictor(run_path: str, model_mtime: float):
    """One loaded model per run, kept across requests and users (mtime in the key: a retrain reloads)."""
    import gc

    from tl_core.predict import Predictor
    keep_tensorflow_warm_between_reruns()
    predictor = Predictor.from_run(Run(Path(run_path)))
    # After every script run Streamlit calls gc.collect(2), which walks every live object: with TensorFlow
    # loaded that is ~0.3 s of CPU per rerun, per user. TensorFlow and the models live long, so move them
    # out of the collector's sight (measured: 0.27 s -> 4 us per collection). Frozen objects are never
    # collected, though: first unfreeze and collect, so models evicted from this cache and sessions that
    # ended since the last load are freed (one full collection per model load, not per rerun).
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return predictor


def predictor_for(run: Run):
    return _load_predictor(str(run.root), run.artifacts.model_path.stat().st_mtime)
