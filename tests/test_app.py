"""Every page through the router with Streamlit's AppTest: empty workspace, seeded workspace, live job."""

import time
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from tl_app.widgets import md_escape
from tl_core.data import datasets
from tl_core.runs.store import get_run
from tl_core.training.runner import train

from .factories import REPO, colors_dataset, make_class_folders, small_config

pytestmark = pytest.mark.usefixtures("server_past_pages_folder_mode")

PAGES = [
    "pages/home.py",
    "pages/data.py",
    "pages/inspect.py",
    "pages/train.py",
    "pages/results.py",
    "pages/predict.py",
    "pages/inbox.py",
    "pages/monitor.py",
]


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    # AppTest drops the entry file's own elements (the sidebar status) after switch_page; they are
    # checked on the first run instead (test_router_shows_device_workspace_and_jobs).
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "subheader")
        for e in at.get(kind)
    ]
    return "\n".join(str(p) for p in parts)


MAX_PAGE_LINES = 80


def test_streamlit_magic_is_off_and_no_page_script_has_a_bare_expression():
    """Magic would write any bare expression's value onto the page (a conditional expression once wrote the
    DeltaGenerator documentation onto Results): it is off, and page scripts hold no expression it would draw."""
    import ast
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["runner"]["magicEnabled"] is False
    for script in [*PAGES, "streamlit_app.py"]:
        tree = ast.parse((REPO / script).read_text(encoding="utf-8"))
        bare = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr)
            and not isinstance(node.value, (ast.Call, ast.Await, ast.Yield, ast.YieldFrom))
            and not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))
        ]
        assert not bare, f"{script}: bare expressions on lines {bare}"


@pytest.mark.parametrize("page", PAGES)
def test_page_scripts_only_lay_out_sections(page):
    """A page script is short and defines nothing: its sections are functions in tl_app with explicit
    arguments (a function in a page reads the page's globals, a fragment even those assigned below it)."""
    import ast

    source = (REPO / page).read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_PAGE_LINES, f"{page}: move sections into tl_app"
    defined = [
        getattr(node, "name", "lambda")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
    ]
    assert not defined, f"{page} defines {defined}"


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_workspace_with_guidance(page):
    at = open_page(page)
    assert at.info, f"{page} should tell a new user what to do first"


def test_router_shows_device_workspace_and_jobs(workspace):
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    sidebar = [c.value for c in at.sidebar.caption]
    assert sidebar[0].startswith("Device: **")
    assert str(workspace) in sidebar[1]
    assert "No training job running." in sidebar


@pytest.fixture
def seeded(tmp_path):
    dataset = colors_dataset(tmp_path, classes=("red", "blue"), per_class=6, size=48)
    run, metrics = train(small_config(epochs=2))
    return dataset, run


@pytest.mark.slow
def test_seeded_pages_show_dataset_results_and_predict(seeded):
    dataset, run = seeded
    data = open_page("pages/data.py")
    assert data.get("plotly_chart"), "class counts chart"
    assert "Stratified split" in texts(data)

    results = open_page("pages/results.py")
    assert len(results.get("plotly_chart")) >= 2, "learning curves and confusion matrix"
    assert any(m.label == "Validation accuracy" for m in results.metric)
    assert results.dataframe, "runs table and per-class table"
    results.toggle(key="results_normalized").set_value(True).run()
    assert not results.exception

    predict = open_page("pages/predict.py")
    assert "Upload one or more images" in texts(predict)
    assert predict.selectbox(key="predict_run").value == run.id


@pytest.mark.slow
def test_seeded_home_inspect_and_results_draw_every_section(seeded):
    """Two finished runs (a trained one and a copy of its folder): Home counts them, Inspect marks a run's
    mistakes on the map, Results draws every tab of a run and compares the two."""
    import shutil

    from tl_core.runs.table import LEADERBOARD_COLUMNS

    dataset, run = seeded
    shutil.copytree(run.root, run.root.with_name(run.id + "-copy"))

    home = open_page("pages/home.py")
    assert [m.value for m in home.metric] == ["1", "2", "2"]
    assert "Compare runs and inspect mistakes on Results" in texts(home)

    inspect = open_page("pages/inspect.py")
    inspect.toggle(key="inspect_on").set_value(True).run()
    assert not inspect.exception, [e.value for e in inspect.exception]
    assert set(inspect.selectbox(key="inspect_run").options) == {"(none)", run.id, run.id + "-copy"}
    inspect.selectbox(key="inspect_run").set_value(run.id).run()
    inspect.multiselect(key="inspect_splits").set_value(["val"]).run()
    assert not inspect.exception, [e.value for e in inspect.exception]
    assert inspect.get("plotly_chart"), "the embedding map"
    assert "Version 1: 12 images, 2 classes." in texts(inspect)

    results = open_page("pages/results.py")
    results.selectbox(key="results_run").set_value(run.id).run()
    assert not results.exception, [e.value for e in results.exception]
    assert not results.get("help"), "a bare expression written out by Streamlit's magic"
    assert "**Most confused pairs**" in texts(results)
    assert "Download model (zip)" in [b.label for b in results.get("download_button")]
    board = results.dataframe[-1].value
    assert list(board.columns) == list(LEADERBOARD_COLUMNS) and set(board["run"]) == {run.id, run.id + "-copy"}
    assert results.query_params["run"] == run.id


