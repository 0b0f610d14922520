"""Results: all runs in a table; one run's curves, confusion matrix, per-class report, mistakes and exports;
compare."""

import streamlit as st

from tl_app import compare_ui, exports, mlflow_ui, results_sections, shell, widgets

shell.guard()

st.title("Results")
jobs = widgets.backend()
runs = jobs.refresh()
if not runs:
    widgets.stop_with("No training runs yet. Start one on the Train page.", "pages/train.py", "Go to Train")

results_sections.runs_table(runs)
run = results_sections.pick_run(runs)
if run.state in ("queued", "running"):
    results_sections.live_job(run)
    st.stop()
if run.state != "finished":
    results_sections.not_finished(run, jobs)
results_sections.name_and_note(run)
results_sections.train_again(run)
metrics = run.artifacts.metrics()
if metrics:
    results_sections.headline(metrics)
    mlflow_ui.panel(run)

curves, confusion, per_class, mistakes, export, details = st.tabs(results_sections.TABS)
with curves:
    results_sections.curves(run.history())
if not metrics:
    with details:
        results_sections.config_and_log(run, jobs, trained=False)
    st.stop()

interp = run.interpretation()
dataset_name = run.dataset_name
root = results_sections.dataset_root(dataset_name)
with confusion:
    results_sections.confusion(interp, root, dataset_name)
with per_class:
    results_sections.per_class(interp)
with mistakes:
    results_sections.mistakes(run, interp, root, dataset_name)
with export:
    exports.export_panel(run)
with details:
    results_sections.config_and_log(run, jobs, trained=True)

compare_ui.leaderboard(runs, dataset_name)
results_sections.compare(runs)
