"""The app's shell: which pages exist for whom, and the guard every page script starts with.

Logged out, the only page that exists is the login page: the router hands ``st.navigation`` that page
alone until the gate passes (Streamlit's pattern for gated apps), then the full list. The login page
answers at the app pages' URLs too, so a reload or a shared link shows it (not "Page not found") and
opens the page asked for, with its query, once the password is right. A page script
can still be run directly, by Streamlit's pages-folder mode on a fresh server (our page scripts live
in ``pages/``); ``guard()``, each page's first statement, checks the gate itself and sends such a run
back through the router before anything of the page exists.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from . import auth, streamlit_internals

PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/data.py", "Data", ":material/photo_library:"),
    ("pages/inspect.py", "Inspect", ":material/troubleshoot:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/results.py", "Results", ":material/insights:"),
    ("pages/predict.py", "Predict", ":material/label:"),
    ("pages/inbox.py", "Inbox", ":material/inbox:"),
    ("pages/monitor.py", "Monitoring", ":material/monitor_heart:"),
]


def app_pages() -> list:
    """The app's pages, in navigation order (for a visitor who passed the gate)."""
    return [
        st.Page(path, title=title, icon=icon, default=index == 0) for index, (path, title, icon) in enumerate(PAGES)
    ]


def _login_leading_to(page: str):
    def login() -> None:
        auth.login_page(page)

    return login


def login_pages() -> list:
    """All that exists before the gate passes: the login page, at its own URL and at each app page's."""
    pages = [st.Page(_login_leading_to(""), title="Log in", url_path="login", default=True)]
    for index, (path, _, _) in enumerate(PAGES):
        url_path = Path(path).stem
        pages.append(st.Page(_login_leading_to("" if index == 0 else url_path), title="Log in", url_path=url_path))
    return pages


def guard() -> None:
    """Stop a page script before anything of it exists unless it runs through the router past the gate.

    Before the gate, only the login page is registered and the rerun goes through the router, which
    shows it. A page script run directly by Streamlit's pages-folder mode (a fresh server's first
    request for a page URL) registers the pages, which ends that mode for the whole server, and reruns:
    the rerun goes through the router to this page. (Drawn in that first run instead, the page lost
    its widgets' state on the next rerun: uploads vanished.)
    """
    if not auth.gate_passed():
        st.navigation(login_pages(), position="hidden")
        st.rerun()
    if streamlit_internals.in_pages_folder_mode():
        st.navigation(app_pages(), position="hidden")
        st.rerun()
