"""Home: what the studio does and the next step for this workspace."""

import streamlit as st

from tl_app import shell
from tl_core import audit
from tl_core.data import datasets
from tl_core.models import architectures
from tl_core.runs.store import list_runs

shell.guard()

st.title("Transfer Learning Studio")
st.write(
    "Turn a pretrained image model into your own classifier: add images per class, pick a base model, "
    "train, read the results, and try predictions — no code."
)

all_datasets, all_runs = datasets.list_datasets(), list_runs()
finished = [r for r in all_runs if r.listed_state == "finished"]
offline = [row["name"] for row in architectures.availability() if row["weights_offline"]]

cols = st.columns(3)
cols[0].metric("Datasets", len(all_datasets))
cols[1].metric("Training runs", len(all_runs))
cols[2].metric("Finished models", len(finished))

st.subheader("Next step")
if not all_datasets:
    st.info("Start by adding a dataset: a zip or folder with one sub-folder of images per class.")
    st.page_link("pages/data.py", label="Add a dataset")
elif not all_runs:
    st.info("You have data. Train a first model: the defaults (frozen base, new head) take seconds to minutes.")
    st.page_link("pages/train.py", label="Train a model")
else:
    st.info("Compare runs and inspect mistakes on Results, or try your model on new images.")
    st.page_link("pages/results.py", label="Results")
    st.page_link("pages/predict.py", label="Predict")

st.caption(
    "Base models with ImageNet weights on this server: "
    + (
        ", ".join(offline)
        if offline
        else "none yet — they download on first use, or copy them into $KERAS_HOME/models."
    )
)

with st.expander("Recent deletions and cancellations (audit log)"):
    entries = audit.recent(20)
    if entries:
        st.dataframe(
            entries,
            hide_index=True,
            key="home_audit",
            column_order=["time", "user", "action", "target", "owner", "images"],
        )
    else:
        st.caption("Nothing deleted or cancelled yet.")
