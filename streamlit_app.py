"""Transfer Learning Studio: the entry point routes to the pages; logic lives in tl_core and pages/."""
import streamlit as st

from pages import ui

st.set_page_config(page_title="Transfer Learning Studio", page_icon="🏋️", layout="wide")
ui.password_gate()

with st.sidebar:
    ui.sidebar_status()
navigation = st.navigation([
    st.Page("pages/home.py", title="Home", default=True),
    st.Page("pages/data.py", title="Data"),
    st.Page("pages/train.py", title="Train"),
    st.Page("pages/results.py", title="Results"),
    st.Page("pages/predict.py", title="Predict"),
])
ui.ensure_worker_if_queued()
navigation.run()
