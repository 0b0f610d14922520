"""Small inputs that must not break what the app writes or lists: CSV cells a spreadsheet would run,
stray files among the runs."""

from __future__ import annotations

import csv
import io
import uuid

import numpy as np
import pytest

from tl_core.inference.answer_table import answers_csv, sort_results
from tl_core.models.config import TrainConfig
from tl_core.runs.evaluate import Interpretation
from tl_core.runs.store import list_runs, new_run
from tl_core.workspace import runs_dir, spreadsheet_safe, spreadsheet_text

FORMULAS = ['=HYPERLINK("http://x","y").jpg', "+1.jpg", "-2.jpg", "@SUM(A1).jpg", "\tx.jpg", "\rx.jpg"]


@pytest.mark.parametrize("text", [*FORMULAS, "'quoted.jpg", "plain.jpg", "", "a=b.jpg"])
def test_spreadsheet_safe_cells_read_back_exactly(text):
    cell = spreadsheet_safe(text)
    assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert spreadsheet_text(cell) == text
    assert spreadsheet_safe(0.5) == 0.5 and spreadsheet_safe(-3) == -3  # numbers stay numbers


def test_the_predictions_download_neutralises_formula_file_and_class_names():
    top = [{"label": "=cmd|' /C calc'!A0", "probability": 0.9}, {"label": "bee", "probability": 0.1}]
    answers, _ = sort_results(FORMULAS, [{"top_k": top}] * len(FORMULAS), threshold=0.5)
    rows = list(csv.reader(io.StringIO(answers_csv(answers))))
    cells = [cell for row in rows[1:] for cell in row]
    assert all(cell[:1] not in ("=", "+", "-", "@", "\t", "\r") for cell in cells), cells
    assert [spreadsheet_text(row[0]) for row in rows[1:]] == FORMULAS


def test_a_run_s_predictions_file_keeps_formula_like_file_names_as_text(tmp_path):
    interp = Interpretation(["a", "b"], np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]), FORMULAS[:2])
    path = tmp_path / "predictions.csv"
    interp.save(path)
    assert all(row[0][:1] not in ("=", "+") for row in list(csv.reader(path.open()))[1:])
    assert Interpretation.load(path, ["a", "b"]).files == FORMULAS[:2]


def test_a_stray_file_in_the_runs_folder_is_not_a_run():
    run = new_run(TrainConfig(data="colors"))
    (runs_dir() / "notes.txt").write_text("not a run")
    (runs_dir() / ".DS_Store").write_bytes(b"\0")
    assert [r.id for r in list_runs()] == [run.id]


def test_a_two_thousand_class_confusion_matrix_is_drawn_as_its_fifty_most_confused_classes():
    from tl_app import charts
    from tl_app.results_sections import MAX_HEATMAP_CLASSES

    classes = [f"c{i}" for i in range(2000)]
    y_true = np.repeat(np.arange(2000), 2)
    y_pred = y_true.copy()
    y_pred[:60] = (y_pred[:60] + 1) % 2000  # mistakes among the first 31 classes only
    probs = np.eye(2000)[y_pred] * 0.9 + 0.1 / 2000
    interp = Interpretation(classes, y_true, probs, [f"f{i}.jpg" for i in range(len(y_true))])
    matrix, shown = interp.confusion_focus(MAX_HEATMAP_CLASSES)
    assert len(shown) == MAX_HEATMAP_CLASSES and matrix.shape == (50, 50)
    assert set(classes[:31]) <= set(shown) and shown == sorted(shown, key=classes.index)
    assert matrix.sum() >= 60  # every mistake is inside the drawn classes
    figure = charts.confusion_heatmap(matrix, shown, normalized=False)
    assert len(figure.to_json()) < 500_000
    normalized, _ = interp.confusion_focus(MAX_HEATMAP_CLASSES, normalize=True)
    assert normalized.max() <= 1.0 and normalized[0, 1] == 1.0  # c0's two images both went to c1: its whole row


def test_with_the_ray_head_gone_logs_still_show_and_cancel_says_the_cluster_is_not_answering(tmp_path):
    """A real address where nothing listens (the head went away after the run was submitted)."""
    import socket

    from tl_core.backends.ray_jobs import RayBackend
    from tl_core.errors import TLError

    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = new_run(TrainConfig(data="colors"))
    run.set_status("running", ray_job=f"tl-{run.id}-1")
    run.log("epoch 1 done")
    backend = RayBackend(f"http://127.0.0.1:{port}")
    logs = backend.logs(run)
    assert "epoch 1 done" in logs and "not answering" in logs
    with pytest.raises(TLError, match="not answering.*cancel request .* is recorded"):
        backend.cancel(run, user="ann")
    assert run.cancel_requested()


