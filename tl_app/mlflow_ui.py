"""The Results page's MLflow section: the run's page in MLflow, logging it there when it is not yet, and
"Register in MLflow" under a name people give. Nothing shows while no tracking server is configured."""

from __future__ import annotations

import streamlit as st

from tl_core.errors import TLError
from tl_core.runs.store import Run
from tl_core.tracking import settings

from . import auth, widgets


def _links(record: dict) -> None:
    if record.get("url"):
        st.link_button("Open this run in MLflow", record["url"], icon=":material/open_in_new:")
    else:
        st.caption(f"Logged as MLflow run `{record.get('run_id')}` at {widgets.md_escape(record['tracking_uri'])}.")
    for model in record.get("models", []):
        name = widgets.md_escape(model["name"])
        line = f"Registered as **{name}** version {model['version']}"
        st.markdown(f"{line}: [open in MLflow]({model['url']})" if model.get("url") else line)


def _still_logging(run: Run, record: dict, uri: str) -> bool:
    """Whether the run's own process is still logging it there (started, neither complete nor failed)."""
    started = record.get("run_id") and record.get("tracking_uri") == uri
    return bool(started and not record.get("complete") and not record.get("error")) and widgets.backend().is_alive(run)


def panel(run: Run) -> None:
    """For a finished run while MLflow is configured: its link, "Log to MLflow" when it is not logged there, and
    the register form (for whoever may change the run, ``auth.may_cancel``)."""
    try:
        uri = settings.tracking_uri()
    except TLError as exc:
        st.warning(widgets.md_escape(str(exc)))
        return
    if uri is None or run.state != "finished":
        return
    record = run.mlflow()
    logged = bool(record.get("complete")) and record.get("tracking_uri") == uri
    may_change = auth.may_cancel(run.status().get("user"))
    with st.expander("MLflow", expanded=False, icon=":material/science:"):
        if logged:
            _links(record)
        elif _still_logging(run, record, uri):
            # the run shows finished while its process still sends the model: a second log would be a duplicate
            st.caption(
                f"The run's process is still logging it and its model to {widgets.md_escape(uri)} "
                f"(MLflow run `{record['run_id']}`); reload in a moment."
            )
        else:
            st.caption(f"This run is not logged at {widgets.md_escape(uri)} yet.")
            if record.get("error"):
                st.caption(f"Last attempt: {widgets.md_escape(record['error'])}")
            if may_change and st.button("Log to MLflow", key="results_mlflow_log", icon=":material/upload:"):
                from tl_core.tracking.mlflow_runs import log_finished

                try:
                    with st.spinner("Logging the run and its model to MLflow..."):
                        log_finished(run, again=True)
                except TLError as exc:
                    st.error(widgets.md_escape(str(exc)))
                    return
                st.rerun()
        if not may_change:
            return
        with st.form(f"results_mlflow_register_{run.id}", border=False):
            name = st.text_input(
                "Registered model name",
                value=run.name or run.dataset_name,
                key=f"results_mlflow_name_{run.id}",
                help="A new version of that model when the name is already registered.",
            )
            submitted = st.form_submit_button("Register in MLflow", key="results_mlflow_register")
    if submitted:
        from tl_core.tracking.mlflow_runs import register

        try:
            with st.spinner("Registering in MLflow..."):
                registered = register(run, name)
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))
            return
        st.toast(f"Registered as {registered['name']} version {registered['version']}.")
        st.rerun()
