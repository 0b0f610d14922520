"""Who may do what: with OpenID Connect only a run's owner or an admin cancels it; deletions and
cancellations are recorded in the audit log and shown in the app."""

import os

import pytest
from streamlit.testing.v1 import AppTest

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
    assert any("Only ana@example.com or an admin can cancel" in c.value for c in bob.caption)

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


@pytest.mark.slow
def test_deleting_a_dataset_is_audited_and_shown_on_home(tmp_path):
    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=4), "doomed")
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.secrets.update(SECRETS)
    at.user.update({"is_logged_in": True, "email": "ana@example.com"})
    at.run()
    at.switch_page("pages/data.py").run()
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


def test_audit_log_keeps_every_entry_newest_first():
    for i in range(200):
        audit.record("cancel run", f"run-{i}", "x" * (i % 50))
    entries = audit.recent(500)
    assert len(entries) == 200 and entries[0]["target"] == "run-199"
