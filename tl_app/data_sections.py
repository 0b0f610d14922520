"""The Data page's sections: the four ways to add a dataset, and browsing, renaming or deleting one.

Upload widgets are keyed by an upload round (``data_upload_round`` in the session): a finished import
starts the next round, so the next run shows fresh, empty upload widgets.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import pandas as pd
import streamlit as st

from tl_core.data import datasets, summary, uploads
from tl_core.errors import TLError

from . import charts, streamlit_internals, widgets
from .auth import current_user, may_change_dataset

SOURCES = ["Zip of class folders", "Folder upload", "Class by class", "Folder on the server"]
IMAGE_TYPES = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"]
Make = Callable[[Callable[[int, int], None]], datasets.Dataset]


def upload_round() -> int:
    return st.session_state.get("data_upload_round", 0)


def import_roots() -> list[str]:
    """The server folders users may import from (``TL_IMPORT_ROOTS``, separated like PATH); empty: none."""
    return [root for root in os.environ.get("TL_IMPORT_ROOTS", "").split(os.pathsep) if root]


def why_disabled(needs: dict[str, object]) -> Optional[str]:
    """The first missing input's sentence (``needs``: sentence -> value that must be truthy), or None when
    nothing is missing: a greyed-out button always says why, as a caption under it."""
    return next((sentence for sentence, value in needs.items() if not value), None)


def _action(label: str, key: str, needs: dict[str, object], **kwargs) -> bool:
    missing = why_disabled(needs)
    clicked = st.button(label, disabled=missing is not None, key=key, **kwargs)
    if missing:
        st.caption(missing)
    return clicked


def _name_from_upload(uploader_key: str, name_key: str) -> None:
    """A newly chosen zip names the dataset after its file (the name stays editable)."""
    upload = st.session_state.get(uploader_key)
    name = getattr(upload, "name", None)  # a zip the import already let go of is a DeletedFile: no name
    if name:
        st.session_state[name_key] = Path(name).stem


def run_import(make: Make, released: Sequence = ()) -> Optional[datasets.Dataset]:
    """Run an import and show its report (errors readable); once imported, let go of the uploaded files
    ``released`` and start the next upload round. On a ``TLError`` the uploads stay, so the user can fix
    the name and try again."""
    bar = st.progress(0.0, text="Checking images…")
    try:
        dataset = make(lambda done, total: bar.progress(done / max(total, 1), text=f"Checked {done}/{total} files"))
    except TLError as exc:
        bar.empty()
        st.error(widgets.md_escape(str(exc)))
        if getattr(exc, "skipped", None):
            st.dataframe(pd.DataFrame(exc.skipped), hide_index=True, key="data_import_skipped")
        return None
    bar.empty()
    streamlit_internals.release_uploads(released)
    st.session_state["data_upload_round"] = upload_round() + 1
    st.session_state["data_browse_name"] = dataset.name  # Browse datasets opens on it (its conflicts are there)
    m = dataset.manifest
    st.success(widgets.md_escape(summary.import_summary(dataset.name, m)))
    if m["skipped"]:
        st.dataframe(pd.DataFrame(m["skipped"]), hide_index=True)
    label_conflicts(m, "data_import_conflicts")
    imbalance = datasets.imbalance_warning(dataset)
    if imbalance:
        st.warning(imbalance)
    if m.get("low_detail"):
        st.warning(
            f"{len(m['low_detail'])} image(s) have very few colours (blank, placeholder, sketch or icon). "
            "They were kept and are flagged under Suspects: exclude them there if they are not real examples."
        )
    return dataset


def label_conflicts(manifest: dict, key: str) -> None:
    """Images the import found under two or more classes: each with its files, its classes and why it is out."""
    rows = manifest.get("label_conflicts") or []
    if rows:
        st.warning(
            f"Label conflicts: {len(rows)} image(s) are in more than one class folder, so the import could not "
            "tell which label is right and kept them out of every class. Choose each one's class (or leave it "
            "out) under 'Settle label conflicts' on the Browse datasets tab."
        )
        table = [
            {"files": " = ".join(r["files"]), "classes": ", ".join(r["classes"]), "reason": r["reason"]} for r in rows
        ]
        st.dataframe(pd.DataFrame(table), hide_index=True, key=key)


def zip_import(round_: int) -> None:
    upload = st.file_uploader(
        "Zip with one folder per class (optionally train/ and val/ folders)",
        type=["zip"],
        key=f"data_zip_{round_}",
        on_change=_name_from_upload,
        args=(f"data_zip_{round_}", "data_zip_name"),
    )
    name = st.text_input("Dataset name", key="data_zip_name")
    needs = {"Choose a zip file first.": upload, "Give the dataset a name.": name.strip()}
    if _action("Import zip", "data_zip_go", needs, type="primary"):
        staged = uploads.Staging()
        try:  # on disk in chunks: no second copy of the zip in memory
            path = staged.save(upload.name, upload)
            run_import(
                lambda progress: datasets.add_zip(
                    path, name, upload_name=upload.name, progress=progress, user=current_user()
                ),
                [upload],
            )
        finally:
            staged.discard()


def folder_import(round_: int) -> None:
    files = st.file_uploader(
        "A folder with one sub-folder per class", accept_multiple_files="directory", key=f"data_folder_{round_}"
    )
    name = st.text_input("Dataset name", key="data_folder_name")
    needs = {"Choose a folder first.": files, "Give the dataset a name.": name.strip()}
    if _action("Import folder", "data_folder_go", needs, type="primary"):
        run_import(
            lambda progress: datasets.add_uploaded_folder(  # each file read when its turn comes
                [(f.name, f.getvalue) for f in files], name, progress=progress, user=current_user()
            ),
            files,
        )


def class_by_class() -> None:
    """Classes added one at a time, waiting on disk (not in this session's memory) until the dataset is made."""
    staged = uploads.Staging(st.session_state.setdefault("data_pending_key", uuid.uuid4().hex))
    with st.form("data_class_form", clear_on_submit=True):
        class_name = st.text_input("Class name", key="data_class_name")
        images = st.file_uploader(
            "Images of this class", accept_multiple_files=True, type=IMAGE_TYPES, key="data_class_images"
        )
        if st.form_submit_button("Add class") and class_name and images:
            staged.add_to_class(class_name, [(image.name, image) for image in images])
            streamlit_internals.release_uploads(images)
    pending = staged.class_counts()
    _pending_classes(staged, pending)
    name = st.text_input("Dataset name", key="data_items_name")
    cols = st.columns(2)
    with cols[0]:
        needs = {"Add at least one class first.": pending, "Give the dataset a name.": name.strip()}
        create = _action("Create dataset", "data_items_go", needs, type="primary")
    if create:
        if run_import(
            lambda progress: datasets.add_items(staged.items(), name, progress=progress, user=current_user())
        ):
            staged.discard()
    if cols[1].button("Clear classes", disabled=not pending, key="data_items_clear"):
        staged.discard()
        st.rerun()


def _pending_classes(staged: uploads.Staging, pending: dict[str, int]) -> None:
    """Each class waiting to become a dataset: a few thumbnails, its count, and a button that removes it."""
    samples = staged.class_samples()
    for index, (class_name, count) in enumerate(pending.items()):
        thumbs, about, remove = st.columns([4, 2, 1], vertical_alignment="center")
        shown = []
        for path in samples.get(class_name, []):
            try:
                shown.append(widgets.thumbnail(path.read_bytes()))
            except (OSError, ValueError):  # an unreadable file is reported by the import, not here
                continue
        if shown:
            thumbs.image(shown, width=64)
        about.markdown(f"**{widgets.md_escape(class_name)}**: {count} image(s)")
        if remove.button("Remove", key=f"data_items_remove_{index}"):
            staged.remove_class(class_name)
            st.rerun()


def server_folder(roots: list[str]) -> None:
    if not roots:
        st.info(
            "Importing from server folders is off. An admin enables it by setting TL_IMPORT_ROOTS to the "
            "folders users may import from (separated by ':')."
        )
        return
    st.caption("Allowed folders: " + ", ".join(f"`{r}`" for r in roots))
    folder = st.text_input("Folder on the server", key="data_server_path")
    name = st.text_input("Dataset name", value=Path(folder).name if folder else "", key="data_server_name")
    needs = {"Type a folder on the server first.": folder.strip(), "Give the dataset a name.": name.strip()}
    if _action("Import folder", "data_server_go", needs, type="primary"):
        run_import(
            lambda progress: datasets.add_folder(
                folder, name, allowed_roots=roots, progress=progress, user=current_user()
            )
        )


def overview(dataset: datasets.Dataset) -> None:
    """Headline counts, the class-count chart and how the dataset was made."""
    m = dataset.manifest
    numbers = summary.overview(m)
    cols = st.columns(4)
    cols[0].metric("Images", numbers["images"])
    cols[1].metric("Classes", numbers["classes"])
    cols[2].metric(f"Images per split ({numbers['split_names']})", numbers["splits"])
    cols[3].metric("Skipped files", numbers["skipped"])
    st.plotly_chart(charts.class_counts(m), key="data_counts_chart")
    st.caption(widgets.md_escape(summary.describe(m)))


def samples(dataset: datasets.Dataset) -> None:
    st.subheader("Samples")
    for class_name, paths in datasets.iter_class_examples(dataset, per_class=6):
        st.markdown(f"**{widgets.md_escape(class_name)}**")
        st.image([str(p) for p in paths], width=96)
    if dataset.manifest["skipped"]:
        st.subheader("Import report: skipped files")
        st.dataframe(pd.DataFrame(dataset.manifest["skipped"]), hide_index=True)
    label_conflicts(dataset.manifest, "data_browse_conflicts")


UNDECIDED, LEAVE_OUT = "not decided yet", "leave it out"


def settle_conflicts(dataset: datasets.Dataset) -> None:
    """Each label conflict with its image and a choice: one of its classes (or any class of the dataset), or
    leave it out; the decided ones are saved together as the dataset's next version (``versions``)."""
    from tl_core.data import versions

    saved = st.session_state.pop("data_conflicts_saved", None)
    if saved:
        st.success(saved)
    rows = [row for row in dataset.manifest.get("label_conflicts") or [] if row.get("path")]
    if not rows:
        return
    st.subheader("Settle label conflicts")
    st.caption(
        "The same photo was in two class folders. Choose the class it belongs to (it joins that class), or "
        "leave it out; saving makes a new version of the dataset (earlier versions and their runs stay as they are)."
    )
    decided = {}
    for row in rows:
        picture, choice = st.columns([1, 4], vertical_alignment="center")
        try:
            picture.image(widgets.thumbnail((dataset.root / row["path"]).read_bytes()), width=96)
        except (OSError, ValueError):
            picture.caption("(image unreadable)")
        others = [c for c in dataset.classes if c not in row["classes"]]
        options = [UNDECIDED, *(f"class {c}" for c in row["classes"] + others), LEAVE_OUT]
        picked = choice.selectbox(
            f"{' = '.join(row['files'])} (in {', '.join(row['classes'])})",
            options,
            key=f"data_conflict_{dataset.name}_{row['sha256'][:16]}",
        )
        if picked != UNDECIDED:
            decided[row["sha256"]] = None if picked == LEAVE_OUT else picked.removeprefix("class ")
    needs = {"Choose a class (or 'leave it out') for at least one image first.": decided}
    if _action("Save as a new version", "data_conflicts_go", needs, type="primary"):
        try:
            new = versions.save_version(dataset.name, conflicts=decided, user=current_user())
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))
            return
        st.session_state["data_conflicts_saved"] = widgets.md_escape(
            f"Saved {dataset.name!r} version {new.version} ({new.manifest['num_images']} images); "
            f"{len(decided)} conflict(s) settled."
        )
        st.rerun()


