"""The gate in a real browser, on a fresh server each time: before it passes, nothing of the app exists;
once it passes, the login survives what people do (reload, a new tab, a deep link) until "Log out".

A fresh server matters: until some session reaches st.navigation, Streamlit runs a requested page
script directly (its pages-folder mode), which is how pages leaked before. So each test starts the
README's app command anew, and its very first request is a deep link. The network edge (which address
`streamlit run` listens on, and when it refuses to start) is checked on the real command too.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.load_predict import CHROMIUM_ARGS, app_server, free_port
from tl_app import auth

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
        member.get_by_role("button", name="Log out").wait_for(timeout=30_000)
        # logging in reloads the page (for the cookie): the member's session is the latest one
        assert visitor_session and member_session and visitor_session[0] not in member_session
        assert put_upload(visitor, url, visitor_session[0]) == 400, "an upload before the gate must be refused"
        assert put_upload(member, url, member_session[-1]) == 204, "past the gate, uploads work"
        chromium.close()


# ---------------------------------------------------------------- a login that lasts


RUN_LINK = "train?run=20990101-000000-shared"  # a deep link someone shared, query included
SECRETS = 'password = "s3cret Grüße"\nsession_secret = "e2e-only-secret"\nsession_hours = 2\n'
SIGNER = auth.Gate(password="s3cret Grüße", session_secret="e2e-only-secret", session_hours=2)


def wait_for_cookie(context, timeout_s: float = 60) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = [c for c in context.cookies() if c["name"] == auth.SESSION_COOKIE]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError("no session cookie after logging in")


def assert_in_the_app(page, ready: str) -> None:
    page.get_by_text(ready).first.wait_for(timeout=60_000)
    page.get_by_role("button", name="Log out").wait_for(timeout=30_000)  # in the sidebar
    assert page.get_by_label("Password", exact=True).count() == 0
    assert page.locator('[data-testid="stException"]').count() == 0


def test_a_login_survives_reload_new_tabs_and_deep_links_until_log_out(tmp_path, keras_home_copy):
    SHOTS.mkdir(parents=True, exist_ok=True)
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(SECRETS, encoding="utf-8")
    env = server_env(tmp_path, keras_home_copy, None)
    with (
        app_server(env, tmp_path / "app.log", ("--secrets.files", str(secrets))) as (url, _),
        playwright.sync_playwright() as p,
    ):
        chromium = browser(p)
        context = chromium.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.goto(f"{url}/{RUN_LINK}")  # the fresh server's first request: a deep link, logged out
        assert_only_the_gate(page, "Password", RUN_LINK)
        assert page.get_by_text("Page not found").count() == 0, "the login answers at the page's own URL"
        field = page.get_by_label("Password", exact=True)
        field.fill("wrong")
        field.press("Enter")
        page.get_by_text("Wrong password.").wait_for(timeout=30_000)
        page.wait_for_function("() => document.querySelector('input[type=password]').value === ''", timeout=10_000)
        page.screenshot(path=str(SHOTS / "gate-04-deep-link-wrong-password-cleared.png"), full_page=True)

        field.fill("s3cret Grüße")
        field.press("Enter")
        cookie = wait_for_cookie(context)
        assert_in_the_app(page, "Add a dataset on the Data page first")
        assert page.url == f"{url}/{RUN_LINK}", "after the login, the page asked for, with its query"
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert 1.9 * 3600 < cookie["expires"] - time.time() <= 2 * 3600 + 60, cookie["expires"]
        assert "s3cret" not in cookie["value"] and auth.session_of(SIGNER, cookie["value"])
        assert page.evaluate("document.cookie").find(auth.SESSION_COOKIE) == -1, "HttpOnly: no script reads it"
        page.screenshot(path=str(SHOTS / "gate-05-deep-link-after-login.png"), full_page=True)

        page.reload()
        assert_in_the_app(page, "Add a dataset on the Data page first")
        assert page.url == f"{url}/{RUN_LINK}"
        page.screenshot(path=str(SHOTS / "gate-06-after-reload.png"), full_page=True)

        chat = context.new_page()  # a shared link followed from another site: a cross-site navigation
        chat.route(
            "http://chat.example.test/",
            lambda route: route.fulfill(content_type="text/html", body=f'<a href="{url}/{RUN_LINK}">run</a>'),
        )
        chat.goto("http://chat.example.test/")
        chat.get_by_text("run").click()
        assert_in_the_app(chat, "Add a dataset on the Data page first")  # SameSite=Strict still opens it
        assert chat.url == f"{url}/{RUN_LINK}"
        chat.close()

        tab = context.new_page()
        tab.goto(f"{url}/data")
        assert_in_the_app(tab, "Add a dataset")
        tab.goto(url)
        assert_in_the_app(tab, "Next step")

        page.get_by_role("button", name="Log out").click()
        page.get_by_label("Password", exact=True).wait_for(timeout=60_000)
        assert [c for c in context.cookies() if c["name"] == auth.SESSION_COOKIE] == []
        page.reload()
        assert_only_the_gate(page, "Password", "(reload after log out)")
        page.screenshot(path=str(SHOTS / "gate-07-after-log-out-reload.png"), full_page=True)
        tab.reload()
        assert_only_the_gate(tab, "Password", "(the other tab after log out)")

        def visit_with(token: str, path: str = ""):
            other = chromium.new_context(viewport={"width": 1400, "height": 1000})
            other.add_cookies([{"name": auth.SESSION_COOKIE, "value": token, "url": url}])
            visitor = other.new_page()
            visitor.goto(f"{url}/{path}")
            return other, visitor

        now = time.time()
        for what, token in (
            ("a copy of the logged-out cookie", cookie["value"]),
            ("a tampered cookie", "x" + auth.issue_token(SIGNER)[1:]),
            ("an expired cookie", auth.issue_token(SIGNER, now=now - 3 * 3600)),
            ("a cookie signed with another secret", auth.issue_token(auth.Gate(password="s3cret Grüße"))),
        ):
            other, visitor = visit_with(token, "data")
            assert_only_the_gate(visitor, "Password", what)
            other.close()
        other, visitor = visit_with(auth.issue_token(SIGNER), "data")  # the same forging, valid: it works
        assert_in_the_app(visitor, "Add a dataset")
        other.close()
        chromium.close()


# ---------------------------------------------------------------- the network edge


def listening_addresses(port: int) -> list[str]:
    """The local addresses with a socket listening on ``port`` (Linux /proc/net)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                found.append(str(ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))))
    return found


