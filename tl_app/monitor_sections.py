"""Monitoring: the page's sections (a finished run's recorded predictions against what it saw in training), and
the Predict page's recording of its answers (``tl_core/inference/monitoring.py`` owns the log and the tests)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from tl_core.data.refs import parse_ref
from tl_core.inference import monitoring
from tl_core.runs.store import Run

from . import widgets
from .results_sections import pick_finished_run
from .retrain import train_again_panel

RECORDED = "monitor_recorded"  # session state: the uploads this session has recorded, per run and view


def record_answers(run: Run, upload_ids: list[str], results: list[dict], tta: str) -> None:
    """Record the answers of uploads this session has not recorded yet (the page reruns with the same ones)."""
    done = st.session_state.setdefault(RECORDED, set())
    fresh = [
        (key, result)
        for key, result in ((f"{run.id}:{tta}:{upload}", result) for upload, result in zip(upload_ids, results))
        if key not in done and "top_k" in result
    ]
    if not fresh:
        return
    class_index = {name: i for i, name in enumerate(run.artifacts.class_names())}
    rows = monitoring.records(
        [class_index.get(r["top_k"][0]["label"], -1) for _, r in fresh],
        [r["top_k"][0]["probability"] for _, r in fresh],
        [r.get("unknown") for _, r in fresh],
        [r.get("distance") for _, r in fresh],
        "app",
    )
    monitoring.append(run.id, rows)  # a page's few answers: written now, no buffer to lose
    done.update(key for key, _ in fresh)


def pick_run() -> Run:
    """A finished run (the URL's ?run=, else the last chosen, else the dataset's best); with none, the page stops."""
    return pick_finished_run(
        "monitor_run",
        "No trained model yet, so nothing to watch. Train one, then its predictions on the Predict page and "
        "through the REST server (`python -m tl_core serve`) are recorded here.",
    )


def window_days() -> float:
    return float(st.number_input("Drift tests look at the last N days", 1, 365, 7, key="monitor_days"))


def headline(report: dict) -> None:
    left, middle, right, last = st.columns(4)
    left.metric("Predictions recorded", f"{report['predictions']:,}")
    middle.metric(f"In the last {report['window_days']:g} days", f"{report['window_predictions']:,}")
    rate = report["unknown_rate"]
    right.metric("Unknown rate", "not measured" if rate is None else f"{rate:.1%}")
    last.metric("Drift", "yes" if report["drift"] else "no")
    for warning in report["warnings"]:
        st.warning(widgets.md_escape(warning))
    if not report["drift"]:
        st.success("No drift found by the tests below (or too few predictions yet for them).")


def per_day_figure(per_day: dict) -> go.Figure:
    """One bar per calendar day (``YYYY-MM-DD``) from the first recorded to the last, quiet days at 0. The days
    are categories: as dates, plotly drew a single day's bar on an axis of milliseconds."""
    days = [d.strftime("%Y-%m-%d") for d in pd.date_range(min(per_day), max(per_day))] if per_day else []
    figure = go.Figure(go.Bar(x=days, y=[per_day.get(day, 0) for day in days]))
    return figure.update_layout(title="Predictions per day (UTC)", height=280, margin=dict(t=40, b=20)).update_xaxes(
        type="category"
    )


def charts(report: dict) -> None:
    st.plotly_chart(per_day_figure(report["per_day"]), key="monitor_per_day")
    confidence = report["confidence"]
    edges = confidence["histogram_edges"]
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    figure = go.Figure()
    for name, counts in (("recorded", confidence["histogram"]), ("validation", confidence["validation_histogram"])):
        total = sum(counts) or 1
        figure.add_bar(x=centres, y=[c / total for c in counts], name=name)
    st.plotly_chart(
        figure.update_layout(title="Top probability: recorded vs validation", height=280, margin=dict(t=40, b=20)),
        key="monitor_confidence",
    )
    mix = report["class_mix"]
    answers, total = mix["answers"], sum(mix["answers"].values()) or 1
    figure = go.Figure()
    figure.add_bar(x=list(answers), y=[n / total for n in answers.values()], name="answers (window)")
    figure.add_bar(x=list(mix["training_share"]), y=list(mix["training_share"].values()), name="training images")
    st.plotly_chart(
        figure.update_layout(title="Class mix: answers vs training", height=300, margin=dict(t=40, b=20)),
        key="monitor_class_mix",
    )


def tests_table(report: dict) -> None:
    rows = [
        {
            "what": what,
            "test": test["test"],
            "predictions": test.get("n"),
            "p-value": test.get("p_value"),
            "drift": test.get("flagged", "too few predictions"),
        }
        for what, test in report["tests"].items()
    ]
    st.dataframe(pd.DataFrame(rows).astype({"drift": str}), hide_index=True, key="monitor_tests")


def next_steps(run: Run, report: dict) -> None:
    """When the inputs drift: label what the model is shown (the Inbox), then train again with the same settings
    on the dataset's newest version."""
    if not report["drift"]:
        return
    st.subheader("Close the loop")
    st.caption(
        "Label photos like the ones it is shown now: keep them from the Predict page, or run the REST server with "
        "`serve --capture DATASET`, then accept them in the Inbox as a new dataset version and train again."
    )
    st.page_link("pages/inbox.py", label="Open the Inbox", icon=":material/inbox:")
    train_again_panel(run, parse_ref(run.dataset_name).name, key="monitor")
