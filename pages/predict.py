"""Predict: classify uploaded or camera images with a finished run's model (and see where it looked), or with
a pretrained classifier as it is."""

import streamlit as st

from tl_app import predict_sections, shell

shell.guard()

st.title("Predict")
run, pretrained, classes = predict_sections.pick_model()
top_k, tta, threshold = predict_sections.answer_settings(run, len(classes))
keep = predict_sections.unknown_setting(run)
options = predict_sections.view_options(run)
predict_sections.uploads_and_answers(run, pretrained, top_k, tta, threshold, options, keep)
predict_sections.batch_job(run, top_k, tta)
