"""The gate: who may see the app, who they are, and how long a login lasts.

Three set-ups, read from ``.streamlit/secrets.toml`` (and the environment):
- ``[auth]`` (OpenID Connect): users log in with ``st.login``; Streamlit keeps that login in its own signed
  ``_streamlit_user`` cookie. An optional ``[access]`` table limits who gets in: ``allowed_emails = [...]``
  and ``allowed_domains = [...]``; without it, any account the provider authenticates does. ``admins =
  [...]`` may cancel anyone's run and delete or rename anyone's dataset; others only their own. An email
  the provider marks ``email_verified = false`` counts for nothing: not on the allow-list, not an admin.
- ``password = "..."`` (or ``TL_PASSWORD``): one shared password. Passing it starts a login session kept in
  the ``tl_session`` cookie (HttpOnly, SameSite=Strict), which a reload, a new tab or a shared link carry
  back. It holds a random session id and an expiry, signed (HMAC-SHA256) with a server secret and the
  password, so changing the password ends every login. It lasts ``session_hours`` (or ``TL_SESSION_HOURS``,
  default 12). The secret is ``session_secret`` in the secrets file, else one generated once into the
  workspace (``session_secret``, mode 0600). "Log out" revokes the session on the server
  (``sessions_revoked.json`` in the workspace), so a copy of the cookie is useless from then on.
- neither: no gate, for one user on this machine. Serving that on the network is refused at start
  (``refuse_unsafe_network``) unless ``allow_open_network = true`` (or ``TL_ALLOW_OPEN_NETWORK=1``).

A secrets file that exists but does not parse, or a setting that makes no sense, closes the app with a
message saying what to fix: a typo must never open it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets as random_tokens
import socket
import sys
import threading
import time
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlencode, urlsplit

import streamlit as st

from tl_core.workspace import home, read_json, write_json

from . import streamlit_internals

SESSION_COOKIE = "tl_session"
SESSION_ROUTE = "tl-auth/session"  # sets the cookie, then opens the page the visitor asked for
LOGOUT_ROUTE = "tl-auth/logout"  # deletes the cookie
DEFAULT_SESSION_HOURS = 12.0
SECRET_FILE = "session_secret"
REVOKED_FILE = "sessions_revoked.json"
TICKET_SECONDS = 60
_TOKEN = "tl_session_token"  # this browser tab's session token, in st.session_state


@dataclass
class Gate:
    oidc: bool = False
    password: Optional[str] = None
    allowed_emails: list[str] = field(default_factory=list)
    allowed_domains: list[str] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)
    session_hours: float = DEFAULT_SESSION_HOURS
    session_secret: Optional[str] = None
    allow_open_network: bool = False
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


def _session_hours(conf: dict) -> float | str:
    """The configured login lifetime in hours, or a message quoting the bad value."""
    raw = conf.get("session_hours", os.environ.get("TL_SESSION_HOURS", DEFAULT_SESSION_HOURS))
    try:
        hours = float(raw)
    except (TypeError, ValueError):
        hours = float("nan")
    if not 0 < hours <= 24 * 366:  # also false for NaN
        return (
            f"session_hours must be a number of hours between 0 and 8784, got {raw!r}. "
            "Fix it in .streamlit/secrets.toml (or TL_SESSION_HOURS) and restart the app."
        )
    return hours


def _flag(value) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes")


def gate() -> Gate:
    problem = _broken_secrets_file()
    if problem:
        return Gate(problem=problem)
    try:
        conf = {key: st.secrets[key] for key in st.secrets}
    except FileNotFoundError:  # no secrets file at all (StreamlitSecretNotFoundError derives from it)
        conf = {}
    access = conf.get("access", {}) or {}
    password = conf.get("password") or os.environ.get("TL_PASSWORD") or None
    hours = _session_hours(conf)
    return Gate(
        oidc="auth" in conf,
        password=str(password) if password else None,
        allowed_emails=[e.lower() for e in access.get("allowed_emails", [])],
        allowed_domains=[d.lower().lstrip("@") for d in access.get("allowed_domains", [])],
        admins=[e.lower() for e in access.get("admins", [])],
        session_hours=hours if isinstance(hours, float) else DEFAULT_SESSION_HOURS,
        session_secret=str(conf["session_secret"]) if conf.get("session_secret") else None,
        allow_open_network=_flag(conf.get("allow_open_network", os.environ.get("TL_ALLOW_OPEN_NETWORK", ""))),
        problem=hours if isinstance(hours, str) else None,
    )


# ---------------------------------------------------------------- who the visitor is (OpenID Connect)


def _verified_email() -> str:
    """The account's email, lower-case; '' when there is none or the provider says it is not verified."""
    verified = st.user.get("email_verified")
    if verified is not None and not _flag(verified):  # some providers send the string "true"
        return ""
    return str(st.user.get("email") or "").lower()


