"""The gate in a real browser, on a fresh server each time: before it passes, nothing of the app exists.

A fresh server matters: until some session reaches st.navigation, Streamlit runs a requested page
script directly (its pages-folder mode), which is how pages leaked before. So each test starts the
README's app command anew, and its very first request is a deep link.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.load_predict import CHROMIUM_ARGS, app_server

from ..factories import REPO
from ..test_gate import OIDC
from . import CHROMIUM, require_chromium

pytestmark = pytest.mark.browser

require_chromium()
playwright = pytest.importorskip("playwright.sync_api")

SHOTS = REPO / "artifacts" / "screenshots"
# every page script, the old helper modules that used to be offered as pages, the router itself
PAGE_URLS = [p.stem for p in sorted((REPO / "pages").glob("*.py"))] + ["charts", "ui", "streamlit_app", ""]


def server_env(tmp_path: Path, keras_home: Path, password: str | None) -> dict:
    env = {
        **os.environ,
        "TL_HOME": str(tmp_path / "workspace"),
        "KERAS_HOME": str(keras_home),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("TL_PASSWORD", None)
    if password:
        env["TL_PASSWORD"] = password
    return env


def assert_only_the_gate(page, gate_text: str, path: str) -> None:
    page.get_by_text(gate_text, exact=True).first.wait_for(timeout=60_000)
    page.wait_for_timeout(600)  # let any late element arrive
    assert page.locator('[data-testid="stException"]').count() == 0, (path, page.content()[:2000])
    assert page.locator('[data-testid="stSidebar"]').count() == 0, f"/{path}: a sidebar before the gate"
    assert page.locator('[data-testid="stFileUploader"]').count() == 0, f"/{path}: an upload before the gate"
    links = [
        href
        for href in page.locator("a[href]").evaluate_all("els => els.map(e => e.getAttribute('href'))")
        if not href.startswith("#")
    ]
    assert links == [], f"/{path}: links before the gate: {links}"
    main = page.locator('[data-testid="stMain"]').inner_text()
    for word in ("Data", "Train", "Results", "Predict", "Next step", "Add a dataset", "Upload"):
        assert word not in main.split(), (path, main)


def browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def test_password_gate_on_a_fresh_server(tmp_path, keras_home_copy):
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = server_env(tmp_path, keras_home_copy, "s3cret Grüße")
    with app_server(env, tmp_path / "app.log") as (url, _), playwright.sync_playwright() as p:
        chromium = browser(p)
        for index, path in enumerate(["data"] + PAGE_URLS):  # the fresh server's first request: a deep link
            page = chromium.new_page()
            page.goto(f"{url}/{path}")
            assert_only_the_gate(page, "Password", path)
            if index == 0:
                page.screenshot(path=str(SHOTS / "gate-01-first-request-data.png"), full_page=True)
            page.close()

        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        field = page.get_by_label("Password", exact=True)
        for wrong in ("wrong", "пароль 東京"):  # ASCII and non-ASCII: a message, no traceback
            field.fill(wrong)
            field.press("Enter")
            page.get_by_text("Wrong password.").wait_for(timeout=30_000)
            assert_only_the_gate(page, "Password", "(wrong password)")
        page.screenshot(path=str(SHOTS / "gate-02-wrong-password.png"), full_page=True)
        field.fill("s3cret Grüße")
        field.press("Enter")
        page.get_by_text("Next step").wait_for(timeout=60_000)
        for title, ready in (
            ("Data", "Add a dataset"),
            ("Train", "Add a dataset on the Data page first"),
            ("Results", "No training runs yet"),
            ("Predict", "No trained model yet"),
        ):
            page.get_by_role("link", name=title, exact=True).click()
            page.get_by_text(ready).first.wait_for(timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0, title
        page.screenshot(path=str(SHOTS / "gate-03-after-login.png"), full_page=True)
        assert page.get_by_role("button", name="Deploy").count() == 0, "no developer chrome on a shared URL"
        chromium.close()


def test_openid_connect_gate_on_a_fresh_server(tmp_path, keras_home_copy):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("[auth]\n" + "".join(f'{key} = "{value}"\n' for key, value in OIDC["auth"].items()))
    env = server_env(tmp_path, keras_home_copy, "ignored with OpenID Connect")
    with (
        app_server(env, tmp_path / "app.log", ("--secrets.files", str(secrets))) as (url, _),
        playwright.sync_playwright() as p,
    ):
        chromium = browser(p)
        for path in ["predict"] + PAGE_URLS:
            page = chromium.new_page()
            page.goto(f"{url}/{path}")
            assert_only_the_gate(page, "Log in", path)
            assert page.get_by_label("Password").count() == 0
            page.close()
        chromium.close()


def session_id_of(page) -> list:
    """Collects the Streamlit session id of a page from its websocket (the new-session message)."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    found = []

    def on_frame(payload):
        if isinstance(payload, (bytes, bytearray)):
            msg = ForwardMsg()
            try:
                msg.ParseFromString(bytes(payload))
            except Exception:  # not every frame is a ForwardMsg we can read
                return
            if msg.WhichOneof("type") == "new_session" and msg.new_session.initialize.session_id:
                found.append(msg.new_session.initialize.session_id)

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    return found


def put_upload(page, url: str, session_id: str) -> int:
    """An upload request for a session, as the file uploader sends it (XSRF cookie echoed in the header)."""
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    response = page.request.put(
        f"{url}/_stcore/upload_file/{session_id}/probe-file",
        headers={"X-Xsrftoken": cookies.get("_streamlit_xsrf", "")},
        multipart={"file": {"name": "probe.png", "mimeType": "image/png", "buffer": b"\x89PNG" + b"\0" * 2048}},
    )
    return response.status


def test_uploads_are_refused_from_sessions_still_at_the_gate(tmp_path, keras_home_copy):
    env = server_env(tmp_path, keras_home_copy, "s3cret")
    with app_server(env, tmp_path / "app.log") as (url, _), playwright.sync_playwright() as p:
        chromium = browser(p)
        visitor = chromium.new_page()
        visitor_session = session_id_of(visitor)
        visitor.goto(url)
        assert_only_the_gate(visitor, "Password", "")
        member = chromium.new_page()
        member_session = session_id_of(member)
        member.goto(url)
        field = member.get_by_label("Password", exact=True)
        field.fill("s3cret")
        field.press("Enter")
        member.get_by_text("Next step").wait_for(timeout=60_000)
        assert visitor_session and member_session and visitor_session[0] != member_session[0]
        assert put_upload(visitor, url, visitor_session[0]) == 400, "an upload before the gate must be refused"
        assert put_upload(member, url, member_session[0]) == 204, "past the gate, uploads work"
        chromium.close()