@pytest.mark.slow
def test_train_page_freeze_slider_reports_the_cut(seeded):
    at = open_page("pages/train.py")
    at.selectbox(key="train_base").set_value("MobileNetV2").run()
    at.select_slider(key="train_alpha_MobileNetV2").set_value(0.35).run()
    at.number_input(key="train_size_MobileNetV2").set_value(96).run()
    slider = at.slider(key="train_depth_MobileNetV2")
    assert slider.max == slider.value  # whole base frozen by default
    assert "whole base frozen" in texts(at)
    slider.set_value(100).run()
    assert not at.exception
    caption = texts(at)
    assert "first trainable layer" in caption and "whole base frozen" not in caption


@pytest.mark.slow
def test_start_from_train_page_runs_in_background_and_survives_reload(seeded, stop_worker, monkeypatch):
    monkeypatch.setenv("TL_WORKER_IDLE_EXIT", "20")
    at = open_page("pages/train.py")
    at.selectbox(key="train_base").set_value("MobileNetV2").run()
    at.select_slider(key="train_alpha_MobileNetV2").set_value(0.35).run()
    at.number_input(key="train_size_MobileNetV2").set_value(64).run()
    at.slider(key="train_depth_MobileNetV2").set_value(120).run()  # plain path: base partly trainable
    at.number_input(key="train_epochs").set_value(3).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    run_id = at.session_state["train_last_run"]
    run = get_run(run_id)
    seen_live = False
    deadline = time.time() + 300
    while run.state in ("queued", "running") and time.time() < deadline:
        reloaded = open_page("pages/train.py")  # a refresh or a second browser: a fresh session
        if run_id in texts(reloaded):
            seen_live = True
        time.sleep(1)
    assert run.state == "finished", run.status()
    assert seen_live, "a fresh session must see the job while it is queued or running"
    history = run.history()
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1)) and history
    assert run.artifacts.metrics()["training_path"] == "plain"
    results = open_page("pages/results.py")
    results.selectbox(key="results_run").set_value(run_id).run()
    assert len(results.get("plotly_chart")) >= 2


def test_data_page_imports_an_uploaded_zip_and_reports_skipped_files(tmp_path):
    from .factories import zip_folder

    src = make_class_folders(tmp_path / "src", per_class=4)
    (src / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    archive = zip_folder(src, tmp_path / "colors.zip")
    at = open_page("pages/data.py")
    at.get("file_uploader")[0].upload("colors.zip", archive.read_bytes(), "application/zip").run()
    at.text_input(key="data_zip_name").set_value("uploaded colors").run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Imported 'uploaded colors': 8 images in 2 classes; 1 file(s) skipped." in texts(at)
    manifest = datasets.load_dataset("uploaded colors").manifest
    assert manifest["skipped"][0]["file"].endswith("broken.png")
    assert manifest["source"] == "zip:colors.zip"  # the user's file, not the staging name ("zip:0-.zip")


@pytest.mark.slow
def test_predict_page_labels_uploaded_images_and_offers_csv(seeded, tmp_path, monkeypatch):
    import keras

    clears = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: clears.append(1))
    dataset, run = seeded
    at = open_page("pages/predict.py")
    clears.clear()  # the home page ran first, with no model loaded yet: Streamlit cleared Keras then
    uploader = at.get("file_uploader")[0]
    names = [item["path"].split("/")[-1] for item in dataset.items[:3]]
    for name, item in zip(names, dataset.items):
        uploader.upload(name, (dataset.root / item["path"]).read_bytes(), "image/png")
    uploader.upload("bad.png", b"not an image", "image/png")
    uploader.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("bad.png" in e.value for e in at.error)
    # a few images: one thumbnail each, captioned with the answer in bold and the (escaped) file name
    captions = at.get("image")[0].captions
    assert len(captions) == 3 and not at.dataframe
    for caption, name in zip(captions, names):
        assert caption.startswith("**") and caption.endswith(md_escape(name)), caption
    at.toggle(key="predict_as_table").set_value(True).run()
    table = at.dataframe[-1].value
    assert list(table["image"]) == [item["path"].split("/")[-1] for item in dataset.items[:3]]
    assert set(table["top1"]) <= set(dataset.classes)
    assert at.get("download_button")
    # Streamlit would clear Keras after every rerun, dropping TensorFlow's kernels (~0.3 s per prediction)
    at.slider(key="predict_topk").set_value(1).run()
    assert clears == [] and list(at.dataframe[-1].value["top1"]) == list(table["top1"])


