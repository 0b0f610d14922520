"""Inspect: a dataset's suspects, its embedding map and its versions; fixes saved as a new version."""

import pandas as pd
import streamlit as st

from tl_app import charts, fixes, shell, widgets
from tl_core.data import datasets, versions
from tl_core.data.refs import parse_ref
from tl_core.models import architectures

shell.guard()

st.title("Inspect data")
all_datasets = datasets.list_datasets()
if not all_datasets:
    widgets.stop_with("Add a dataset on the Data page first.", "pages/data.py", "Go to Data")


@st.cache_data(max_entries=8, show_spinner="Computing features with the frozen base (cached for next time)…")
def _features(name: str, fingerprint: str, base: str):
    from tl_core.models.features import dataset_features

    return dataset_features(datasets.load_dataset(name), base)


left, right = st.columns(2)
name = left.selectbox("Dataset", [d.name for d in all_datasets], key="inspect_data")
offline = [row["name"] for row in architectures.availability() if row["weights_offline"]] or ["MobileNetV2"]
base = right.selectbox("Base for features", offline, key="inspect_base")
dataset = datasets.load_dataset(name)
items, classes = dataset.items, dataset.classes
st.caption(f"Version {dataset.version}: {len(items)} images, {len(classes)} classes.")
if not st.toggle("Look at this dataset (computes its features once)", key="inspect_on"):
    st.info(
        "Suspects: images that are probably mislabelled, leaked across the split, outliers or blank. "
        "Embedding map: every image placed by what the base sees in it. Turn the switch on to compute them."
    )
    fixes.save_bar(name, key="inspect_fixes")
    st.stop()

features = _features(name, dataset.fingerprint, base)
by_path = {it["path"]: it for it in items}
suspects_tab, map_tab, versions_tab = st.tabs(["Suspects", "Embedding map", "Versions"])
with suspects_tab:
    from tl_core.inspection.suspects import find_suspects

    rows = find_suspects(dataset, features)
    kinds = st.multiselect(
        "Kinds",
        ["mislabelled", "duplicate", "outlier", "low-detail"],
        default=["mislabelled", "duplicate", "outlier", "low-detail"],
        key="inspect_kinds",
    )
    shown = [r for r in rows if r["kind"] in kinds][: st.slider("Show", 5, 100, 20, key="inspect_top")]
    st.caption(f"{len(rows)} suspect(s), most suspect first.")
    for index, row in enumerate(shown):
        thumb, text, action = st.columns([1, 3, 2], vertical_alignment="center")
        thumb.image(str(datasets.thumbnail(dataset, by_path[row["file"]])), width=96)
        suggestion = f" → looks like **{row['suggested']}**" if row["suggested"] else ""
        text.markdown(
            f"**{row['kind']}** ({row['score']:.2f}): `{row['file']}` labelled **{row['label']}**"
            f"{suggestion}  \n{row['detail']}"
        )
        with action:
            fixes.fix_select(
                name, row["file"], row["label"], classes, key=f"inspect_fix_{index}", suggested=row["suggested"]
            )
with map_tab:
    from tl_core.inspection.embedding import METHODS, project

    method = st.radio("Projection", METHODS, horizontal=True, key="inspect_method")
    splits = st.multiselect(
        "Splits",
        sorted({it["split"] for it in items}),
        default=sorted({it["split"] for it in items}),
        key="inspect_splits",
    )
    runs = [
        r for r in widgets.backend().refresh() if r.listed_state == "finished" and parse_ref(r.config.data).name == name
    ]
    run_id = st.selectbox("Mark images misclassified in run", ["(none)"] + [r.id for r in runs], key="inspect_run")
    wrong = set()
    if run_id != "(none)":
        interp = next(r for r in runs if r.id == run_id).interpretation()
        wrong = {row["file"] for row in interp.misclassified()} if interp else set()
    coords = project(features, method)
    points = pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "class": [it["class"] for it in items],
            "split": [it["split"] for it in items],
            "file": [it["path"] for it in items],
            "flag": ["misclassified" if it["path"] in wrong else "" for it in items],
        }
    )
    points = points[points["split"].isin(splits)]
    event = st.plotly_chart(
        charts.embedding_map(points), on_select="rerun", selection_mode=("points", "box", "lasso"), key="inspect_map"
    )
    picked = [p["customdata"][0] for p in (event.selection.points if event and event.selection else [])][:12]
    if picked:
        st.caption("Selected images:")
    for index, path in enumerate(picked):
        thumb, text, action = st.columns([1, 3, 2], vertical_alignment="center")
        thumb.image(str(datasets.thumbnail(dataset, by_path[path])), width=96)
        text.markdown(f"`{path}` labelled **{by_path[path]['class']}** ({by_path[path]['split']})")
        with action:
            fixes.fix_select(name, path, by_path[path]["class"], classes, key=f"inspect_map_fix_{index}")
with versions_tab:
    st.dataframe(pd.DataFrame(versions.list_versions(dataset)), hide_index=True, key="inspect_versions")
    st.caption(
        "Every version stays: a run records the version it trained on; train on an older one by naming "
        "it as name@vN on the command line."
    )
fixes.save_bar(name, key="inspect_fixes")