def _account_allowed(g: Gate) -> bool:
    if not (g.allowed_emails or g.allowed_domains):
        return True
    email = _verified_email()
    return bool(email) and (email in g.allowed_emails or email.rpartition("@")[2] in g.allowed_domains)


def current_user() -> Optional[str]:
    """The logged-in account's email (or name, when it has no verified email) with OpenID Connect; None
    otherwise. For the record only: rights go by the verified email (``may_cancel``, ``is_admin``)."""
    try:
        if gate().oidc and st.user.is_logged_in:
            return _verified_email() or st.user.get("name") or None
    except Exception:  # outside a script run
        pass
    return None


def is_admin() -> bool:
    """Whether this visitor may see the server's internals (its workspace path): the one local user when
    there is no gate, an admin's verified email with OpenID Connect; never a shared password, which names
    nobody."""
    g = gate()
    if g.oidc:
        return bool(st.user.is_logged_in) and _verified_email() in g.admins
    return g.open


def _owner_or_admin(owner: Optional[str]) -> bool:
    g = gate()
    if not g.oidc:
        return True
    me = _verified_email() if st.user.is_logged_in else ""
    if me and me in g.admins:
        return True
    if owner:
        return bool(me) and me == owner.lower()
    return not g.admins  # made before owners were recorded: anyone's, until someone is made an admin


def may_cancel(owner: Optional[str]) -> bool:
    """With OpenID Connect, a run is cancelled by whoever started it or an admin (one nobody owns: by an
    admin, or anyone while no admins are set); otherwise by anyone who passed the gate (a shared password
    names nobody)."""
    return _owner_or_admin(owner)


def may_change_dataset(owner: Optional[str]) -> bool:
    """Who may delete or rename a dataset ``owner`` imported: the same rule as cancelling a run."""
    return _owner_or_admin(owner)


# ---------------------------------------------------------------- login sessions (shared password)


_SECRET_LOCK = threading.Lock()


def _workspace_secret() -> bytes:
    """The workspace's session secret, made on first use: readable by this account only, created whole
    (written under a temporary name, then linked into place) so no reader ever sees half of it."""
    path = home() / SECRET_FILE
    with _SECRET_LOCK:
        if not path.exists():
            temporary = path.with_name(f".{SECRET_FILE}-{random_tokens.token_hex(8)}")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(random_tokens.token_hex(32))
            try:
                os.link(temporary, path)
            except FileExistsError:  # another process was first: use its secret
                pass
            finally:
                temporary.unlink()
        return path.read_text(encoding="ascii").strip().encode()


def _normal(text: str) -> bytes:
    return unicodedata.normalize("NFC", text).encode("utf-8")


