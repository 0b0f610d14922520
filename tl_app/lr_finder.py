"""The Train page's learning-rate finder: run the range test for the settings on the page, draw loss against
learning rate, and set the suggested value with one click."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from tl_core.errors import TLError
from tl_core.models.config import SETTINGS, TrainConfig

from .widgets import md_escape

LEARNING_RATES = SETTINGS["learning_rate"].widget["options"]  # the Train page's learning-rate choices


def nearest_choice(lr: float) -> float:
    return min(LEARNING_RATES, key=lambda choice: abs(math.log10(choice) - math.log10(lr)))


def _use(lr: float) -> None:  # a callback: it runs before the next script run, when the slider may be set
    st.session_state["train_lr"] = nearest_choice(lr)


def curve(result: dict) -> go.Figure:
    fig = go.Figure(go.Scatter(x=result["lrs"], y=result["losses"], mode="lines", name="loss (smoothed)"))
    suggested = result["suggested_lr"]
    fig.add_vline(x=suggested, line_dash="dot")
    # on a log axis an annotation's x is the exponent (plotly), unlike the line's: add_vline's own label
    # landed at 10**suggested, about 1, beside the divergence spike
    fig.add_annotation(x=math.log10(suggested), y=1, yref="paper", text=f"suggested {suggested:.2g}", showarrow=False)
    fig.update_layout(
        xaxis_type="log",
        xaxis_title="learning rate",
        yaxis_title="training loss",
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return fig


def lr_finder_panel(config: TrainConfig) -> None:
    key = repr(sorted(config.__dict__.items()))
    found = st.session_state.get("train_lr_found")
    if st.button("Find a learning rate", key="train_lr_find"):
        from tl_core.training.lr_find import lr_find

        try:
            with st.spinner("Range test: a few dozen mini-batches at growing learning rates…"):
                found = {"key": key, "result": lr_find(config)}
        except TLError as exc:
            st.error(md_escape(str(exc)))
            return
        st.session_state["train_lr_found"] = found
    if not found:
        st.caption(
            "Trains the part of the model these settings would train for a few dozen mini-batches while the "
            "learning rate grows, and suggests one. Nothing is saved or changed."
        )
        return
    if found["key"] != key:
        st.caption("The settings changed since this curve was made; run it again for a current suggestion.")
    suggested = found["result"]["suggested_lr"]
    st.plotly_chart(curve(found["result"]), key="train_lr_curve")
    st.button(
        f"Use {nearest_choice(suggested):g} (suggested {suggested:.2g})",
        on_click=_use,
        args=(suggested,),
        key="train_lr_use",
    )
