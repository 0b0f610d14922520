"""Training runs on a tiny synthetic dataset with the real MobileNetV2 alpha 0.35 weights at 64 px."""

import json
from functools import partial

import numpy as np
import pytest

from tl_core.errors import TLError
from tl_core.inference.predict import Predictor
from tl_core.models import bases, freeze
from tl_core.models.config import TrainConfig
from tl_core.models.head_fit import apply_temperature
from tl_core.runs.evaluate import Interpretation
from tl_core.runs.store import Run, new_run
from tl_core.training.runner import execute, train

from .factories import small_config

small = partial(small_config, epochs=2, batch_size=8)


def reference_base():
    return bases.build_base("MobileNetV2", 0.35, 64)


def class_probabilities(predictor, files, names):
    """Each file's probabilities in class order (all classes: top_k is the class count)."""
    return np.array(
        [
            [p["probability"] for p in sorted(top, key=lambda p: names.index(p["label"]))]
            for top in predictor.predict(files, top_k=len(names))
        ]
    )


def _base_of(run):
    import keras

    model = keras.models.load_model(run.artifacts.model_path, safe_mode=True)
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


@pytest.mark.slow
def test_partly_frozen_plain_path_changes_only_unfrozen_layers(colors, tmp_path):
    events = []
    run, metrics = train(
        small(freeze_depth=120, augment=False, early_stopping=False), tmp_path / "run", progress=events.append
    )
    assert metrics["training_path"] == "plain" and metrics["frozen_layers"] == 120
    trained, original = _base_of(run), reference_base()
    changed = {}
    for index, (a, b) in enumerate(zip(original.layers, trained.layers)):
        if a.weights:
            changed[index] = not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not any(changed[i] for i in changed if i < 120), "a frozen layer's weights changed"
    unfrozen_trainable = [i for i in changed if i >= 120 and not freeze.keeps_inference_mode(original.layers[i])]
    assert unfrozen_trainable and all(changed[i] for i in unfrozen_trainable)
    bn_after_cut = [i for i in changed if i >= 120 and freeze.keeps_inference_mode(original.layers[i])]
    assert bn_after_cut and not any(changed[i] for i in bn_after_cut), "BatchNorm statistics must not move"
    kinds = {e["kind"] for e in events}
    assert {"batch", "epoch"} <= kinds
    assert [row["epoch"] for row in run.history()] == [1, 2]


@pytest.mark.slow
def test_fine_tune_phase_trains_only_what_it_unfroze(colors, tmp_path):
    run, metrics = train(
        small(freeze_depth="all", fine_tune_depth=140, fine_tune_epochs=2, early_stopping=False, augment=False),
        tmp_path / "ft",
    )
    history = run.history()
    assert [r["phase"] for r in history] == ["head", "head", "fine-tune", "fine-tune"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["learning_rate"] == pytest.approx(1e-4)
    trained, original = _base_of(run), reference_base()
    for index, (a, b) in enumerate(zip(original.layers, trained.layers)):
        if not a.weights:
            continue
        same = all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
        if index < 140 or freeze.keeps_inference_mode(a):
            assert same, f"layer {index} {a.name} should have stayed frozen"
        else:
            assert not same, f"layer {index} {a.name} was unfrozen but did not train"
    assert metrics["params_fine_tune"]["trainable"] > metrics["params"]["trainable"]


@pytest.mark.slow
def test_saved_run_reloads_and_predicts_the_same_probabilities(colors, tmp_path):
    run, metrics = train(small(), tmp_path / "run")
    assert metrics["training_path"] == "cached-features"
    saved = Interpretation.load(run.path("predictions.csv"), run.artifacts.class_names())
    predictor = Predictor(Run(run.root).load_model())  # saved calibrated: evaluated probabilities, temperature on
    files = [colors.root / f for f in saved.files]
    again = class_probabilities(predictor, files, run.artifacts.class_names())
    np.testing.assert_allclose(again, apply_temperature(saved.probs, metrics["temperature"]), atol=1e-5)
    from PIL import Image

    by_bytes = predictor.predict([files[0].read_bytes()], 3)[0]
    by_pil = predictor.predict([Image.open(files[0])], 3)[0]
    assert by_bytes == by_pil
    stored = json.loads(run.path("metrics.json").read_text())
    assert stored["val_accuracy"] == pytest.approx(saved.accuracy())
    assert np.array(stored["confusion_matrix"]).sum() == len(saved.files)
    assert set(
        run.path(name).exists()
        for name in ("config.json", "history.csv", "model.keras", "metrics.json", "class_names.json", "status.json")
    ) == {True}
    assert run.state == "finished"


@pytest.mark.slow
def test_a_gpu_hosts_path_runs_here_mixed_precision_on_one_batched_engine(colors, tmp_path, monkeypatch):
    """What a GPU host runs (TensorFlow as the engine, float16 compute, a fine-tune from a clean cut whose
    frozen prefix goes through that engine) runs on this CPU too: no GPU was lent for the figures, but
    the code that takes them is exercised."""
    import keras

    monkeypatch.setenv("TL_ENGINE", "tensorflow")
    run, metrics = train(
        small(
            mixed_precision="on",
            freeze_depth="all",
            fine_tune_depth=143,
            fine_tune_epochs=1,
            early_stopping=False,
            augment=False,
        ),
        tmp_path / "mixed",
    )
    assert metrics["precision"] == "mixed_float16" and keras.mixed_precision.global_policy().name == "float32"
    assert metrics["engine"]["used"] == {
        "features": "tensorflow",
        "train activations": "tensorflow",
        "validation activations": "tensorflow",
    }  # the prefix ran once, batched
    # float16 keeps ~3 significant digits: agreement is looser than LiteRT's float32, the answers the same
    assert metrics["engine"]["max_rel_diff"] < 0.05 and metrics["engine"]["top1_agreement"] == 1.0
    history = run.history()
    assert [r["phase"] for r in history] == ["head", "head", "fine-tune"]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in history)
    names = run.artifacts.class_names()
    saved = Interpretation.load(run.path("predictions.csv"), names)
    again = class_probabilities(Predictor(run.load_model()), [colors.root / f for f in saved.files], names)
    np.testing.assert_allclose(again.sum(axis=1), 1.0, atol=1e-3)  # the softmax stays float32
    np.testing.assert_allclose(again, apply_temperature(saved.probs, metrics["temperature"]), atol=1e-2)


