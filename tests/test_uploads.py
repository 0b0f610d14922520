"""Uploads on the Data page: staged on disk, never kept in the session, let go of once imported."""

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.data import datasets, uploads

from .factories import REPO, make_class_folders, noisy_image, zip_folder

pytestmark = pytest.mark.usefixtures("server_past_pages_folder_mode")


def data_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    return at.switch_page("pages/data.py").run()


def staged_files():
    return [p for p in uploads.staging_root().rglob("*") if p.is_file()]


def test_class_by_class_uploads_wait_on_disk_not_in_the_session():
    at = data_page()
    at.radio(key="data_source").set_value("Class by class").run()
    for cls, color in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        at.text_input(key="data_class_name").set_value(cls)
        uploader = at.get("file_uploader")[0]
        for i in range(3):
            uploader.upload(f"{cls}{i}.png", noisy_image(color, seed=hash(cls) % 97 + i), "image/png")
        at.button[0].click().run()  # the form's "Add class"
    assert not at.exception, [e.value for e in at.exception]
    assert len([p for p in staged_files() if p.suffix == ".png"]) == 6

    def holds_data(value) -> bool:
        if isinstance(value, (list, tuple)):
            return any(holds_data(v) for v in value)
        if isinstance(value, dict):
            return any(holds_data(v) for v in value.values())
        return isinstance(value, (bytes, bytearray)) or hasattr(value, "getvalue")

    # the uploader widget's own value is Streamlit's (released after each "Add class"); none of ours hold data
    held = [k for k, v in at.session_state.to_dict().items() if holds_data(v) and k != "data_class_images"]
    assert held == [], f"upload data kept in the session: {held}"
    at.text_input(key="data_items_name").set_value("by class").run()
    at.button(key="data_items_go").click().run()
    assert "Imported 'by class': 6 images in 2 classes" in [s.value for s in at.success][0]
    assert staged_files() == [], "staged files are removed once imported"


@pytest.mark.slow
def test_zip_upload_goes_through_disk_and_the_uploader_is_cleared_after_import(tmp_path):
    archive = zip_folder(make_class_folders(tmp_path / "src", per_class=3), tmp_path / "c.zip")
    at = data_page()
    at.get("file_uploader")[0].upload("c.zip", archive.read_bytes(), "application/zip").run()
    at.text_input(key="data_zip_name").set_value("zipped").run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception and datasets.load_dataset("zipped").manifest["num_images"] == 6
    assert staged_files() == []
    at.run()
    assert at.get("file_uploader")[0].value is None, "a fresh, empty uploader after the import"


@pytest.mark.slow
def test_a_failed_import_keeps_the_upload_so_the_user_can_fix_the_name(tmp_path):
    archive = zip_folder(make_class_folders(tmp_path / "src", per_class=3), tmp_path / "c.zip")
    datasets.add_zip(archive, "taken")
    at = data_page()
    at.get("file_uploader")[0].upload("c.zip", archive.read_bytes(), "application/zip").run()
    at.text_input(key="data_zip_name").set_value("taken").run()
    at.button(key="data_zip_go").click().run()
    assert "already exists" in at.error[0].value
    at.text_input(key="data_zip_name").set_value("second").run()
    at.button(key="data_zip_go").click().run()
    assert datasets.load_dataset("second").manifest["num_images"] == 6


def test_folder_upload_files_are_read_one_at_a_time_when_the_importer_gets_to_them(tmp_path):
    reads = []
    files = [
        (
            f"set/{cls}/{i}.png",
            (
                lambda cls=cls, i=i: (
                    reads.append((cls, i)) or noisy_image((200, 0, 0) if cls == "a" else (0, 0, 200), seed=i + ord(cls))
                )
            ),
        )
        for cls in ("a", "b")
        for i in range(3)
    ]
    seen_before_import = list(reads)
    dataset = datasets.add_uploaded_folder(files, "lazy")
    assert seen_before_import == [] and len(reads) == 6 and dataset.manifest["num_images"] == 6


def test_stale_staging_folders_are_cleaned(tmp_path):
    import os
    import time

    staged = uploads.Staging()
    staged.add_to_class("a", [("x.png", __import__("io").BytesIO(b"data"))])
    old = time.time() - uploads.STALE_AFTER_S - 10
    os.utime(staged.root, (old, old))
    fresh = uploads.Staging()
    fresh.add_to_class("a", [("y.png", __import__("io").BytesIO(b"data"))])
    uploads.clean_stale()
    assert not staged.root.exists() and fresh.root.exists()
