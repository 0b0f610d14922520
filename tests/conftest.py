"""Shared fixtures: a fresh workspace per test, the offline weights folder, the synthetic 'colors' dataset, the
background worker and AppTest set-up. The helpers they use are in factories.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Test files import the helpers from factories.py; these names stay importable from here as well, for test
# files written before factories.py existed.
from .factories import (  # noqa: F401
    COLORS,
    HYMENOPTERA,
    OXFORD,
    REPO,
    SHARED,
    colors_dataset,
    make_class_folders,
    noisy_image,
    require_shared,
    zip_folder,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COLORS_SHAPE = {"classes": ("red", "blue", "green"), "per_class": 8, "size": 48}


@pytest.fixture(scope="session")
def keras_home_copy(tmp_path_factory) -> Path:
    """A temporary copy of shared/keras_home (the shared folder is read-only)."""
    target = tmp_path_factory.mktemp("keras_home")
    shutil.copytree(require_shared(SHARED / "keras_home"), target, dirs_exist_ok=True)
    return target


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch, keras_home_copy) -> Path:
    home = tmp_path / "workspace"
    monkeypatch.setenv("TL_HOME", str(home))
    monkeypatch.setenv("KERAS_HOME", str(keras_home_copy))
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", "")  # MLflow off, whatever this machine's secrets file says
    monkeypatch.setenv("TL_DEFAULT_BUDGET", "0")  # runs keep to the head unless a test sets a budget
    return home


@pytest.fixture
def colors(request, tmp_path):
    """The dataset 'colors' in this test's workspace: three classes of eight 48 px images, or the
    ``make_class_folders`` arguments of the closest ``@pytest.mark.colors(...)`` (on the test or the module)."""
    marker = request.node.get_closest_marker("colors")
    return colors_dataset(tmp_path, **(marker.kwargs if marker else COLORS_SHAPE))


@pytest.fixture
def color_folder(tmp_path) -> Path:
    return make_class_folders(tmp_path / "colors_src")


@pytest.fixture
def stop_worker():
    """Kill the workspace's background worker (if a test started one) when the test ends."""
    yield
    from tl_core.backends.local import worker_pid

    pid = worker_pid()
    if pid:
        try:
            os.kill(pid, 9)
        except OSError:
            pass


@pytest.fixture
def server_past_pages_folder_mode():
    """AppTest runs like a server past its first request (see streamlit_internals for why)."""
    from tl_app.streamlit_internals import run_app_tests_as_a_server_past_its_first_request

    undo = run_app_tests_as_a_server_past_its_first_request()
    yield
    undo()
