"""A dataset's inbox: unlabelled images added once each, a run's suggestions most uncertain first and kept per
run and image, accepted images as a new dataset version, discarded ones restorable; the CLI contract, the
REST server's capture, the Inbox page's bulk accept."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from tl_core import cli as tl_cli
from tl_core.data import datasets, inbox
from tl_core.inference import suggest

from .factories import cli, make_class_folders, noisy_image, small_config, zip_folder

CONTRACT = {"id", "file", "source", "suggested", "probability", "unknown"}


def run_cli(capsys, *args) -> tuple[int, list[dict], str]:
    """``python -m tl_core ARGS`` in this process: (exit code, JSON lines printed, stderr)."""
    code = tl_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def unlabelled(tmp_path, per_class=2, seed=900):
    """New images of the dataset's classes (truth by folder) and one of two colours mixed (a hard one)."""
    root = make_class_folders(tmp_path / "new", classes=("red", "blue", "green"), per_class=per_class, seed=seed)
    (root / "mixed.png").write_bytes(noisy_image((120, 40, 120), 40, seed=seed + 7))
    return root


def test_each_image_is_kept_once_and_discarded_images_are_restorable(colors, tmp_path, capsys):
    new = make_class_folders(tmp_path / "new", classes=("red", "blue"), per_class=2, seed=700)
    (new / "notes.txt").write_text("not an image")
    code, [report], _ = run_cli(capsys, "inbox", "add", "--data", "colors", new)
    assert code == 0 and report["added"] == 4 and report["skipped"] == 1
    same_in_a_zip = zip_folder(new, tmp_path / "again.zip")
    already_labelled = colors.root / colors.items[0]["path"]
    code, [report], err = run_cli(capsys, "inbox", "add", "--data", "colors", same_in_a_zip, already_labelled)
    assert (report["added"], report["pending"]) == (0, 4)
    assert "already in the inbox" in err and "already in the dataset" in err

    code, rows, _ = run_cli(capsys, "inbox", "list", "--data", "colors")  # no run yet: no suggestions
    assert code == 0 and len(rows) == 4 and set(rows[0]) == CONTRACT and rows[0]["suggested"] is None
    assert {row["source"] for row in rows} == {str(p) for p in new.rglob("*.png")}
    gone = rows[1]["id"]
    code, [changed], _ = run_cli(capsys, "inbox", "discard", "--data", "colors", "--id", gone)
    assert changed["state"] == "discarded"
    assert gone not in [row["id"] for row in run_cli(capsys, "inbox", "list", "--data", "colors")[1]]
    assert inbox.image_path("colors", inbox.entries("colors", "discarded")[0]).is_file()  # nothing deleted
    code, _, err = run_cli(capsys, "inbox", "accept", "--data", "colors", "--id", gone, "--label", "red")
    assert code == 2 and "not pending" in err
    run_cli(capsys, "inbox", "restore", "--data", "colors", "--id", gone)
    assert gone in [row["id"] for row in run_cli(capsys, "inbox", "list", "--data", "colors")[1]]
    code, _, err = run_cli(capsys, "inbox", "restore", "--data", "colors", "--id", "0123456789ab")
    assert code == 2 and "'0123456789ab'" in err


def test_serve_refuses_to_capture_into_an_unknown_dataset(workspace):
    done = cli("serve", "--run", "any", "--capture", "no-such-data", timeout=120)
    assert done.returncode == 2 and "'no-such-data'" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------- with a trained run


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, keras_home_copy):
    """A workspace with the dataset 'colors' (red, blue, green) and one finished run on it, made once."""
    root = tmp_path_factory.mktemp("inbox")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        datasets.add_folder(make_class_folders(root / "src", classes=("red", "blue", "green"), per_class=6), "colors")
        from tl_core.training.runner import train

        run, _ = train(small_config(epochs=1))
    return root / "home", run.id


@pytest.fixture
def home(trained_home, workspace):
    """This test's own copy of the trained workspace (tests change its dataset and inbox)."""
    from tl_core.runs.store import get_run

    shutil.copytree(trained_home[0], workspace, dirs_exist_ok=True)
    return get_run(trained_home[1])


