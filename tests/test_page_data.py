"""The engine functions the pages draw from, without Streamlit: run tables, dataset summaries, the Inspect
page's rows and the Predict page's answers."""

import numpy as np
import pytest

from tl_core.data import datasets, summary
from tl_core.inference.answer_table import NOT_SURE, answer_rows, sort_results
from tl_core.inspection.tables import map_points, shown_suspects
from tl_core.models.config import TrainConfig
from tl_core.runs import table
from tl_core.runs.store import list_runs, new_run

from .conftest import make_class_folders


def _run(data: str, state: str, accuracy=None, base="MobileNetV2", epochs=0):
    """A run folder as training leaves it: config, status, history and (when it has one) metrics."""
    run = new_run(TrainConfig(data=data, base=base, head="logreg", learning_rate=0.01))
    run.set_status(state)
    run.reset_history([{"epoch": e + 1, "val_accuracy": 0.5 + e / 10} for e in range(epochs)])
    if accuracy is not None:
        run.artifacts.write_metrics({"val_accuracy": accuracy, "val_balanced_accuracy": accuracy - 0.1})
    return run


@pytest.fixture
def runs():
    """Oldest first: a finished run on colors@v2, a failed one, a finished one on shapes, a running one."""
    made = [
        _run("colors@v2", "finished", 0.8, epochs=2),
        _run("colors", "failed"),
        _run("shapes", "finished", 0.9, base="EfficientNetB0", epochs=3),
        _run("colors2", "running"),
    ]
    listed = list_runs()
    assert [r.id for r in listed] == [r.id for r in reversed(made)]  # newest first
    return listed


def test_runs_table_has_one_summary_row_per_run_in_order(runs):
    rows = table.runs_table(runs)
    assert [row["run"] for row in rows] == [r.id for r in runs]
    assert [row["state"] for row in rows] == ["running", "finished", "failed", "finished"]
    assert rows[1]["final_val_accuracy"] == 0.9 and rows[1]["epochs"] == 3 and rows[1]["head"] == "logreg"


def test_default_run_is_the_requested_one_else_the_best_finished_else_the_newest(runs):
    assert table.default_run_id(runs, runs[2].id) == runs[2].id
    assert table.default_run_id(runs, "no-such-run") == runs[1].id
    assert table.default_run_id(runs, None) == runs[1].id
    unfinished = [r for r in runs if r.listed_state != "finished"]
    assert table.default_run_id(unfinished) == unfinished[0].id
    with pytest.raises(ValueError):
        table.default_run_id([])


def test_leaderboard_keeps_its_columns_best_first_and_names_an_unknown_run(runs):
    finished = table.finished_ids(runs)
    assert finished == [runs[1].id, runs[3].id]
    board = table.leaderboard(runs, list(reversed(finished)))
    assert [row["run"] for row in board] == [runs[1].id, runs[3].id]  # 0.9 before 0.8
    assert all(list(row) == list(table.LEADERBOARD_COLUMNS) for row in board)
    assert board[0]["best_val_accuracy"] == pytest.approx(0.7)  # from the history, not the metrics
    with_unscored = table.leaderboard(runs, [runs[2].id, runs[3].id])  # the failed run has no accuracy
    assert [row["run"] for row in with_unscored] == [runs[3].id, runs[2].id]
    with pytest.raises(KeyError, match="nope"):
        table.leaderboard(runs, ["nope"])


def test_runs_on_a_dataset_match_its_name_with_or_without_a_version(runs):
    assert runs[3].dataset_name == "colors" and runs[0].dataset_name == "colors2"
    assert [r.id for r in table.finished_on_dataset(runs, "colors")] == [runs[3].id]
    assert table.finished_on_dataset(runs, "colors2") == []  # running, not finished


def test_dataset_summary_reads_counts_sizes_and_split_from_the_manifest(tmp_path):
    src = make_class_folders(tmp_path / "src", ("red", "blue"), per_class=5, size=40)
    (src / "red" / "broken.png").write_bytes(b"not a png")
    m = datasets.add_folder(src, "colors").manifest
    assert summary.overview(m) == {
        "images": 10,
        "classes": 2,
        "split_names": "train / val",
        "splits": "8 / 2",
        "skipped": 1,
    }
    assert summary.describe(m) == (
        f"Image sizes: width 40–40 (median 40), height 40–40 (median 40). Source: {m['source']}. "
        "Stratified split, seed 42."
    )
    assert summary.import_summary("colors", m) == "Imported 'colors': 10 images in 2 classes; 1 file(s) skipped."
    split = make_class_folders(tmp_path / "split", ("red", "blue"), per_class=3, split="train")
    make_class_folders(split, ("red", "blue"), per_class=2, split="val", seed=50)
    kept = datasets.add_folder(split, "kept").manifest
    assert summary.describe(kept).endswith("Split folders kept.")
    assert summary.overview(kept)["splits"] == "6 / 4"


ITEMS = [
    {"path": "train/red/a.png", "class": "red", "split": "train"},
    {"path": "val/red/b.png", "class": "red", "split": "val"},
    {"path": "val/blue/c.png", "class": "blue", "split": "val"},
]


def test_map_points_keep_the_chosen_splits_and_flag_the_misclassified():
    coords = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    points = map_points(ITEMS, coords, {"val/blue/c.png"}, {"val"})
    assert points == [
        {"x": 2.0, "y": 3.0, "class": "red", "split": "val", "file": "val/red/b.png", "flag": ""},
        {"x": 4.0, "y": 5.0, "class": "blue", "split": "val", "file": "val/blue/c.png", "flag": "misclassified"},
    ]
    assert map_points(ITEMS, coords, set(), set()) == []
    with pytest.raises(ValueError, match="2 coordinates for 3 items"):
        map_points(ITEMS, coords[:2], set(), {"val"})


def test_shown_suspects_are_the_first_of_the_chosen_kinds():
    rows = [{"kind": k, "file": str(i)} for i, k in enumerate(["outlier", "duplicate", "outlier", "mislabelled"])]
    assert [r["file"] for r in shown_suspects(rows, ["outlier", "mislabelled"], 2)] == ["0", "2"]
    assert shown_suspects(rows, [], 5) == []


def _top(*pairs):
    return [{"label": label, "probability": p} for label, p in pairs]


def test_answers_split_refusals_and_mark_not_sure_below_the_threshold():
    results = [
        {"top_k": _top(("ant", 0.9), ("bee", 0.1))},
        {"error": "not an image"},
        {"top_k": _top(("bee", 0.55), ("ant", 0.45))},
    ]
    answers, refused = sort_results(["a.jpg", "bad.png", "c.jpg"], results, threshold=0.6)
    assert refused == [("bad.png", "not an image")]
    assert [(a.index, a.name, a.sure, a.label) for a in answers] == [
        (0, "a.jpg", True, "ant"),
        (2, "c.jpg", False, NOT_SURE),
    ]
    assert answer_rows(answers) == [
        {"image": "a.jpg", "answer": "ant", "top1": "ant", "top2": "bee", "p1": 0.9, "p2": 0.1},
        {"image": "c.jpg", "answer": "not sure", "top1": "bee", "top2": "ant", "p1": 0.55, "p2": 0.45},
    ]
    assert sort_results(["a.jpg"], results[:1], threshold=0.9)[0][0].sure  # the threshold itself is sure
    with pytest.raises(ValueError):
        sort_results(["a.jpg"], results, 0.0)
