"""Temperature scaling: fitted on validation, it lowers the calibration error of an overconfident model and
never changes a prediction; the coverage curve prices a "not sure" threshold."""

from __future__ import annotations

import numpy as np
import pytest

from tl_core.training.calibration import (
    apply_temperature,
    calibrate,
    coverage_curve,
    expected_calibration_error,
    fit_temperature,
)


def _overconfident(n=600, classes=3, seed=0):
    """Logits whose true calibration is at T=3, sharpened as an overfitted head would give them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += 1.5
    truth = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    drawn = np.array([rng.choice(classes, p=row) for row in truth])  # labels drawn from the true probabilities
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)
    return sharp, drawn


def test_temperature_scaling_recovers_the_sharpening_and_keeps_every_prediction():
    probs, labels = _overconfident()
    temperature = fit_temperature(probs, labels)
    assert 2.3 < temperature < 3.8, temperature
    calibrated = apply_temperature(probs, temperature)
    assert (calibrated.argmax(1) == probs.argmax(1)).all()
    result = calibrate(probs, labels)
    assert result["ece_after"] < result["ece_before"] / 2, result
    assert expected_calibration_error(np.eye(3)[labels], labels) == pytest.approx(0)


def test_coverage_curve_trades_answered_images_for_accuracy():
    probs, labels = _overconfident()
    curve = coverage_curve(apply_temperature(probs, 3.0), labels)
    assert curve[0]["coverage"] == 1 and curve[-1]["coverage"] <= 0.05
    answered = [row for row in curve if row["coverage"] > 0.1]
    assert answered[-1]["accuracy"] > answered[0]["accuracy"] + 0.1  # surer answers are right more often


@pytest.mark.slow
@pytest.mark.parametrize("head", ["keras", "logreg", "svm"])
def test_a_trained_run_saves_its_model_calibrated_and_every_use_of_it_answers_so(tmp_path, head):
    """The run's temperature is in its saved model (a linear head's weights; an SVM's loaded handle applies
    it): loaded, its probabilities on the validation images are the evaluated ones with the temperature
    applied, and Predictor adds nothing."""
    import json

    from tl_core.data import datasets
    from tl_core.data.images import load_batch
    from tl_core.inference.predict import Predictor
    from tl_core.models.config import TrainConfig
    from tl_core.runs.evaluate import Interpretation
    from tl_core.training.runner import train

    from .factories import make_class_folders

    colors = datasets.add_folder(make_class_folders(tmp_path / "src", ("red", "blue"), per_class=8), "colors")
    run, metrics = train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=3, head=head))
    assert {"temperature", "ece_before", "ece_after"} <= set(metrics) and metrics["temperature"] > 0
    assert abs(np.log(metrics["temperature"])) > 0.05, metrics["temperature"]  # calibration changes answers
    info = json.loads(run.path("model_info.json").read_text())
    assert info["temperature"] == metrics["temperature"] and info["temperature_folded"] == (head != "svm")

    # predictions.csv: the validation images as evaluated, before calibration
    evaluated = Interpretation.load(run.artifacts.predictions_path, metrics["class_names"])
    pixels = load_batch([colors.root / f for f in evaluated.files], 64, resize=run.config.resize)
    expected = apply_temperature(evaluated.probs, metrics["temperature"])
    np.testing.assert_allclose(run.interpretation().probs, expected, atol=1e-9)  # what Results shows
    loaded = run.load_model()
    np.testing.assert_allclose(loaded.probabilities(pixels), expected, atol=1e-5)
    predictor = Predictor.from_run(run)
    np.testing.assert_allclose(predictor.probabilities(pixels), expected, atol=1e-5)
    top = predictor.predict([colors.root / evaluated.files[0]], 2)[0]
    assert [t["probability"] for t in top] == pytest.approx(sorted(expected[0], reverse=True), abs=1e-5)


@pytest.mark.usefixtures("server_past_pages_folder_mode")
@pytest.mark.slow
def test_predict_page_says_not_sure_below_the_threshold_and_shows_its_cost(tmp_path):
    from tl_core.data import datasets
    from tl_core.models.config import TrainConfig
    from tl_core.training.runner import train

    from .factories import make_class_folders
    from .test_app import open_page

    colors = datasets.add_folder(make_class_folders(tmp_path / "src", ("red", "blue"), per_class=8), "colors")
    train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=2))
    page = open_page("pages/predict.py")
    page.toggle(key="predict_as_table").set_value(True).run()
    item = colors.items[0]
    page.get("file_uploader")[0].upload("x.png", (colors.root / item["path"]).read_bytes(), "image/png").run()
    assert page.dataframe[-1].value["answer"][0] in colors.classes
    page.slider(key="predict_threshold").set_value(0.99).run()
    assert not page.exception, [e.value for e in page.exception]
    assert page.dataframe[-1].value["answer"][0] == "not sure"
    page.toggle(key="predict_as_table").set_value(False).run()
    assert page.get("image")[0].captions[0].startswith("**not sure** (best guess")
    assert any("threshold 0.99" in (chart.proto.spec or "") for chart in page.get("plotly_chart"))
