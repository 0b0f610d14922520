"""Monitoring: what a finished run has been asked (on the Predict page and through the REST server), against what
it saw in training: predictions per day, confidence, class mix, unknown rate, and a warning when they drift."""

import streamlit as st

from tl_app import monitor_sections, shell
from tl_core.inference.monitoring import report as monitoring_report

shell.guard()

st.title("Monitoring")
run = monitor_sections.pick_run()
days = monitor_sections.window_days()
report = monitoring_report(run, days=days)
if not report["predictions"]:
    st.info(
        "No predictions recorded for this run yet. Answers on the Predict page and from the REST server "
        "(`python -m tl_core serve`) are recorded here: time, answer, probability and unknown flag, never the image."
    )
    st.stop()
monitor_sections.headline(report)
monitor_sections.charts(report)
monitor_sections.tests_table(report)
monitor_sections.next_steps(run, report)