def test_accuracy_on_two_validation_images_comes_with_its_interval_and_a_warning():
    from streamlit.testing.v1 import AppTest

    from tl_core.runs.accuracy import accuracy_interval

    low, high = accuracy_interval(1.0, 2)
    assert 0.3 < low < 0.4 and high == 1.0  # 2 of 2 right says little
    low, high = accuracy_interval(0.71, 860)
    assert 0.67 < low < 0.71 < high < 0.75
    interp = Interpretation(["a", "b"], np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["x.jpg", "y.jpg"])
    assert interp.summary()["val_accuracy_interval"] == list(accuracy_interval(1.0, 2))

    def headline():
        from tl_app.results_sections import headline

        headline({"val_accuracy": 1.0, "num_val_images": 2})

    at = AppTest.from_function(headline).run()
    assert not at.exception
    assert any("Only 2 validation image(s)" in w.value and "0.34 to 1.00" in w.value for w in at.warning)


def test_the_cli_prints_the_skipped_file_report_its_no_images_error_points_to(tmp_path, capsys):
    import zipfile

    from tl_core import cli

    archive = tmp_path / "junk.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("cats/notes.txt", "not an image")
    assert cli.main(["datasets", "add", str(archive), "--name", "junk"]) == 2
    err = capsys.readouterr().err
    assert "error: No usable images found" in err and "skipped cats/notes.txt: not an image" in err


def test_the_learning_rate_finder_labels_its_suggestion_where_the_line_is():
    import math

    from tl_app.lr_finder import curve

    result = {"lrs": [1e-6, 1e-4, 1e-2, 1.0], "losses": [1.0, 0.8, 0.5, 9.0], "suggested_lr": 3e-4}
    figure = curve(result)
    (line,) = figure.layout.shapes
    (label,) = [a for a in figure.layout.annotations if "suggested" in a.text]
    assert line.x0 == 3e-4 and math.isclose(10**label.x, 3e-4)  # plotly places log-axis annotations by exponent


def test_embedding_map_colours_stay_with_their_class_and_the_legend_names_classes_only():
    import pandas as pd

    from tl_app import charts

    classes = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    rows = [
        (i, -i, name, "train", f"{name}/{i}.jpg", "misclassified" if i % 3 == 0 else "")
        for i, name in enumerate(classes * 4)
    ]
    points = pd.DataFrame(rows, columns=["x", "y", "class", "split", "file", "flag"])
    full = charts.embedding_map(points, classes)
    assert [trace.name for trace in full.data] == classes  # no "daisy, " entries
    colours = {trace.name: trace.marker.color for trace in full.data}
    assert len(set(colours.values())) == len(classes)
    without_daisy = charts.embedding_map(points[points["class"] != "daisy"], classes)
    assert {trace.name: trace.marker.color for trace in without_daisy.data} == {
        name: colour for name, colour in colours.items() if name != "daisy"
    }
    assert "x" in full.data[0].marker.symbol and full.data[0].customdata[0][0] == "daisy/0.jpg"


def test_removing_a_staged_class_never_lets_a_new_file_overwrite_a_kept_one():
    from tl_core.data.uploads import Staging

    staged = Staging(uuid.uuid4().hex)
    staged.add_to_class("red", [("r1.png", io.BytesIO(b"red-1")), ("r2.png", io.BytesIO(b"red-2"))])
    staged.add_to_class("blue", [("b1.png", io.BytesIO(b"blue-1"))])
    staged.remove_class("red")
    staged.add_to_class("green", [("g1.png", io.BytesIO(b"green-1")), ("g2.png", io.BytesIO(b"green-2"))])
    contents = {(cls, name): read() for cls, name, read in staged.items()}
    assert contents == {("blue", "b1.png"): b"blue-1", ("green", "g1.png"): b"green-1", ("green", "g2.png"): b"green-2"}
    assert {cls: len(paths) for cls, paths in staged.class_samples(per_class=1).items()} == {"blue": 1, "green": 1}
    staged.discard()


def test_user_named_folders_files_and_classes_are_drawn_as_text_not_markdown(tmp_path):
    """A source folder named like a Markdown image would make every viewer's browser fetch its URL; a bad
    upload's name would render links and bold. Every such text reaches Streamlit escaped."""
    from streamlit.testing.v1 import AppTest

    from tl_core.data import datasets

    from .factories import REPO, make_class_folders

    root = tmp_path / "![x](https:" / "127.0.0.1:9" / "track.png)"
    datasets.add_folder(make_class_folders(root, per_class=3), "tracked")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/data.py").run()
    assert not at.exception, [e.value for e in at.exception]
    drawn = [e.value for kind in ("markdown", "caption", "success", "error", "warning", "info") for e in at.get(kind)]
    source = next(text for text in drawn if "Source" in text)
    assert "![x](" not in source and r"\!\[x\](" in source
