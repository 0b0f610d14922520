"""Pieces every page uses: the sidebar status, the password gate, the live job view, cached loaders."""
from __future__ import annotations

import hmac
import os
import sys
import time
from pathlib import Path

import streamlit as st

from tl_core import device, jobs
from tl_core.runs import ACTIVE, Run
from tl_core.workspace import home


ROUTER_RAN = "_tl_router_ran"


def app_pages() -> list:
    """The app's pages, in sidebar order (the router and route_through_app share this list)."""
    return [st.Page("pages/home.py", title="Home", default=True),
            st.Page("pages/data.py", title="Data"),
            st.Page("pages/train.py", title="Train"),
            st.Page("pages/results.py", title="Results"),
            st.Page("pages/predict.py", title="Predict")]


def route_through_app() -> None:
    """Make sure this page was reached through streamlit_app.py (password gate, sidebar), or go there.

    Our pages live in a folder named pages/, so on a fresh server Streamlit's first script runs still use
    its old pages-folder mode: a deep link such as /predict runs pages/predict.py on its own, skipping the
    router and its password gate. st.navigation switches that mode off for the whole server; the rerun
    then goes through the router to the same page.
    """
    if st.session_state.get(ROUTER_RAN):
        return
    st.navigation(app_pages(), position="hidden")
    st.rerun()


def password_gate() -> None:
    """When a shared password is set (secrets 'password' or TL_PASSWORD), ask for it once per session.

    With an OpenID Connect provider configured under [auth] in secrets.toml, use st.login instead.
    """
    try:
        auth_configured = "auth" in st.secrets
        secret = st.secrets.get("password")
    except Exception:  # no secrets.toml
        auth_configured, secret = False, None
    if auth_configured:
        if not st.user.is_logged_in:
            st.title("Transfer Learning Studio")
            st.button("Log in", on_click=st.login, key="login_button")
            st.stop()
        return
    password = secret or os.environ.get("TL_PASSWORD")
    if not password or st.session_state.get("authenticated"):
        return
    st.title("Transfer Learning Studio")
    typed = st.text_input("Password", type="password", key="password_input")
    if typed:
        if hmac.compare_digest(typed, str(password)):
            st.session_state["authenticated"] = True
            st.rerun()
        st.error("Wrong password.")
    st.stop()


def current_user() -> str | None:
    try:
        if "auth" in st.secrets and st.user.is_logged_in:
            return st.user.get("email") or st.user.get("name")
    except Exception:
        pass
    return None


def sidebar_status() -> None:
    """Device, workspace and jobs; refreshed every 3 s while a job is queued or running, else every 15 s
    (every open browser tab reruns this: with many users idle, a slower poll keeps the server free)."""
    busy = any(run.state in ACTIVE for run in jobs.refresh_states())
    st.fragment(_sidebar_status_body, run_every=3 if busy else 15)()


def _sidebar_status_body() -> None:
    st.caption(f"Device: **{device.describe()}**")
    st.caption(f"Workspace: `{home()}`")
    running = jobs.active()
    waiting = jobs.queue()
    for run in running:
        progress = run.progress()
        if progress.get("epoch"):
            where = f"epoch {progress['epoch']}/{progress.get('total_epochs', '…')}"
        else:
            where = progress.get("stage") or (f"computing {progress['what']} features" if progress.get("what") else "starting")
        st.caption(f"Training: **{run.id}** — {where}")
    if waiting:
        st.caption(f"Queued: {len(waiting)} job(s)")
    if not running and not waiting:
        st.caption("No training job running.")