def _signature(g: Gate, body: str) -> str:
    secret = g.session_secret.encode() if g.session_secret else _workspace_secret()
    key = hmac.new(secret, b"tl-session\0" + _normal(g.password or ""), hashlib.sha256).digest()
    mac = hmac.new(key, b"v1." + body.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def issue_token(g: Gate, now: Optional[float] = None) -> str:
    """A new login session: ``<session id>.<expiry, Unix seconds>.<signature>``. Holds no password."""
    now = time.time() if now is None else now
    body = f"{random_tokens.token_urlsafe(18)}.{int(now + g.session_hours * 3600)}"
    return f"{body}.{_signature(g, body)}"


def session_of(g: Gate, token: object, now: Optional[float] = None) -> Optional[tuple[str, int]]:
    """``(session id, expiry)`` of a token this gate signed that has not expired, does not outlast the
    configured ``session_hours`` from now (a shortened setting applies to old cookies too) and was not
    revoked; None for anything else."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    sid, expiry, signature = token.split(".")
    try:
        expected = _signature(g, f"{sid}.{expiry}")
    except UnicodeEncodeError:
        return None
    if not hmac.compare_digest(signature.encode(), expected.encode()) or not expiry.isdigit():
        return None
    now = time.time() if now is None else now
    if not now < int(expiry) <= now + g.session_hours * 3600 or sid in _revoked():
        return None
    return sid, int(expiry)


_REVOKED_LOCK = threading.Lock()
_REVOKED_SEEN: dict = {"key": None, "ids": frozenset()}


def _revoked() -> frozenset:
    """Revoked session ids, read again only when the file changed."""
    path = home() / REVOKED_FILE
    try:
        info = path.stat()
    except FileNotFoundError:
        return frozenset()
    key = (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
    if _REVOKED_SEEN["key"] != key:
        _REVOKED_SEEN.update(key=key, ids=frozenset(read_json(path, {}) or {}))
    return _REVOKED_SEEN["ids"]


def revoke(g: Gate, token: object) -> None:
    """End a login session for good (every tab and copy of its cookie). Entries are kept until the
    session would have expired anyway."""
    found = session_of(g, token)
    if not found:
        return
    sid, expiry = found
    path = home() / REVOKED_FILE
    with _REVOKED_LOCK:
        now = time.time()
        entries = {k: v for k, v in (read_json(path, {}) or {}).items() if isinstance(v, int) and v > now}
        entries[sid] = expiry
        write_json(path, entries)


# One-time tickets: the login page hands the browser a ticket, not the token, so the token never appears
# in a URL (history, logs); the session route swaps it for the cookie.
_TICKETS: dict[str, tuple[str, float]] = {}
_TICKETS_LOCK = threading.Lock()


def _ticket_for(token: str) -> str:
    ticket = random_tokens.token_urlsafe(24)
    with _TICKETS_LOCK:
        now = time.monotonic()
        for stale in [t for t, (_, deadline) in _TICKETS.items() if deadline < now]:
            del _TICKETS[stale]
        _TICKETS[ticket] = (token, now + TICKET_SECONDS)
    return ticket


def redeem_ticket(ticket: str) -> Optional[str]:
    """The token a ticket stands for, once, within TICKET_SECONDS of its issue; else None."""
    with _TICKETS_LOCK:
        token, deadline = _TICKETS.pop(ticket, (None, 0.0))
    return token if token and time.monotonic() <= deadline else None


def _root() -> str:
    """The app's root path ("/" or "/<server.baseUrlPath>/")."""
    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}/" if base else "/"


def local_target(raw: Optional[str]) -> str:
    """``raw`` if it is a path on this app, else the app's root: the session route never sends a browser
    to another site."""
    root = _root()
    if not raw or not raw.startswith(root) or "\\" in raw:
        return root
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or raw.startswith("//"):
        return root
    return raw


def _browser_token() -> Optional[str]:
    return st.context.cookies.get(SESSION_COOKIE)


def _session_token(g: Gate) -> Optional[str]:
    """This tab's token if its session is live, else the browser cookie's if that one is."""
    for token in (st.session_state.get(_TOKEN), _browser_token()):
        if token and session_of(g, token):
            return token
    return None


def _log_out() -> None:
    g = gate()
    for token in (st.session_state.pop(_TOKEN, None), _browser_token()):
        revoke(g, token)
    streamlit_internals.redirect_browser(_root() + LOGOUT_ROUTE)


def logout_button() -> None:
    """A "Log out" button, where there is a login to end."""
    g = gate()
    if g.oidc:
        st.button("Log out", on_click=st.logout, key="logout_button")
    elif g.password:
        st.button("Log out", on_click=_log_out, key="logout_button")


