"""Runs that are easy to compare, name, annotate and repeat: the cached-features flag and the two accuracies in
the tables, a run's name and note, "train again with these settings", and which run Results and Predict open."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tl_app.widgets import md_escape
from tl_core import audit
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.runs import table
from tl_core.runs.evaluate import evaluate
from tl_core.runs.store import Run, get_run, list_runs, new_run

from .factories import REPO, small_config

CLASSES = ["red", "blue"]


def finished_run(cfg: TrainConfig, accuracy: float, images: int = 20, **metrics) -> Run:
    """A finished run folder as training leaves it (config, status, history, predictions, metrics), its
    validation predictions right on ``accuracy`` of ``images`` images."""
    run = new_run(cfg)
    right = round(accuracy * images)
    y_true = np.arange(images) % 2
    predicted = np.where(np.arange(images) < right, y_true, 1 - y_true)
    probs = np.full((images, 2), 0.2)
    probs[np.arange(images), predicted] = 0.8
    files = [f"val/{CLASSES[t]}/{i}.png" for i, t in enumerate(y_true)]
    summary = evaluate(run.artifacts, CLASSES, y_true, probs, files)
    run.reset_history([{"epoch": 1, "phase": "head", "val_accuracy": accuracy + 0.01}])
    run.artifacts.write_metrics({**summary, "duration_s": 4.7, **metrics})
    run.set_status("finished", val_accuracy=summary["val_accuracy"])
    return run


def on(data: str, **settings) -> TrainConfig:
    return TrainConfig(data=data, base="MobileNetV2", head="logreg", **settings)


# ---------------------------------------------------------------- the tables' rows


def test_rows_say_which_run_reused_cached_features_also_for_runs_recorded_before_the_flag():
    computed = finished_run(on("colors"), 0.7, feature_pass={"computed": 40, "reused": 0}, features_cached=False)
    cached = finished_run(on("colors"), 0.7, feature_pass={"computed": 0, "reused": 40}, features_cached=True)
    partly = finished_run(on("colors"), 0.7, feature_pass={"computed": 10, "reused": 30}, features_cached=False)
    # an older run: only its notes tell how its feature pass went
    old = finished_run(on("colors"), 0.7, notes=["feature cache abc123: 0 forward passes, 40 reused"])
    plain = finished_run(on("colors"), 0.7)  # trained without the feature cache
    rows = {row["run"]: row for row in table.runs_table(list_runs())}
    assert rows[computed.id]["features"] == "computed features" and rows[computed.id]["features_cached"] is False
    assert rows[cached.id]["features"] == "reused cached features" and rows[cached.id]["features_cached"] is True
    assert rows[partly.id]["features"] == "partly cached (30 of 40 reused)"
    assert rows[old.id]["features"] == "reused cached features"
    assert rows[plain.id]["features"] is None and rows[plain.id]["features_cached"] is None
    board = table.leaderboard(list_runs(), [cached.id, computed.id])
    assert all(list(row) == list(table.LEADERBOARD_COLUMNS) for row in board)
    columns = list(table.LEADERBOARD_COLUMNS)
    assert columns.index("features") == columns.index("duration_s") + 1  # said beside the time


def test_both_accuracies_are_labelled_for_what_they_are():
    from tl_app import compare_ui, results_sections

    run = finished_run(on("colors"), 0.7)
    row = table.runs_table([run])[0]
    assert row["final_val_accuracy"] == pytest.approx(0.7)  # the saved model's evaluation: the run page's figure
    assert row["best_val_accuracy"] == pytest.approx(0.71)  # the best epoch's logged value
    labels = {key: (column or {}).get("label", "") for key, column in results_sections.TABLE_COLUMNS.items()}
    assert labels["final_val_accuracy"] == "val acc (final model)"
    assert labels["best_val_accuracy"] == "best epoch val acc"
    assert "final model" in compare_ui.LEADERBOARD_COLUMNS["val_accuracy"]["label"]
    assert "restored the best epoch" in results_sections.FINAL_ACCURACY_HELP


@pytest.mark.slow
def test_a_run_on_features_an_earlier_run_computed_records_that_it_reused_them(colors):
    from tl_core.training.runner import train

    first, _ = train(small_config(epochs=1))
    second, metrics = train(small_config(epochs=1, learning_rate=3e-3))
    assert first.artifacts.metrics()["features_cached"] is False
    assert first.artifacts.metrics()["feature_pass"]["computed"] > 0
    assert metrics["features_cached"] is True and metrics["feature_pass"]["computed"] == 0
    rows = {row["run"]: row for row in table.runs_table(list_runs())}
    assert rows[second.id]["features"] == "reused cached features"
    assert rows[first.id]["features"] == "computed features"


# ---------------------------------------------------------------- name and note


def test_name_and_note_round_trip_atomically_audited_and_reach_the_rows():
    run = finished_run(on("colors"), 0.7)
    assert run.meta()["name"] == "" and run.meta()["note"] == ""  # a run folder from before names
    assert table.runs_table([run])[0]["name"] == ""
    run.set_meta("  Baseline\n224 px  ", "Tried on the\nnew photos.", user="ana@example.com")
    again = get_run(run.root)
    assert again.name == "Baseline 224 px"  # one line, surrounding spaces dropped
    assert again.meta()["note"] == "Tried on the\nnew photos."
    assert json.loads((run.root / "run_meta.json").read_text())["user"] == "ana@example.com"
    assert not [p.name for p in run.root.iterdir() if p.name.startswith(".")], "no temporary file left"
    assert table.runs_table([again])[0]["name"] == "Baseline 224 px"  # the remembered summary follows
    entry = audit.recent(1)[0]
    assert (entry["action"], entry["target"], entry["name"], entry["previous_name"]) == (
        "describe run",
        run.id,
        "Baseline 224 px",
        "",
    )
    with pytest.raises(TLError, match="at most 80 characters"):
        run.set_meta("x" * 81, "")
    assert get_run(run.root).name == "Baseline 224 px"  # nothing saved
    (run.root / "run_meta.json").write_text("[not an object]")
    assert get_run(run.root).meta()["name"] == ""


def test_a_picker_names_the_run_its_dataset_and_accuracy():
    named = finished_run(on("colors@v2"), 0.75)
    named.set_meta("Baseline", "")
    running = new_run(on("shapes"))
    running.set_status("running")
    assert table.run_label(get_run(named.root)) == f"Baseline ({named.id}) — colors@v2, val acc 0.750"
    assert table.run_label(running) == f"{running.id} — shapes, running"


# ---------------------------------------------------------------- which run a page opens


def test_pages_open_the_best_run_of_the_dataset_last_trained_on_unless_chosen_or_asked():
    other_best = finished_run(on("other"), 0.95)
    best = finished_run(on("colors"), 0.9)
    newest = finished_run(on("colors@v2"), 0.7)
    running = new_run(on("colors"))
    running.set_status("running")
    runs = list_runs()
    assert [r.id for r in runs] == [running.id, newest.id, best.id, other_best.id]
    assert table.best_run_id(runs) == best.id  # not the newest, not another dataset's
    assert table.best_run_id(runs, "other") == other_best.id
    assert table.best_run_id(runs, "nothing") is None
    assert table.default_run_id(runs) == best.id
    assert table.default_run_id(runs, remembered=newest.id) == newest.id
    assert table.default_run_id(runs, requested=other_best.id, remembered=newest.id) == other_best.id  # URL wins
    assert table.default_run_id(runs, requested="gone", remembered="gone too") == best.id
    tie = finished_run(on("colors"), 0.9)
    assert table.default_run_id(list_runs()) == tie.id  # of equals, the newest
    assert table.default_run_id([running]) == running.id


# ---------------------------------------------------------------- the pages (AppTest)


def open_page(page: str, **query) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    at.query_params.update(query)
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_results_names_a_run_and_keeps_its_note_drawn_escaped(colors):
    run = finished_run(small_config(), 0.8)
    name = "**Big** [win](http://example.com) #1"
    at = open_page("pages/results.py")
    at.text_input(key=f"results_name_{run.id}").input(name)
    at.text_area(key=f"results_note_{run.id}").input("First try with\n*all* photos.")
    at.button(key="results_meta_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert run.meta()["name"] == name and run.meta()["note"] == "First try with\n*all* photos."
    assert [h.value for h in at.subheader][0] == md_escape(name)  # Markdown shows the name, not a link
    runs_table = at.dataframe[0].value
    assert runs_table.loc[runs_table["run"] == run.id, "name"].item() == name
    assert name in at.selectbox(key="results_run").options[0]


COPIED = [
    # every widget away from its default, a frozen base given as a word, settings with no widget
    dict(
        freeze_depth="all",
        learning_rate=3e-4,
        optimizer="sgd",
        epochs=7,
        batch_size=16,
        early_stopping=True,
        patience=2,
        dropout=0.3,
        class_weights="off",
        augment=False,
        flip=False,
        rotation=0.2,
        zoom=0.15,
        aug_views=4,
        seed=7,
        label_smoothing=0.1,
        resize="squash",
    ),
    # a fine-tune phase at fractions, values outside the widgets' hints (lr, patience 0, 600 epochs)
    dict(
        freeze_depth=0.9,
        fine_tune_depth=0.7,
        fine_tune_epochs=3,
        fine_tune_lr=3e-5,
        learning_rate=5e-4,
        epochs=600,
        patience=0,
        aug_views=None,
        classifier_c=0.5,
    ),
]


@pytest.mark.parametrize("settings", COPIED, ids=["frozen", "fine-tuned"])
@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_train_again_fills_the_train_page_and_start_queues_an_equal_config(colors, stop_worker, settings):
    source = finished_run(small_config(data="colors@v1", **settings).resolved(), 0.8)
    at = open_page("pages/results.py")
    at.button(key="results_train_again").click().run()
    assert not at.exception, [e.value for e in at.exception]
    cfg = source.config
    assert at.selectbox(key="train_data").value == "colors"
    assert at.select_slider(key="train_lr").value == cfg.learning_rate
    assert at.number_input(key="train_epochs").value == cfg.epochs
    assert at.number_input(key="train_patience").value == cfg.patience
    assert at.slider(key="train_dropout").value == pytest.approx(cfg.dropout)
    assert at.toggle(key="train_ft").value == (cfg.fine_tune_depth is not None)
    assert f"Settings of run {md_escape(source.id)} filled in" in "\n".join(i.value for i in at.info)
    # AppTest reruns the page it last switched to itself, not the one st.switch_page went to
    at.switch_page("pages/train.py").button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    queued = get_run(at.session_state["train_last_run"])
    queued.request_cancel()  # the config is what this test checks, not the training
    assert queued.id != source.id
    assert dataclasses.asdict(queued.config) == {**dataclasses.asdict(cfg), "data": "colors"}
    at.button(key="train_forget_copy").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.select_slider(key="train_lr").value == TrainConfig().learning_rate
    assert not [i.value for i in at.info if "filled in" in i.value]


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_a_reload_of_train_with_a_run_in_its_url_brings_that_run_s_settings_back(colors):
    source = finished_run(small_config(epochs=3, size=96, learning_rate=3e-4), 0.8)
    at = open_page("pages/train.py", run=source.id)  # a new session: a reload, or a link someone shared
    assert at.number_input(key="train_epochs").value == 3
    assert at.select_slider(key="train_lr").value == 3e-4
    assert f"Settings of run {md_escape(source.id)} filled in" in "\n".join(i.value for i in at.info)
    at.number_input(key="train_epochs").set_value(5).run()
    assert at.number_input(key="train_epochs").value == 5, "filled once: the user's edits stay"
    gone = open_page("pages/train.py", run="20990101-000000-gone")
    assert not gone.exception and gone.number_input(key="train_epochs").value == TrainConfig().epochs


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_results_opens_the_best_run_then_the_one_chosen_and_the_url_wins(colors):
    other_best = finished_run(small_config(data="other"), 0.95)
    best = finished_run(small_config(), 0.9)
    newest = finished_run(small_config(), 0.7)
    at = open_page("pages/results.py")
    assert at.selectbox(key="results_run").value == best.id
    at.selectbox(key="results_run").set_value(newest.id).run()
    at.query_params.clear()  # a page opened from the menu carries no ?run=
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/results.py").run()
    assert at.selectbox(key="results_run").value == newest.id  # remembered for this browser session
    linked = open_page("pages/results.py", run=other_best.id)
    assert linked.selectbox(key="results_run").value == other_best.id


@pytest.mark.slow
@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_predict_opens_the_best_run_or_the_one_chosen_on_results(colors):
    from tl_core.training.runner import train

    trained, _ = train(small_config(epochs=1))
    runs = []
    for index, accuracy in enumerate([0.9, 0.6]):  # copies of its folder: the better one older
        folder = shutil.copytree(trained.root, trained.root.with_name(f"{trained.id}-{index}"))
        copy = Run(folder)
        copy.artifacts.write_metrics({**copy.artifacts.metrics(), "val_accuracy": accuracy})
        copy.set_status("finished", created=f"2999-01-0{index + 1}T00:00:00+00:00", queued_at=time.time())
        runs.append(copy)
    runs[0].set_meta("Best so far", "")
    predict = open_page("pages/predict.py")
    picker = predict.selectbox(key="predict_run")
    assert picker.value == runs[0].id  # the best, not the newest
    assert any("Best so far" in option and "colors" in option for option in picker.options)
    results = open_page("pages/results.py")
    results.selectbox(key="results_run").set_value(runs[1].id).run()
    results.query_params.clear()
    results.switch_page("pages/predict.py").run()
    assert not results.exception, [e.value for e in results.exception]
    assert results.selectbox(key="predict_run").value == runs[1].id
