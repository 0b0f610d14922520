"""Closing the loop: "train again on the new version with the same settings", for any page that has a run and a
dataset that has grown since (the Inbox; Monitoring). Queue it at once, or open the Train page with the run's
settings filled in (Results' "Train again with these settings", ``train_form.prefill_from_run``), on the
dataset's current version, to change some first."""

from __future__ import annotations

import streamlit as st

from tl_core.errors import TLError
from tl_core.runs.store import Run
from tl_core.training.again import config_again

from . import train_form, widgets
from .auth import current_user


def train_again_panel(run: Run, dataset: str, key: str) -> None:
    """Two buttons (keyed ``{key}_again`` and ``{key}_again_edit``): queue ``run``'s settings on ``dataset``'s
    latest version, or take them to the Train page."""
    try:
        config = config_again(run, dataset)
    except TLError as exc:
        st.error(widgets.md_escape(str(exc)))
        return
    queued = st.session_state.get(f"{key}_again_queued")
    if queued:
        st.success(widgets.md_escape(f"Queued run {queued} on {config.data}."))
        st.page_link("pages/results.py", label="Follow it on Results", query_params={"run": queued})
    left, right = st.columns(2)
    label = f"Train again on {config.data} with the same settings"
    if left.button(widgets.md_escape(label), key=f"{key}_again", type="primary", icon=":material/replay:"):
        try:
            submitted = widgets.backend().submit(config, user=current_user())
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))
            return
        st.session_state[f"{key}_again_queued"] = submitted.id
        st.rerun()
    if right.button("Change settings first (Train page)", key=f"{key}_again_edit"):
        st.session_state[train_form.AGAIN] = run.id  # Train fills the form in, on the dataset's current version
        st.switch_page("pages/train.py")
