"""Dataset versions: fixes saved as a new version; the old one and the runs trained on it stay intact."""

from __future__ import annotations

import pytest

from tl_core.data import datasets, versions
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig

from .factories import make_class_folders


@pytest.mark.slow
def test_moves_and_exclusions_make_a_new_version_and_runs_keep_theirs(tmp_path, workspace):
    from tl_core.models.features import FeatureCache
    from tl_core.training.runner import train

    dataset = datasets.add_folder(make_class_folders(tmp_path / "src", ("red", "blue", "green"), per_class=8), "c")
    first, _ = train(TrainConfig(data="c", base="MobileNetV2", alpha=0.35, size=64, epochs=2))
    assert first.artifacts.metrics()["dataset_version"] == 1

    train_items = dataset.split_items("train")
    red = [it["path"] for it in train_items if it["class"] == "red"]
    blue = [it["path"] for it in train_items if it["class"] == "blue"]
    saved = versions.save_version("c", moves={red[0]: "blue"}, exclude=[blue[0]], note="fix a red", user="ann")
    assert saved.version == 2 and datasets.load_dataset("c").version == 2
    moved = next(it for it in saved.items if it["path"] == red[0])
    assert moved["class"] == "blue" and blue[0] not in {it["path"] for it in saved.items}
    assert saved.manifest["num_images"] == dataset.manifest["num_images"] - 1
    assert saved.fingerprint != dataset.fingerprint

    old = datasets.load_dataset("c@v1")  # the version the first run used, intact
    assert old.version == 1 and old.fingerprint == dataset.fingerprint and len(old.items) == len(dataset.items)
    assert all((old.root / it["path"]).exists() for it in old.items)  # excluded files are kept on disk
    rows = versions.list_versions(saved)
    assert [(r["version"], r["note"], r["user"]) for r in rows] == [
        (1, "imported", "anonymous"),
        (2, "fix a red", "ann"),
    ]

    events = []
    original = FeatureCache.features

    def counting(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        events.append((self.computed, self.reused))
        return out

    import unittest.mock

    with unittest.mock.patch.object(FeatureCache, "features", counting):
        second, metrics = train(TrainConfig(data="c", base="MobileNetV2", alpha=0.35, size=64, epochs=2))
    assert metrics["dataset_version"] == 2 and metrics["dataset_fingerprint"] == saved.fingerprint
    assert sum(computed for computed, _ in events) == 0, "retraining on the new version reuses cached features"
    again, metrics_v1 = train(TrainConfig(data="c@v1", base="MobileNetV2", alpha=0.35, size=64, epochs=2))
    assert metrics_v1["dataset_version"] == 1 and metrics_v1["dataset_fingerprint"] == dataset.fingerprint


def test_bad_fixes_are_refused_and_change_nothing(tmp_path):
    dataset = datasets.add_folder(make_class_folders(tmp_path / "src", per_class=6), "d")
    path = dataset.items[0]["path"]
    cases = [
        ({}, (), "Nothing to save"),
        ({"images/nope.png": "red"}, (), "not in dataset 'd'"),
        ({path: "purple"}, (), "Unknown class(es) ['purple']"),
        ({}, [it["path"] for it in dataset.items if it["class"] == "blue"], "only ['red'] would be left"),
    ]
    for moves, exclude, message in cases:
        with pytest.raises(TLError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            versions.save_version("d", moves=moves, exclude=exclude)
    assert datasets.load_dataset("d").version == 1 and not (dataset.root / "versions").exists()
    with pytest.raises(TLError, match="has no version '7'"):
        datasets.load_dataset("d@v7")


@pytest.mark.usefixtures("server_past_pages_folder_mode")
@pytest.mark.slow
def test_inspect_page_shows_suspects_and_map_and_saves_a_fix_as_a_version(tmp_path):
    from .test_app import open_page, texts

    src = make_class_folders(tmp_path / "src", ("red", "blue"), per_class=10, size=48)
    wrong = sorted((src / "red").iterdir())[0]
    wrong.rename(src / "blue" / "mislabelled_red.png")  # a red image filed under blue
    dataset = datasets.add_folder(src, "colors")
    page = open_page("pages/inspect.py")
    assert "Turn the switch on" in texts(page)
    page.toggle(key="inspect_on").set_value(True).run()
    assert not page.exception, [e.value for e in page.exception]
    markdown = "\n".join(m.value for m in page.markdown)
    assert "mislabelled_red" in markdown and "looks like **red**" in markdown, markdown
    assert page.get("plotly_chart"), "the embedding map"
    suspects = [m.value for m in page.markdown if m.value.startswith("**") and "` labelled **" in m.value]
    row = next(i for i, text in enumerate(suspects) if "mislabelled_red" in text)
    page.selectbox(key=f"inspect_fix_{row}").set_value("move to red").run()
    assert "1 fix(es) pending for 'colors': 1 to move" in texts(page)
    page.text_input(key="inspect_fixes_note").set_value("red was under blue").run()
    page.button(key="inspect_fixes_save").click().run()
    assert "Saved 'colors' version 2" in texts(page), texts(page)
    # the page is of the new version at once: no stale "Version 1", no fixes still pending, v2 listed
    assert any(c.value.startswith("Version 2:") for c in page.caption), [c.value for c in page.caption]
    assert not any("fix(es) pending" in text for text in texts(page))
    listed = next(frame.value for frame in page.dataframe if "fingerprint" in frame.value.columns)
    assert list(listed["version"]) == [1, 2] and list(listed["user"]) == ["anonymous", "anonymous"]
    fixed = datasets.load_dataset("colors")
    moved = next(it for it in fixed.items if "mislabelled_red" in it["path"])
    assert moved["class"] == "red" and fixed.manifest["note"] == "red was under blue"
    assert datasets.load_dataset("colors@v1").fingerprint == dataset.fingerprint


@pytest.mark.usefixtures("server_past_pages_folder_mode")
@pytest.mark.slow
def test_results_confusion_cell_lists_its_images_and_fixes_them(tmp_path):
    from tl_core.training.runner import train

    from .test_app import open_page, texts

    datasets.add_folder(make_class_folders(tmp_path / "src", ("red", "blue"), per_class=8, size=48), "colors")
    run, metrics = train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=2))
    matrix = metrics["confusion_matrix"]
    true, predicted = max(((t, p) for t in range(2) for p in range(2)), key=lambda c: matrix[c[0]][c[1]])
    names = metrics["class_names"]
    page = open_page("pages/results.py")
    page.selectbox(key="results_cell_true").set_value(names[true]).run()
    page.selectbox(key="results_cell_pred").set_value(names[predicted]).run()
    assert f"{matrix[true][predicted]} image(s) shown (true {names[true]}, predicted {names[predicted]})." in texts(
        page
    )
    page.selectbox(key="results_cell_fix_0").set_value("exclude").run()
    page.button(key="results_cell_fixes_save").click().run()
    assert not page.exception, [e.value for e in page.exception]
    assert "Saved 'colors' version 2" in texts(page), texts(page)
    assert datasets.load_dataset("colors").manifest["num_images"] == 15