def answers_by_file(run, folder) -> dict[str, tuple[float, str, float, object]]:
    """Each image's (top-two margin, top class, its probability, unknown flag), computed here with the run's
    model: the probabilities from the pixels, the flag as the model's own answer gives it (absent: None)."""
    from tl_core.data.images import load_array
    from tl_core.inference.predict import Predictor

    files = sorted(folder.rglob("*.png"))
    predictor = Predictor.from_run(run)
    probs = predictor.probabilities(np.stack([load_array(f, predictor.input_size, predictor.resize) for f in files]))
    flags = [answer.get("unknown") for answer in predictor.predict_each([f.read_bytes() for f in files])]
    names = run.artifacts.class_names()
    out = {}
    for file, row, flag in zip(files, probs, flags):
        first, second = np.sort(row)[::-1][:2]
        out[str(file)] = (float(first - second), names[int(row.argmax())], float(first), flag)
    return out


@pytest.mark.slow
def test_cli_lists_most_uncertain_first_and_accepts_by_id_and_by_probability(home, tmp_path, capsys):
    new = unlabelled(tmp_path)
    assert run_cli(capsys, "inbox", "add", "--data", "colors", new)[0] == 0
    code, rows, err = run_cli(capsys, "inbox", "list", "--data", "colors")
    assert code == 0, err
    assert len(rows) == 7 and all(set(row) == CONTRACT for row in rows)
    expected = answers_by_file(home, new)
    margins = [expected[row["source"]][0] for row in rows]
    assert margins == sorted(margins), "most uncertain (smallest top-two margin) first"
    for row in rows:
        assert row["suggested"] == expected[row["source"]][1]
        assert row["probability"] == pytest.approx(expected[row["source"]][2], abs=1e-4)
        assert row["unknown"] == expected[row["source"]][3]  # a bool once runs learn their scope (issue #28 part 1)

    hardest = rows[0]
    code, _, err = run_cli(capsys, "inbox", "accept", "--data", "colors", "--id", hardest["id"], "--label", "purple")
    assert code == 2 and "'purple'" in err and "['blue', 'green', 'red']" in err
    assert datasets.load_dataset("colors").version == 1  # nothing changed
    code, [saved], _ = run_cli(capsys, "inbox", "accept", "--data", "colors", "--id", hardest["id"], "--label", "red")
    assert code == 0 and saved["version"] == 2 and saved["accepted"] == 1
    v2 = datasets.load_dataset("colors")
    (item,) = [it for it in v2.items if it["sha256"].startswith(hardest["id"])]
    assert item["class"] == "red" and item["split"] == "train" and (v2.root / item["path"]).is_file()
    assert datasets.load_dataset("colors@v1").manifest["num_images"] == v2.manifest["num_images"] - 1

    rest = rows[1:]
    cut = sorted(row["probability"] for row in rest)[len(rest) // 2]
    code, [saved], _ = run_cli(capsys, "inbox", "accept", "--data", "colors", "--min-probability", cut)
    wanted = {row["id"]: row["suggested"] for row in rest if row["probability"] >= cut and row["unknown"] is not True}
    assert code == 0 and saved["version"] == 3 and saved["accepted"] == len(wanted) > 0
    v3 = {it["sha256"][:12]: it["class"] for it in datasets.load_dataset("colors").items}
    assert {i: v3[i] for i in wanted} == wanted
    assert {row["id"] for row in run_cli(capsys, "inbox", "list", "--data", "colors")[1]} == {
        row["id"] for row in rest if row["id"] not in wanted
    }


class CountingPredictor:
    """Stands in for the run's model where a test decides the answers: counts the images it is asked about."""

    def __init__(self, answers: dict[bytes, dict]):
        self.answers, self.asked, self.class_names = answers, 0, ["blue", "green", "red"]

    def predict_each(self, datas, top_k):
        self.asked += len(datas)
        return [self.answers[data] for data in datas]


def answer(label, probability, unknown=None):
    other = "blue" if label != "blue" else "red"
    top = [{"label": label, "probability": probability}, {"label": other, "probability": 1 - probability}]
    return {"top_k": top, "unknown": unknown, "distance": 0.5}


@pytest.mark.slow
def test_a_second_listing_reads_the_kept_answers_and_bulk_accept_leaves_unknown_images(home, tmp_path):
    from tl_core.inference import suggest

    images = [noisy_image((40 * i, 90, 200 - 40 * i), 40, seed=i) for i in range(4)]
    predictor = CountingPredictor(
        {
            images[0]: answer("red", 0.97),
            images[1]: answer("blue", 0.55),
            images[2]: answer("green", 0.99, unknown=True),  # confident, yet outside what the run learnt
            images[3]: answer("blue", 0.8),
        }
    )
    inbox.add_bytes("colors", [(f"{i}.png", data) for i, data in enumerate(images[:3])], source="test")
    first = suggest.suggest("colors", home, load=lambda run: predictor)
    assert first.computed == 3 and predictor.asked == 3 and len(suggest.read_cache(home)) == 3
    assert [row["file"] for row in first.rows] == ["1.png", "0.png", "2.png"]  # margins 0.1, 0.94, 0.98

    def no_model(run):
        raise AssertionError("the model was loaded although every image has a kept answer")

    again = suggest.suggest("colors", home, load=no_model)
    assert again.computed == 0 and again.rows == first.rows
    inbox.add_bytes("colors", [("3.png", images[3])], source="test")
    grown = suggest.suggest("colors", home, load=lambda run: predictor)
    assert grown.computed == 1 and predictor.asked == 4 and grown.rows[1]["file"] == "3.png"
    assert grown.rows[3]["unknown"] is True

    saved = suggest.accept_confident("colors", 0.9, home, load=no_model)
    added = saved.manifest["changes"]["added"]
    assert sorted(added.values()) == ["red"], "only 0.png: 2.png is unknown, 1.png and 3.png below 0.9"
    assert {row["file"] for row in inbox.entries("colors", "pending")} == {"1.png", "2.png", "3.png"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_serve_capture_keeps_a_classify_request_in_the_inbox(home, monkeypatch):
    """``python -m tl_core serve --capture colors`` (its command, in this process, on a thread): one answered
    ``:classify`` request's image lands in the inbox, named by where it came from."""
    import httpx
    import uvicorn

    servers, run = [], uvicorn.Server.run
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: (servers.append(self), run(self, *a, **k))[1])
    port = free_port()
    args = ["serve", "--run", home.id, "--port", str(port), "--capture", "colors"]
    thread = threading.Thread(target=tl_cli.main, args=(args,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not (servers and servers[0].started) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert servers and servers[0].started, "the server did not start"
        photo = noisy_image((200, 40, 40), 40, seed=4242)
        url = f"http://127.0.0.1:{port}/v1/models/{home.id}:classify"
        reply = httpx.post(url, files={"files": ("shot.png", photo)}, timeout=60)
        assert reply.status_code == 200 and reply.json()["results"][0]["top_k"]
        deadline = time.monotonic() + 20
        while not inbox.entries("colors") and time.monotonic() < deadline:
            time.sleep(0.05)
        (entry,) = inbox.entries("colors", "pending")
        assert (entry["file"], entry["source"]) == ("shot.png", f"serve:{home.id}")
        assert inbox.image_path("colors", entry).read_bytes() == photo
    finally:
        if servers:
            servers[0].should_exit = True
        thread.join(30)


@pytest.mark.slow
@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_predict_keeps_photos_and_the_inbox_page_accepts_in_bulk_and_offers_to_train_again(home, tmp_path):
    from .test_app import open_page, texts

    new = unlabelled(tmp_path)
    predict = open_page("pages/predict.py")  # "keep these photos for labelling"
    uploader = predict.get("file_uploader")[0]
    uploader.upload("mixed.png", (new / "mixed.png").read_bytes(), "image/png").run()
    assert predict.selectbox(key="predict_inbox_data").value == "colors"
    predict.button(key="predict_keep").click().run()
    assert not predict.exception, [e.value for e in predict.exception]
    (kept,) = inbox.entries("colors")
    assert (kept["file"], kept["source"]) == ("mixed.png", f"predict:{home.id}")
    at = open_page("pages/inbox.py")
    zipped = zip_folder(new, tmp_path / "new.zip").read_bytes()
    at.get("file_uploader")[0].upload("new.zip", zipped, "application/zip").run()
    at.button(key="inbox_add").click().run()  # the rest, as a zip; mixed.png is there already
    assert "Added 6 image(s)" in texts(at)
    assert "new.zip:red/red_0.png" in {e["source"] for e in inbox.entries("colors")}
    assert at.selectbox(key="inbox_run_colors").value == home.id
    assert "7 pending image(s), most uncertain first" in texts(at)
    # images outside what the run learnt (its scope: the mixed colour may be one) stay for a person to label
    flagged = sum(row["unknown"] is True for row in suggest.suggest("colors", home).rows)
    at.slider(key="inbox_min_p").set_value(0.0).run()
    at.button(key="inbox_accept_bulk").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Saved 'colors' version 2" in texts(at)
    version = datasets.load_dataset("colors")
    assert version.version == 2 and len(version.manifest["changes"]["added"]) == 7 - flagged
    assert len(inbox.entries("colors", "pending")) == flagged
    assert flagged or "No unlabelled images waiting" in texts(at)
    assert "colors@v2" in at.button(key="inbox_again").label
    at.button(key="inbox_again_edit").click().run()  # the Train page, with the run's settings filled in
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="train_data").value == "colors"
    assert "Settings of run" in texts(at)


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_without_a_run_the_inbox_page_claims_no_order_and_files_nothing_until_a_class_is_chosen(colors, tmp_path):
    """The walk: with no run, the page said "most uncertain first" and each image's class was preset to the
    dataset's first class, so Accept filed a hot dog under it."""
    from .test_app import open_page, texts

    new = make_class_folders(tmp_path / "new", classes=("red", "blue"), per_class=1, seed=701)
    inbox.add_paths("colors", [str(new)])
    at = open_page("pages/inbox.py")
    assert not at.exception, [e.value for e in at.exception]
    assert "2 pending image(s), in the order they came in" in texts(at) and "most uncertain" not in texts(at)
    first = inbox.entries("colors")[0]["id"]
    assert at.selectbox(key=f"inbox_label_{first}").value is None
    assert at.button(key=f"inbox_accept_{first}").disabled
    at.selectbox(key=f"inbox_label_{first}").set_value("blue").run()
    at.button(key=f"inbox_accept_{first}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    version = datasets.load_dataset("colors")
    assert version.version == 2 and len(inbox.entries("colors", "pending")) == 1


def test_images_the_inbox_turns_away_leave_nothing_on_disk(colors):
    """Over the capture limit, or already in the dataset, an image is reported skipped and not stored either:
    a server capturing past its limit must not fill the disk with files no index lists."""
    folder = colors.root / inbox.FOLDER / "images"
    first = inbox.add_bytes(colors.name, [("a.png", noisy_image((10, 200, 30), 48, 901))], "test", limit=1)
    assert len(first.added) == 1 and len(list(folder.iterdir())) == 1
    over = inbox.add_bytes(colors.name, [("b.png", noisy_image((200, 10, 30), 48, 902))], "test", limit=1)
    assert over.added == [] and "pending images" in over.skipped[0]["reason"]
    in_dataset = (colors.root / colors.items[0]["path"]).read_bytes()
    twin = inbox.add_bytes(colors.name, [("c.png", in_dataset)], "test")
    assert twin.added == [] and "already in the dataset" in twin.skipped[0]["reason"]
    assert [p.name for p in folder.iterdir()] == [first.added[0]["stored"].split("/")[-1]]
    again = inbox.accept(colors.name, {" " + first.added[0]["id"].upper(): colors.classes[0]})  # ids as listed
    assert again.version == 2
