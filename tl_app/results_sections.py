"""The Results page's sections: the runs table and the run choice, one run's name and note, "train again", its
metrics, curves, confusion matrix, per-class report, mistakes and details, and the comparison of runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd
import streamlit as st

from tl_core.data.datasets import load_dataset
from tl_core.errors import TLError
from tl_core.runs import table
from tl_core.runs.accuracy import FEW_VALIDATION_IMAGES, accuracy_interval
from tl_core.runs.store import NAME_MAX, NOTE_MAX, Run, feature_pass, feature_words

from . import auth, charts, explanations, fixes, train_form, widgets

if TYPE_CHECKING:  # sklearn loads with it: the page imports it only when a run has results
    from tl_core.runs.evaluate import Interpretation

FINAL_ACCURACY_HELP = (
    "The saved model's accuracy on the validation images, evaluated once training ended (early stopping had "
    "restored the best epoch's weights): the figure a run's page shows."
)
BEST_EPOCH_HELP = (
    "The best validation accuracy logged for one epoch during training. The saved model's evaluation "
    "(val acc, final model) can differ slightly."
)
FEATURES_HELP = (
    "'reused cached features': the run computed none of its base's features, it reused those an earlier run "
    "with the same base and images computed, so its time leaves out that pass."
)
TABLE_COLUMNS = {
    "name": st.column_config.TextColumn("name"),
    "final_val_accuracy": st.column_config.NumberColumn(
        "val acc (final model)", format="%.3f", help=FINAL_ACCURACY_HELP
    ),
    "best_val_accuracy": st.column_config.NumberColumn("best epoch val acc", format="%.3f", help=BEST_EPOCH_HELP),
    "balanced_val_accuracy": st.column_config.NumberColumn("balanced acc", format="%.3f"),
    "macro_f1": st.column_config.NumberColumn("macro F1", format="%.3f"),
    "learning_rate": st.column_config.NumberColumn("lr", format="%g"),
    "duration_s": st.column_config.NumberColumn("duration (s)", format="%.1f"),
    "features": st.column_config.TextColumn("feature pass", help=FEATURES_HELP),
    "features_cached": None,  # said in words by "feature pass"
}
TABS = ["Learning curves", "Confusion matrix", "Per class", "Mistakes", "Export", "Config & log"]
SHOWN_MISTAKES = 24

MAX_HEATMAP_CLASSES = 50  # beyond this a heatmap is megabytes of cells nobody can read


def runs_table(runs: list[Run]) -> None:
    st.dataframe(
        pd.DataFrame(table.runs_table(runs)), hide_index=True, key="results_table", column_config=TABLE_COLUMNS
    )


CHOSEN_RUN = "chosen_run"  # the run this browser session picked last, on Results or Predict


def remember_choice(key: str) -> None:
    """A run picker's ``on_change``: the run picked (only a pick, never a default) opens Results and Predict
    for the rest of the browser session."""
    st.session_state[CHOSEN_RUN] = st.session_state[key]


def pick_finished_run(key: str, when_none: str, describe=None) -> Run:
    """A finished run with a model, for Predict and Monitoring: the URL's ``?run=``, else the run this session
    picked last (here or on Results), else the best; kept in the URL. With none, the page stops saying
    ``when_none``. ``describe(run)`` labels the choices (default: ``table.run_label``)."""
    finished = [r for r in widgets.backend().refresh() if r.listed_state == "finished" and r.artifacts.has_model()]
    if not finished:
        widgets.stop_with(when_none, "pages/train.py", "Go to Train")
    by_id = {r.id: r for r in finished}
    default = table.default_run_id(finished, st.query_params.get("run"), st.session_state.get(CHOSEN_RUN))
    run_id = st.selectbox(
        "Model (finished run)",
        list(by_id),
        index=list(by_id).index(default),
        key=key,
        format_func=lambda rid: (describe or table.run_label)(by_id[rid]),
        on_change=remember_choice,
        args=(key,),
    )
    st.query_params["run"] = run_id
    return by_id[run_id]


def pick_run(runs: list[Run]) -> Run:
    """The run chosen in the selectbox: the URL's ``?run=``, else the run this session picked last, else the best
    finished run of the dataset last trained on (kept in the URL for a reload or a link)."""
    by_id = {run.id: run for run in runs}
    default = table.default_run_id(runs, st.query_params.get("run"), st.session_state.get(CHOSEN_RUN))
    chosen = st.selectbox(
        "Run",
        list(by_id),
        index=list(by_id).index(default),
        key="results_run",
        format_func=lambda rid: table.run_label(by_id[rid]),
        on_change=remember_choice,
        args=("results_run",),
    )
    run = by_id[chosen]
    st.query_params["run"] = run.id
    return run


def name_and_note(run: Run) -> None:
    """The run's name and note: shown, and editable by whoever may cancel it (``auth.may_cancel``)."""
    meta = run.meta()
    if meta["name"]:
        st.subheader(widgets.md_escape(meta["name"]))
    if not auth.may_cancel(run.status().get("user")):
        if meta["note"]:
            st.caption(widgets.md_escape(meta["note"]))
        return
    with st.expander("Name and note", expanded=not meta["name"]):
        with st.form(f"results_meta_{run.id}", border=False):
            name = st.text_input("Name", meta["name"], max_chars=NAME_MAX, key=f"results_name_{run.id}")
            note = st.text_area("Note", meta["note"], max_chars=NOTE_MAX, key=f"results_note_{run.id}")
            saved = st.form_submit_button("Save name and note", key="results_meta_save")
    if saved:
        try:
            run.set_meta(name, note, user=auth.current_user())
        except TLError as exc:
            st.error(widgets.md_escape(str(exc)))
            return
        st.toast("Saved the run's name and note.")
        st.rerun()  # the runs table above shows the name


