import numpy as np
import pytest

from tl_core.errors import TLError
from tl_core.models import architectures, freeze

REQUIRED = [
    "MobileNetV2",
    "MobileNet",
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB0",
    "EfficientNetB1",
    "EfficientNetB2",
    "EfficientNetB3",
    "EfficientNetV2B0",
    "ResNet50",
    "ResNet50V2",
    "VGG16",
    "VGG19",
    "InceptionV3",
    "Xception",
    "DenseNet121",
    "ConvNeXtTiny",
]


def test_registry_has_required_bases_case_insensitive():
    assert set(REQUIRED) <= set(architectures.names())
    assert architectures.get("mobilenetv2").name == "MobileNetV2"
    assert architectures.get("RESNET50V2").name == "ResNet50V2"
    with pytest.raises(TLError, match="Unknown base model 'AlexNet'"):
        architectures.get("AlexNet")


def test_offline_weights_found_only_for_files_on_disk():
    rows = {row["name"]: row for row in architectures.availability()}
    assert rows["MobileNetV2"]["offline_alphas"] == [0.35]
    assert rows["MobileNet"]["offline_alphas"] == [0.25]
    assert not rows["ResNet50"]["weights_offline"] and not rows["EfficientNetB0"]["weights_offline"]
    arch = architectures.get("MobileNetV2")
    # Any input size can use the 224 no-top file: convolution weights do not depend on the size.
    assert architectures.find_weights(arch, 0.35, 96).name.endswith("_0.35_224_no_top.h5")
    assert architectures.find_weights(arch, 1.0, 224) is None


def test_alpha_and_size_errors_quote_the_bad_value():
    with pytest.raises(TLError, match="alpha=0.3"):
        architectures.get("MobileNetV2").check_alpha(0.3)
    with pytest.raises(TLError, match="no width multiplier"):
        architectures.get("ResNet50").check_alpha(0.5)
    with pytest.raises(TLError, match="got 20"):
        architectures.get("MobileNetV2").check_size(20)


def test_weights_file_names_match_what_keras_asks_for(monkeypatch, tmp_path):
    """Ask Keras itself which file it wants (get_file intercepted, nothing downloaded)."""
    import keras
    from keras.src.utils import file_utils

    asked = []

    def fake_get_file(fname=None, origin=None, **kwargs):
        asked.append(fname)
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    for name, alpha in [
        ("MobileNetV3Small", 1.0),
        ("EfficientNetB0", None),
        ("ConvNeXtTiny", None),
        ("DenseNet121", None),
        ("MobileNet", 0.5),
    ]:
        arch = architectures.get(name)
        kwargs = arch.constructor_kwargs(alpha)
        with pytest.raises(RuntimeError):
            getattr(keras.applications, arch.constructor)(weights="imagenet", input_shape=(224, 224, 3), **kwargs)
        assert asked[-1] == arch.weights_filename(alpha, 224), name


def test_missing_weights_error_names_the_file_and_folder(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    from tl_core.models import bases

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: network unreachable")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(bases.WeightsUnavailable) as err:
        bases.build_base("MobileNetV2", 0.35, 96)
    message = str(err.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    assert str(tmp_path / "empty_keras_home" / "models") in message


def test_real_weights_load_offline_from_keras_home():
    from tl_core.models import bases

    base = bases.build_base("MobileNetV2", 0.35, 224)
    random = bases.build_base("MobileNetV2", 0.35, 224, weights=None)
    assert base.count_params() == 410_208
    first = base.get_layer("Conv1").get_weights()[0]
    assert not np.allclose(first, random.get_layer("Conv1").get_weights()[0])


@pytest.mark.parametrize("name", ["MobileNetV2", "MobileNetV3Small", "VGG16", "EfficientNetB0"])
def test_listed_parameter_counts_match_the_built_base(name):
    arch = architectures.get(name)
    description = freeze.describe(name, arch.default_alpha, arch.default_size)
    assert description["params"] == arch.params
