"""Home: what the studio does and the next step for this workspace."""

import streamlit as st

from tl_app import home_sections, shell
from tl_core import audit
from tl_core.data import datasets
from tl_core.runs.store import list_runs
from tl_core.runs.table import finished_ids
from tl_core.training.compare import offline_bases

shell.guard()

st.title("Transfer Learning Studio")
st.write(
    "Turn a pretrained image model into your own classifier: add images per class, pick a base model, "
    "train, read the results, and try predictions — no code."
)
all_datasets, all_runs = datasets.list_datasets(), list_runs()
home_sections.counts(len(all_datasets), len(all_runs), len(finished_ids(all_runs)))
home_sections.next_step(bool(all_datasets), bool(all_runs))
home_sections.offline_bases([name for name, _ in offline_bases()])
home_sections.audit_log(audit.recent(20))
