"""Suspects on real photos: flipped labels are found with their true class, a leaked image is a duplicate."""

from __future__ import annotations

import json
import random
import shutil

import pytest
from PIL import Image

from tl_core import cli
from tl_core.data import datasets

from .factories import HYMENOPTERA, require_shared


@pytest.mark.slow
def test_flipped_labels_and_a_leaked_image_are_suspects(tmp_path, capsys):
    require_shared(HYMENOPTERA)
    data = tmp_path / "hymenoptera"
    shutil.copytree(HYMENOPTERA, data)
    (data / "train" / "ants" / "imageNotFound.gif").unlink()
    train = sorted((data / "train").glob("*/*.jpg"))
    flipped = random.Random(0).sample(train, round(0.05 * len(train)))
    truth = {}
    for photo in flipped:  # 5% of the training images move to the other class's folder
        other = "bees" if photo.parent.name == "ants" else "ants"
        truth[photo.stem] = photo.parent.name
        photo.rename(data / "train" / other / photo.name)
    leaked = sorted((data / "train" / "bees").glob("*.jpg"))[0]
    with Image.open(leaked) as photo:  # re-encoded and resized: not byte-identical, so the import keeps it
        photo.resize((photo.width * 9 // 10, photo.height * 9 // 10)).save(
            data / "val" / "bees" / f"copy_of_{leaked.name}", quality=80
        )
    datasets.add_folder(data, "flipped")

    top = 2 * len(truth)
    assert cli.main(["suspects", "--data", "flipped", "--top", str(top)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == top and all({"file", "label", "suggested", "score", "kind"} <= set(r) for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    found = {stem: r for r in rows for stem in truth if stem in r["file"]}
    assert len(found) >= 0.7 * len(truth), (len(found), len(truth))
    assert all(r["kind"] == "mislabelled" and r["suggested"] == truth[stem] for stem, r in found.items())

    assert cli.main(["suspects", "--data", "flipped"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    duplicates = [r for r in rows if r["kind"] == "duplicate"]
    assert [r["file"] for r in duplicates] == [next(r["file"] for r in duplicates if "copy_of_" in r["file"])]
    assert duplicates[0]["score"] >= 0.97 and leaked.stem in duplicates[0]["detail"]


@pytest.mark.slow
def test_embedding_projections_keep_clusters_apart():
    import numpy as np
    import pytest

    from tl_core.errors import TLError
    from tl_core.inspection.embedding import project

    rng = np.random.default_rng(0)
    features = np.vstack(
        [rng.normal(0, 0.1, (30, 16)) + 3 * np.eye(16)[0], rng.normal(0, 0.1, (30, 16)) + 3 * np.eye(16)[1]]
    )
    for method in ("PCA", "t-SNE"):
        points = project(features, method)
        assert points.shape == (60, 2)
        gap = np.linalg.norm(points[:30].mean(0) - points[30:].mean(0))
        spread = max(points[:30].std(0).max(), points[30:].std(0).max())
        assert gap > 3 * spread, (method, gap, spread)
    with pytest.raises(TLError, match="Unknown projection 'umap'"):
        project(features, "umap")