def train_again(run: Run) -> None:
    """Open the Train page with every setting of this run filled in (``train_form.prefill_from_run``)."""
    if st.button("Train again with these settings", key="results_train_again", icon=":material/replay:"):
        st.session_state[train_form.AGAIN] = run.id
        st.switch_page("pages/train.py")


@st.fragment(run_every=2)
def live_job(run: Run) -> None:
    """A queued or running run's progress, redrawn every 2 s without rerunning the page."""
    widgets.job_progress(run, key="results")


def not_finished(run: Run, jobs) -> None:
    """Why a run that is done did not finish, and the resume button when it has a checkpoint."""
    st.warning(widgets.md_escape(f"This run is {run.state}: {run.status().get('message') or ''}"))
    if run.can_resume() and st.button("Resume from its checkpoint", key="results_resume"):
        jobs.resume(run)
        st.rerun()


def headline(metrics: dict) -> None:
    images = metrics["num_val_images"]
    low, high = accuracy_interval(metrics["val_accuracy"], images)
    cols = st.columns(5)
    cols[0].metric(
        "Validation accuracy",
        f"{metrics['val_accuracy']:.3f}",
        help=f"{FINAL_ACCURACY_HELP} 95% interval {low:.2f}-{high:.2f} on {images} validation images (Wilson "
        "score). The runs table calls it 'val acc (final model)'; its 'best epoch val acc' is the value logged "
        "during training.",
    )
    if "val_balanced_accuracy" in metrics:
        cols[1].metric(
            "Balanced accuracy",
            f"{metrics['val_balanced_accuracy']:.3f}",
            help="mean recall over classes: what plain accuracy hides when one class dominates",
        )
        cols[2].metric("Macro F1", f"{metrics['val_macro_f1']:.3f}")
    cols[3].metric("Validation images", metrics["num_val_images"])
    features = feature_pass(metrics)
    cols[4].metric(
        "Training time",
        f"{metrics.get('duration_s', 0):.0f} s",
        delta=feature_words(features) if features and features["reused"] else None,
        delta_color="off",
        delta_arrow="off",
        help=FEATURES_HELP,
    )
    if images < FEW_VALIDATION_IMAGES:
        st.warning(
            f"Only {images} validation image(s): the accuracy could be anywhere from {low:.2f} to {high:.2f} "
            f"(95% interval). Add images, or a larger validation split, before trusting it."
        )
    if "temperature" in metrics:
        st.caption(
            f"Calibration (temperature scaling on the validation split): expected calibration error "
            f"{metrics['ece_before']:.3f} → {metrics['ece_after']:.3f} at temperature "
            f"{metrics['temperature']:.2f}, inside the model: every probability shown here, on Predict, from "
            "the CLI, the REST server and the exports is calibrated."
        )
    autopilot_note(metrics)


def autopilot_note(metrics: dict) -> None:
    """What the time budget's autopilot chose after the head, and why (``metrics.json``'s ``autopilot``)."""
    pilot = metrics.get("autopilot") or {}
    if pilot.get("decision") in (None, "off"):
        return
    words = (
        f"Autopilot ({pilot['budget_s']:g} s budget): **{pilot['decision']}**. "
        + widgets.md_escape(pilot["reason"])
        + "."
    )
    if pilot.get("kept") == "head":
        words += (
            f" The fine-tuned model reached {pilot.get('fine_tune_val_accuracy')} validation accuracy against the "
            f"head's {pilot.get('head_val_accuracy')}: the head was kept."
        )
    elif pilot.get("kept") == "fine-tuned":
        words += (
            f" Fine-tuned at learning rate {pilot['learning_rate']:.1e}; kept ({pilot['fine_tune_val_accuracy']} "
            f"validation accuracy against the head's {pilot['head_val_accuracy']}). Train again repeats it."
        )
    st.info(words)


def curves(history: list[dict]) -> None:
    if history:
        st.plotly_chart(charts.learning_curves(history), key="results_curves")
    else:
        st.info("No epochs recorded.")


def dataset_root(name: str) -> Optional[Path]:
    """The images folder of the run's dataset; None once the dataset is deleted (results stay readable,
    images cannot be shown or fixed)."""
    try:
        return load_dataset(name).root
    except TLError:
        return None