@pytest.mark.slow
def test_predict_page_makes_a_thumbnail_once_per_upload(seeded, monkeypatch):
    """Every rerun shows all uploads again (each new upload reruns them, for every user): the thumbnails
    are looked up by upload, not hashed and made again."""
    from tl_app import widgets

    made, real = [], widgets.thumbnail
    monkeypatch.setattr(widgets, "thumbnail", lambda data: made.append(data) or real(data))
    dataset, _ = seeded
    photos = [(dataset.root / item["path"]).read_bytes() for item in dataset.items[:3]]
    at = open_page("pages/predict.py")
    at.get("file_uploader")[0].set_value([("one.png", photos[0], "image/png"), ("two.png", photos[1], "image/png")])
    at.run()
    at.slider(key="predict_topk").set_value(1).run()
    at.slider(key="predict_threshold").set_value(0.2).run()
    assert len(at.get("image")[0].captions) == 2
    assert made == photos[:2]  # shown on three runs, made once each
    at.get("file_uploader")[0].set_value(("three.png", photos[2], "image/png")).run()
    assert made == photos and len(at.get("image")[0].captions) == 1
    assert len(at.session_state["predict_thumbnails"]) == 1  # removed uploads are forgotten


@pytest.mark.slow
def test_real_photos_end_to_end_server_import_train_results_predict(stop_worker, monkeypatch):
    """The issue's check: hymenoptera imported, trained from the Train page with defaults while the page
    reloads, Results shows curves, confusion matrix and per-class table, Predict labels held-back photos."""
    from .factories import HYMENOPTERA, require_shared

    require_shared(HYMENOPTERA)
    monkeypatch.setenv("TL_IMPORT_ROOTS", str(HYMENOPTERA.parent))
    monkeypatch.setenv("TL_WORKER_IDLE_EXIT", "20")
    data = open_page("pages/data.py")
    data.radio(key="data_source").set_value("Folder on the server").run()
    data.text_input(key="data_server_path").set_value(str(HYMENOPTERA)).run()
    data.text_input(key="data_server_name").set_value("hymenoptera").run()
    data.button(key="data_server_go").click().run()
    assert "Imported 'hymenoptera': 398 images in 2 classes; 0 file(s) skipped." in texts(data)
    assert "1 image(s) have very few colours" in texts(data)  # the placeholder gif: kept, flagged

    train_page = open_page("pages/train.py")
    assert train_page.selectbox(key="train_base").value == "MobileNetV2"  # offline weights listed first
    assert train_page.select_slider(key="train_alpha_MobileNetV2").value == 0.35
    train_page.button(key="train_start").click().run()
    run = get_run(train_page.session_state["train_last_run"])
    deadline = time.time() + 400
    while run.state in ("queued", "running") and time.time() < deadline:
        open_page("pages/train.py")
        time.sleep(2)
    assert run.state == "finished", run.status()

    results = open_page("pages/results.py")
    results.selectbox(key="results_run").set_value(run.id).run()
    assert len(results.get("plotly_chart")) >= 2
    per_class = results.dataframe[1].value
    assert list(per_class["class"]) == ["ants", "bees"]

    predict = open_page("pages/predict.py")
    predict.selectbox(key="predict_run").set_value(run.id).run()
    uploader = predict.get("file_uploader")[0]
    held_back = [(cls, p) for cls in ("ants", "bees") for p in sorted((HYMENOPTERA / "val" / cls).iterdir())[:5]]
    for cls, path in held_back:
        uploader.upload(f"{cls}__{path.name}", path.read_bytes(), "image/jpeg")
    predict.toggle(key="predict_as_table").set_value(True).run()
    uploader.run()
    table = predict.dataframe[-1].value
    correct = sum(name.split("__")[0] == top1 for name, top1 in zip(table["image"], table["top1"]))
    assert correct >= 8, table[["image", "top1", "p1"]]


