"""Inbox: a dataset's unlabelled images with a run's suggestions, most uncertain first; accepted images join the
dataset as a new version, and the run trains again on it."""

import streamlit as st

from tl_app import inbox_sections, shell, widgets
from tl_core.data import datasets

shell.guard()

st.title("Inbox")
all_datasets = datasets.list_datasets()
if not all_datasets:
    widgets.stop_with("Add a dataset on the Data page first.", "pages/data.py", "Go to Data")

name = st.selectbox("Dataset", [d.name for d in all_datasets], key="inbox_data")
run = inbox_sections.pick_run(name)
inbox_sections.saved_banner(name, run)
inbox_sections.add_images(name)
result = inbox_sections.listing(name, run)
if not result.rows:
    st.info(
        "No unlabelled images waiting. Add some above, keep photos from the Predict page, or start the REST "
        f"server with 'serve --capture {name}'."
    )
else:
    inbox_sections.bulk_accept(name, result)
    inbox_sections.grid(name, result)
inbox_sections.discarded(name)
