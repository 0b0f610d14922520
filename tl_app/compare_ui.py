"""Choosing a base from the pages: the Train page's quick scan and 'one run per base', and the Results
page's leaderboard."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tl_core.data import datasets
from tl_core.data.refs import parse_ref
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.training import compare

from .auth import current_user
from .widgets import md_escape

LEADERBOARD_COLUMNS = {
    "name": st.column_config.TextColumn("name"),
    "val_accuracy": st.column_config.NumberColumn(
        "val acc (final model)",
        format="%.3f",
        help="the saved model's accuracy on the validation images, evaluated once training ended: the figure "
        "a run's page shows",
    ),
    "balanced_accuracy": st.column_config.NumberColumn("balanced acc", format="%.3f"),
    "macro_f1": st.column_config.NumberColumn("macro F1", format="%.3f"),
    "training_s": st.column_config.NumberColumn("training (s)", format="%.1f"),
    "features": st.column_config.TextColumn(
        "feature pass",
        help="'reused cached features': the run computed none of its base's features, it reused an earlier run's, "
        "so its training time leaves out that pass",
    ),
    "model_mb": st.column_config.NumberColumn("size (MB)", format="%.2f"),
    "params": st.column_config.NumberColumn("parameters", format="%d"),
    "latency_ms": st.column_config.NumberColumn("1-image latency (ms)", format="%.1f"),
}


def compare_panel(config: TrainConfig, jobs, layers: int) -> None:
    offline = compare.offline_bases()
    names = [name for name, _ in offline]
    chosen = st.multiselect(
        "Bases",
        [row["name"] for row in compare.architectures.availability()],
        default=names,
        key="train_compare_bases",
        help="Default: every base whose weights are on disk",
    )
    bases = compare.parse_bases(",".join(chosen)) if chosen else []
    left, right = st.columns(2)
    if left.button("Quick scan (linear probe, seconds per base)", key="train_compare_scan", disabled=not bases):
        try:
            with st.spinner("Probing each base's frozen features…"):
                st.session_state["train_compare_scan_result"] = compare.quick_scan(
                    datasets.load_dataset(config.data), bases
                )
        except TLError as exc:
            st.error(md_escape(str(exc)))
    scan = st.session_state.get("train_compare_scan_result")
    if scan:
        st.dataframe(pd.DataFrame(scan["ranking"]), hide_index=True, key="train_compare_ranking")
        st.success(f"Recommended: **{scan['recommended']}**. {scan['why']}")
    if right.button(f"Queue one run per base ({len(bases)})", key="train_compare_queue", disabled=not bases):
        try:
            configs = compare.configs_for(config, bases, layers)
            queued = [jobs.submit(cfg, user=current_user()).id for cfg in configs]
        except TLError as exc:
            st.error(md_escape(str(exc)))
            return
        st.success(f"Queued {len(queued)} run(s) with the same settings; their leaderboard is on Results.")


def _board_row(run) -> dict:
    """A leaderboard row with the run's name after its id and, beside its time, whether it reused cached
    features."""
    row = compare.leaderboard_row(run)
    row.pop("run_dir")
    summary = run.summary()
    ordered = {"run": row.pop("run"), "name": summary["name"]}
    for key, value in row.items():
        ordered[key] = value
        if key == "training_s":
            ordered["features"] = summary["features"]
    return ordered


def leaderboard(runs: list, dataset: str) -> None:
    same = [r for r in runs if r.listed_state == "finished" and parse_ref(r.config.data).name == dataset]
    if not same:
        return
    st.subheader(f"Leaderboard: {md_escape(dataset)}")
    unmeasured = [r for r in same if r.artifacts.metrics().get("latency_ms") is None]
    if unmeasured and st.button(f"Measure single-image latency ({len(unmeasured)} run(s))", key="results_latency"):
        with st.spinner("Loading each model and timing one image…"):
            for run in unmeasured:
                compare.measure_latency(run)
    table = pd.DataFrame([_board_row(r) for r in same])
    st.dataframe(
        table.sort_values("val_accuracy", ascending=False),
        hide_index=True,
        key="results_board",
        column_config=LEADERBOARD_COLUMNS,
    )
    st.caption("Click a column to sort. Latency: one image, raw pixels to probabilities, on this server.")
