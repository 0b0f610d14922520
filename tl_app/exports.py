"""The Results page's Export tab: build a format when asked, show each export's parity, offer downloads.

An export runs as ``python -m tl_core export`` in its own process: conversions load TensorFlow's converter,
LiteRT and onnxruntime, which the shared app server has no reason to keep in memory.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pandas as pd
import streamlit as st

from tl_core.deploy.formats import FORMATS
from tl_core.deploy.parity import FLOAT_AGREEMENT
from tl_core.models.heads import HEAD_KINDS, head_kind
from tl_core.runs.store import Run

from .widgets import md_escape

EXPORT_TIMEOUT_S = 900


def build_export(run: Run, fmt: str) -> tuple[bool, str]:
    """Export and check one format; (done, the error's last line when not)."""
    command = [sys.executable, "-m", "tl_core", "export", "--run", str(run.root), "--format", fmt]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=EXPORT_TIMEOUT_S,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
    except subprocess.TimeoutExpired:
        return False, f"The {fmt} export took longer than {EXPORT_TIMEOUT_S} s and was stopped."
    if done.returncode == 0:
        return True, ""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return False, (errors or lines or [f"exit status {done.returncode}"])[-1].removeprefix("error: ")


def parity_table(parity: dict) -> pd.DataFrame:
    rows = [
        {
            "format": fmt,
            "runtime": f"{e['runtime']} {e['runtime_version']}",
            "images": e["images"],
            "agreement": e["agreement"],
            "accuracy": e["accuracy"],
            "accuracy change": -e["accuracy_drop"],
            "max prob. diff": e["max_abs_diff"],
            "size (MB)": e["file_bytes"] / 1e6,
            "check": {True: "passed", False: "FAILED", None: "stated"}[e["passed"]],
        }
        for fmt, e in parity.items()
    ]
    return pd.DataFrame(rows)


def export_panel(run: Run) -> None:
    kind = head_kind(run.config.head)
    if not kind.exports:
        exporting = " or ".join(k.label for k in HEAD_KINDS.values() if k.exports)
        st.info(
            f"This run's head ({kind.label}) cannot be written as a layer, so none of the formats "
            f"({', '.join(FORMATS)}) can hold it. Retrain with a {exporting} to export; 'Download model "
            "(zip)' under Config & log has model.keras + head.joblib for Python."
        )
        return
    st.caption(
        "Every export takes raw RGB pixels (0-255) at the model's input size and returns probabilities; "
        "it comes with labels.txt and a model card, and is checked in its own runtime on this run's "
        "validation images. The run's calibration (temperature) is inside every export: it gives the "
        "probabilities Predict shows."
    )
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    fmt = left.selectbox(
        "Format", list(FORMATS), format_func=lambda f: f"{f}: {FORMATS[f].description}", key="results_export_format"
    )
    if right.button("Build export", key="results_export_build"):
        with st.spinner(f"Building {fmt} and checking it on the validation images..."):
            built, error = build_export(run, fmt)
        if built:
            st.success(f"{fmt} export ready.")
        else:
            st.error(f"The {fmt} export failed: {md_escape(str(error))}")
    parity = run.artifacts.parity()
    if parity:
        st.dataframe(
            parity_table(parity),
            hide_index=True,
            key="results_parity",
            column_config={
                "agreement": st.column_config.NumberColumn(format="percent"),
                "accuracy": st.column_config.NumberColumn(format="%.3f"),
                "accuracy change": st.column_config.NumberColumn(format="%+.3f"),
                "max prob. diff": st.column_config.NumberColumn(format="%.1e"),
                "size (MB)": st.column_config.NumberColumn(format="%.2f"),
            },
        )
        st.caption(
            "Agreement: share of validation images where the export's top class equals the app's. "
            f"Float formats must agree on at least {FLOAT_AGREEMENT:.1%}; integer formats "
            f"({', '.join(f.name for f in FORMATS.values() if f.quantized)}) state their agreement."
        )
    for exported in run.artifacts.exported_formats():
        # the zip is built when the button is clicked, not on every rerun of this page
        st.download_button(
            f"Download {exported} (zip)",
            functools.partial(run.artifacts.export_zip, exported),
            file_name=f"{run.id}-{exported}.zip",
            mime="application/zip",
            key=f"results_export_download_{exported}",
        )