@pytest.mark.parametrize("head", ["logreg", pytest.param("svm", marks=pytest.mark.slow)])
def test_feature_extractor_heads_train_save_and_predict(colors, tmp_path, head):
    run, metrics = train(small(head=head))  # in the workspace: a scikit-learn head loads only from there
    assert metrics["training_path"] == "sklearn-on-cached-features"
    assert metrics["val_accuracy"] >= 0.5  # three well-separated colours
    top = Predictor.from_run(run).predict([colors.root / colors.items[0]["path"]], top_k=2)[0]
    assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
    assert top[0]["label"] in colors.classes


@pytest.mark.slow
def test_second_run_reuses_the_feature_cache(colors, tmp_path):
    _, first = train(small(learning_rate=1e-3), tmp_path / "a")
    _, second = train(small(learning_rate=3e-3, epochs=3), tmp_path / "b")
    computed = lambda m: next(n for n in m["notes"] if n.startswith("feature cache"))
    assert " 0 reused" in computed(first)
    assert " 0 forward passes" in computed(second)


@pytest.mark.slow
def test_cancel_stops_training_and_keeps_history(colors, tmp_path):
    cfg = small(freeze_depth=100, epochs=5, augment=False, early_stopping=False).resolved()
    run = new_run(cfg, tmp_path / "cancel")

    def cancel_after_first_epoch(event):
        if event["kind"] == "epoch":
            run.request_cancel()

    assert execute(run, cancel_after_first_epoch) == {}
    assert run.state == "cancelled"
    assert len(run.history()) == 1
    assert not run.artifacts.model_path.exists()


def test_failure_is_recorded_with_its_reason(tmp_path):
    run = new_run(small(data="no_such_dataset").resolved(), tmp_path / "fail")
    with pytest.raises(TLError):
        execute(run)
    status = run.status()
    assert status["state"] == "failed" and "Unknown dataset 'no_such_dataset'" in status["message"]


def test_config_errors_quote_the_bad_value():
    with pytest.raises(TLError, match="'bogus'"):
        TrainConfig(data="x", head="bogus").resolved()
    with pytest.raises(TLError, match="fine-tune-depth"):
        TrainConfig(data="x", fine_tune_epochs=3).resolved()
    with pytest.raises(TLError, match="Learning rate.*-1"):
        TrainConfig(data="x", learning_rate=-1).resolved()


@pytest.mark.parametrize(
    "settings",
    [
        dict(freeze_depth=120, augment=False, epochs=1),  # prefix activations
        dict(freeze_depth=100, augment=True, epochs=1),  # pixels, whole model
        dict(epochs=2),
    ],
)  # cached features
@pytest.mark.slow
def test_training_never_hands_tensorflow_a_whole_copy_of_the_data(colors, tmp_path, monkeypatch, settings):
    """The decoded pixels (or activations, or features) are the one copy: batches are sliced from them
    as needed, never copied whole into a tf.data constant or a full shuffle buffer."""
    import tensorflow as tf

    def whole_copy(*args, **kwargs):
        raise AssertionError("from_tensor_slices copies the whole array into TensorFlow")

    monkeypatch.setattr(tf.data.Dataset, "from_tensor_slices", whole_copy)
    _, metrics = train(small(**settings), tmp_path / "run")
    assert metrics["val_accuracy"] >= 0.0 and metrics["num_val_images"] > 0
