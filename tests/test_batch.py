"""Batch prediction: a folder or zip streamed through a run's model into a CSV (``predict --input --out``), as a
background job (``submit --predict``, ``wait``, ``runs --predict``, ``execute``) and from the Predict page."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from .factories import REPO, colors_dataset, hymenoptera_photos, noisy_image, small_config

CLASSES = ("red", "blue", "green")


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, keras_home_copy):
    """One tiny run (MobileNetV2 alpha 0.35 at 64 px, one epoch on three colours) shared by this module."""
    root = tmp_path_factory.mktemp("batch")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        from tl_core.training.runner import train

        colors_dataset(root, classes=CLASSES, per_class=4, size=48)
        run, metrics = train(small_config(epochs=1))
    assert metrics
    return root / "home", run.id


@pytest.fixture
def trained_run(trained_home, monkeypatch):
    from tl_core.runs.store import get_run

    home, run_id = trained_home
    monkeypatch.setenv("TL_HOME", str(home))
    return get_run(run_id)


def photo_folder(root: Path) -> Path:
    """Nested folders of images (PNG colours, real JPEG photos), plus a text file, an empty file and a
    spreadsheet-formula name; system files (``.DS_Store``) are not listed at all."""
    for i, name in enumerate(CLASSES):
        folder = root / "a" / name if i % 2 else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(3):
            (folder / f"{name}_{j}.png").write_bytes(
                noisy_image((200 * (i == 0), 200 * (i == 1), 200 * (i == 2)), 48, j)
            )
    hymenoptera_photos(root / "photos", {"val": 2}, splits=("val",))
    (root / "notes.txt").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "=HYPERLINK(1).png").write_bytes(noisy_image((9, 9, 9), 40))
    (root / ".DS_Store").write_bytes(b"\0\0")
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_folder_streams_into_a_csv_with_the_probabilities_of_single_image_predict(
    trained_run, tmp_path, capsys, monkeypatch
):
    from tl_core import cli
    from tl_core.inference import batch
    from tl_core.inference.predict import Predictor

    monkeypatch.setattr(batch, "CHUNK", 4)  # several chunks, decoded one ahead of the engine
    folder = photo_folder(tmp_path / "in")
    out = tmp_path / "out" / "answers.csv"
    assert (
        cli.main(["predict", "--run", trained_run.id, "--input", str(folder), "--out", str(out), "--top-k", "2"]) == 0
    )
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert (summary["images"], summary["predicted"], summary["skipped"]) == (16, 14, 2)
    assert "16/16" in captured.err and "14 predicted, 2 skipped" in captured.err  # the bar and the summary
    rows = read_csv(out)
    assert list(rows[0]) == [
        *("file", "predicted", "probability", "unknown", "distance"),
        *("top1", "top2", "p1", "p2", "error"),
    ]
    names = [row["file"] for row in rows]
    assert names[:2] == ["'=HYPERLINK(1).png", "empty.png"]  # spreadsheet-safe, in walk order
    assert "a/blue/blue_0.png" in names and "photos/val/ants/" in " ".join(names) and ".DS_Store" not in names
    errors = {row["file"]: row["error"] for row in rows if row["error"]}
    assert errors == {"empty.png": "empty file (0 bytes)", "notes.txt": "not an image Pillow can read"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["answers.csv"]  # no temporary left behind

    predictor = Predictor.from_run(trained_run)
    for row in rows:
        if row["error"]:
            continue
        each = predictor.predict_each([folder / row["file"].lstrip("'")], top_k=2)[0]
        single = each["top_k"]
        assert row["unknown"] == str(each["unknown"]).lower() and row["unknown"] in ("true", "false")
        assert float(row["distance"]) == pytest.approx(each["distance"], abs=1e-5)
        assert [row["top1"], row["top2"]] == [g["label"] for g in single]
        assert row["predicted"] == single[0]["label"]
        np.testing.assert_allclose([float(row["p1"]), float(row["p2"])], [g["probability"] for g in single], atol=1e-6)
        assert row["probability"] == row["p1"]


def _zip_with_bad_entries(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i, name in enumerate(CLASSES):
            archive.writestr(f"pics/{name}/{i}.png", noisy_image((50 * i, 100, 150), 48, i))
        archive.writestr("pics/corrupt.jpg", b"\xff\xd8\xff\xe0 truncated")
        archive.writestr("../escape.png", noisy_image((1, 2, 3), 40))
        archive.writestr("pics/inner.zip", b"PK\x05\x06" + b"\0" * 18)
        archive.writestr("__MACOSX/pics/._0.png", b"resource fork")
    return path


def test_a_zip_is_listed_entry_by_entry_with_a_reason_for_each_unsafe_one(tmp_path):
    from tl_core.inference.batch import Inputs

    inputs = Inputs(_zip_with_bad_entries(tmp_path / "in.zip"))
    items = list(inputs)
    assert inputs.total == len(items) == 6  # __MACOSX is not an image of the user's
    problems = {item.name: item.problem for item in items if item.problem}
    assert "unsafe path" in problems["../escape.png"] and "nested archive" in problems["pics/inner.zip"]
    assert items[0].name == "pics/red/0.png" and items[0].read() == noisy_image((0, 100, 150), 48, 0)
    inputs.close()


@pytest.mark.slow
def test_a_zip_predicts_in_one_pass_and_a_crash_leaves_no_csv(trained_run, tmp_path, capsys, monkeypatch):
    from tl_core import cli
    from tl_core.inference import batch
    from tl_core.inference.predict import Predictor

    archive = _zip_with_bad_entries(tmp_path / "in.zip")
    out = tmp_path / "zip.csv"
    assert cli.main(["predict", "--run", str(trained_run.root), "--input", str(archive), "--out", str(out)]) == 0
    rows = {row["file"]: row for row in read_csv(out)}
    assert len(rows) == 6 and {rows[f"pics/{c}/{i}.png"]["error"] for i, c in enumerate(CLASSES)} == {""}
    assert rows["pics/corrupt.jpg"]["error"].startswith("corrupt or truncated image")
    assert rows["../escape.png"]["error"].startswith("unsafe path") and rows["pics/inner.zip"]["predicted"] == ""

    # the engine fails after the first chunk: the earlier CSV stays as it was, no temporary is left
    monkeypatch.setattr(batch, "CHUNK", 2)
    calls = []

    def failing(self, pixels, tta="none"):
        calls.append(len(pixels))
        if len(calls) > 1:
            raise MemoryError("engine died")
        return np.full((len(pixels), 3), 1 / 3), [None] * len(pixels)

    monkeypatch.setattr(Predictor, "probabilities_and_distances", failing)
    before = out.read_bytes()
    with pytest.raises(MemoryError):
        cli.main(["predict", "--run", trained_run.id, "--input", str(archive), "--out", str(out)])
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.zip", "zip.csv"]


@pytest.mark.slow
def test_bad_batch_arguments_are_refused_quoting_them(trained_run, tmp_path, capsys):
    from tl_core import cli

    folder = photo_folder(tmp_path / "in")
    cases = [
        (["--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.csv")], "does not exist"),
        (["--input", str(folder / "notes.txt"), "--out", str(tmp_path / "x.csv")], "is a file but not a .zip"),
        (["--input", str(folder), "--out", str(tmp_path / "x.txt")], "--out must name a .csv file"),
        (["--input", str(folder)], "--input DIR_OR_ZIP and --out FILE.csv go together"),
        (["--input", str(folder), "--out", str(tmp_path / "x.csv"), "some.png"], "not both"),
        ([], "Name image files to predict"),
    ]
    for extra, message in cases:
        assert cli.main(["predict", "--run", trained_run.id, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_submit_predict_queues_a_job_that_execute_runs_and_wait_and_runs_report(
    trained_run, tmp_path, capsys, monkeypatch
):
    from tl_core import cli
    from tl_core.backends import local

    started = []
    monkeypatch.setattr(local, "start_worker", lambda: started.append(1))  # the worker's part is done below
    monkeypatch.delenv("TL_RAY_ADDRESS", raising=False)
    folder, out = photo_folder(tmp_path / "in"), tmp_path / "job.csv"
    argv = ["submit", "--predict", "--run", trained_run.id, "--input", str(folder), "--out", str(out)]
    assert cli.main(argv) == 0 and started == [1]
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert job_id.startswith("predict-") and not out.exists()
    assert cli.main(["runs", "--predict"]) == 0
    assert capsys.readouterr().out.startswith(f"{job_id}\tqueued\tpredict\tin\t0/?\t{out}")
    assert cli.main(["submit", "--predict", "--run", trained_run.id, "--input", str(folder), "--epochs", "3"]) == 2
    assert "drop the training flags ['--epochs']" in capsys.readouterr().err

    assert cli.main(["execute", job_id]) == 0  # what the local worker and a Ray job run
    assert cli.main(["wait", job_id, "--timeout", "5"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["run"] == job_id and answer["state"] == "finished" and answer["kind"] == "predict"
    assert (answer["predicted"], answer["skipped"], answer["out"]) == (14, 2, str(out))
    assert len(read_csv(out)) == 16
    assert cli.main(["runs", "--predict"]) == 0
    assert f"{job_id}\tfinished\tpredict\tin\t16/16" in capsys.readouterr().out
    assert cli.main(["runs"]) == 0 and job_id not in capsys.readouterr().out  # the runs table: training only
    assert cli.main(["execute", job_id]) == 2  # finished, not queued


@pytest.mark.slow
def test_predict_page_runs_a_zip_or_a_server_folder_as_a_job_and_offers_its_csv(
    trained_run, tmp_path, monkeypatch, server_past_pages_folder_mode
):
    from tl_core.backends import local
    from tl_core.inference.batch import execute_job
    from tl_core.runs.jobs import list_jobs

    monkeypatch.setattr(local, "start_worker", lambda: None)
    monkeypatch.setenv("TL_IMPORT_ROOTS", str(tmp_path / "allowed"))
    folder = photo_folder(tmp_path / "allowed" / "in")
    earlier = {job.id for job in list_jobs()}  # other tests of this module share the workspace
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/predict.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="predict_batch_source").set_value("Folder on the server").run()
    at.text_input(key="predict_batch_folder").set_value(str(tmp_path)).run()  # outside the allowed folder
    at.button(key="predict_batch_go").click().run()
    assert any("outside the allowed folders" in e.value for e in at.error)
    at.text_input(key="predict_batch_folder").set_value(str(folder)).run()
    at.button(key="predict_batch_go").click().run()
    assert not at.exception and len(list_jobs()) == len(earlier) + 1

    at.radio(key="predict_batch_source").set_value("Zip upload").run()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x/red.png", noisy_image((200, 0, 0), 48))
        z.writestr("x/bad.jpg", b"nope")
    at.get("file_uploader")[1].upload("mine.zip", archive.getvalue(), "application/zip").run()
    at.button(key="predict_batch_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    zipped, folder_job = [job for job in list_jobs() if job.id not in earlier]  # newest first
    assert "**mine.zip**: queued" in [m.value for m in at.markdown]
    reloaded = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()  # F5 on the page
    reloaded.switch_page("pages/predict.py").run()
    batch = [e for e in reloaded.expander if e.label.startswith("Many images")]
    assert batch and batch[0].proto.expanded, "a queued job's progress stays in sight after a reload"
    at.button(key=f"predict_batch_cancel_{folder_job.id}").click().run()
    assert folder_job.state == "cancelled"
    execute_job(zipped)
    assert not Path(zipped.spec()["input"]).exists()  # the uploaded zip went with its job
    at.run()
    assert f"predict_batch_csv_{zipped.id}" in {b.key for b in at.get("download_button")}
    assert "1 predicted, 1 skipped; " in "\n".join(c.value for c in at.caption)
    assert "Cancelled before it started." in [w.value for w in at.warning]
    assert [row["file"] for row in read_csv(zipped.out)] == ["x/red.png", "x/bad.jpg"]
    reloaded.run()
    assert not [e for e in reloaded.expander if e.label.startswith("Many images")][0].proto.expanded  # all done


def test_a_folder_outside_the_allowed_ones_is_refused_before_saying_whether_it_exists(tmp_path):
    from tl_core.errors import TLError
    from tl_core.inference.batch import check_input

    for outside in (tmp_path.parent / "not-there", tmp_path.parent):
        with pytest.raises(TLError, match="outside the allowed folders"):
            check_input(outside, allowed_roots=[tmp_path])
