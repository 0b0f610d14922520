"""Data: add datasets (zip, folder, class by class, server folder) and browse them."""

import streamlit as st

from tl_app import data_sections, shell
from tl_core.data import datasets, uploads

shell.guard()

st.title("Data")
add_tab, browse_tab = st.tabs(["Add a dataset", "Browse datasets"])
uploads.clean_stale()
with add_tab:
    source = st.radio("Source", data_sections.SOURCES, horizontal=True, key="data_source")
    if source == "Zip of class folders":
        data_sections.zip_import(data_sections.upload_round())
    elif source == "Folder upload":
        data_sections.folder_import(data_sections.upload_round())
    elif source == "Class by class":
        data_sections.class_by_class()
    else:
        data_sections.server_folder(data_sections.import_roots())

with browse_tab:
    all_datasets = datasets.list_datasets()
    if not all_datasets:
        st.info("No datasets yet. Add one in the first tab: a zip or folder with one sub-folder per class.")
        st.stop()
    chosen = st.selectbox("Dataset", [d.name for d in all_datasets], key="data_browse_name")
    dataset = datasets.load_dataset(chosen)
    data_sections.overview(dataset)
    data_sections.settle_conflicts(dataset)  # above the samples: a dozen classes of thumbnails hid it
    data_sections.samples(dataset)
    data_sections.rename_or_delete(chosen)