def confusion(interp: Interpretation, root: Optional[Path], dataset: str) -> None:
    """The confusion matrix; with the dataset still there, one cell's images and their fixes."""
    normalized = st.toggle("Row-normalised", key="results_normalized")
    names = interp.class_names
    matrix, shown = interp.confusion_focus(MAX_HEATMAP_CLASSES, normalize=normalized)
    if len(shown) < len(names):
        st.caption(
            f"{len(names)} classes: the {len(shown)} with the most mistakes are drawn; "
            "Per class lists every class and the most confused pairs."
        )
    st.plotly_chart(charts.confusion_heatmap(matrix, shown, normalized), key="results_confusion")
    if not root:
        return
    with st.expander("Images in a cell, and fixing their labels"):
        left, right = st.columns(2)
        true = left.selectbox("True class", names, key="results_cell_true")
        predicted = right.selectbox("Predicted class", names, key="results_cell_pred", index=min(1, len(names) - 1))
        cell = [f for f in interp.in_cell(true, predicted) if (root / f).exists()][:12]
        st.caption(widgets.md_escape(f"{len(cell)} image(s) shown (true {true}, predicted {predicted})."))
        for index, file in enumerate(cell):
            thumb, name, action = st.columns([1, 3, 2], vertical_alignment="center")
            thumb.image(str(root / file), width=96)
            name.markdown(widgets.md_escape(file))
            with action:
                fixes.fix_select(dataset, file, true, names, key=f"results_cell_fix_{index}", suggested=predicted)
        fixes.save_bar(dataset, key="results_cell_fixes")


def per_class(interp: Interpretation) -> None:
    st.dataframe(pd.DataFrame(interp.per_class()), hide_index=True, key="results_per_class")
    st.markdown("**Most confused pairs**")
    pairs = interp.most_confused()
    if pairs:
        st.dataframe(pd.DataFrame(pairs), hide_index=True, key="results_confused")
    else:
        st.caption("None.")


def mistakes(run: Run, interp: Interpretation, root: Optional[Path], dataset: str) -> None:
    """The most confident mistakes; with the dataset still there, Grad-CAM of one and its fix."""
    wrong = interp.misclassified()
    if not wrong:
        st.success("No misclassified validation images.")
        return
    st.caption(f"{len(wrong)} misclassified validation image(s), most confident mistakes first.")
    grid = st.columns(4)
    for i, row in enumerate(wrong[:SHOWN_MISTAKES]):
        with grid[i % 4]:
            path = root / row["file"] if root else None
            if path and path.exists():
                st.image(str(path), width=160)
            st.caption(
                f"true **{widgets.md_escape(row['true'])}** → predicted **{widgets.md_escape(row['predicted'])}** "
                f"({row['probability']:.0%}; p(true) {row['true_probability']:.0%})"
            )
    if not (root and st.toggle("Where did it look? (Grad-CAM of a mistake)", key="results_cam_on")):
        return
    shown = [row for row in wrong[:SHOWN_MISTAKES] if (root / row["file"]).exists()]
    picked = st.selectbox(
        "Mistake",
        range(len(shown)),
        key="results_cam_pick",
        format_func=lambda i: f"{shown[i]['file']}: true {shown[i]['true']}, predicted {shown[i]['predicted']}",
    )
    if not shown:
        return
    mistake = shown[picked]
    explanations.gradcam_view(run, (root / mistake["file"]).read_bytes(), mistake["predicted"], key="results_cam")
    fixes.fix_select(
        dataset,
        mistake["file"],
        mistake["true"],
        interp.class_names,
        key=f"results_cam_fix_{picked}",
        suggested=mistake["predicted"],
    )
    fixes.save_bar(dataset, key="results_cam_fixes")


def config_and_log(run: Run, jobs, trained: bool) -> None:
    """The run's settings and log; once ``trained``, the settings folded and the model's download."""
    st.json(run.config.__dict__, expanded=not trained)
    st.code(jobs.logs(run) or "(empty log)")
    if trained:
        # the zip is built when the button is clicked, not on every rerun of this page
        st.download_button(
            "Download model (zip)",
            run.artifacts.bundle,
            file_name=f"{run.id}.zip",
            mime="application/zip",
            key="results_download",
        )


def compare(runs: list[Run]) -> None:
    """Finished runs' validation curves overlaid, and their leaderboard."""
    st.subheader("Compare runs")
    finished = table.finished_ids(runs)
    chosen = st.multiselect("Runs to compare", finished, default=finished[:2], key="results_compare")
    if len(chosen) < 2:
        st.caption("Pick two or more finished runs to overlay their validation curves.")
        return
    by_id = {run.id: run for run in runs}
    st.plotly_chart(charts.compare_curves({rid: by_id[rid].history() for rid in chosen}), key="results_compare_chart")
    st.dataframe(
        pd.DataFrame(table.leaderboard(runs, chosen)),
        hide_index=True,
        key="results_leaderboard",
        column_config=TABLE_COLUMNS,
    )