SAVER = """
import sys, time
from pathlib import Path
from tl_core.data import versions
go, path, target, user = Path(sys.argv[1]), *sys.argv[2:]
(go.parent / f"ready-{user}").touch()
while not go.exists():  # every saver waits here, so they all save at the same moment
    time.sleep(0.0005)
print(versions.save_version("d", moves={path: target}, user=user).version)
"""


def test_fixes_saved_at_the_same_moment_all_keep_their_version(tmp_path):
    """Four processes save a fix to one dataset at once: they get versions 2 to 5, each on top of the one before,
    and the latest holds all four fixes (unlocked, two of them wrote v2.json and one fix was lost)."""
    import os
    import subprocess
    import sys

    from .factories import REPO

    dataset = datasets.add_folder(make_class_folders(tmp_path / "src", per_class=10), "d")
    reds = [it["path"] for it in dataset.split_items("train") if it["class"] == "red"][:4]
    go = tmp_path / "go"
    savers = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, str(go), path, "blue", f"user{i}"],
            cwd=REPO,
            env=os.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, path in enumerate(reds)
    ]
    import time

    deadline = time.time() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(savers) and time.time() < deadline:
        time.sleep(0.05)  # until every saver has imported the engine and waits
    go.touch()
    outputs = [saver.communicate(timeout=120) for saver in savers]
    assert all(saver.returncode == 0 for saver in savers), [err for _, err in outputs]
    assert sorted(int(out) for out, _ in outputs) == [2, 3, 4, 5]
    latest = datasets.load_dataset("d")
    assert latest.version == 5
    moved = {it["path"] for it in latest.items if it["class"] == "blue"} & set(reds)
    assert moved == set(reds), "every fix is in the latest version"
    for number in (2, 3, 4, 5):  # each version holds its own fix and the ones saved before it
        version = datasets.load_dataset(f"d@v{number}")
        assert len({it["path"] for it in version.items if it["class"] == "blue"} & set(reds)) == number - 1
        assert version.manifest["parent"] == number - 1
    rows = versions.list_versions(latest)
    assert [r["version"] for r in rows] == [1, 2, 3, 4, 5]
    assert sorted(r["user"] for r in rows[1:]) == ["user0", "user1", "user2", "user3"]
