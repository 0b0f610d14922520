"""Plotly figures for the pages: drawn from saved run data, never computed here."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def learning_curves(history: list[dict], title: str = "") -> go.Figure:
    """Loss and accuracy, train vs validation, with a marker where fine-tuning starts."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    epochs = [row["epoch"] for row in history]
    for col, metric in ((1, "loss"), (2, "accuracy")):
        for prefix, name, dash in (("", "train", "solid"), ("val_", "validation", "dot")):
            values = [row.get(prefix + metric) for row in history]
            if any(isinstance(v, float) for v in values):
                fig.add_trace(
                    go.Scatter(x=epochs, y=values, mode="lines+markers", name=f"{name} {metric}", line={"dash": dash}),
                    row=1,
                    col=col,
                )
    starts = [
        row["epoch"]
        for i, row in enumerate(history)
        if row.get("phase") == "fine-tune" and (i == 0 or history[i - 1].get("phase") != "fine-tune")
    ]
    for epoch in starts:
        for col in (1, 2):
            fig.add_vline(x=epoch - 0.5, line_dash="dash", line_color="gray", row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(
        height=360, margin={"t": 40, "b": 10}, title=title or None, legend={"orientation": "h", "y": -0.3}
    )
    return fig


def confusion_heatmap(matrix, class_names: list[str], normalized: bool) -> go.Figure:
    """Counts, or rows already normalised by ``Interpretation.confusion_matrix(normalize=True)``."""
    matrix = np.asarray(matrix, dtype=float)
    text = [[f"{v:.2f}" if normalized else f"{int(v)}" for v in row] for row in matrix]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=class_names,
            y=class_names,
            text=text,
            texttemplate="%{text}" if len(class_names) <= 20 else None,  # numbers in cells only while readable
            colorscale="Blues",
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        height=min(1600, max(320, 40 * len(class_names) + 120)),
        margin={"t": 20},
    )
    return fig


def class_counts(manifest: dict) -> go.Figure:
    classes = manifest["classes"]
    splits = sorted({s for counts in manifest["class_counts"].values() for s in counts})
    fig = go.Figure(
        [
            go.Bar(name=split, x=classes, y=[manifest["class_counts"][c].get(split, 0) for c in classes])
            for split in splits
        ]
    )
    fig.update_layout(barmode="stack", height=300, margin={"t": 20}, yaxis_title="images")
    return fig


def compare_curves(series: dict[str, list[dict]], metric: str = "val_accuracy") -> go.Figure:
    fig = go.Figure()
    for name, history in series.items():
        fig.add_trace(
            go.Scatter(
                x=[r["epoch"] for r in history], y=[r.get(metric) for r in history], mode="lines+markers", name=name
            )
        )
    fig.update_layout(height=340, xaxis_title="epoch", yaxis_title=metric.replace("_", " "), margin={"t": 20})
    return fig


def class_colours(classes: list[str]) -> dict[str, str]:
    """One colour per class of a dataset, by the class's place in the dataset: the same on every render and
    whatever the filter shows (ten clearly distinct colours, twenty-six beyond ten classes, then repeated)."""
    import plotly.express as px

    palette = px.colors.qualitative.D3 if len(classes) <= 10 else px.colors.qualitative.Alphabet
    return {name: palette[index % len(palette)] for index, name in enumerate(classes)}


def embedding_map(points, classes: list[str]) -> go.Figure:
    """A scatter of the 2-D embedding (a DataFrame with x, y, class, split, file, flag), one trace and colour
    per class of ``classes`` (the dataset's, so colours stay put); images flagged (misclassified in the chosen
    run) are drawn as crosses. Each point's customdata is its file."""
    colours = class_colours(classes)
    fig = go.Figure()
    for name in classes:
        rows = points[points["class"] == name]
        if rows.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=rows["x"],
                y=rows["y"],
                mode="markers",
                name=name,
                marker={
                    "color": colours[name],
                    "symbol": ["x" if flag else "circle" for flag in rows["flag"]],
                    "size": 7,
                },
                customdata=rows[["file"]].to_numpy(),
                text=rows["split"],
                hovertemplate="%{customdata[0]}<br>" + name + ", %{text}<extra></extra>",
            )
        )
    fig.update_layout(
        height=520,
        legend_title_text="class",
        xaxis_title=None,
        yaxis_title=None,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
    )
    return fig


def coverage(curve: list[dict], threshold: float) -> go.Figure:
    """Validation accuracy and the share of images answered, against the "not sure" threshold."""
    x = [row["threshold"] for row in curve]
    fig = go.Figure(
        [
            go.Scatter(x=x, y=[row["accuracy"] for row in curve], name="accuracy when answered"),
            go.Scatter(x=x, y=[row["coverage"] for row in curve], name="share answered", line={"dash": "dot"}),
        ]
    )
    fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"threshold {threshold:.2f}")
    fig.update_layout(
        height=300,
        xaxis_title="not sure below this probability",
        yaxis_range=[0, 1.02],
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
    )
    return fig
