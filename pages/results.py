"""Results: all runs in a table; one run's curves, confusion matrix, per-class report, mistakes and exports;
compare."""

import pandas as pd
import streamlit as st

from tl_app import charts, compare_ui, explanations, exports, fixes, shell, widgets
from tl_core.data.datasets import load_dataset
from tl_core.data.refs import parse_ref
from tl_core.errors import TLError
from tl_core.runs.store import Run

shell.guard()

st.title("Results")
jobs = widgets.backend()
runs = jobs.refresh()
if not runs:
    widgets.stop_with("No training runs yet. Start one on the Train page.", "pages/train.py", "Go to Train")

table = pd.DataFrame([r.summary() for r in runs])
st.dataframe(
    table,
    hide_index=True,
    key="results_table",
    column_config={
        "best_val_accuracy": st.column_config.NumberColumn("best val acc", format="%.3f"),
        "final_val_accuracy": st.column_config.NumberColumn("final val acc", format="%.3f"),
        "balanced_val_accuracy": st.column_config.NumberColumn("balanced acc", format="%.3f"),
        "macro_f1": st.column_config.NumberColumn("macro F1", format="%.3f"),
        "learning_rate": st.column_config.NumberColumn("lr", format="%g"),
        "duration_s": st.column_config.NumberColumn("duration (s)", format="%.1f"),
    },
)

by_id = {r.id: r for r in runs}
finished = [r.id for r in runs if r.listed_state == "finished"]
default = st.query_params.get("run") if st.query_params.get("run") in by_id else (finished or list(by_id))[0]
run: Run = by_id[st.selectbox("Run", list(by_id), index=list(by_id).index(default), key="results_run")]
st.query_params["run"] = run.id

if run.state in ("queued", "running"):

    @st.fragment(run_every=2)
    def live():
        widgets.job_progress(run, key="results")

    live()
    st.stop()

status = run.status()
if run.state != "finished":
    st.warning(f"This run is {run.state}: {status.get('message') or ''}")
    if run.can_resume() and st.button("Resume from its checkpoint", key="results_resume"):
        jobs.resume(run)
        st.rerun()
metrics = run.artifacts.metrics()
history = run.history()
cfg = run.config

if metrics:
    cols = st.columns(5)
    cols[0].metric("Validation accuracy", f"{metrics['val_accuracy']:.3f}")
    if "val_balanced_accuracy" in metrics:
        cols[1].metric(
            "Balanced accuracy",
            f"{metrics['val_balanced_accuracy']:.3f}",
            help="mean recall over classes: what plain accuracy hides when one class dominates",
        )
        cols[2].metric("Macro F1", f"{metrics['val_macro_f1']:.3f}")
    cols[3].metric("Validation images", metrics["num_val_images"])
    cols[4].metric("Training time", f"{metrics.get('duration_s', 0):.0f} s")
    if "temperature" in metrics:
        st.caption(
            f"Calibration (temperature scaling on the validation split): expected calibration error "
            f"{metrics['ece_before']:.3f} → {metrics['ece_after']:.3f} at temperature "
            f"{metrics['temperature']:.2f}. Predict shows calibrated probabilities."
        )

curves, confusion, per_class, mistakes, export, details = st.tabs(
    ["Learning curves", "Confusion matrix", "Per class", "Mistakes", "Export", "Config & log"]
)
with curves:
    if history:
        st.plotly_chart(charts.learning_curves(history), key="results_curves")
    else:
        st.info("No epochs recorded.")
if not metrics:
    with details:
        st.json(cfg.__dict__)
        st.code(jobs.logs(run) or "(empty log)")
    st.stop()

interp = run.interpretation()
dataset_name = parse_ref(run.config.data).name
try:
    root = load_dataset(dataset_name).root
except TLError:
    root = None  # the dataset was deleted: results stay readable, images cannot be shown or fixed

