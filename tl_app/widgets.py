"""Pieces several pages draw: the sidebar status, the live job panel, guard-clause helpers."""

from __future__ import annotations

import re

import streamlit as st

from tl_core.backends import get_backend
from tl_core.backends.base import ExecutionBackend
from tl_core.errors import TLError
from tl_core.runs.store import ACTIVE, Run
from tl_core.workspace import home

from . import auth, charts


def backend() -> ExecutionBackend:
    return get_backend()


IDLE_POLL_S = 60


def sidebar_status() -> None:
    """Backend, device, workspace and jobs; refreshed every 3 s while a job is queued or running, else every
    IDLE_POLL_S (every open tab reruns this, each time costing server CPU: docs/performance.md; any click on
    the page refreshes it anyway)."""
    busy = any(run.listed_state in ACTIVE for run in backend().refresh())
    st.fragment(_sidebar_status_body, run_every=3 if busy else IDLE_POLL_S)()


def _sidebar_status_body() -> None:
    jobs = backend()
    about = jobs.describe()
    if "cluster" in about:  # Ray: the cluster's CPUs and GPUs, and the runs waiting for them
        st.caption(f"Cluster: **{about['cluster']}**")
    else:
        st.caption(f"Device: **{about['device']}**")
    if auth.is_admin():  # a server path is for whoever runs the server, not every visitor
        st.caption(f"Workspace: `{home()}`")
    st.caption(f"Runs on: {about['backend']}")
    if about.get("waiting"):
        st.caption(f"Waiting for cluster resources: {about['waiting']} run(s)")
    runs = jobs.refresh()  # one listing for the whole panel
    running, waiting = jobs.active(runs), jobs.queue(runs)
    for run in running:
        progress = run.progress()
        if progress.get("epoch"):
            where = f"epoch {progress['epoch']}/{progress.get('total_epochs', '…')}"
        else:
            where = progress.get("stage") or (
                f"computing {progress['what']} features" if progress.get("what") else "starting"
            )
        st.caption(f"Training: **{md_escape(run.id)}** — {md_escape(str(where))}")
    if waiting:
        st.caption(f"Queued: {len(waiting)} job(s)")
    if not running and not waiting:
        st.caption("No training job running.")


def stop_with(message: str, page: str, label: str) -> None:
    """Guard clause: tell the user what to do first, link the page where they do it, stop the script."""
    st.info(message)
    st.page_link(page, label=label)
    st.stop()


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "…"
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _progress_line(event: dict) -> tuple[float, str]:
    total, epoch = event.get("total_epochs") or 0, event.get("epoch") or 0
    batches, batch = event.get("batches") or 0, event.get("batch") or 0
    if event.get("kind") == "features":
        return event["done"] / max(
            1, event["total"]
        ), f"Computing base features ({event['what']}): {event['done']}/{event['total']}"
    if total:
        in_batch = event.get("kind") == "batch"
        fraction = min(1.0, ((epoch - 1) + (batch / batches if batches and in_batch else 1)) / total)
        return fraction, f"Epoch {epoch}/{total}" + (f", batch {batch}/{batches}" if in_batch else "")
    return 0.0, event.get("stage", "starting…").capitalize()


def job_progress(run: Run, key: str) -> None:
    """Progress bar, stage, learning rate, elapsed and remaining time, live curves and Cancel for one run."""
    jobs = backend()
    state = jobs.check_alive(run)
    status, event = run.status(), run.progress()
    st.markdown(f"**{md_escape(run.id)}** — {state}")
    if state == "queued":
        runs = jobs.refresh()
        queued_ids = [r.id for r in jobs.queue(runs)]
        position = queued_ids.index(run.id) + 1 if run.id in queued_ids else "?"
        if position == 1 and not jobs.active(runs):  # nothing runs: it is next, not waiting on anyone
            st.info("Next in the queue: the background worker starts it in a moment.")
        else:
            st.info(f"Waiting in the queue (position {position}). It starts when the job(s) before it finish.")
    elif state == "running":
        fraction, text = _progress_line(event)
        elapsed = event.get("elapsed_s")
        if "overall_fraction" in event:  # the whole run, from each phase's measured cost
            fraction, remaining = event["overall_fraction"], event["remaining_s"]
        elif event.get("phase") == "fine-tune" or run.config.fine_tune_depth is not None:
            remaining = None  # a phase's share says nothing of the run's time when phases cost unlike
        else:  # an older run's progress: one phase, evenly spent
            remaining = elapsed / fraction - elapsed if elapsed and fraction > 0.02 else None
        st.progress(min(1.0, fraction), text=text)
        cols = st.columns(3)
        cols[0].metric("Elapsed", fmt_seconds(elapsed))
        cols[1].metric("Time left (est.)", fmt_seconds(remaining))
        lr = event.get("learning_rate")
        cols[2].metric("Learning rate", f"{lr:.2g}" if lr else "…")
    elif state == "failed":
        st.error(md_escape(status.get("message") or "Training failed; see the log on the Results page."))
    elif state in ("cancelled", "interrupted"):
        st.warning(md_escape(status.get("message") or state))
    elif state == "finished":
        st.success(
            f"Finished: validation accuracy {run.artifacts.metrics().get('val_accuracy', 0):.3f}. "
            "See the Results page for curves, confusion matrix and mistakes."
        )
    history = run.history()
    if history:
        st.plotly_chart(charts.learning_curves(history), key=f"{key}_curves_{run.id}")
    if state in ACTIVE:
        owner = status.get("user")
        if not auth.may_cancel(owner):
            st.caption(f"Only {md_escape(owner) if owner else 'its owner'} or an admin can cancel this run.")
        elif st.button("Cancel", key=f"{key}_cancel_{run.id}"):
            try:
                jobs.cancel(run, user=auth.current_user())
                st.toast("Cancellation requested; it stops after the current batch.")
            except TLError as exc:
                st.warning(md_escape(str(exc)))


def validation_coverage(run: Run) -> list[dict]:
    """The run's accuracy-against-coverage curve on its validation images, as its calibrated model answers."""
    from tl_core.training.calibration import coverage_curve

    interp = run.interpretation()
    return coverage_curve(interp.probs, interp.y_true) if interp is not None else []


THUMBNAIL_WIDTH = 200


@st.cache_resource(max_entries=2048, show_spinner=False)
def thumbnail(data: bytes) -> bytes:
    """A small JPEG of an uploaded image, made once per image for every user: Streamlit would otherwise decode
    and shrink the full photo on every rerun that shows it (call it for images that decoded)."""
    from tl_core.data.images import thumbnail_jpeg

    return thumbnail_jpeg(data, (THUMBNAIL_WIDTH, 4 * THUMBNAIL_WIDTH))


def md_escape(text: str) -> str:
    """User text (file, folder, class, dataset and run names, and messages quoting them) shown literally inside
    Markdown: the characters that make links and images, emphasis, code, HTML, headings, tables, maths and
    Streamlit's ``:color[...]`` directives are escaped; ordinary punctuation stays readable in the source."""
    return re.sub(r"([\\`*_\[\]#|<>~$!])", r"\\\1", text)
