"""The gate, driven through the router with AppTest: before it passes nothing of the app exists.

(The same in a real browser on a fresh server: tests/e2e/test_gate_browser.py.)
"""

import ast
import os
import stat
import time

import pytest
from streamlit.testing.v1 import AppTest

from tl_app import auth, shell

from .factories import REPO

pytestmark = pytest.mark.usefixtures("server_past_pages_folder_mode")

OIDC = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "not-a-real-secret",
        "client_id": "studio",
        "client_secret": "not-a-real-secret",
        "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration",
    }
}


def router(secrets: dict | None = None, user: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    if secrets:
        at.secrets.update(secrets)
    if user is not None:
        at.user.update(user)
    return at.run()


def assert_only_the_gate(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Transfer Learning Studio"]
    assert not at.sidebar.caption and not at.sidebar.markdown, "no sidebar content before the gate"
    assert not at.get("page_link") and not at.get("file_uploader") and not at.subheader


@pytest.fixture(autouse=True)
def fresh_clients():
    """Wrong-password counts are per client (this machine, for AppTest) and live for the process."""
    auth._CLIENTS.clear()
    yield
    auth._CLIENTS.clear()


def submit_password(at: AppTest, text: str) -> AppTest:
    at.text_input(key="login_password").set_value(text)
    return at.button[0].click().run()  # the form's "Log in" button


def log_in(at: AppTest, password: str) -> AppTest:
    """The right password, then the next run. In a browser the login run sends it for its cookie, and on to
    the page asked for: a new session, where the cookie opens the app (tests/e2e/test_gate_browser.py)."""
    submit_password(at, password)
    assert_only_the_gate(at)
    assert [i.value for i in at.info] == ["Logged in. Opening the app…"]
    return at.run()


def test_password_gate_shows_only_the_login_until_the_right_password(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    at = router()
    assert_only_the_gate(at)
    submit_password(at, "wrong")
    assert_only_the_gate(at)
    assert [e.value for e in at.error] == ["Wrong password."]
    assert at.text_input(key="login_password").value == "", "a wrong entry is cleared from the field"
    log_in(at, "open sesame")
    assert not at.exception
    assert "Next step" in [s.value for s in at.subheader]
    assert any(c.value.startswith("Device: **") for c in at.sidebar.caption)


def test_non_ascii_passwords_give_a_message_and_can_log_in(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "Grüße, 東京")
    at = router()
    submit_password(at, "パスワード")  # non-ASCII and wrong: a message, never a traceback
    assert [e.value for e in at.error] == ["Wrong password."] and not at.exception
    log_in(at, "Grüße, 東京")
    assert not at.exception and "Next step" in [s.value for s in at.subheader]


def test_repeated_wrong_passwords_slow_down_per_client_across_tabs(monkeypatch):
    """Two tabs of one client share one count: a second tab does not start the back-off again."""
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    slow_down = auth._slow_down_after
    failures = []
    monkeypatch.setattr(auth, "_slow_down_after", failures.append)
    first_tab, second_tab = router(), router()
    for _ in range(2):
        submit_password(first_tab, "nope")
    for _ in range(2):
        submit_password(second_tab, "nope")
    assert failures == [1, 2, 3, 4]
    log_in(second_tab, "open sesame")
    submit_password(first_tab, "nope")
    assert failures[-1] == 1, "the right password starts the count again"
    slept = []
    monkeypatch.setattr(auth.time, "sleep", slept.append)
    for count in range(1, 7):
        slow_down(count)
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_logged_out_the_login_page_is_the_only_page_there_is(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    for path, _, _ in shell.PAGES:
        with pytest.raises(ValueError, match=r"Known pages: \['Log in'(, '\w+')*\]"):
            router().switch_page(path)


def test_the_login_page_answers_at_every_app_page_url():
    """A reload or a shared link of an app page shows the login there, not "Page not found"."""

    def build():
        import streamlit as st

        from tl_app import shell

        pages = shell.login_pages()
        st.session_state["urls"] = [p.url_path for p in pages]
        st.session_state["titles"] = sorted({p.title for p in pages})

    probe = AppTest.from_function(build).run()
    assert not probe.exception
    assert probe.session_state["titles"] == ["Log in"]
    expected = [""] + [path.removeprefix("pages/").removesuffix(".py") for path, _, _ in shell.PAGES]
    assert probe.session_state["urls"] == expected


def test_logging_in_opens_the_page_asked_for_with_its_query(monkeypatch):
    """The browser is sent to the session route (for the cookie) with the deep link as its next stop; the
    URL carries a one-time ticket, never the token or the password."""

    def login_at_train():
        from tl_app import auth

        auth.login_page("train")

    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    sent = []
    monkeypatch.setattr(auth.streamlit_internals, "redirect_browser", sent.append)
    at = AppTest.from_function(login_at_train)
    at.query_params["run"] = "20260101-abc"
    at.run()
    submit_password(at, "open sesame")
    assert len(sent) == 1
    from urllib.parse import parse_qs, urlsplit

    url = urlsplit(sent[0])
    query = parse_qs(url.query)
    assert url.path == "/tl-auth/session" and query["next"] == ["/train?run=20260101-abc"]
    token = auth.redeem_ticket(query["ticket"][0])
    assert token == at.session_state["tl_session_token"] and "open sesame" not in sent[0]
    assert auth.redeem_ticket(query["ticket"][0]) is None, "a ticket works once"


def test_openid_connect_logged_out_sees_only_log_in(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "ignored when OpenID Connect is configured")
    at = router(OIDC, {"is_logged_in": False})
    assert_only_the_gate(at)
    assert [b.label for b in at.button] == ["Log in"] and not at.text_input  # st.login, not the password


def test_openid_connect_allow_list_admits_listed_accounts_and_domains_only():
    secrets = {**OIDC, "access": {"allowed_emails": ["ana@example.com"], "allowed_domains": ["team.example"]}}
    stranger = router(secrets, {"is_logged_in": True, "email": "eve@elsewhere.example"})
    assert_only_the_gate(stranger)
    assert "may not use this server" in stranger.error[0].value
    assert [b.label for b in stranger.button] == ["Log out"]
    for email in ("ana@example.com", "Bo@TEAM.example"):
        member = router(secrets, {"is_logged_in": True, "email": email})
        assert not member.exception and "Next step" in [s.value for s in member.subheader], email
        assert [b.label for b in member.sidebar.button] == ["Log out"]


def test_a_broken_secrets_file_closes_the_app_with_what_to_fix(tmp_path, monkeypatch):
    broken = tmp_path / "secrets.toml"
    broken.write_text('password = "unterminated\n', encoding="utf-8")
    from streamlit import config

    real = config.get_option
    monkeypatch.setattr(config, "get_option", lambda key: [str(broken)] if key == "secrets.files" else real(key))
    at = router()
    assert_only_the_gate(at)
    assert str(broken) in at.error[0].value and "cannot be read" in at.error[0].value
    assert not at.text_input, "no way in until the file is fixed"


def test_no_gate_configured_opens_the_app(monkeypatch):
    monkeypatch.delenv("TL_PASSWORD", raising=False)
    at = router()
    assert not at.exception and "Next step" in [s.value for s in at.subheader]
    assert not at.sidebar.button, "no login, nothing to log out of"


def test_pages_folder_holds_only_page_scripts_each_guarded_first():
    """Streamlit offers every file in pages/ as a page: only real pages live there, and each one's
    first statement (after imports) is the guard, so nothing of it runs before the gate."""
    files = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "pages").glob("*.py"))
    assert files == sorted(path for path, _, _ in shell.PAGES)
    for name in files:
        body = [
            node
            for node in ast.parse((REPO / name).read_text()).body
            if not isinstance(node, (ast.Import, ast.ImportFrom))
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        ]
        assert ast.unparse(body[0]) == "shell.guard()", name


def test_wrong_password_answer_is_not_instant_after_several_tries(monkeypatch):
    """The slow-down is real time, not just a counter (first two tries: 0.5 s, then 1 s)."""
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    at = router()
    submit_password(at, "nope")
    started = time.time()
    submit_password(at, "nope again")
    assert time.time() - started >= 1.0


def test_an_empty_submission_is_not_an_attempt(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    at = submit_password(router(), "")
    assert_only_the_gate(at)
    assert not at.error and not any(client.failures for client in auth._CLIENTS.values())


# ---------------------------------------------------------------- login sessions: signing, expiry, revocation

GATE = auth.Gate(password="open sesame", session_hours=12.0)


def test_a_session_token_is_signed_holds_no_password_and_round_trips():
    token = auth.issue_token(GATE)
    sid, expiry = auth.session_of(GATE, token)
    assert token.startswith(f"{sid}.{expiry}.") and abs(expiry - (time.time() + 12 * 3600)) < 5
    assert "open sesame" not in token and "sesame" not in token
    assert auth.session_of(GATE, auth.issue_token(GATE))[0] != sid, "every login is a new session"


def test_the_workspace_secret_is_made_once_readable_by_its_owner_only(workspace):
    auth.issue_token(GATE)
    path = workspace / auth.SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = path.read_text()
    token = auth.issue_token(GATE)
    assert path.read_text() == first and len(first.strip()) == 64
    assert auth.session_of(auth.Gate(password="open sesame", session_secret="from secrets.toml"), token) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: "x" + t[1:],  # another session id
        lambda t: t.replace(t.split(".")[1], str(int(t.split(".")[1]) + 3600)),  # a later expiry
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # another signature
        lambda t: t.rsplit(".", 1)[0],  # no signature
        lambda t: t + ".",
        lambda t: "é" + t,
        lambda t: "",
    ],
)
def test_a_tampered_token_is_refused(tamper):
    token = auth.issue_token(GATE)
    assert auth.session_of(GATE, token)
    assert auth.session_of(GATE, tamper(token)) is None


def test_changing_the_password_or_the_secret_ends_every_login():
    token = auth.issue_token(GATE)
    assert auth.session_of(auth.Gate(password="new password", session_hours=12.0), token) is None
    signed = auth.Gate(password="open sesame", session_secret="s1")
    assert auth.session_of(signed, auth.issue_token(signed))
    assert auth.session_of(auth.Gate(password="open sesame", session_secret="s2"), auth.issue_token(signed)) is None


def test_a_token_expires_and_a_shortened_lifetime_applies_to_old_tokens():
    now = time.time()
    token = auth.issue_token(GATE, now=now)
    assert auth.session_of(GATE, token, now=now + 11.9 * 3600)
    assert auth.session_of(GATE, token, now=now + 12 * 3600 + 1) is None
    assert auth.session_of(auth.Gate(password="open sesame", session_hours=1.0), token, now=now) is None


def test_a_revoked_session_stays_revoked_and_old_entries_are_dropped(workspace):
    token, other = auth.issue_token(GATE), auth.issue_token(GATE)
    auth.revoke(GATE, token)
    assert auth.session_of(GATE, token) is None and auth.session_of(GATE, other)
    auth._REVOKED_SEEN.update(key=None, ids=frozenset())  # as a restarted server reads it
    assert auth.session_of(GATE, token) is None
    stored = auth.read_json(workspace / auth.REVOKED_FILE)
    assert list(stored) == [token.split(".")[0]]
    (workspace / auth.REVOKED_FILE).write_text('{"gone": 1}')
    auth.revoke(GATE, other)
    assert list(auth.read_json(workspace / auth.REVOKED_FILE)) == [other.split(".")[0]]


def test_a_ticket_expires(monkeypatch):
    ticket = auth._ticket_for("token")
    later = time.monotonic() + auth.TICKET_SECONDS + 1
    monkeypatch.setattr(auth.time, "monotonic", lambda: later)
    assert auth.redeem_ticket(ticket) is None


@pytest.mark.parametrize(
    "raw", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "train", "", None, "http:/x"]
)
def test_the_session_route_sends_the_browser_nowhere_but_this_app(raw):
    assert auth.local_target(raw) == "/"


