"""Train: choose data, base model, freeze depth and settings; start a background job and watch it."""

import streamlit as st

from tl_app import shell, train_form, widgets
from tl_app.compare_ui import compare_panel
from tl_app.lr_finder import lr_finder_panel
from tl_core.data import datasets
from tl_core.models import architectures
from tl_core.models.config import TrainConfig

shell.guard()

st.title("Train")
jobs = widgets.backend()
all_datasets = datasets.list_datasets()
if not all_datasets:
    widgets.stop_with(
        "Add a dataset on the Data page first: one folder of images per class.", "pages/data.py", "Go to Data"
    )

train_form.prefill_from_run([d.name for d in all_datasets])
left, right = st.columns(2)
with left:
    data = train_form.dataset_choice([d.name for d in all_datasets])
    model = train_form.base_choice({row["name"]: row for row in architectures.availability()})
    head = train_form.head_choice()
with right:
    description, depth = train_form.freeze_choice(model["base"], model["alpha"], model["size"], head)
with st.expander("Optimisation", expanded=True):
    optimisation = train_form.optimisation_settings()
with st.expander("Augmentation"):
    augmentation = train_form.augmentation_settings()
with st.expander("Fine-tune phase (after the head is trained)"):
    fine_tune, fine_tuning = train_form.fine_tune_settings(description, model["base"], head)

values = {"data": data, **model, "head": head, "freeze_depth": depth, **optimisation, **augmentation, **fine_tuning}
config = TrainConfig.from_form(train_form.carry_over(values, description["num_layers"]), fine_tune=fine_tune)
with st.expander("Learning-rate finder"):
    lr_finder_panel(config)
with st.expander("Compare bases"):
    compare_panel(config, jobs, description["num_layers"])
train_form.start_button(config, jobs)

st.subheader("Jobs")
train_form.live_jobs(jobs)
