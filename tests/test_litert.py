"""The one LiteRT wrapper (engine, pretrained classifiers, parity) and the one top-k helper, on the shared
uint8 ImageNet classifiers and a real photo."""

from __future__ import annotations

import numpy as np
import pytest

from tl_core.data.images import load_array
from tl_core.errors import TLError
from tl_core.inference.topk import top_k
from tl_core.models.litert import LiteRTModel
from tl_core.models.preprocessing import preprocess_pixels

from .conftest import SHARED, require_shared

QUANT = SHARED / "tflite" / "mobilenet_v1_0.25_128_quant.tflite"
TABBY = 282  # imagenet_labels.txt line (line 0 is "background")


def test_an_integer_model_quantizes_float_inputs_and_dequantizes_its_outputs():
    model = LiteRTModel(require_shared(QUANT), threads=1)
    assert model.input_shape == (1, 128, 128, 3) and model.input_dtype == np.uint8 and model.outputs == 1001
    cat = load_array(SHARED / "samples" / "cat_720p.jpg", 128, "crop")
    scaled = preprocess_pixels(cat[None], "tf")  # the [-1, 1] floats the model's input quantization stands for
    scale, zero = model.input["quantization"]
    by_hand = np.clip(np.round(scaled / scale + zero), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(model.quantize(scaled), by_hand)
    probs = model.run(scaled)
    assert probs.dtype == np.float64 and probs.shape == (1, 1001)
    assert abs(probs.sum() - 1) < 0.1 and np.isin(probs * 256, np.arange(257)).all()  # uint8 steps of 1/256
    np.testing.assert_array_equal(model.run(by_hand), probs)  # integer inputs go in as they are
    assert TABBY in np.argsort(-probs[0])[:5]
    assert model.run(np.zeros((0, 128, 128, 3), np.float32)).shape == (0, 1001)


def test_a_file_that_is_not_tflite_is_refused_with_the_runtimes_reason(tmp_path):
    with pytest.raises(TLError, match="Not a TFLite model LiteRT can load"):
        LiteRTModel(b"nope", threads=1)
    (tmp_path / "x.tflite").write_bytes(b"nope")
    with pytest.raises(TLError, match="Not a TFLite model LiteRT can load"):
        LiteRTModel(tmp_path / "x.tflite", threads=1)


def test_top_k_is_most_probable_first_ties_in_label_order_and_k_kept_in_range():
    row = np.array([0.1, 0.4, 0.1, 0.4])
    labels = ["a", "b", "c", "d"]
    assert [t["label"] for t in top_k(row, labels, 3)] == ["b", "d", "a"]
    assert [t["label"] for t in top_k(row, labels, 0)] == ["b"]
    assert len(top_k(row, labels, 99)) == 4
    assert top_k(row, labels, 1) == [{"label": "b", "probability": 0.4}]
