"""Inspect: a dataset's suspects, its embedding map and its versions; fixes saved as a new version."""

import streamlit as st

from tl_app import fixes, inspect_sections, shell, widgets
from tl_core.data import datasets
from tl_core.runs.table import finished_on_dataset
from tl_core.training.compare import offline_bases

shell.guard()

st.title("Inspect data")
all_datasets = datasets.list_datasets()
if not all_datasets:
    widgets.stop_with("Add a dataset on the Data page first.", "pages/data.py", "Go to Data")

left, right = st.columns(2)
name = left.selectbox("Dataset", [d.name for d in all_datasets], key="inspect_data")
base = right.selectbox("Base for features", [b for b, _ in offline_bases()] or ["MobileNetV2"], key="inspect_base")
dataset = datasets.load_dataset(name)
st.caption(f"Version {dataset.version}: {len(dataset.items)} images, {len(dataset.classes)} classes.")
if not st.toggle("Look at this dataset (computed once per version, then kept)", key="inspect_on"):
    st.info(inspect_sections.INTRO)
    fixes.save_bar(name, key="inspect_fixes")
    st.stop()

report = inspect_sections.suspects_report(dataset, base)
suspects_tab, map_tab, versions_tab = st.tabs(["Suspects", "Embedding map", "Versions"])
with suspects_tab:
    inspect_sections.suspects(dataset, report)
with map_tab:
    inspect_sections.embedding_map(dataset, report, finished_on_dataset(widgets.backend().refresh(), name))
with versions_tab:
    inspect_sections.version_list(dataset)
fixes.save_bar(name, key="inspect_fixes")