def routes() -> list:
    """The HTTP routes of the password login (served next to Streamlit's own): they set and delete the
    HttpOnly cookie, which a script run cannot do."""
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    root = _root()

    async def start_session(request):
        response = RedirectResponse(local_target(request.query_params.get("next")), status_code=303)
        token = redeem_ticket(request.query_params.get("ticket", ""))
        found = session_of(gate(), token) if token else None
        if found:
            response.set_cookie(
                SESSION_COOKIE,
                token,
                max_age=max(0, found[1] - int(time.time())),
                path=root,
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    async def end_session(request):
        revoke(gate(), request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse(root, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=root, httponly=True, samesite="strict")
        return response

    return [Route(root + SESSION_ROUTE, start_session), Route(root + LOGOUT_ROUTE, end_session)]


# ---------------------------------------------------------------- the gate itself


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
        if st.session_state.get(_OPENING):  # the right password, this run: the browser is sent for its cookie
            return False  # and then to the page asked for; nothing of the app is drawn before that
        return _session_token(g) is not None
    return True


def _same_password(typed: str, expected: str) -> bool:
    """Constant-time comparison of the UTF-8 bytes (str comparison refuses non-ASCII text)."""
    return hmac.compare_digest(_normal(typed), _normal(expected))


def _slow_down_after(failures: int) -> None:
    """Each wrong password from a client makes the next answer slower: 0.5 s, 1 s, 2 s, ... up to 5 s."""
    if failures:
        time.sleep(min(5.0, 0.5 * 2 ** (failures - 1)))


@dataclass
class _Client:
    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: int = 0
    last: float = 0.0


FAILURES_FORGOTTEN_S = 15 * 60  # a client's wrong passwords count until it stays quiet this long
_CLIENTS: dict[str, _Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _client() -> _Client:
    """This visitor's back-off record, shared by all its tabs: keyed by its IP address."""
    ip = st.context.ip_address
    key = ip if isinstance(ip, str) and ip else "this machine"  # None for loopback (a mock under AppTest)
    with _CLIENTS_LOCK:
        now = time.monotonic()
        if len(_CLIENTS) > 10_000:
            for quiet in [k for k, c in _CLIENTS.items() if now - c.last > FAILURES_FORGOTTEN_S]:
                del _CLIENTS[quiet]
        return _CLIENTS.setdefault(key, _Client())


def _password_accepted(typed: str, expected: str) -> bool:
    """Check a password, one attempt at a time per client: a wrong one holds the client's next attempt
    (from any tab) back for the slow-down."""
    client = _client()
    with client.lock:
        if time.monotonic() - client.last > FAILURES_FORGOTTEN_S:
            client.failures = 0
        if _same_password(typed, expected):
            client.failures = 0
            return True
        client.failures += 1
        client.last = time.monotonic()
        _slow_down_after(client.failures)
        return False


def _target_url(page: str) -> str:
    query = urlencode([(key, value) for key in st.query_params for value in st.query_params.get_all(key)])
    return _root() + page + (f"?{query}" if query else "")


def login_page(page: str = "") -> None:
    """The only page a visitor sees before the gate passes; ``page`` is the app page asked for (its URL
    path, "" for Home), opened with the same query once the password is right."""
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
        st.text_input("Password", type="password", key="login_password")
        st.form_submit_button("Log in", type="primary", on_click=_submit_password, args=(g, page))
    if st.session_state.pop(_WRONG, False):
        st.error("Wrong password.")
    if st.session_state.pop(_OPENING, False):
        st.info("Logged in. Opening the app…")


_WRONG = "tl_login_wrong"
_OPENING = "tl_login_opening"


def _submit_password(g: Gate, page: str) -> None:
    """The form's callback (a callback may still empty the field: a wrong entry does not stay in it). The
    right password starts a session for this tab and sends the browser for its cookie."""
    typed = st.session_state.get("login_password") or ""
    st.session_state["login_password"] = ""
    if not typed:
        return
    if not _password_accepted(typed, g.password or ""):
        st.session_state[_WRONG] = True
        return
    token = issue_token(g)
    st.session_state[_TOKEN] = token
    st.session_state[_OPENING] = True
    # The session route sets the cookie, then opens the page asked for.
    streamlit_internals.redirect_browser(
        _root() + SESSION_ROUTE + "?" + urlencode({"ticket": _ticket_for(token), "next": _target_url(page)})
    )


# ---------------------------------------------------------------- the network edge


def is_loopback(address: Optional[str]) -> bool:
    """Whether a server bound to ``address`` is reachable from this machine only. None, '', 0.0.0.0 and ::
    mean every interface; a host name counts as loopback only if all its addresses are."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(address, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def network_exposure(address: Optional[str], g: Gate) -> tuple[Optional[str], Optional[str]]:
    """``(refusal, warning)`` for serving ``g`` on ``address``: an open app (no password, no OpenID
    Connect) is served on loopback only, unless ``allow_open_network`` says so explicitly (a warning then)."""
    if is_loopback(address) or not g.open:
        return None, None
    where = f"address {address!r}" if address and address not in ("0.0.0.0", "::") else "every network interface"
    if g.allow_open_network:
        return None, (
            f"WARNING: serving Transfer Learning Studio on {where} with no password or login: anyone who "
            "can reach this port can use it (allow_open_network is set)."
        )
    return (
        f"Refusing to serve Transfer Learning Studio on {where} with no password or login: anyone who can "
        "reach this port could use it and the server's files. Set `password` (or TL_PASSWORD) or an [auth] "
        "section in .streamlit/secrets.toml; or serve on 127.0.0.1 (the default: drop --server.address); or "
        "set TL_ALLOW_OPEN_NETWORK=1 (allow_open_network = true in secrets.toml) to serve it open anyway.",
        None,
    )


def refuse_unsafe_network() -> None:
    """At server start: exit with the reason when ``network_exposure`` refuses the configured address;
    print its warning otherwise."""
    from streamlit import config

    refusal, warning = network_exposure(config.get_option("server.address"), gate())
    if refusal:
        sys.exit(refusal)
    if warning:
        print(warning, file=sys.stderr, flush=True)