def test_train_page_shows_the_chosen_variant_s_parameters_and_whether_its_weights_are_here(colors):
    """Weights are on disk for MobileNetV2 alpha 0.35 only (shared/keras_home): alpha 1.0 is not offline."""
    at = open_page("pages/train.py")
    at.selectbox(key="train_base").set_value("MobileNetV2").run()
    at.select_slider(key="train_alpha_MobileNetV2").set_value(0.35).run()
    assert any("410,208 parameters" in c.value and "on this server ✓" in c.value for c in at.caption)
    assert not [w for w in at.warning if "not on this server" in w.value]
    at.select_slider(key="train_alpha_MobileNetV2").set_value(1.0).run()
    warnings = [w.value for w in at.warning if "not on this server" in w.value]
    assert warnings and "2,257,984 parameters" in warnings[0] and "weights_tf_dim_ordering" in warnings[0]


def test_data_page_names_a_chosen_zip_after_its_file_and_says_why_import_is_greyed_out(tmp_path):
    from .conftest import zip_folder

    at = open_page("pages/data.py")
    assert at.button(key="data_zip_go").disabled
    assert "Choose a zip file first." in [c.value for c in at.caption]
    archive = zip_folder(make_class_folders(tmp_path / "src", per_class=3), tmp_path / "garden flowers.zip")
    at.get("file_uploader")[0].upload(archive.name, archive.read_bytes(), "application/zip").run()
    assert at.text_input(key="data_zip_name").value == "garden flowers"
    assert not at.button(key="data_zip_go").disabled
    at.text_input(key="data_zip_name").set_value(" ").run()
    assert at.button(key="data_zip_go").disabled and "Give the dataset a name." in [c.value for c in at.caption]


def test_a_released_upload_seen_by_the_zip_uploaders_callback_leaves_the_name_alone(monkeypatch):
    """The import lets go of the uploaded zip, yet the browser reports the old uploader's file on the next rerun:
    its on_change then sees a DeletedFile (the walk: AttributeError 'DeletedFile' has no attribute 'name' on
    choosing a dataset under Browse datasets, right after importing one)."""
    from types import SimpleNamespace

    from streamlit.runtime.uploaded_file_manager import DeletedFile

    from tl_app import data_sections

    state = {"data_zip_0": DeletedFile("gone"), "data_zip_name": "garden"}
    monkeypatch.setattr(data_sections, "st", SimpleNamespace(session_state=state))
    data_sections._name_from_upload("data_zip_0", "data_zip_name")
    assert state["data_zip_name"] == "garden"
    state["data_zip_0"] = SimpleNamespace(name="roses.zip")
    data_sections._name_from_upload("data_zip_0", "data_zip_name")
    assert state["data_zip_name"] == "roses"


def test_browse_datasets_opens_on_the_dataset_just_imported(colors, tmp_path):
    """The import's report sends a person to Browse datasets (to settle label conflicts); it opened on another
    dataset."""
    from .conftest import zip_folder

    at = open_page("pages/data.py")
    archive = zip_folder(make_class_folders(tmp_path / "src", per_class=3, seed=9), tmp_path / "zz garden.zip")
    at.get("file_uploader")[0].upload(archive.name, archive.read_bytes(), "application/zip").run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="data_browse_name").value == "zz garden"


def test_an_import_with_no_usable_image_shows_the_report_it_points_to_and_no_stale_progress(tmp_path):
    archive = tmp_path / "junk.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("cats/notes.txt", "not an image")
        handle.writestr("dogs/fake.jpg", b"\xff\xd8 not really a jpeg")
    at = open_page("pages/data.py")
    at.get("file_uploader")[0].upload(archive.name, archive.read_bytes(), "application/zip").run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception
    assert any("No usable images found" in e.value and "report below" in e.value for e in at.error)
    report = at.dataframe[0].value
    assert sorted(report["file"].str.rsplit("/", n=1).str[-1]) == ["fake.jpg", "notes.txt"]
    assert not at.get("progress"), "the progress bar stays on 'Checking images…' after the import failed"


def test_data_page_shows_pending_classes_as_thumbnails_and_removes_one():
    from .conftest import COLORS, noisy_image

    at = open_page("pages/data.py")
    at.radio(key="data_source").set_value("Class by class").run()
    for class_name in ("red", "blue"):
        at.text_input(key="data_class_name").input(class_name)
        uploader = at.get("file_uploader")[-1]
        for i in range(3):
            uploader.upload(f"{class_name}{i}.png", noisy_image(COLORS[class_name], seed=i), "image/png")
        next(b for b in at.button if b.label == "Add class").click()
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [j for j in at.get("json")], "pending classes drawn as raw JSON"
    assert [m.value for m in at.markdown if "image(s)" in m.value] == ["**red**: 3 image(s)", "**blue**: 3 image(s)"]
    assert len(at.get("image")) == 2  # a row of thumbnails per class
    at.button(key="data_items_remove_0").click().run()
    assert [m.value for m in at.markdown if "image(s)" in m.value] == ["**blue**: 3 image(s)"]