def plain_streamlit_run(env: dict, log: Path, *args: str):
    """`streamlit run streamlit_app.py` as the README gives it, with no --server.address unless in ``args``."""
    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port), *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return server, port


def healthy_or_exited(server, port: int, log: Path) -> bool:
    """True once the server answers on loopback; False if it exited first."""
    deadline = time.time() + 90
    while time.time() < deadline:
        if server.poll() is not None:
            return False
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return True
        except OSError:
            time.sleep(0.5)
    raise AssertionError("neither healthy nor exited:\n" + log.read_text()[-3000:])


def stop(server) -> None:
    if server.poll() is None:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture
def no_secrets(tmp_path) -> tuple:
    empty = tmp_path / "no-secrets.toml"
    empty.write_text("", encoding="utf-8")
    return ("--secrets.files", str(empty))


def test_streamlit_run_without_an_address_listens_on_loopback_only(tmp_path, keras_home_copy, no_secrets):
    log = tmp_path / "app.log"
    server, port = plain_streamlit_run(server_env(tmp_path, keras_home_copy, None), log, *no_secrets)
    try:
        assert healthy_or_exited(server, port, log), log.read_text()
        addresses = listening_addresses(port)
        assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    finally:
        stop(server)


def test_a_network_address_without_a_gate_refuses_to_start_unless_allowed(tmp_path, keras_home_copy, no_secrets):
    log = tmp_path / "refused.log"
    env = server_env(tmp_path, keras_home_copy, None)
    env.pop("TL_ALLOW_OPEN_NETWORK", None)
    server, port = plain_streamlit_run(env, log, "--server.address", "0.0.0.0", *no_secrets)
    try:
        assert not healthy_or_exited(server, port, log), "an open app must not serve the network"
        assert server.returncode != 0 and "Refusing to serve Transfer Learning Studio" in log.read_text()
    finally:
        stop(server)

    for extra_env, expect_warning in (({"TL_ALLOW_OPEN_NETWORK": "1"}, True), ({"TL_PASSWORD": "s3cret"}, False)):
        log = tmp_path / f"started-{len(extra_env)}-{expect_warning}.log"
        server, port = plain_streamlit_run({**env, **extra_env}, log, "--server.address", "0.0.0.0", *no_secrets)
        try:
            assert healthy_or_exited(server, port, log), log.read_text()
            assert ("WARNING: serving Transfer Learning Studio" in log.read_text()) is expect_warning
            assert not any(ipaddress.ip_address(a).is_loopback for a in listening_addresses(port))
        finally:
            stop(server)
