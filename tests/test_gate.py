"""The gate, driven through the router with AppTest: before it passes nothing of the app exists.

(The same in a real browser on a fresh server: tests/e2e/test_gate_browser.py.)
"""

import ast
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


def submit_password(at: AppTest, text: str) -> AppTest:
    at.text_input(key="login_password").set_value(text)
    return at.button[0].click().run()  # the form's "Log in" button


def test_password_gate_shows_only_the_login_until_the_right_password(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    at = router()
    assert_only_the_gate(at)
    submit_password(at, "wrong")
    assert_only_the_gate(at)
    assert [e.value for e in at.error] == ["Wrong password."]
    submit_password(at, "open sesame")
    assert not at.exception
    assert "Next step" in [s.value for s in at.subheader]
    assert any(c.value.startswith("Device: **") for c in at.sidebar.caption)


def test_non_ascii_passwords_give_a_message_and_can_log_in(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "Grüße, 東京")
    at = router()
    submit_password(at, "パスワード")  # non-ASCII and wrong: a message, never a traceback
    assert [e.value for e in at.error] == ["Wrong password."] and not at.exception
    submit_password(at, "Grüße, 東京")
    assert not at.exception and "Next step" in [s.value for s in at.subheader]


def test_repeated_wrong_passwords_slow_down_within_a_session(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    slow_down = auth._slow_down_after
    failures = []
    monkeypatch.setattr(auth, "_slow_down_after", failures.append)
    at = router()
    for _ in range(4):
        submit_password(at, "nope")
    assert failures == [1, 2, 3, 4]
    slept = []
    monkeypatch.setattr(auth.time, "sleep", slept.append)
    for count in range(1, 7):
        slow_down(count)
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_logged_out_the_login_page_is_the_only_page_there_is(monkeypatch):
    monkeypatch.setenv("TL_PASSWORD", "open sesame")
    for path, _, _ in shell.PAGES:
        with pytest.raises(ValueError, match=r"Known pages: \['Log in'\]"):
            router().switch_page(path)


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
    assert not at.error and "tl_login_failures" not in at.session_state
