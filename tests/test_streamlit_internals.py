"""Streamlit's private API, touched only in tl_app/streamlit_internals.py: fails loudly when an upgrade moves it."""

import inspect
from pathlib import Path

import streamlit
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import script_runner
from streamlit.testing.v1 import AppTest

from tl_app import streamlit_internals

from .factories import REPO


def test_pages_folder_mode_flag_exists_and_st_navigation_turns_it_off(monkeypatch):
    assert hasattr(PagesManager, "uses_pages_directory"), streamlit.__version__
    monkeypatch.setattr(PagesManager, "uses_pages_directory", True)
    assert streamlit_internals.in_pages_folder_mode()
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception
    assert PagesManager.uses_pages_directory is False, "st.navigation must end pages-folder mode server-wide"


def test_the_hook_that_clears_keras_after_each_run_is_where_we_replace_it():
    assert callable(getattr(script_runner, "_clean_problem_modules", None)), streamlit.__version__


def test_no_other_module_touches_streamlit_private_api():
    sources = [REPO / "streamlit_app.py"] + [
        p for folder in ("tl_app", "pages", "tl_core") for p in (REPO / folder).rglob("*.py")
    ]
    offenders = [
        str(p.relative_to(REPO))
        for p in sources
        if p.name != "streamlit_internals.py"
        and any(s in p.read_text() for s in ("streamlit.runtime", "_clean_problem_modules", "PagesManager"))
    ]
    assert offenders == []


def test_the_upload_endpoint_still_asks_is_active_session_before_reading_the_body():
    """accept_uploads_only_from answers this question; if Streamlit's handler stops asking it, uploads from
    sessions at the gate would be accepted again (tests/e2e/test_gate_browser.py would catch it too)."""
    from streamlit.runtime import Runtime
    from streamlit.web.server.starlette import starlette_routes

    source = inspect.getsource(starlette_routes)
    assert hasattr(Runtime, "is_active_session"), streamlit.__version__
    assert source.index("runtime.is_active_session(session_id)") < source.index("await limited_request.form()"), (
        streamlit.__version__
    )


def test_uploaded_files_can_still_be_released_from_the_session():
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext

    assert callable(getattr(MemoryUploadedFileManager, "remove_file", None)), streamlit.__version__
    assert "uploaded_file_mgr" in ScriptRunContext.__dataclass_fields__, streamlit.__version__


def test_the_browser_redirect_st_login_sends_still_exists_and_the_frontend_still_follows_it():
    """redirect_browser sends st.login's own message; the frontend answers it with a full page load, which
    is how the login reaches the session route that sets the cookie."""
    from streamlit import user_info
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    message = ForwardMsg()
    message.auth_redirect.url = "/tl-auth/session?ticket=x"
    assert message.WhichOneof("type") == "auth_redirect", streamlit.__version__
    assert "auth_redirect.url" in inspect.getsource(user_info.login), streamlit.__version__
    bundles = (Path(streamlit.__file__).parent / "static" / "static" / "js").glob("index.*.js")
    assert any("window.location.href=e.url" in b.read_text(encoding="utf-8", errors="replace") for b in bundles), (
        streamlit.__version__
    )


def test_redirect_browser_enqueues_the_message_in_a_script_run():
    def page():
        from tl_app import streamlit_internals

        streamlit_internals.redirect_browser("/tl-auth/logout")

    assert not AppTest.from_function(page).run().exception
    streamlit_internals.redirect_browser("/outside-a-run")  # no context: nothing to send, no error


def test_streamlit_run_serves_the_routers_st_app_with_the_login_routes():
    """`streamlit run streamlit_app.py` finds `app` (an st.App) in the router file, which is how the login
    routes and the start-up check exist at all; run as a script, the file is the router."""
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(REPO / "streamlit_app.py")
    assert found.is_asgi_app and found.import_string == "streamlit_app:app", streamlit.__version__
    assert "routes" in inspect.signature(streamlit.App).parameters