def stop_with(message: str, page: str, label: str) -> None:
    """Guard clause: tell the user what to do first, link the page where they do it, stop the script."""
    st.info(message)
    st.page_link(page, label=label)
    st.stop()


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def job_progress(run: Run, key: str) -> None:
    """Progress bar, stage, learning rate, elapsed and remaining time, live curves and Cancel for one run."""
    from pages import charts
    status, event = run.status(), run.progress()
    state = run.check_alive()
    st.markdown(f"**{run.id}** — {state}")
    if state == "queued":
        queued_ids = [r.id for r in jobs.queue()]
        position = queued_ids.index(run.id) + 1 if run.id in queued_ids else "?"
        st.info(f"Waiting in the queue (position {position}). It starts when a running job finishes.")
    elif state == "running":
        total, epoch = event.get("total_epochs") or 0, event.get("epoch") or 0
        batches, batch = event.get("batches") or 0, event.get("batch") or 0
        if event.get("kind") == "features":
            fraction = event["done"] / max(1, event["total"])
            text = f"Computing base features ({event['what']}): {event['done']}/{event['total']}"
        elif total:
            fraction = min(1.0, ((epoch - 1) + (batch / batches if batches and event.get("kind") == "batch" else 1)) / total)
            text = f"Epoch {epoch}/{total}" + (f", batch {batch}/{batches}" if event.get("kind") == "batch" else "")
        else:
            fraction, text = 0.0, event.get("stage", "starting…").capitalize()
        st.progress(fraction, text=text)
        elapsed = event.get("elapsed_s")
        remaining = elapsed / fraction - elapsed if elapsed and fraction > 0.02 else None
        cols = st.columns(3)
        cols[0].metric("Elapsed", _fmt_seconds(elapsed))
        cols[1].metric("Time left (est.)", _fmt_seconds(remaining))
        lr = event.get("learning_rate")
        cols[2].metric("Learning rate", f"{lr:.2g}" if lr else "…")
    elif state == "failed":
        st.error(status.get("message") or "Training failed; see the log on the Results page.")
    elif state in ("cancelled", "interrupted"):
        st.warning(status.get("message") or state)
    elif state == "finished":
        st.success(f"Finished: validation accuracy {run.metrics().get('val_accuracy', 0):.3f}. "
                   "See the Results page for curves, confusion matrix and mistakes.")
    history = run.history()
    if history:
        st.plotly_chart(charts.learning_curves(history), key=f"{key}_curves_{run.id}")
    if state in ("queued", "running"):
        if st.button("Cancel", key=f"{key}_cancel_{run.id}"):
            run.request_cancel()
            st.toast("Cancellation requested; it stops after the current batch.")


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def load_predictor(run_path: str, model_mtime: float):
    """One loaded model per run, kept across requests and users (mtime in the key: a retrain reloads)."""
    import gc

    from tl_core.predict import Predictor
    keep_tensorflow_warm_between_reruns()
    predictor = Predictor.from_run(Run(Path(run_path)))
    # After every script run Streamlit calls gc.collect(2), which walks every live object: with TensorFlow
    # loaded that is ~0.3 s of CPU per rerun, per user. TensorFlow and the model live as long as the
    # server, so move them out of the collector's sight (measured: 0.27 s -> 4 us per collection).
    gc.freeze()
    return predictor


def keep_tensorflow_warm_between_reruns() -> None:
    """Stop Streamlit from calling keras.backend.clear_session() after every script run.

    Streamlit does that (script_runner._clean_problem_modules) for apps that build Keras models in the
    page. Ours only load them, and clearing drops TensorFlow's kernel cache: the next prediction then
    costs ~280 ms instead of ~10 ms, for every user after every rerun (sidebar refreshes included).
    Measured with the load test (benchmarks/load_predict.py). Pyplot figures are still closed.
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


def predictor_for(run: Run):
    return load_predictor(str(run.root), run.model_path.stat().st_mtime)


def ensure_worker_if_queued() -> None:
    """After a server restart, queued jobs need a worker again."""
    if jobs.queue():
        jobs.ensure_worker()


def elapsed_since(start: float) -> str:
    return _fmt_seconds(time.time() - start)


if __name__ == "__main__":  # reached as a page by a deep link on a fresh server (see route_through_app)
    route_through_app()
