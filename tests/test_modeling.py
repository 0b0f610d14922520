import numpy as np
import pytest

from tl_core.errors import TLError
from tl_core.models import freeze, modeling, preprocessing
from tl_core.models.freeze import parse_depth

from .factories import small_config


def test_parse_depth_meanings():
    assert parse_depth("all", 150) == 150
    assert parse_depth("none", 150) == 0
    assert parse_depth(0, 150) == 0
    assert parse_depth(100, 150) == 100
    assert parse_depth("0.7", 150) == 105
    assert parse_depth(0.5, 150) == 75
    with pytest.raises(TLError, match="out of range.*150 layers"):
        parse_depth(151, 150)
    with pytest.raises(TLError, match="'deep'"):
        parse_depth("deep", 150)


@pytest.mark.parametrize("mode, keras_module", [("tf", "mobilenet_v2"), ("torch", "densenet"), ("caffe", "resnet50")])
def test_preprocess_layer_matches_keras_preprocess_input(mode, keras_module):
    import keras

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = getattr(keras.applications, keras_module).preprocess_input(pixels.copy())
    got = np.asarray(preprocessing.Preprocess(mode)(pixels))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def _cfg(**kw):
    return small_config(data="x", **kw).resolved()


def test_freeze_depth_counts_from_input_and_reports_params():
    built = modeling.build_classifier(_cfg(freeze_depth=100), 3)
    layers = built.base.layers
    assert built.frozen_layers == 100
    assert all(not layer.trainable for layer in layers[:100])
    assert all(layer.trainable != freeze.keeps_inference_mode(layer) for layer in layers[100:])
    counts = modeling.parameter_counts(built.model)
    assert counts["trainable"] > 3 * (1280 + 1) and counts["frozen"] > 0
    assert freeze.first_trainable_layer(built.base) == next(
        layer.name for layer in layers[100:] if layer.trainable_weights
    )
    all_frozen = modeling.build_classifier(_cfg(freeze_depth="all"), 3)
    assert modeling.parameter_counts(all_frozen.model)["trainable"] == 1280 * 3 + 3


def test_freeze_summary_without_building_agrees_with_built_model():
    description = freeze.describe("MobileNetV2", 0.35, 64)
    summary = freeze.preview(description, 100)
    built = modeling.build_classifier(_cfg(freeze_depth=100, augment=False), 3)
    base_counts = modeling.parameter_counts(built.base)
    assert summary["base_trainable_params"] == base_counts["trainable"]
    assert summary["base_frozen_params"] == base_counts["frozen"]
    assert summary["first_trainable_layer"] == freeze.first_trainable_layer(built.base)


def test_base_runs_in_inference_mode_even_when_trainable():
    """BatchNorm inside the base keeps its moving statistics: training=True gives the same output."""
    built = modeling.build_classifier(_cfg(freeze_depth=0, dropout=0.0, augment=False), 2)
    x = np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(built.model(x, training=True)), np.asarray(built.model(x, training=False)), rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_a_base_built_from_its_cached_weights_copy_equals_one_loaded_from_the_weights_file(workspace):
    import keras

    from tl_core.models import architectures
    from tl_core.models.bases import build_base

    first = build_base("MobileNetV2", 0.35, 96)  # from the h5 file; leaves a NumPy copy behind
    copies = list((workspace / "cache" / "weights").glob("*.npz"))
    assert len(copies) == 1
    again = build_base("MobileNetV2", 0.35, 96)  # from the copy
    local = architectures.find_weights(architectures.get("MobileNetV2"), 0.35, 96)
    reference = keras.applications.MobileNetV2(
        weights=str(local), alpha=0.35, input_shape=(96, 96, 3), include_top=False
    )
    for built in (first, again):
        assert len(built.weights) == len(reference.weights)
        for mine, theirs in zip(built.weights, reference.weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    copies[0].write_bytes(b"torn")  # a torn copy is rebuilt from the file
    torn = build_base("MobileNetV2", 0.35, 96)
    np.testing.assert_array_equal(torn.weights[-1].numpy(), reference.weights[-1].numpy())
    assert copies[0].stat().st_size > 1000
