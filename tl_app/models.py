"""Loaded models, shared by every user of this server."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tl_core.runs.store import Run

from .streamlit_internals import keep_tensorflow_warm_between_reruns
from .widgets import md_escape


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def _load_predictor(run_path: str, model_mtime: float):
    """One loaded model per run, kept across requests and users (mtime in the key: a retrain reloads)."""
    import gc

    from tl_core.inference.predict import Predictor

    keep_tensorflow_warm_between_reruns()
    predictor = Predictor.from_run(Run(Path(run_path)))
    # A full collection (Python's own, or Streamlit's after every script run where runner.postScriptGC is
    # on) walks every live object, costly with TensorFlow loaded. TensorFlow and the models live long, so
    # move them out of the collector's sight (the saving is in docs/performance.md).
    # Frozen objects are never collected, though: first unfreeze and collect, so models evicted from this
    # cache and sessions that ended since the last load are freed (one full collection per model load, not
    # per rerun).
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return predictor


def predictor_for(run: Run):
    return _load_predictor(str(run.root), run.artifacts.model_path.stat().st_mtime)


@st.cache_resource(max_entries=2, show_spinner="Loading the pretrained classifier…")
def pretrained_keras(base: str, alpha: float | None):
    """A Keras application with its top and ImageNet labels (raises TLError naming a missing file)."""
    from tl_core.inference.pretrained import KerasApplicationClassifier

    keep_tensorflow_warm_between_reruns()
    return KerasApplicationClassifier(base, alpha)


@st.cache_resource(max_entries=4, show_spinner="Loading the TFLite classifier…")
def pretrained_tflite_file(model: str, labels: str):
    """A TFLite classifier from the server's folders (``TL_PRETRAINED_DIRS``), loaded once for every user."""
    from tl_core.inference.pretrained import TFLiteClassifier

    return TFLiteClassifier(Path(model), Path(labels))


@st.cache_resource(max_entries=4, show_spinner="Loading the TFLite classifier…")
def pretrained_tflite(model: bytes, labels: bytes):
    from tl_core.inference.pretrained import TFLiteClassifier

    return TFLiteClassifier(model, labels)


def pick_pretrained():
    """The Predict page's choice of a pretrained classifier used as it is; stops the page until there is one."""
    from tl_core.errors import TLError
    from tl_core.inference.pretrained import server_classifiers
    from tl_core.models import architectures

    on_server = {classifier.name: classifier for classifier in server_classifiers()}
    kinds = (["On this server"] if on_server else []) + ["TFLite classifier", "Keras application (ImageNet)"]
    kind = st.radio(
        "Pretrained classifier",
        kinds,
        horizontal=True,
        key="predict_pretrained_kind",
        help="Keras applications need ImageNet weights with their classification top: downloaded on first use, "
        "or put in the weights folder by an admin. Classifiers on this server are ready offline.",
    )
    try:
        if kind == "On this server":
            chosen = on_server[st.selectbox("Classifier", list(on_server), key="predict_server_classifier")]
            return pretrained_tflite_file(str(chosen.model), str(chosen.labels))
        if kind == "TFLite classifier":
            left, right = st.columns(2)
            model_file = left.file_uploader("TFLite model", type=["tflite"], key="predict_tflite")
            labels_file = right.file_uploader("Its labels (one per line)", type=["txt"], key="predict_labels")
            if not (model_file and labels_file):
                st.info("Upload a TFLite image classifier and its labels file.")
                st.stop()
            return pretrained_tflite(model_file.getvalue(), labels_file.getvalue())
        base = st.selectbox("Base", architectures.names(), key="predict_pretrained_base")
        arch = architectures.get(base)
        alpha = (
            st.selectbox(
                "Width (alpha)",
                arch.alphas,
                index=arch.alphas.index(arch.default_alpha),
                key=f"predict_pretrained_alpha_{base}",
            )
            if arch.alphas
            else None
        )
        return pretrained_keras(base, alpha)
    except TLError as exc:
        st.error(md_escape(str(exc)))
        st.stop()
