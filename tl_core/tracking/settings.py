"""Where runs are logged: the MLflow tracking URI and experiment, from the environment or a secrets file.

``TL_MLFLOW_TRACKING_URI`` (set but empty: off), else ``[mlflow] tracking_uri`` in the secrets files the app
reads (``.streamlit/secrets.toml`` in the working folder, then ``~/.streamlit/secrets.toml``), read here with
``tomllib`` so the engine needs no Streamlit. Nothing configured: logging is off. The experiment is
``TL_MLFLOW_EXPERIMENT`` or ``[mlflow] experiment``, else MLflow's own ``MLFLOW_EXPERIMENT_NAME`` or
``MLFLOW_EXPERIMENT_ID``, else MLflow's Default experiment (id ``0``).

A tracking server that does not answer must never hold a run up: ``quick_requests`` gives MLflow's HTTP
calls a short timeout and no retries unless the environment says otherwise.
"""

from __future__ import annotations

import os
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from tl_core.errors import TLError

URI_ENV, EXPERIMENT_ENV = "TL_MLFLOW_TRACKING_URI", "TL_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default" experiment
# MLflow's own defaults are a 120 s timeout and 7 retries with exponential back-off: minutes per call
REQUEST_TIMEOUT_S, REQUEST_RETRIES = "5", "0"


def secrets_files() -> list[Path]:
    """The secrets files Streamlit reads by default, the project's first (it wins over the user's)."""
    return [Path.cwd() / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"]


def _secrets_section() -> dict:
    for path in secrets_files():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        try:
            section = tomllib.loads(text).get("mlflow", {})
        except tomllib.TOMLDecodeError as exc:
            raise TLError(f"The secrets file {str(path)!r} is not valid TOML ({exc}). Fix it.") from None
        if section:
            if not isinstance(section, dict):
                raise TLError(f'[mlflow] in {str(path)!r} must be a table (tracking_uri = "..."); got {section!r}.')
            return section
    return {}


def tracking_uri() -> Optional[str]:
    """The configured tracking URI, or None when logging to MLflow is off."""
    if URI_ENV in os.environ:
        return os.environ[URI_ENV].strip() or None
    uri = _secrets_section().get("tracking_uri")
    if uri is not None and not isinstance(uri, str):
        raise TLError(f'[mlflow] tracking_uri must be a text like "http://127.0.0.1:5000"; got {uri!r}.')
    return (uri or "").strip() or None


def experiment_name() -> Optional[str]:
    """The experiment named for this app, or MLflow's own environment's; None: the id from
    ``MLFLOW_EXPERIMENT_ID``, else MLflow's Default experiment (``experiment_id``)."""
    name = (
        os.environ.get(EXPERIMENT_ENV)
        or _secrets_section().get("experiment")
        or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        or ""
    )
    return str(name).strip() or None


def experiment_id() -> str:
    """The experiment id when no experiment is named (``experiment_name`` is None)."""
    return os.environ.get("MLFLOW_EXPERIMENT_ID", "").strip() or DEFAULT_EXPERIMENT_ID


def enabled() -> bool:
    return tracking_uri() is not None


def required_uri() -> str:
    """The tracking URI, or a TLError that says how to set one."""
    uri = tracking_uri()
    if uri is None:
        raise TLError(
            f"No MLflow tracking server is configured. Set {URI_ENV} (for example http://127.0.0.1:5000), or "
            'tracking_uri = "..." under [mlflow] in .streamlit/secrets.toml.'
        )
    return uri


def job_env() -> dict[str, str]:
    """What a training job started elsewhere (a Ray job) needs in its environment to log where this process would:
    the tracking URI and experiment as resolved here (a secrets file need not exist there)."""
    try:
        uri = tracking_uri()
    except TLError:  # the job reports the broken secrets file in its own log
        return {}
    if uri is None:
        return {URI_ENV: ""} if URI_ENV in os.environ else {}
    name = experiment_name()
    return {URI_ENV: uri, **({EXPERIMENT_ENV: name} if name else {"MLFLOW_EXPERIMENT_ID": experiment_id()})}


def unreachable(uri: str) -> Optional[str]:
    """Why an http(s) tracking server cannot be reached (no connection, or no answer within the timeout), else
    None: any HTTP answer counts. Asked before MLflow is imported, so a server that is down costs a run nothing
    (not even that import). Other URIs (a local store, ``databricks``) are not checked here."""
    if not uri.startswith(("http://", "https://")):
        return None
    timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", REQUEST_TIMEOUT_S))
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:  # it answered, if only to refuse
        return None
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"


def quick_requests() -> None:
    """MLflow's HTTP calls in this process: a short timeout, no retries (unless set in the environment); and no
    "View run at" lines on standard output, where the CLI prints its JSON."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", REQUEST_TIMEOUT_S)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", REQUEST_RETRIES)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def run_url(uri: str, experiment_id: str, run_id: str) -> Optional[str]:
    """The run's page in the MLflow UI (a server URI only; a local store has no page)."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_url(uri: str, name: str, version: str) -> Optional[str]:
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/models/{name}/versions/{version}"
