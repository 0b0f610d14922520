"""Transfer Learning Studio: the router. Pages live in pages/, shared UI code in tl_app/, logic in tl_core/.

One file, two roles. ``streamlit run streamlit_app.py`` imports it as a module to find ``app`` (Streamlit's
``st.App``): the server, with the login routes that set the session cookie, which first refuses to serve
an ungated app beyond this machine. Then Streamlit runs it as ``__main__`` for every page view: the router.
"""

import streamlit as st

if __name__ == "__main__":
    from tl_app import auth, shell, widgets

    st.set_page_config(page_title="Transfer Learning Studio", page_icon="🏋️", layout="wide")

    if not auth.gate_passed():
        # Logged out, the login page is the only page there is: no page list, no sidebar, no upload.
        st.navigation(shell.login_pages(), position="hidden").run()
        st.stop()

    navigation = st.navigation(shell.app_pages(), position="top")
    with st.sidebar:
        widgets.sidebar_status()
        auth.logout_button()
    widgets.backend().ensure_running()
    navigation.run()
else:
    from tl_app import auth

    auth.refuse_unsafe_network()
    app = st.App(__file__, routes=auth.routes())
