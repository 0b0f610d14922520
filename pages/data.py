"""Data: add datasets (zip, folder, class by class, server folder) and browse them."""

import os
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from tl_app import charts, shell, streamlit_internals
from tl_app.auth import current_user
from tl_core.data import datasets, uploads
from tl_core.errors import TLError

shell.guard()

st.title("Data")
add_tab, browse_tab = st.tabs(["Add a dataset", "Browse datasets"])


def _progress_bar():
    bar = st.progress(0.0, text="Checking images…")
    return lambda done, total: bar.progress(done / max(total, 1), text=f"Checked {done}/{total} files")


def _import(make, uploads=()):
    """Run an import and show its report (errors readable); once imported, let go of the uploaded files."""
    try:
        dataset = make(_progress_bar())
    except TLError as exc:
        st.error(str(exc))  # the uploads stay, so the user can fix the name and try again
        return None
    streamlit_internals.release_uploads(uploads)
    st.session_state["data_upload_round"] = upload_round + 1  # fresh, empty upload widgets next run
    m = dataset.manifest
    st.success(
        f"Imported {dataset.name!r}: {m['num_images']} images in {len(m['classes'])} classes; "
        f"{len(m['skipped'])} file(s) skipped."
    )
    if m["skipped"]:
        st.dataframe(pd.DataFrame(m["skipped"]), hide_index=True)
    imbalance = datasets.imbalance_warning(dataset)
    if imbalance:
        st.warning(imbalance)
    if m.get("low_detail"):
        st.warning(
            f"{len(m['low_detail'])} image(s) have very few colours (blank, placeholder, sketch or icon). "
            "They were kept and are flagged under Suspects: exclude them there if they are not real examples."
        )
    return dataset


upload_round = st.session_state.get("data_upload_round", 0)
uploads.clean_stale()
with add_tab:
    source = st.radio(
        "Source",
        ["Zip of class folders", "Folder upload", "Class by class", "Folder on the server"],
        horizontal=True,
        key="data_source",
    )
    if source == "Zip of class folders":
        upload = st.file_uploader(
            "Zip with one folder per class (optionally train/ and val/ folders)",
            type=["zip"],
            key=f"data_zip_{upload_round}",
        )
        name = st.text_input("Dataset name", value=Path(upload.name).stem if upload else "", key="data_zip_name")
        if st.button("Import zip", disabled=not (upload and name), type="primary", key="data_zip_go"):
            staged = uploads.Staging()
            try:  # on disk in chunks: no second copy of the zip in memory
                path = staged.save(upload.name, upload)
                _import(lambda progress: datasets.add_zip(path, name, progress=progress), [upload])
            finally:
                staged.discard()
    elif source == "Folder upload":
        files = st.file_uploader(
            "A folder with one sub-folder per class",
            accept_multiple_files="directory",
            key=f"data_folder_{upload_round}",
        )
        name = st.text_input("Dataset name", key="data_folder_name")
        if st.button("Import folder", disabled=not (files and name), type="primary", key="data_folder_go"):
            _import(
                lambda progress: datasets.add_uploaded_folder(  # each file read when its turn comes
                    [(f.name, f.getvalue) for f in files], name, progress=progress
                ),
                files,
            )
    elif source == "Class by class":
        staged = uploads.Staging(st.session_state.setdefault("data_pending_key", uuid.uuid4().hex))
        with st.form("data_class_form", clear_on_submit=True):
            class_name = st.text_input("Class name", key="data_class_name")
            images = st.file_uploader(
                "Images of this class",
                accept_multiple_files=True,
                type=["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"],
                key="data_class_images",
            )
            if st.form_submit_button("Add class") and class_name and images:
                # waiting on disk, not in this session's memory
                staged.add_to_class(class_name, [(image.name, image) for image in images])
                streamlit_internals.release_uploads(images)
        pending = staged.class_counts()
        if pending:
            st.write({cls: f"{count} image(s)" for cls, count in pending.items()})
        name = st.text_input("Dataset name", key="data_items_name")
        cols = st.columns(2)
        if cols[0].button("Create dataset", disabled=not (pending and name), type="primary", key="data_items_go"):
            if _import(lambda progress: datasets.add_items(staged.items(), name, progress=progress)):
                staged.discard()
        if cols[1].button("Clear classes", disabled=not pending, key="data_items_clear"):
            staged.discard()
            st.rerun()
    else:
        roots = [r for r in os.environ.get("TL_IMPORT_ROOTS", "").split(os.pathsep) if r]
        if not roots:
            st.info(
                "Importing from server folders is off. An admin enables it by setting TL_IMPORT_ROOTS to the "
                "folders users may import from (separated by ':')."
            )
        else:
            st.caption("Allowed folders: " + ", ".join(f"`{r}`" for r in roots))
            folder = st.text_input("Folder on the server", key="data_server_path")
            name = st.text_input("Dataset name", value=Path(folder).name if folder else "", key="data_server_name")
            if st.button("Import folder", disabled=not (folder and name), type="primary", key="data_server_go"):
                _import(lambda progress: datasets.add_folder(folder, name, allowed_roots=roots, progress=progress))

with browse_tab:
    all_datasets = datasets.list_datasets()
    if not all_datasets:
        st.info("No datasets yet. Add one in the first tab: a zip or folder with one sub-folder per class.")
        st.stop()
    chosen = st.selectbox("Dataset", [d.name for d in all_datasets], key="data_browse_name")
    dataset = datasets.load_dataset(chosen)
    m = dataset.manifest
    cols = st.columns(4)
    cols[0].metric("Images", m["num_images"])
    cols[1].metric("Classes", len(m["classes"]))
    cols[2].metric("Splits", ", ".join(f"{k} {v}" for k, v in sorted(m["split_counts"].items())))
    cols[3].metric("Skipped files", len(m["skipped"]))
    st.plotly_chart(charts.class_counts(m), key="data_counts_chart")
    w, h = m["image_size"]["width"], m["image_size"]["height"]
    st.caption(
        f"Image sizes: width {w['min']}–{w['max']} (median {w['median']}), height {h['min']}–{h['max']} "
        f"(median {h['median']}). Source: {m['source']}. "
        + ("Split folders kept." if m["predefined_split"] else f"Stratified split, seed {m['split_rule']['seed']}.")
    )
    st.subheader("Samples")
    for class_name, paths in datasets.iter_class_examples(dataset, per_class=6):
        st.markdown(f"**{class_name}**")
        st.image([str(p) for p in paths], width=96)
    if m["skipped"]:
        st.subheader("Import report: skipped files")
        st.dataframe(pd.DataFrame(m["skipped"]), hide_index=True)
    with st.expander("Rename or delete"):
        new_name = st.text_input("New name", key="data_rename_to")
        if st.button("Rename", disabled=not new_name, key="data_rename_go"):
            try:
                datasets.rename_dataset(chosen, new_name)
                st.rerun()
            except TLError as exc:
                st.error(str(exc))
        confirm = st.checkbox(
            f"Yes, delete {chosen!r} and its images (runs trained on it are kept)", key="data_delete_confirm"
        )
        if st.button("Delete dataset", disabled=not confirm, type="secondary", key="data_delete_go"):
            datasets.delete_dataset(chosen, user=current_user())
            st.session_state.pop("data_browse_name", None)
            st.rerun()
