"""Shared fixtures: a fresh workspace per test, the offline weights folder, small synthetic images."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
HYMENOPTERA = SHARED / "datasets" / "hymenoptera_data"
OXFORD = SHARED / "datasets" / "oxford17_subset12_224"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: tests need ../shared beside the repository (or TL_SHARED).")
    return path


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
    return home


def noisy_image(color, size=40, seed=0, fmt="PNG") -> bytes:
    """A photo-like image: a base colour plus noise (thousands of distinct colours)."""
    rng = np.random.default_rng(seed)
    base = np.array(color, dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


COLORS = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 190, 60)}


def make_class_folders(root: Path, classes=("red", "blue"), per_class=6, size=40, split=None, seed=0) -> Path:
    for ci, name in enumerate(classes):
        folder = root / (split or "") / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{name}_{i}.png").write_bytes(noisy_image(COLORS[name], size, seed=seed + ci * 100 + i))
    return root


@pytest.fixture
def color_folder(tmp_path) -> Path:
    return make_class_folders(tmp_path / "colors_src")


def zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


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
