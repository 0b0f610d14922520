"""Test-time augmentation: the views are what they claim, averaging works through the predictor, and the
evaluate CLI reports accuracy with and without it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tl_core.errors import TLError
from tl_core.inference import tta


def test_views_are_the_image_its_mirror_and_zoomed_crops():
    pixels = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype(np.uint8)
    flip = tta.views(pixels, "flip")
    assert flip.shape == (2, 2, 32, 32, 3) and (flip[:, 1] == pixels[:, :, ::-1]).all()
    crops = tta.views(pixels, "flip+crops")
    assert crops.shape == (2, tta.MODES["flip+crops"], 32, 32, 3) and (crops[:, 0] == pixels).all()
    # a probability function that sees the mirror: averaging over views gives the mean of the two answers
    left_bright = lambda x: np.stack([x[:, :, :16].mean((1, 2, 3)), x[:, :, 16:].mean((1, 2, 3))], 1)
    averaged = tta.averaged(left_bright, pixels.astype(np.float32), "flip")
    assert np.allclose(averaged[:, 0], averaged[:, 1])
    with pytest.raises(TLError, match="Unknown test-time augmentation 'rotate'"):
        tta.views(pixels, "rotate")


@pytest.mark.slow
def test_evaluate_and_predict_take_tta(tmp_path, capsys):
    from tl_core import cli
    from tl_core.data import datasets
    from tl_core.models.config import TrainConfig
    from tl_core.training.runner import train

    from .factories import make_class_folders

    colors = datasets.add_folder(make_class_folders(tmp_path / "src", ("red", "blue"), per_class=8), "colors")
    run, metrics = train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=2))
    assert cli.main(["evaluate", "--run", run.id, "--tta", "flip+crops"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy_none"] == pytest.approx(metrics["val_accuracy"]) and 0 <= result["accuracy_flip+crops"] <= 1
    image = str(colors.root / colors.items[0]["path"])
    assert cli.main(["predict", "--run", run.id, "--tta", "flip", image]) == 0
    assert len(json.loads(capsys.readouterr().out.strip())["top_k"]) == 2
