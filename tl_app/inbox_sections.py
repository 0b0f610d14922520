"""The Inbox page's sections: a dataset's unlabelled images (``tl_core.data.inbox``) with a run's suggestions
(``tl_core.inference.suggest``), most uncertain first; accept in bulk above a probability, correct one, discard
or restore; accepted images join the dataset as its next version, and the run can train again on it."""

from __future__ import annotations

from typing import Optional

import streamlit as st

from tl_core.data import inbox, uploads
from tl_core.data.datasets import load_dataset
from tl_core.errors import TLError
from tl_core.inference.suggest import Listing, accept_confident, confident, suggest
from tl_core.runs import table
from tl_core.runs.store import Run

from . import widgets
from .auth import current_user
from .models import predictor_for
from .retrain import train_again_panel

GRID = 24  # images drawn at once, most uncertain first
COLUMNS = 4
IMAGE_TYPES = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff", "zip"]
SAVED = "inbox_saved"  # the last accept's message, shown after the rerun it causes


def pick_run(dataset: str) -> Optional[Run]:
    """The run whose suggestions are shown: the dataset's finished runs, its best first; None without any."""
    runs = [r for r in table.finished_on_dataset(widgets.backend().refresh(), dataset) if r.artifacts.has_model()]
    if not runs:
        st.info("No finished run on this dataset yet: images can be labelled by hand, or train a run for suggestions.")
        return None
    by_id = {r.id: r for r in runs}
    best = table.best_run_id(runs, dataset) or runs[0].id
    run_id = st.selectbox(
        "Suggestions from run",
        list(by_id),
        index=list(by_id).index(best),
        key=f"inbox_run_{dataset}",
        format_func=lambda rid: table.run_label(by_id[rid]),
    )
    return by_id[run_id]


def add_images(dataset: str) -> None:
    """Upload images or zips into the inbox (checked as an import checks them; each image kept once)."""
    with st.expander("Add unlabelled images (files or a zip)"):
        files = st.file_uploader(
            "Images or zips", accept_multiple_files=True, type=IMAGE_TYPES, key=f"inbox_upload_{dataset}"
        )
        if st.button("Add to the inbox", key="inbox_add", disabled=not files):
            staging = uploads.Staging()
            try:
                zips = {
                    str(staging.save(f.name, f, number)): f.name
                    for number, f in enumerate(files)
                    if f.name.lower().endswith(".zip")
                }
                loose = [(f.name, f.getvalue()) for f in files if not f.name.lower().endswith(".zip")]
                report = inbox.add_paths(dataset, list(zips), shown=zips) if zips else inbox.Added()
                if loose:
                    more = inbox.add_bytes(dataset, loose, source="upload")
                    report.added += more.added
                    report.skipped += more.skipped
            except TLError as exc:
                st.error(widgets.md_escape(str(exc)))
                return
            finally:
                staging.discard()
            st.success(f"Added {len(report.added)} image(s) to the inbox.")
            for row in report.skipped[:20]:
                st.caption(widgets.md_escape(f"skipped {row['file']}: {row['reason']}"))


def listing(dataset: str, run: Optional[Run]) -> Listing:
    """The pending images with ``run``'s suggestions: answers kept per run and image, so only new images are
    run through the model."""
    bar = st.empty()

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Suggesting classes: {done}/{total} new images")

    result = suggest(dataset, run, load=predictor_for, progress=progress)
    bar.empty()
    return result


def _accepted(dataset: str, saved, run: Optional[Run]) -> None:
    st.session_state[SAVED] = {
        "dataset": dataset,
        "run": run.id if run else None,
        "message": f"Saved {dataset!r} version {saved.version} ({saved.manifest['num_images']} images).",
    }
    st.rerun()


