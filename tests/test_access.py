"""Who may do what: with OpenID Connect only a run's owner or an admin cancels it, and only a dataset's
importer or an admin deletes or renames it; deletions, renames and cancellations are recorded in the
audit log and shown in the app."""

import os

import pytest
from streamlit.testing.v1 import AppTest

from tl_app.widgets import md_escape
from tl_core import audit
from tl_core.data import datasets
from tl_core.device import process_start_time
from tl_core.runs.store import new_run

from .factories import REPO, colors_dataset, make_class_folders, small_config
from .test_gate import OIDC

pytestmark = pytest.mark.usefixtures("server_past_pages_folder_mode")
SECRETS = {**OIDC, "access": {"allowed_domains": ["example.com"], "admins": ["root@example.com"]}}


@pytest.fixture
def anas_running_run(tmp_path):
    colors_dataset(tmp_path, per_class=4)
    run = new_run(small_config().resolved(), user="ana@example.com")
    run.set_status("running", pid=os.getpid(), pid_start=process_start_time(os.getpid()))  # alive: this process
    return run


def train_page_as(email: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.secrets.update(SECRETS)
    at.user.update({"is_logged_in": True, "email": email})
    at.run()
    return at.switch_page("pages/train.py").run()


@pytest.mark.slow
def test_only_the_owner_or_an_admin_can_cancel_a_run(anas_running_run):
    run = anas_running_run
    bob = train_page_as("bob@example.com")
    assert not [b for b in bob.button if b.label == "Cancel"]
    owner = md_escape("ana@example.com")  # drawn as text, not Markdown
    assert any(f"Only {owner} or an admin can cancel" in c.value for c in bob.caption)

    admin = train_page_as("root@example.com")
    next(b for b in admin.button if b.label == "Cancel").click().run()
    assert not admin.exception and run.cancel_requested()
    entry = audit.recent(1)[0]
    assert (entry["action"], entry["target"], entry["user"], entry["owner"]) == (
        "cancel run",
        run.id,
        "root@example.com",
        "ana@example.com",
    )

    assert [b.label for b in train_page_as("ana@example.com").button if b.label == "Cancel"] == ["Cancel"]


def data_page_as(email: str, secrets: dict = SECRETS, **user) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.secrets.update(secrets)
    at.user.update({"is_logged_in": True, "email": email, **user})
    at.run()
    return at.switch_page("pages/data.py").run()


@pytest.mark.slow
def test_deleting_a_dataset_is_audited_and_shown_on_home(tmp_path):
    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=4), "doomed", user="ana@example.com")
    at = data_page_as("ana@example.com")
    at.checkbox(key="data_delete_confirm").check().run()
    at.button(key="data_delete_go").click().run()
    assert not at.exception and datasets.list_datasets() == []
    entry = audit.recent(1)[0]
    assert (entry["action"], entry["target"], entry["user"], entry["images"]) == (
        "delete dataset",
        "doomed",
        "ana@example.com",
        8,
    )
    home = at.switch_page("pages/home.py").run()
    table = home.dataframe[-1].value
    assert list(table["action"]) == ["delete dataset"] and list(table["user"]) == ["ana@example.com"]


def test_only_the_importer_or_an_admin_can_rename_or_delete_a_dataset(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=4)
    datasets.add_folder(src, "anas", user="ana@example.com")
    datasets.add_folder(src, "legacy")  # imported before importers were recorded
    no_allow_list = {**OIDC, "access": {"admins": ["root@example.com"]}}
    for at in (data_page_as("bob@example.com"), data_page_as("root@example.com", no_allow_list, email_verified=False)):
        for name, who in (("anas", "ana@example.com or an admin"), ("legacy", "an admin")):
            at.selectbox(key="data_browse_name").set_value(name).run()
            assert not at.exception
            assert at.get("button") and not [b for b in at.button if b.key in ("data_rename_go", "data_delete_go")]
            assert f"Only {who} can rename or delete this dataset." in [c.value for c in at.caption], name

    admin = data_page_as("root@example.com", email_verified=True)
    admin.selectbox(key="data_browse_name").set_value("legacy").run()
    admin.text_input(key="data_rename_to").set_value("old-colors").run()
    admin.button(key="data_rename_go").click().run()
    assert not admin.exception and sorted(d.name for d in datasets.list_datasets()) == ["anas", "old-colors"]
    entry = audit.recent(1)[0]
    assert (entry["action"], entry["target"], entry["to"], entry["user"]) == (
        "rename dataset",
        "legacy",
        "old-colors",
        "root@example.com",
    )

    ana = data_page_as("Ana@Example.com")
    ana.selectbox(key="data_browse_name").set_value("anas").run()
    assert [b.key for b in ana.button if b.key in ("data_rename_go", "data_delete_go")] == [
        "data_rename_go",
        "data_delete_go",
    ]


def test_an_import_records_who_made_the_dataset(tmp_path):
    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=4), "mine", user="ana@example.com")
    assert datasets.load_dataset("mine").manifest["user"] == "ana@example.com"
    renamed = datasets.rename_dataset("mine", "ours", user="ana@example.com")
    assert renamed.manifest["user"] == "ana@example.com"


def test_without_admins_a_dataset_nobody_imported_can_still_be_deleted(tmp_path):
    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=4), "legacy")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.secrets.update({**OIDC})
    at.user.update({"is_logged_in": True, "email": "bob@example.com"})
    at.run()
    at.switch_page("pages/data.py").run()
    assert [b.key for b in at.button if b.key == "data_delete_go"] == ["data_delete_go"]


def test_audit_log_keeps_every_entry_newest_first():
    for i in range(200):
        audit.record("cancel run", f"run-{i}", "x" * (i % 50))
    entries = audit.recent(500)
    assert len(entries) == 200 and entries[0]["target"] == "run-199"
