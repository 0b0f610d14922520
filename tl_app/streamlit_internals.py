"""Every use of Streamlit's private API, in one place. ``tests/test_streamlit_internals.py`` fails
loudly when an upgrade moves what these rely on."""

from __future__ import annotations

import sys
from collections.abc import Callable


def in_pages_folder_mode() -> bool:
    """True while this server still runs scripts in Streamlit's old pages-folder mode.

    Because our page scripts live in a folder named ``pages/``, a fresh server starts in that mode: the
    first request for a page URL runs that page's script directly, not the router. The first call to
    ``st.navigation`` anywhere on the server turns the mode off for good.
    """
    from streamlit.runtime.pages_manager import PagesManager

    return bool(PagesManager.uses_pages_directory)


def keep_tensorflow_warm_between_reruns() -> None:
    """Stop Streamlit from calling keras.backend.clear_session() after every script run.

    Streamlit does that (script_runner._clean_problem_modules) for apps that build Keras models in the
    page. Ours only load them, and clearing drops TensorFlow's kernel cache: the next prediction then
    costs many times more, for every user after every rerun (sidebar refreshes included; the figures from
    benchmarks/load_predict.py are in docs/performance.md). Pyplot figures are still closed.
    """
    from streamlit.runtime.scriptrunner import script_runner

    current = getattr(script_runner, "_clean_problem_modules", None)
    if current is None or getattr(current, "keeps_keras", False):
        return

    def clean_problem_modules_except_keras() -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close("all")

    clean_problem_modules_except_keras.keeps_keras = True
    script_runner._clean_problem_modules = clean_problem_modules_except_keras


def current_session_id() -> str | None:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx else None


def accept_uploads_only_from(allowed: Callable[[str], bool]) -> None:
    """Make the upload endpoint refuse (400, before reading the body) sessions that ``allowed`` rejects.

    Streamlit accepts a file upload from any live session that passes its XSRF check, including one still
    at our login page. ``Runtime.is_active_session`` is what its upload handler asks, and nothing else
    does, so that question gets our answer too. Idempotent; a no-op outside a running server (AppTest).
    """
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return
    runtime = Runtime.instance()
    current = runtime.is_active_session
    if getattr(current, "tl_gated", False):
        return

    def is_active_and_allowed(session_id: str) -> bool:
        return current(session_id) and allowed(session_id)

    is_active_and_allowed.tl_gated = True
    runtime.is_active_session = is_active_and_allowed


def redirect_browser(url: str) -> None:
    """Send this session's browser to ``url`` for a full page load, the message ``st.login`` sends (the
    frontend sets ``window.location.href``). A script run cannot set an HttpOnly cookie; an HTTP route
    the browser is sent to can. No-op outside a script run."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return
    message = ForwardMsg()
    message.auth_redirect.url = url
    ctx.enqueue(message)


def release_uploads(files) -> None:
    """Drop uploaded files from Streamlit's memory now that they are imported (it keeps them for the
    session's lifetime otherwise, even after the widget is gone)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or ctx.uploaded_file_mgr is None:
        return
    for file in files:
        ctx.uploaded_file_mgr.remove_file(ctx.session_id, file.file_id)


def run_app_tests_as_a_server_past_its_first_request() -> Callable[[], None]:
    """For tests and benchmarks that drive pages with AppTest; returns a function that undoes it.

    AppTest resets pages-folder mode before every run, as if each run were a fresh server's first request;
    a real server leaves that mode for good at its first ``st.navigation``, and the page guard then reruns
    once (which in AppTest would drop every button click). Fresh servers are tested in a real browser.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    return lambda: setattr(PagesManager, "__init__", original)
