"""Freeze depth: one module parses, applies, previews and checks it, and owns the private Keras graph access."""

import keras
import numpy as np
import pytest

from tl_core.backends.local import LocalBackend
from tl_core.errors import TLError
from tl_core.models import bases, freeze
from tl_core.models.config import TrainConfig
from tl_core.runs.store import list_runs


@pytest.fixture(scope="module")
def base():
    return bases.build_base("MobileNetV2", 0.35, 64, weights=None)


def test_keras_graph_internals_freeze_relies_on_are_still_there(base):
    """Fails loudly when a Keras upgrade moves what finding cuts reads: each base layer's call node is
    found in the base's own graph, and tensors still record the operation that made them."""
    layer = base.layers[5]
    assert hasattr(layer, "_inbound_nodes") and hasattr(base, "_nodes"), keras.__version__
    assert all(freeze._base_node(layer, base) is not None for layer in base.layers[1:]), keras.__version__
    node = freeze._base_node(layer, base)
    assert all(hasattr(t, "_keras_history") for t in node.input_tensors), keras.__version__


def test_clean_cuts_split_the_base_and_replay_it_exactly(base):
    cuts = freeze.clean_cuts(base)
    assert len(cuts) >= 10, cuts  # between MobileNetV2's inverted-residual blocks
    assert 100 not in cuts  # inside a residual block: two tensors cross
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    for depth in (cuts[0], cuts[len(cuts) // 2], cuts[-1]):
        prefix, cut = freeze.split_base(base, depth)
        inputs = keras.Input(shape=tuple(cut.shape[1:]))
        suffix = keras.Model(inputs, freeze.replay_above(base, depth, cut, inputs))
        np.testing.assert_allclose(np.asarray(suffix(prefix(x))), np.asarray(base(x)), rtol=1e-5, atol=1e-5)
    assert freeze.split_base(base, 100) is None


def test_preview_matches_what_apply_does(base):
    description = freeze.describe("MobileNetV2", 0.35, 64)
    for depth in (0, 57, "0.5", "all"):
        preview = freeze.preview(description, depth)
        frozen = freeze.apply(base, depth)
        assert preview["frozen_layers"] == frozen
        assert preview["first_trainable_layer"] == freeze.first_trainable_layer(base)
        trainable = sum(int(np.prod(w.shape)) for w in base.trainable_weights)
        assert preview["base_trainable_params"] == trainable, depth
        assert preview["clean_cut"] == (frozen in description["clean_cuts"] or frozen in (0, len(base.layers)))


@pytest.mark.parametrize("field, value", [("freeze_depth", 999), ("freeze_depth", "deep"), ("fine_tune_depth", 500)])
def test_a_bad_depth_is_refused_when_the_run_is_submitted(field, value):
    cfg = TrainConfig(
        data="anything",
        base="MobileNetV2",
        alpha=0.35,
        size=64,
        **{field: value},
        **({"fine_tune_epochs": 2} if field == "fine_tune_depth" else {}),
    )
    with pytest.raises(TLError, match=repr(value)):
        LocalBackend().submit(cfg, start_worker=False)
    assert list_runs() == [], "nothing queued for the worker to fail on"
