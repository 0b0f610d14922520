"""The gate: who may see the app, and who they are.

Three set-ups, read from ``.streamlit/secrets.toml`` (and ``TL_PASSWORD``):
- ``[auth]`` (OpenID Connect): users log in with ``st.login``. An optional ``[access]`` table limits
  who gets in: ``allowed_emails = [...]`` and ``allowed_domains = [...]``; without it, any account the
  provider authenticates does. ``admins = [...]`` may cancel anyone's run; others only their own.
- ``password = "..."`` (or ``TL_PASSWORD``): one shared password, asked once per browser session.
- neither: no gate (a single user on localhost).

A secrets file that exists but does not parse closes the app with a message saying what to fix:
a typo must never open it.
"""

from __future__ import annotations

import functools
import hmac
import os
import time
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import streamlit as st

from . import streamlit_internals

_AUTHENTICATED = "tl_authenticated"
_FAILURES = "tl_login_failures"


@dataclass
class Gate:
    oidc: bool = False
    password: Optional[str] = None
    allowed_emails: list[str] = field(default_factory=list)
    allowed_domains: list[str] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)
    problem: Optional[str] = None  # set when the configuration is broken: nobody gets in

    @property
    def open(self) -> bool:
        return not (self.oidc or self.password or self.problem)


def _broken_secrets_file() -> Optional[str]:
    """A message naming the first secrets file that exists but is not valid TOML, else None. The gate asks
    several times per page run: files are parsed again only when one changed."""
    from streamlit import config

    files = []
    for name in config.get_option("secrets.files"):
        try:
            info = os.stat(name)
        except OSError:
            continue
        files.append((name, info.st_ino, info.st_mtime_ns, info.st_size))
    return _first_unparsable(tuple(files))


@functools.lru_cache(maxsize=16)
def _first_unparsable(files: tuple) -> Optional[str]:
    for name, *_ in files:
        path = Path(name)
        if not path.is_file():
            continue
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            return f"The secrets file {str(path)!r} cannot be read ({exc}). Fix it and restart the app."
    return None


def gate() -> Gate:
    problem = _broken_secrets_file()
    if problem:
        return Gate(problem=problem)
    try:
        secrets = {key: st.secrets[key] for key in st.secrets}
    except FileNotFoundError:  # no secrets file at all (StreamlitSecretNotFoundError derives from it)
        secrets = {}
    access = secrets.get("access", {}) or {}
    password = secrets.get("password") or os.environ.get("TL_PASSWORD") or None
    return Gate(
        oidc="auth" in secrets,
        password=str(password) if password else None,
        allowed_emails=[e.lower() for e in access.get("allowed_emails", [])],
        allowed_domains=[d.lower().lstrip("@") for d in access.get("allowed_domains", [])],
        admins=[e.lower() for e in access.get("admins", [])],
    )


def _account_allowed(g: Gate) -> bool:
    if not (g.allowed_emails or g.allowed_domains):
        return True
    email = str(st.user.get("email") or "").lower()
    return email in g.allowed_emails or email.rpartition("@")[2] in g.allowed_domains


# Sessions (Streamlit session ids) that have passed the gate: the only ones whose uploads are accepted.
_PASSED_SESSIONS: set[str] = set()


def gate_passed() -> bool:
    streamlit_internals.accept_uploads_only_from(_PASSED_SESSIONS.__contains__)
    passed = _check_gate()
    session = streamlit_internals.current_session_id()
    if session:
        (_PASSED_SESSIONS.add if passed else _PASSED_SESSIONS.discard)(session)
    return passed


def _check_gate() -> bool:
    g = gate()
    if g.problem:
        return False
    if g.oidc:
        return bool(st.user.is_logged_in) and _account_allowed(g)
    if g.password:
        return st.session_state.get(_AUTHENTICATED) is True
    return True


def _same_password(typed: str, expected: str) -> bool:
    """Constant-time comparison of the UTF-8 bytes (str comparison refuses non-ASCII text)."""

    def normal(text: str) -> bytes:
        return unicodedata.normalize("NFC", text).encode("utf-8")

    return hmac.compare_digest(normal(typed), normal(expected))


def _slow_down_after(failures: int) -> None:
    """Each wrong password in a session makes the next answer slower: 0.5 s, 1 s, 2 s, ... up to 5 s."""
    if failures:
        time.sleep(min(5.0, 0.5 * 2 ** (failures - 1)))


def login_page() -> None:
    """The only page a visitor sees before the gate passes."""
    g = gate()
    st.title("Transfer Learning Studio")
    if g.problem:
        st.error(g.problem)
        return
    if g.oidc:
        if st.user.is_logged_in:  # authenticated by the provider, but not on the allow-list
            st.error(
                f"The account {st.user.get('email') or st.user.get('name')!r} may not use this server. "
                "Ask an admin to add it, or log in with another account."
            )
            st.button("Log out", on_click=st.logout, key="login_logout")
            return
        st.button("Log in", on_click=st.login, key="login_button", type="primary")
        return
    with st.form("login_form"):
        typed = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted and typed:
        if _same_password(typed, g.password or ""):
            st.session_state[_AUTHENTICATED] = True
            st.session_state.pop(_FAILURES, None)
            st.rerun()
        failures = st.session_state.get(_FAILURES, 0) + 1
        st.session_state[_FAILURES] = failures
        _slow_down_after(failures)
        st.error("Wrong password.")


def current_user() -> Optional[str]:
    """The logged-in account's email (or name) with OpenID Connect; None otherwise."""
    try:
        if gate().oidc and st.user.is_logged_in:
            return st.user.get("email") or st.user.get("name")
    except Exception:  # outside a script run
        pass
    return None


def may_cancel(owner: Optional[str]) -> bool:
    """With OpenID Connect, a run is cancelled by whoever started it or an admin; otherwise by anyone who
    passed the gate (a shared password names nobody)."""
    g = gate()
    if not g.oidc:
        return True
    me = (current_user() or "").lower()
    return bool(me) and (me == (owner or "").lower() or me in g.admins)
