"""Transfer Learning Studio: the entry point routes to the pages; logic lives in tl_core and pages/."""
import streamlit as st

from pages import ui

st.set_page_config(page_title="Transfer Learning Studio", page_icon=":material/model_training:", layout="wide")
ui.password_gate()

with st.sidebar:
    ui.sidebar_status()
navigation = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/folder_open:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/results.py", title="Results", icon=":material/monitoring:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
])
ui.ensure_worker_if_queued()
navigation.run()
