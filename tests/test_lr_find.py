"""The learning-rate finder: a suggestion from the range test, the same for the same seed, and nothing that
trains afterwards changes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tl_core import cli
from tl_core.data import datasets
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.training.lr_find import lr_find, suggest

from .factories import make_class_folders


@pytest.mark.slow
def test_same_seed_same_suggestion_and_training_afterwards_unchanged(tmp_path, capsys):
    from tl_core.training.runner import train

    datasets.add_folder(make_class_folders(tmp_path / "src", ("red", "blue", "green"), per_class=8), "colors")
    cfg = dict(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=3)
    before, _ = train(TrainConfig(**cfg))
    first = lr_find(TrainConfig(**cfg), steps=40)
    assert cli.main(["lr-find", "--data", "colors", "--alpha", "0.35", "--size", "64", "--steps", "40"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(second) == {"suggested_lr", "lrs", "losses"}
    assert second["suggested_lr"] == first["suggested_lr"] and second["losses"] == pytest.approx(first["losses"])
    assert 1e-6 <= first["suggested_lr"] <= 1 and first["lrs"] == sorted(first["lrs"])
    after, _ = train(TrainConfig(**cfg))
    assert [row["val_loss"] for row in after.history()] == pytest.approx([row["val_loss"] for row in before.history()])
    with pytest.raises(TLError, match="The range must grow"):
        lr_find(TrainConfig(**cfg), start_lr=1.0, end_lr=0.1)


def test_the_valley_rule_ignores_a_noisy_start():
    lrs = np.logspace(-6, 0, 60)
    losses = np.concatenate([[2.0, 1.5], np.full(20, 1.45), np.linspace(1.45, 0.3, 30), np.linspace(0.3, 3, 8)])
    lr = suggest(lrs, losses)
    assert lrs[22] < lr < lrs[52], lr  # inside the long descent, not at the first drop


@pytest.mark.usefixtures("server_past_pages_folder_mode")
@pytest.mark.slow
def test_train_page_draws_the_curve_and_one_click_sets_the_learning_rate(tmp_path):
    from tl_app.lr_finder import nearest_choice

    from .test_app import open_page

    datasets.add_folder(make_class_folders(tmp_path / "src", ("red", "blue"), per_class=8), "colors")
    page = open_page("pages/train.py")
    page.button(key="train_lr_find").click().run()
    assert not page.exception, [e.value for e in page.exception]
    assert any(chart.proto.spec and "learning rate" in chart.proto.spec for chart in page.get("plotly_chart"))
    suggested = page.session_state["train_lr_found"]["result"]["suggested_lr"]
    page.button(key="train_lr_use").click().run()
    assert page.select_slider(key="train_lr").value == nearest_choice(suggested)
