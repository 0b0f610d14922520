"""A small run of the load test (benchmarks/load_predict.py): several browser users predicting at once."""

from __future__ import annotations

import pytest

from ..factories import HYMENOPTERA, require_shared
from . import require_chromium

pytestmark = pytest.mark.browser

require_chromium()
pytest.importorskip("playwright.async_api")


def test_concurrent_users_all_get_their_predictions(keras_home_copy, capsys):
    from benchmarks.load_predict import run_load

    summary = run_load(
        require_shared(HYMENOPTERA), users=3, per_user=3, size=96, timeout_s=120, keras_home=keras_home_copy
    )
    with capsys.disabled():
        print("\n" + " ".join(f"{k}={v}" for k, v in summary.items()))
    assert summary["errors"] == 0 and summary["completed"] == summary["requests"] == 9
    assert summary["labels_right"] >= 5  # a 96 px model is right ~80% of the time: labels are real predictions
    assert 0 < summary["p50_s"] <= summary["p95_s"] <= summary["max_s"]
