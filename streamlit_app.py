"""Transfer Learning Studio: the entry point routes to the pages; logic lives in tl_core and pages/."""
import streamlit as st

from pages import ui

st.set_page_config(page_title="Transfer Learning Studio", page_icon="🏋️", layout="wide")
st.session_state[ui.ROUTER_RAN] = True
ui.password_gate()

with st.sidebar:
    ui.sidebar_status()
navigation = st.navigation(ui.app_pages())
ui.ensure_worker_if_queued()
navigation.run()
