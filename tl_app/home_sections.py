"""The Home page's sections: workspace counts, the next step, offline bases, the audit log."""

from __future__ import annotations

import streamlit as st


def counts(datasets: int, runs: int, finished: int) -> None:
    cols = st.columns(3)
    cols[0].metric("Datasets", datasets)
    cols[1].metric("Training runs", runs)
    cols[2].metric("Finished models", finished)


def next_step(has_datasets: bool, has_runs: bool) -> None:
    """What a workspace at this stage does next, with a link to the page where it is done."""
    st.subheader("Next step")
    if not has_datasets:
        st.info("Start by adding a dataset: a zip or folder with one sub-folder of images per class.")
        st.page_link("pages/data.py", label="Add a dataset")
    elif not has_runs:
        st.info("You have data. Train a first model: the defaults (frozen base, new head) take seconds to minutes.")
        st.page_link("pages/train.py", label="Train a model")
    else:
        st.info("Compare runs and inspect mistakes on Results, or try your model on new images.")
        st.page_link("pages/results.py", label="Results")
        st.page_link("pages/predict.py", label="Predict")


def offline_bases(names: list[str]) -> None:
    st.caption(
        "Base models with ImageNet weights on this server: "
        + (
            ", ".join(names)
            if names
            else "none yet — they download on first use, or copy them into $KERAS_HOME/models."
        )
    )


def audit_log(entries: list[dict]) -> None:
    with st.expander("Recent deletions and cancellations (audit log)"):
        if entries:
            st.dataframe(
                entries,
                hide_index=True,
                key="home_audit",
                column_order=["time", "user", "action", "target", "owner", "images"],
            )
        else:
            st.caption("Nothing deleted or cancelled yet.")
