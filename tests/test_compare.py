"""Choosing a base: the compare CLI's leaderboard, the quick scan, and the Train page's buttons."""

from __future__ import annotations

import json

import pytest

from tl_core import cli

pytestmark = [pytest.mark.slow, pytest.mark.colors(classes=("red", "blue"), per_class=8, size=48)]


def test_compare_trains_every_base_on_disk_and_prints_the_leaderboard_best_first(colors, capsys):
    assert cli.main(["compare", "--data", "colors", "--size", "64", "--epochs", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["base"], r["alpha"]) for r in rows} == {("MobileNetV2", 0.35), ("MobileNet", 0.25)}
    assert [r["val_accuracy"] for r in rows] == sorted((r["val_accuracy"] for r in rows), reverse=True)
    for row in rows:
        assert set(row) >= {
            "val_accuracy",
            "balanced_accuracy",
            "training_s",
            "model_mb",
            "params",
            "latency_ms",
            "run_dir",
        }
        assert row["model_mb"] > 0 and row["params"] > 100_000 and row["latency_ms"] > 0
    assert cli.main(["compare", "--data", "colors", "--size", "64", "--bases", "MobileNet", "--quick"]) == 0
    scan = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["base"] for r in scan] == ["MobileNet"] and 0 <= scan[0]["probe_balanced_accuracy"] <= 1


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_train_page_scans_bases_and_queues_one_run_each(colors, stop_worker):
    from tl_core.runs.store import list_runs

    from .test_app import open_page, texts

    page = open_page("pages/train.py")
    assert page.multiselect(key="train_compare_bases").value == ["MobileNetV2", "MobileNet"]
    page.button(key="train_compare_scan").click().run()
    assert not page.exception, [e.value for e in page.exception]
    assert "Recommended: **" in texts(page)
    page.button(key="train_compare_queue").click().run()
    assert "Queued 2 run(s) with the same settings" in texts(page)
    assert sorted(r.config.base for r in list_runs()) == ["MobileNet", "MobileNetV2"]
