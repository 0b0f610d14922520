"""Nothing lost that the user did not ask to lose: hostile input over the CLI, datasets deleted while in use or by
one version, an export into somebody else's folder, a pickled head from outside the workspace, a full disk
during training, one photo under two labels."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tl_core.data import datasets, versions
from tl_core.errors import TLError
from tl_core.runs.store import get_run, new_run

from .factories import REPO, cli, make_class_folders, small_config, zip_folder


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden lock files aside) by relative path, with its content's hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".locks" not in p.parts
    }


def assert_clear_error(out: subprocess.CompletedProcess, code: int, *quoted: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if "error:" in line]
    assert errors, out.stderr
    for text in quoted:
        assert text in out.stderr, (text, out.stderr)


# ---------------------------------------------------------------- the command line


def test_hostile_cli_values_are_clear_errors_and_change_nothing(tmp_path, workspace):
    src = make_class_folders(tmp_path / "src", per_class=6)
    datasets.add_folder(src, "d")
    before = tree_digest(workspace / "datasets")
    env = {"TL_HOME": str(workspace)}
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    cases = [
        (("datasets", "show", "d@v²"), "'v²'"),
        (("datasets", "add", src, "--name", "e", "--seed", "-1"), "-1"),
        (("datasets", "add", src, "--name", "e", "--val-fraction", "nan"), "nan"),
        (("datasets", "add", src, "--name", "e", "--val-fraction", "inf"), "inf"),
        (("datasets", "add", src, "--name", "e", "--val-fraction", "2"), "2.0"),
        (("train", "--data", "d", "--seed", "-1"), "'-1'"),
        (("train", "--data", "d", "--freeze-depth", "nan"), "'nan'"),
        (("train", "--data", "d", "--freeze-depth", "inf"), "'inf'"),
        (("train", "--data", "d", "--head", "logreg", "--classifier-c", "nan"), "'nan'"),
        (("train", "--data", "d", "--run-dir", a_file), "is a file"),
    ]
    for args, quoted in cases:
        assert_clear_error(cli(*args, env_extra=env), 2, quoted)
    assert [d.name for d in datasets.list_datasets()] == ["d"]
    assert tree_digest(workspace / "datasets") == before
    assert not any((workspace / "runs").glob("*")), "no run was made"


# ---------------------------------------------------------------- deleting datasets


def test_deleting_one_version_or_a_dataset_in_use_is_refused_and_deletes_nothing(tmp_path, workspace):
    dataset = datasets.add_folder(make_class_folders(tmp_path / "src", per_class=8), "d")
    reds = [it["path"] for it in dataset.split_items("train") if it["class"] == "red"]
    versions.save_version("d", moves={reds[0]: "blue"})
    versions.save_version("d", moves={reds[1]: "blue"})
    before = tree_digest(dataset.root)
    env = {"TL_HOME": str(workspace)}

    for ref in ("d@v1", "d@v3"):  # an old version, and the latest named by its number
        out = cli("datasets", "delete", ref, env_extra=env)
        assert_clear_error(out, 2, repr(ref), "nothing was deleted")
    assert tree_digest(dataset.root) == before
    assert [datasets.load_dataset(f"d@v{n}").version for n in (1, 2, 3)] == [1, 2, 3]

    queued = new_run(small_config(data="d"))
    out = cli("datasets", "delete", "d", env_extra=env)
    assert_clear_error(out, 2, queued.id, "nothing was deleted")
    with pytest.raises(TLError, match=queued.id):
        from tl_core.runs.store import runs_using

        datasets.delete_dataset("d", active_runs=[r.id for r in runs_using("d")])
    assert tree_digest(dataset.root) == before

    queued.request_cancel()  # no run needs it any more: the whole dataset goes, as asked
    out = cli("datasets", "delete", "d", env_extra=env)
    assert out.returncode == 0 and out.stdout.strip() == "deleted d", out.stderr
    assert not dataset.root.exists()
    with pytest.raises(TLError, match="Unknown dataset 'd'"):
        datasets.load_dataset("d@v2")


@pytest.mark.slow
def test_a_run_whose_dataset_goes_away_while_it_trains_fails_with_a_clear_message(tmp_path, workspace):
    from tl_core.training.runner import RunFailed, execute

    dataset = datasets.add_folder(make_class_folders(tmp_path / "src", per_class=6), "colors")
    run = new_run(small_config(epochs=1))
    # what a run sees when the folder is deleted after it read the manifest: the manifest, then no images
    shutil.rmtree(dataset.root / "images")
    with pytest.raises(RunFailed) as caught:
        execute(run)
    message = str(caught.value)
    assert "Dataset 'colors' was deleted or changed while this run was using it" in message, message
    assert str(workspace) not in message and "FileNotFoundError" not in message
    assert run.state == "failed" and run.status()["message"] == message


# ---------------------------------------------------------------- a finished run's files


@pytest.mark.slow
def test_export_writes_only_into_its_own_folders_and_pickles_load_only_from_the_workspace(tmp_path, workspace):
    from tl_core.deploy.export import export_run
    from tl_core.training.runner import train

    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=6), "colors")
    run, _ = train(small_config(head="logreg", epochs=1))

    # --out: a folder of someone else's files, another run's export, a file: refused before writing anything
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    (foreign / "model.keras").write_text("my own model, not the run's")
    other = tmp_path / "other-export"
    other.mkdir()
    (other / "model_card.json").write_text(json.dumps({"model": "another-run"}))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, why in ((foreign, "not an earlier export"), (other, "'another-run'"), (a_file, "is a file")):
        before = tree_digest(out) if out.is_dir() else out.read_bytes()
        with pytest.raises(TLError, match=why):
            export_run(run, "keras", out, check=False)
        assert (tree_digest(out) if out.is_dir() else out.read_bytes()) == before
    fresh = tmp_path / "fresh" / "keras"
    first = export_run(run, "keras", fresh, check=False)
    again = export_run(run, "keras", fresh, check=False)  # an earlier export of the same run: rewritten
    assert first["path"] == again["path"] and Path(again["path"]).is_file()

    # head.joblib is a pickle: loaded from the workspace's runs, refused from a folder elsewhere or through a link
    assert run.load_model().probabilities is not None
    outside = tmp_path / "outside-run"
    shutil.copytree(run.root, outside)
    with pytest.raises(TLError, match="outside this workspace's runs folder"):
        get_run(outside).load_model()
    linked = run.root.with_name(run.id + "-linked")
    shutil.copytree(run.root, linked)
    (linked / "head.joblib").unlink()
    (linked / "head.joblib").symlink_to(outside / "head.joblib")
    with pytest.raises(TLError, match="pickle"):
        get_run(linked).load_model()
    image = next((tmp_path / "src" / "red").iterdir())
    out = cli("predict", "--run", outside, image, env_extra={"TL_HOME": str(workspace)})
    assert_clear_error(out, 2, "head.joblib")


# ---------------------------------------------------------------- a full disk


FULL_DISK_PATCH = """
import errno, sys  # the disk fills up when the trained model is saved
import keras
def save(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
keras.Model.save = save
from tl_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: room for a dataset and the base's weights, none for the trained model. Where mounting
    is not allowed, None (the test then fills the disk by a write that raises ENOSPC instead)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_during_train_fails_the_run_says_so_and_keeps_earlier_files(tmp_path, small_disk, monkeypatch):
    home = (small_disk or tmp_path) / "workspace"
    monkeypatch.setenv("TL_HOME", str(home))
    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=6), "colors")
    before = tree_digest(home / "datasets")
    args = ["train", "--data", "colors", "--base", "MobileNetV2", "--alpha", "0.35", "--size", "64", "--epochs", "2"]
    if small_disk is not None:
        out = cli(*args, env_extra={"TL_HOME": str(home)})
    else:
        out = subprocess.run(
            [sys.executable, "-c", FULL_DISK_PATCH, *args],
            cwd=REPO,
            env={**os.environ, "TL_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert_clear_error(out, 1, "The disk is full")
    (run_dir,) = list((home / "runs").iterdir())
    run = get_run(run_dir)
    assert run.state == "failed" and "The disk is full" in run.status()["message"]
    assert run.config.data == "colors" and run.history(), "settings and the epochs trained so far are kept"
    assert tree_digest(home / "datasets") == before
    assert not [p for p in home.rglob("*") if ".tmp" in p.name or p.name.startswith(".model-")]


def test_a_version_saved_on_a_full_disk_is_refused_and_the_current_one_kept(tmp_path, small_disk, monkeypatch):
    if small_disk is None:
        pytest.skip("mounting a small tmpfs is not allowed here")
    monkeypatch.setenv("TL_HOME", str(small_disk / "workspace"))
    dataset = datasets.add_folder(make_class_folders(tmp_path / "src", per_class=6), "d")
    before = tree_digest(dataset.root)
    with open(small_disk / "filler", "wb", buffering=0) as filler:  # fill the disk to its last block
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError:
            pass
    with pytest.raises(TLError, match="Could not save version 2 of dataset 'd'.*Version 1 is unchanged"):
        versions.save_version("d", exclude=[dataset.items[0]["path"]])
    assert tree_digest(dataset.root) == before
    assert [row["version"] for row in versions.list_versions(datasets.load_dataset("d"))] == [1]


# ---------------------------------------------------------------- one photo, two labels


def test_one_photo_in_two_class_folders_is_a_label_conflict_kept_out_of_both(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=4)
    shutil.copy(src / "red" / "red_0.png", src / "blue" / "looks_red.png")  # one photo, two labels
    shutil.copy(src / "red" / "red_1.png", src / "red" / "red_again.png")  # one photo twice, one label
    dataset = datasets.add_folder(src, "c")
    m = dataset.manifest
    (conflict,) = m["label_conflicts"]
    assert conflict["classes"] == ["blue", "red"]
    assert sorted(conflict["files"]) == ["blue/looks_red.png", "red/red_0.png"]
    assert "kept out of every class" in conflict["reason"]
    assert conflict["sha256"] not in {it["sha256"] for it in dataset.items}, "in neither class, not the first"
    assert [s["file"] for s in m["skipped"]] == ["red/red_again.png"]  # a plain duplicate stays one
    report = datasets.format_report(dataset)
    assert "label conflicts: 1 image(s)" in report and "classes blue, red" in report
    # kept through a saved version
    saved = versions.save_version("c", exclude=[dataset.items[0]["path"]])
    assert saved.manifest["label_conflicts"] == m["label_conflicts"]


def test_a_class_left_short_by_label_conflicts_says_so(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=2)
    shutil.copy(src / "red" / "red_0.png", src / "blue" / "red_0.png")
    with pytest.raises(TLError, match=r"Every class needs at least 2 images.*kept out of every class"):
        datasets.add_folder(src, "c")


@pytest.mark.usefixtures("server_past_pages_folder_mode")
@pytest.mark.slow
def test_data_page_shows_label_conflicts_and_refuses_to_delete_a_dataset_in_use(tmp_path):
    from .test_app import open_page, texts

    src = make_class_folders(tmp_path / "src", per_class=4)
    shutil.copy(src / "red" / "red_0.png", src / "blue" / "looks_red.png")
    archive = zip_folder(src, tmp_path / "colors.zip")
    at = open_page("pages/data.py")
    at.get("file_uploader")[0].upload("colors.zip", archive.read_bytes(), "application/zip").run()
    at.text_input(key="data_zip_name").set_value("colors").run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Label conflicts: 1 image(s) are in more than one class folder" in texts(at), texts(at)
    table = next(df.value for df in at.dataframe if "classes" in df.value.columns)
    assert list(table["classes"]) == ["blue, red"]

    queued = new_run(small_config(data="colors"))
    at = open_page("pages/data.py")
    assert "Label conflicts" in texts(at), "the browse tab's import report shows them too"
    at.checkbox(key="data_delete_confirm").check().run()
    at.button(key="data_delete_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert queued.id in "\n".join(e.value for e in at.error)
    assert datasets.load_dataset("colors").manifest["num_images"] == 7  # 9 files, one photo under two labels


def _conflicted(tmp_path, name="c"):
    src = make_class_folders(tmp_path / "src", per_class=4)
    shutil.copy(src / "red" / "red_0.png", src / "blue" / "looks_red.png")  # one photo, two labels
    shutil.copy(src / "blue" / "blue_1.png", src / "red" / "looks_blue.png")  # another
    return datasets.add_folder(src, name)


def test_a_label_conflict_is_settled_by_a_saved_version_that_gives_it_the_chosen_class(tmp_path):
    dataset = _conflicted(tmp_path)
    first, second = dataset.manifest["label_conflicts"]
    assert (dataset.root / first["path"]).is_file(), "the import keeps one copy to assign later"
    assert first["sha256"] not in {it["sha256"] for it in dataset.items}
    red = next(r for r in (first, second) if "red_0.png" in " ".join(r["files"]))
    blue = second if red is first else first

    with pytest.raises(TLError, match="Unknown class 'green'"):
        versions.save_version("c", conflicts={red["sha256"]: "green"})
    with pytest.raises(TLError, match="No open label conflict"):
        versions.save_version("c", conflicts={"0" * 64: "red"})

    saved = versions.save_version("c", conflicts={red["sha256"]: "red", blue["sha256"]: None}, user="ana")
    assert saved.version == 2 and saved.manifest["label_conflicts"] == []
    (joined,) = [it for it in saved.items if it["sha256"] == red["sha256"]]
    assert joined["class"] == "red" and joined["split"] in ("train", "val")
    assert (saved.root / joined["path"]).is_file()
    assert blue["sha256"] not in {it["sha256"] for it in saved.items}, "left out stays out"
    assert saved.manifest["num_images"] == dataset.manifest["num_images"] + 1
    assert "1 label conflict(s) given a class, 1 left out" in saved.manifest["note"]
    # the earlier version keeps its open conflicts; settling again is refused as stale
    assert len(datasets.load_dataset("c@v1").manifest["label_conflicts"]) == 2
    with pytest.raises(TLError, match="No open label conflict"):
        versions.save_version("c", conflicts={red["sha256"]: "blue"})
    assert datasets.thumbnail(saved, joined).is_file(), "the joined image reads like any other"


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_data_page_settles_a_label_conflict_as_a_new_version(tmp_path):
    from .test_app import open_page, texts

    dataset = _conflicted(tmp_path)
    red = next(r for r in dataset.manifest["label_conflicts"] if "red_0.png" in " ".join(r["files"]))
    at = open_page("pages/data.py")
    assert "Settle label conflicts" in texts(at)
    assert at.button(key="data_conflicts_go").disabled
    assert "Choose a class (or 'leave it out') for at least one image first." in texts(at), "a disabled button says why"
    choice = at.selectbox(key=f"data_conflict_c_{red['sha256'][:16]}")
    assert choice.options[0] == "not decided yet" and "class red" in choice.options and "leave it out" in choice.options
    choice.set_value("class red").run()
    at.button(key="data_conflicts_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Saved 'c' version 2" in texts(at), texts(at)
    saved = datasets.load_dataset("c")
    assert saved.version == 2 and red["sha256"] in {it["sha256"] for it in saved.items if it["class"] == "red"}
    assert len(saved.manifest["label_conflicts"]) == 1, "the undecided one stays open"