def saved_banner(dataset: str, run: Optional[Run]) -> None:
    """After an accept, what was saved; whenever the dataset is newer than the version ``run`` learnt from,
    "train again on the new version with the same settings"."""
    saved = st.session_state.pop(SAVED, None)  # once, right after the accept
    if saved and saved["dataset"] == dataset:
        st.success(widgets.md_escape(saved["message"]))
    if run is None:
        return
    trained = run.artifacts.metrics().get("dataset_version")
    latest = load_dataset(dataset).version
    if trained is not None and trained < latest:
        st.caption(f"This run learnt from version {trained}; the dataset is at version {latest}.")
        train_again_panel(run, dataset, key="inbox")


def bulk_accept(dataset: str, result: Listing) -> None:
    """Accept every suggestion at or above a probability (images flagged "unknown" are left for a person)."""
    if result.run is None or not result.rows:
        return
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    threshold = left.slider("Accept suggestions at or above this probability", 0.0, 1.0, 0.9, 0.01, key="inbox_min_p")
    count = len(confident(result, threshold, load_dataset(dataset).classes))
    if right.button(f"Accept {count} suggestion(s)", key="inbox_accept_bulk", disabled=not count, type="primary"):
        try:
            saved = accept_confident(dataset, threshold, result.run, load=predictor_for, user=current_user())
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))
            return
        _accepted(dataset, saved, result.run)


def _caption(row: dict) -> str:
    if row["suggested"] is None:
        return widgets.md_escape(row["file"]) + ("  \n" + widgets.md_escape(row["error"]) if row["error"] else "")
    flag = " · **unknown**" if row["unknown"] else ""
    return (
        f"**{widgets.md_escape(row['suggested'])}** {row['probability']:.1%}{flag}  \n{widgets.md_escape(row['file'])}"
    )


def grid(dataset: str, result: Listing) -> None:
    """The most uncertain pending images: each with its suggestion, a class to accept it as, or discard."""
    rows = result.rows[:GRID]
    classes = load_dataset(dataset).classes
    order = "most uncertain first" if result.run else "in the order they came in (no run suggests classes yet)"
    st.caption(
        f"{len(result.rows)} pending image(s), {order}"
        + (f" (showing {GRID})" if len(result.rows) > GRID else "")
        + "."
    )
    columns = st.columns(COLUMNS)
    for index, row in enumerate(rows):
        with columns[index % COLUMNS]:
            st.image(str(inbox.thumbnail(dataset, row)))
            st.markdown(_caption(row))
            options = sorted(classes, key=lambda c: c != row["suggested"])
            label = st.selectbox(
                "Class",
                options,
                # no suggestion: no class chosen for the person, or Accept would file it under the first class
                index=0 if row["suggested"] in classes else None,
                placeholder="Choose a class",
                key=f"inbox_label_{row['id']}",
                label_visibility="collapsed",
            )
            left, right = st.columns(2)
            if left.button("Accept", key=f"inbox_accept_{row['id']}", disabled=label is None):
                try:
                    saved = inbox.accept(dataset, {row["id"]: label}, user=current_user())
                except TLError as exc:
                    st.error(widgets.md_escape(str(exc)))
                    return
                _accepted(dataset, saved, result.run)
            if right.button("Discard", key=f"inbox_discard_{row['id']}"):
                inbox.discard(dataset, [row["id"]], user=current_user())
                st.rerun()


def discarded(dataset: str) -> None:
    """The images set aside, to bring back: nothing in the inbox is ever deleted."""
    rows = inbox.entries(dataset, "discarded")
    if not rows:
        return
    with st.expander(f"Discarded ({len(rows)}): restorable"):
        by_id = {row["id"]: row for row in rows}
        chosen = st.multiselect(
            "Images to restore",
            list(by_id),
            format_func=lambda i: f"{by_id[i]['file']} ({i})",
            key="inbox_restore_pick",
        )
        if st.button("Restore", key="inbox_restore", disabled=not chosen):
            inbox.restore(dataset, chosen, user=current_user())
            st.rerun()
