"""Shared test helpers, one place: where the shared material is, synthetic and real photo datasets, and the
small training settings most tests start from. Plain functions (fixtures built on them are in conftest.py)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
HYMENOPTERA = SHARED / "datasets" / "hymenoptera_data"
OXFORD = SHARED / "datasets" / "oxford17_subset12_224"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: tests need ../shared beside the repository (or TL_SHARED).")
    return path


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


def colors_dataset(tmp_path: Path, name: str = "colors", **folders):
    """The synthetic dataset ``name`` imported into the workspace from ``tmp_path/src``, made by
    ``make_class_folders(**folders)``."""
    from tl_core.data import datasets

    return datasets.add_folder(make_class_folders(tmp_path / "src", **folders), name)


def zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return zip_path


def hymenoptera_photos(
    root: Path,
    first: Optional[Mapping[Union[str, tuple[str, str]], int]] = None,
    splits=("train", "val"),
) -> Path:
    """Real ant and bee photos copied from the shared hymenoptera set into ``root/<split>/<class>/``: all of
    them, or the first N by name where ``first`` names a split (``"train"``) or a split and class
    (``("train", "bees")``)."""
    require_shared(HYMENOPTERA)
    first = first or {}
    for split in splits:
        for cls in ("ants", "bees"):
            count = first.get((split, cls), first.get(split))
            target = root / split / cls
            target.mkdir(parents=True)
            for photo in sorted((HYMENOPTERA / split / cls).glob("*.jpg"))[:count]:
                shutil.copy(photo, target / photo.name)
    return root


SMALL = {"data": "colors", "base": "MobileNetV2", "alpha": 0.35, "size": 64}


def small_config(**settings):
    """Training settings small enough for a CPU test: MobileNetV2 at alpha 0.35 and 64 px on the dataset
    'colors', with ``settings`` on top."""
    from tl_core.models.config import TrainConfig

    return TrainConfig(**{**SMALL, **settings})


def cli(*args, env_extra=None, timeout=600) -> subprocess.CompletedProcess:
    """``python -m tl_core ARGS`` in a subprocess from the repository root, output captured as text."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "tl_core", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
