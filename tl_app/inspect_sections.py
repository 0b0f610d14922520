"""The Inspect page's sections: the dataset and base choice, suspects, the embedding map, versions."""

from __future__ import annotations

import numpy as np
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


@st.cache_data(max_entries=8, show_spinner="Computing features with the frozen base (cached for next time)…")
def features(name: str, fingerprint: str, base: str) -> np.ndarray:
    """The dataset's pooled features under ``base``; ``fingerprint`` keys the cache to the dataset's content."""
    from tl_core.models.features import dataset_features

    return dataset_features(datasets.load_dataset(name), base)


def _image_row(dataset: datasets.Dataset, item: dict, text: str, fix_key: str, suggested=None) -> None:
    """Thumbnail, a line of Markdown and the image's fix selector, side by side."""
    thumb, middle, action = st.columns([1, 3, 2], vertical_alignment="center")
    thumb.image(str(datasets.thumbnail(dataset, item)), width=96)
    middle.markdown(text)
    with action:
        fixes.fix_select(dataset.name, item["path"], item["class"], dataset.classes, key=fix_key, suggested=suggested)


def suspects(dataset: datasets.Dataset, features: np.ndarray) -> None:
    """The suspects of the chosen kinds, most suspect first, each with its fix."""
    from tl_core.inspection.suspects import find_suspects

    rows = find_suspects(dataset, features)
    kinds = st.multiselect("Kinds", SUSPECT_KINDS, default=SUSPECT_KINDS, key="inspect_kinds")
    shown = tables.shown_suspects(rows, kinds, st.slider("Show", 5, 100, 20, key="inspect_top"))
    st.caption(f"{len(rows)} suspect(s), most suspect first.")
    by_path = {item["path"]: item for item in dataset.items}
    for index, row in enumerate(shown):
        suggestion = f" → looks like **{row['suggested']}**" if row["suggested"] else ""
        text = (
            f"**{row['kind']}** ({row['score']:.2f}): `{row['file']}` labelled **{row['label']}**"
            f"{suggestion}  \n{row['detail']}"
        )
        _image_row(dataset, by_path[row["file"]], text, f"inspect_fix_{index}", suggested=row["suggested"])


def embedding_map(dataset: datasets.Dataset, features: np.ndarray, runs: list[Run]) -> None:
    """Every image placed by its features, images misclassified by a chosen run (of ``runs``) marked;
    images selected on the map are listed with their fixes."""
    from tl_core.inspection.embedding import METHODS, project

    method = st.radio("Projection", METHODS, horizontal=True, key="inspect_method")
    all_splits = sorted({item["split"] for item in dataset.items})
    splits = st.multiselect("Splits", all_splits, default=all_splits, key="inspect_splits")
    run_id = st.selectbox("Mark images misclassified in run", ["(none)"] + [r.id for r in runs], key="inspect_run")
    wrong = set()
    if run_id != "(none)":
        interp = next(r for r in runs if r.id == run_id).interpretation()
        wrong = {row["file"] for row in interp.misclassified()} if interp else set()
    points = pd.DataFrame(
        tables.map_points(dataset.items, project(features, method), wrong, splits),
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