def test_the_session_route_keeps_a_local_deep_link():
    assert auth.local_target("/train?run=20260101-abc") == "/train?run=20260101-abc"


def with_browser_cookie(monkeypatch, token):
    """AppTest cannot send cookies: stand in for the browser's (tests/e2e/test_gate_browser.py sends real ones)."""
    monkeypatch.setattr(auth, "_browser_token", lambda: token)


def test_a_valid_cookie_opens_the_app_in_a_new_session_and_a_revoked_one_does_not(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    token = auth.issue_token(auth.gate())
    with_browser_cookie(monkeypatch, token)
    at = router()  # a reload or a new tab: a new session, the cookie only
    assert not at.exception and "Next step" in [s.value for s in at.subheader]
    auth.revoke(auth.gate(), token)
    assert_only_the_gate(router())
    assert_only_the_gate(at.run()), "an open tab is logged out at its next run"


@pytest.mark.parametrize("kind", ["tampered", "expired", "other password"])
def test_a_bad_cookie_shows_the_login(monkeypatch, kind):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    g = auth.gate()
    token = {
        "tampered": lambda: "x" + auth.issue_token(g)[1:],
        "expired": lambda: auth.issue_token(g, now=time.time() - 13 * 3600),
        "other password": lambda: auth.issue_token(auth.Gate(password="old password")),
    }[kind]()
    with_browser_cookie(monkeypatch, token)
    assert_only_the_gate(router())


def test_log_out_ends_the_session_everywhere(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    sent = []
    monkeypatch.setattr(auth.streamlit_internals, "redirect_browser", sent.append)
    at = router()
    log_in(at, "open sesame")
    token = at.session_state["tl_session_token"]
    with_browser_cookie(monkeypatch, token)  # as the session route set it
    other_tab = router()
    assert "Next step" in [s.value for s in other_tab.subheader]
    at.sidebar.button(key="logout_button").click().run()
    assert_only_the_gate(at)
    assert sent[-1] == "/tl-auth/logout" and auth.session_of(auth.gate(), token) is None
    assert_only_the_gate(other_tab.run())


def test_session_hours_come_from_the_settings_and_a_bad_value_closes_the_app(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    monkeypatch.setenv("TL_SESSION_HOURS", "0.5")
    assert auth.gate().session_hours == 0.5
    at = router({"session_hours": 48})
    assert not at.exception
    for bad in ("soon", "-1", "0", "nan"):
        monkeypatch.setenv("TL_SESSION_HOURS", bad)
        at = router()
        assert_only_the_gate(at)
        assert f"got {bad!r}" in at.error[0].value and not at.text_input


def test_only_an_admin_sees_the_workspace_path_in_the_sidebar(monkeypatch):
    def workspace_shown(at):
        return any(c.value.startswith("Workspace:") for c in at.sidebar.caption)

    monkeypatch.delenv("TL_PASSWORD", raising=False)
    assert workspace_shown(router()), "no gate: the one local user runs the server"
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    at = log_in(router(), "open sesame")
    assert "Next step" in [s.value for s in at.subheader] and not workspace_shown(at)
    secrets = {**OIDC, "access": {"admins": ["root@example.com"]}}
    assert workspace_shown(router(secrets, {"is_logged_in": True, "email": "root@example.com"}))
    assert not workspace_shown(router(secrets, {"is_logged_in": True, "email": "ana@example.com"}))
    unverified = {"is_logged_in": True, "email": "root@example.com", "email_verified": False}
    assert not workspace_shown(router(secrets, unverified))


def test_the_allow_list_requires_a_verified_email_when_the_provider_says():
    secrets = {**OIDC, "access": {"allowed_domains": ["example.com"]}}
    for verified in (False, "false"):
        at = router(secrets, {"is_logged_in": True, "email": "ana@example.com", "email_verified": verified})
        assert_only_the_gate(at)
    for verified in (True, "true"):
        at = router(secrets, {"is_logged_in": True, "email": "ana@example.com", "email_verified": verified})
        assert "Next step" in [s.value for s in at.subheader], verified


# ---------------------------------------------------------------- the network edge


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses(address):
    assert auth.is_loopback(address)


@pytest.mark.parametrize("address", [None, "", "0.0.0.0", "::", "192.0.2.7", "2001:db8::1", "no-such-host.invalid"])
def test_addresses_beyond_this_machine(address):
    assert not auth.is_loopback(address)


def test_an_open_app_is_refused_beyond_loopback_unless_explicitly_allowed():
    assert auth.network_exposure("127.0.0.1", auth.Gate()) == (None, None)
    refusal, _ = auth.network_exposure("0.0.0.0", auth.Gate())
    assert "Refusing" in refusal and "every network interface" in refusal and "TL_PASSWORD" in refusal
    assert "'192.0.2.7'" in auth.network_exposure("192.0.2.7", auth.Gate())[0]
    assert auth.network_exposure(None, auth.Gate())[0], "Streamlit's own default is every interface"
    assert auth.network_exposure("0.0.0.0", auth.Gate(password="x")) == (None, None)
    assert auth.network_exposure("0.0.0.0", auth.Gate(oidc=True)) == (None, None)
    refusal, warning = auth.network_exposure("0.0.0.0", auth.Gate(allow_open_network=True))
    assert refusal is None and warning.startswith("WARNING")


def test_the_allow_setting_is_read_from_secrets_or_the_environment(monkeypatch):
    monkeypatch.delenv("TL_ALLOW_OPEN_NETWORK", raising=False)
    assert not auth.gate().allow_open_network
    monkeypatch.setenv("TL_ALLOW_OPEN_NETWORK", "1")
    assert auth.gate().allow_open_network


def test_the_server_binds_loopback_unless_told_otherwise():
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"
