"""Transfer Learning Studio: the router. Pages live in pages/, shared UI code in tl_app/, logic in tl_core/."""

import streamlit as st

from tl_app import auth, shell, widgets

st.set_page_config(page_title="Transfer Learning Studio", page_icon="🏋️", layout="wide")

if not auth.gate_passed():
    # Logged out, the login page is the only page there is: no page list, no sidebar, no upload.
    st.navigation(shell.login_pages(), position="hidden").run()
    st.stop()

navigation = st.navigation(shell.app_pages(), position="top")
with st.sidebar:
    widgets.sidebar_status()
widgets.backend().ensure_running()
navigation.run()