with confusion:
    normalized = st.toggle("Row-normalised", key="results_normalized")
    st.plotly_chart(
        charts.confusion_heatmap(interp.confusion_matrix(normalize=normalized), interp.class_names, normalized),
        key="results_confusion",
    )
    if root:
        with st.expander("Images in a cell, and fixing their labels"):
            left, right = st.columns(2)
            true = left.selectbox("True class", interp.class_names, key="results_cell_true")
            predicted = right.selectbox(
                "Predicted class",
                interp.class_names,
                key="results_cell_pred",
                index=min(1, len(interp.class_names) - 1),
            )
            cell = [f for f in interp.in_cell(true, predicted) if (root / f).exists()][:12]
            st.caption(f"{len(cell)} image(s) shown (true {true}, predicted {predicted}).")
            for index, file in enumerate(cell):
                thumb, name, action = st.columns([1, 3, 2], vertical_alignment="center")
                thumb.image(str(root / file), width=96)
                name.markdown(f"`{file}`")
                with action:
                    fixes.fix_select(
                        dataset_name,
                        file,
                        true,
                        interp.class_names,
                        key=f"results_cell_fix_{index}",
                        suggested=predicted,
                    )
            fixes.save_bar(dataset_name, key="results_cell_fixes")
with per_class:
    st.dataframe(pd.DataFrame(interp.per_class()), hide_index=True, key="results_per_class")
    st.markdown("**Most confused pairs**")
    pairs = interp.most_confused()
    st.dataframe(pd.DataFrame(pairs), hide_index=True, key="results_confused") if pairs else st.caption("None.")
with mistakes:
    wrong = interp.misclassified()
    if not wrong:
        st.success("No misclassified validation images.")
    else:
        st.caption(f"{len(wrong)} misclassified validation image(s), most confident mistakes first.")
        grid = st.columns(4)
        for i, row in enumerate(wrong[:24]):
            with grid[i % 4]:
                path = root / row["file"] if root else None
                if path and path.exists():
                    st.image(str(path), width=160)
                st.caption(f"true **{row['true']}** → predicted **{row['predicted']}** ({row['probability']:.0%})")
        if root and st.toggle("Where did it look? (Grad-CAM of a mistake)", key="results_cam_on"):
            shown = [row for row in wrong[:24] if (root / row["file"]).exists()]
            picked = st.selectbox(
                "Mistake",
                range(len(shown)),
                key="results_cam_pick",
                format_func=lambda i: f"{shown[i]['file']}: true {shown[i]['true']}, predicted {shown[i]['predicted']}",
            )
            if shown:
                mistake = shown[picked]
                explanations.gradcam_view(
                    run, (root / mistake["file"]).read_bytes(), mistake["predicted"], key="results_cam"
                )
                fixes.fix_select(
                    dataset_name,
                    mistake["file"],
                    mistake["true"],
                    interp.class_names,
                    key=f"results_cam_fix_{picked}",
                    suggested=mistake["predicted"],
                )
                fixes.save_bar(dataset_name, key="results_cam_fixes")
with export:
    exports.export_panel(run)
with details:
    st.json(cfg.__dict__, expanded=False)
    st.code(jobs.logs(run) or "(empty log)")
    # the zip is built when the button is clicked, not on every rerun of this page
    st.download_button(
        "Download model (zip)",
        run.artifacts.bundle,
        file_name=f"{run.id}.zip",
        mime="application/zip",
        key="results_download",
    )

compare_ui.leaderboard(runs, dataset_name)

st.subheader("Compare runs")
chosen = st.multiselect("Runs to compare", finished, default=finished[:2], key="results_compare")
if len(chosen) >= 2:
    st.plotly_chart(charts.compare_curves({rid: by_id[rid].history() for rid in chosen}), key="results_compare_chart")
    board = pd.DataFrame([by_id[rid].summary() for rid in chosen]).sort_values("final_val_accuracy", ascending=False)
    st.dataframe(
        board[
            [
                "run",
                "base",
                "head",
                "freeze_depth",
                "learning_rate",
                "epochs",
                "best_val_accuracy",
                "final_val_accuracy",
                "balanced_val_accuracy",
                "macro_f1",
                "duration_s",
            ]
        ],
        hide_index=True,
        key="results_leaderboard",
    )
else:
    st.caption("Pick two or more finished runs to overlay their validation curves.")
