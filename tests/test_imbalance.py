"""Imbalanced data: class weights by default at 3:1 and more, a warning on import and on Train, and balanced
accuracy and macro F1 beside accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from tl_core.data import datasets
from tl_core.models.config import TrainConfig

from .factories import hymenoptera_photos

pytestmark = pytest.mark.slow


@pytest.fixture
def imbalanced(tmp_path):
    """Real photos, 20:1: every training ant, 6 training bees; validation as it comes."""
    return datasets.add_folder(hymenoptera_photos(tmp_path / "imbalanced", {("train", "bees"): 6}), "imbalanced")


def test_class_weights_by_default_hold_up_against_a_weighted_logistic_regression(imbalanced):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tl_core.training.runner import train

    warning = datasets.imbalance_warning(imbalanced)
    assert warning and "'ants' has 122 training images, 'bees' only 6 (20:1)" in warning
    assert "warning: Imbalanced classes" in datasets.format_report(imbalanced)

    run, metrics = train(TrainConfig(data="imbalanced", base="MobileNetV2", alpha=0.35))
    assert "class weights on (auto): classes differ 20.3:1" in run.log_text()
    assert {"val_balanced_accuracy", "val_macro_f1"} <= set(metrics)
    interp = run.interpretation()
    assert metrics["val_balanced_accuracy"] == pytest.approx(balanced_accuracy_score(interp.y_true, interp.y_pred))

    # the reference: a class-weighted logistic regression on the same frozen features
    from tl_core.inspection.suspects import dataset_features

    features = dataset_features(imbalanced, "MobileNetV2", 0.35)
    items = imbalanced.items
    labels = np.array([imbalanced.classes.index(it["class"]) for it in items])
    train_rows = np.array([it["split"] == "train" for it in items])
    reference = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000))
    reference.fit(features[train_rows], labels[train_rows])
    ref_score = balanced_accuracy_score(labels[~train_rows], reference.predict(features[~train_rows]))
    assert metrics["val_balanced_accuracy"] >= ref_score - 0.005, (metrics["val_balanced_accuracy"], ref_score)

    _, unweighted = train(TrainConfig(data="imbalanced", base="MobileNetV2", alpha=0.35, class_weights="off"))
    assert metrics["val_balanced_accuracy"] > unweighted["val_balanced_accuracy"]


def test_augmentation_is_chosen_from_the_data_and_the_log_says_why(tmp_path):
    from tl_core.training.runner import train

    from .factories import make_class_folders

    datasets.add_folder(make_class_folders(tmp_path / "small", per_class=8, size=48), "small")
    run, _ = train(TrainConfig(data="small", base="MobileNetV2", alpha=0.35, size=64, epochs=1))
    assert (
        "augmentation: 2 cached view(s) per training image, chosen from the data: images 48 px on the short "
        "side vs a 64 px input (upscaled)"
    ) in run.log_text()
    datasets.add_folder(make_class_folders(tmp_path / "big", per_class=50, size=80), "big")
    run, _ = train(TrainConfig(data="big", base="MobileNetV2", alpha=0.35, size=64, epochs=1))
    assert "augmentation: 0 cached view(s) per training image" in run.log_text()
    run, _ = train(TrainConfig(data="big", base="MobileNetV2", alpha=0.35, size=64, epochs=1, aug_views=1))
    assert "chosen from the data" not in run.log_text()