def rename_or_delete(name: str) -> None:
    """Rename or delete, offered to whoever may (``auth.may_change_dataset``: with OpenID Connect its
    importer or an admin); both audited."""
    owner = datasets.load_dataset(name).manifest.get("user")
    with st.expander("Rename or delete"):
        if not may_change_dataset(owner):
            who = f"{owner} or an admin" if owner else "an admin"
            st.caption(f"Only {who} can rename or delete this dataset.")
            return
        new_name = st.text_input("New name", key="data_rename_to")
        if st.button("Rename", disabled=not new_name, key="data_rename_go"):
            try:
                datasets.rename_dataset(name, new_name, user=current_user())
                st.rerun()
            except TLError as exc:
                st.error(widgets.md_escape(str(exc)))
        confirm = st.checkbox(
            f"Yes, delete {name!r} and its images (runs trained on it are kept)", key="data_delete_confirm"
        )
        if st.button("Delete dataset", disabled=not confirm, type="secondary", key="data_delete_go"):
            from tl_core.runs.store import runs_using

            try:
                busy = [run.id for run in runs_using(name, widgets.backend().refresh())]
                datasets.delete_dataset(name, user=current_user(), active_runs=busy)
            except TLError as exc:  # still used by a queued or running run
                st.error(str(exc))
            else:
                st.session_state.pop("data_browse_name", None)
                st.rerun()
