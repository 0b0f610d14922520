"""The Inspect page's sections: the dataset and base choice, suspects, the embedding map, versions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from tl_core.data import datasets, versions
from tl_core.inspection import tables
from tl_core.runs.store import Run

from . import charts, fixes

SUSPECT_KINDS = ["mislabelled", "duplicate", "outlier", "low-detail"]
INTRO = (
    "Suspects: images that are probably mislabelled, leaked across the split, outliers or blank. "
    "Embedding map: every image placed by what the base sees in it. Turn the switch on to compute them."
)


STAGES = {  # progress text per stage of the first computation, and the share of the bar it spans
    "features": ("Features: {done:,} / {total:,} images", 0.0, 0.85),
    "probe": ("Fitting the out-of-fold probe: {done} / {total} folds", 0.85, 0.97),
    "checks": ("Duplicates, outliers and the map", 0.97, 1.0),
}


def suspects_report(dataset: datasets.Dataset, base: str) -> dict:
    """The dataset version's suspects under ``base``: read from the workspace when any user computed them
    before, else computed here once with a progress bar that counts images and fits, and kept."""
    from tl_core.inspection import suspects

    report = suspects.cached_report(dataset, base)
    if report is not None:
        return report
    intro = f"Computing the suspects of {dataset.name!r} v{dataset.version} once (kept for every user)"
    bar = st.progress(0.0, text=f"{intro}: loading {base}…")

    def progress(stage: str, done: int, total: int) -> None:
        text, start, end = STAGES[stage]
        share = done / total if total else 1.0
        bar.progress(min(start + (end - start) * share, 1.0), text=f"{intro}. {text.format(done=done, total=total)}")

    report = suspects.suspects_report(dataset, base, progress=progress)
    bar.empty()
    return report


def trust_banner(trust: dict) -> None:
    """How far to trust the mislabelled list, from the probe's out-of-fold accuracy (``trust_summary``)."""
    show = st.success if trust["level"] == "high" else st.warning
    show(trust["message"])
    if trust["classes"]:
        with st.expander("Per class: out-of-fold accuracy and confident-learning threshold"):
            st.dataframe(pd.DataFrame(trust["classes"]), hide_index=True, key="inspect_trust_classes")


def _image_row(dataset: datasets.Dataset, item: dict, text: str, fix_key: str, suggested=None) -> None:
    """Thumbnail, a line of Markdown and the image's fix selector, side by side."""
    thumb, middle, action = st.columns([1, 3, 2], vertical_alignment="center")
    thumb.image(str(datasets.thumbnail(dataset, item)), width=96)
    middle.markdown(text)
    with action:
        fixes.fix_select(dataset.name, item["path"], item["class"], dataset.classes, key=fix_key, suggested=suggested)


def suspects(dataset: datasets.Dataset, report: dict) -> None:
    """The trust banner, then the suspects of the chosen kinds, most suspect first, each with its fix."""
    rows = report["rows"]
    trust_banner(report["trust"])
    kinds = st.multiselect("Kinds", SUSPECT_KINDS, default=SUSPECT_KINDS, key="inspect_kinds")
    shown = tables.shown_suspects(rows, kinds, st.slider("Show", 5, 100, 20, key="inspect_top"))
    counts = {kind: sum(row["kind"] == kind for row in rows) for kind in SUSPECT_KINDS}
    st.caption(
        f"{len(rows)} suspect(s), most suspect first: "
        + ", ".join(f"{count} {kind}" for kind, count in counts.items() if count)
        + "."
    )
    by_path = {item["path"]: item for item in dataset.items}
    for index, row in enumerate(shown):
        suggestion = f" → looks like **{row['suggested']}**" if row["suggested"] else ""
        text = (
            f"**{row['kind']}** ({row['score']:.2f}): `{row['file']}` labelled **{row['label']}**"
            f"{suggestion}  \n{row['detail']}"
        )
        _image_row(dataset, by_path[row["file"]], text, f"inspect_fix_{index}", suggested=row["suggested"])


def embedding_map(dataset: datasets.Dataset, report: dict, runs: list[Run]) -> None:
    """Every image placed by its features (coordinates kept with the report), images misclassified by a
    chosen run (of ``runs``) marked; images selected on the map are listed with their fixes."""
    from tl_core.inspection.embedding import METHODS
    from tl_core.inspection.suspects import map_coordinates

    method = st.radio("Projection", METHODS, horizontal=True, key="inspect_method")
    all_splits = sorted({item["split"] for item in dataset.items})
    splits = st.multiselect("Splits", all_splits, default=all_splits, key="inspect_splits")
    run_id = st.selectbox("Mark images misclassified in run", ["(none)"] + [r.id for r in runs], key="inspect_run")
    wrong = set()
    if run_id != "(none)":
        interp = next(r for r in runs if r.id == run_id).interpretation()
        wrong = {row["file"] for row in interp.misclassified()} if interp else set()
    with st.spinner(f"Computing the {method} map once (kept for every user)…"):
        coords = map_coordinates(dataset, report, method)
    points = pd.DataFrame(
        tables.map_points(dataset.items, coords, wrong, splits),
        columns=["x", "y", "class", "split", "file", "flag"],
    )
    event = st.plotly_chart(
        charts.embedding_map(points, dataset.classes),
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        key="inspect_map",
    )
    picked = [p["customdata"][0] for p in (event.selection.points if event and event.selection else [])][:12]
    if picked:
        st.caption("Selected images:")
    by_path = {item["path"]: item for item in dataset.items}
    for index, path in enumerate(picked):
        item = by_path[path]
        text = f"`{path}` labelled **{item['class']}** ({item['split']})"
        _image_row(dataset, item, text, f"inspect_map_fix_{index}")


def version_list(dataset: datasets.Dataset) -> None:
    st.dataframe(pd.DataFrame(versions.list_versions(dataset)), hide_index=True, key="inspect_versions")
    st.caption(
        "Every version stays: a run records the version it trained on; train on an older one by naming "
        "it as name@vN on the command line."
    )
