"""Grad-CAM: on a constructed case the map lies on the object; every registered base gives a map; the CLI
writes the overlay and the box; linear heads work and an SVM head says it cannot."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tl_core.models.config import TrainConfig

from .factories import SHARED, require_shared

CANVAS, OBJECT = 160, 96
GREY = (128, 128, 128)


def _photo(name: str) -> Image.Image:
    image = Image.open(require_shared(SHARED / "samples" / f"{name}.jpg")).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((OBJECT, OBJECT))


def _pasted(photo: Image.Image, left: int, top: int) -> Image.Image:
    canvas = Image.new("RGB", (CANVAS, CANVAS), GREY)
    canvas.paste(photo, (left, top))
    return canvas


@pytest.fixture(scope="module")
def pasted_run(tmp_path_factory, keras_home_copy):
    """Real photos (a cat, a hot dog) pasted at random places on a plain grey background; one run trained on them."""
    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    for split, count in (("train", 14), ("val", 4)):
        for name in ("cat_720p", "hot_dog"):
            folder = root / "photos" / split / name.split("_")[0]
            folder.mkdir(parents=True)
            for i in range(count):
                left, top = (int(v) for v in rng.integers(0, CANVAS - OBJECT, 2))
                _pasted(_photo(name), left, top).save(folder / f"{i}.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        from tl_core.training.runner import train

        run, metrics = train(
            TrainConfig(
                data=str(root / "photos"), base="MobileNetV2", alpha=0.35, size=CANVAS, epochs=15, learning_rate=3e-3
            )
        )
    assert metrics["val_accuracy"] == 1.0
    return root, run.id


@pytest.fixture
def loaded_run(pasted_run, monkeypatch):
    from tl_core.runs.store import get_run

    root, run_id = pasted_run
    monkeypatch.setenv("TL_HOME", str(root / "home"))
    return get_run(run_id)


@pytest.mark.slow
def test_the_map_lies_on_the_object_and_the_cli_writes_the_overlay(loaded_run, tmp_path, capsys):
    from tl_core import cli
    from tl_core.inference.explain import explain

    loaded = loaded_run.load_model()
    for name, (left, top) in (("cat_720p", (CANVAS - OBJECT, 0)), ("hot_dog", (0, CANVAS - OBJECT))):
        image = _pasted(_photo(name), left, top)
        result = explain(loaded, image)
        assert result.class_name == name.split("_")[0]
        on_object = result.heat[top : top + OBJECT, left : left + OBJECT].sum() / result.heat.sum()
        assert on_object > 0.6, (name, on_object)
        box_left, box_top, box_right, box_bottom = result.bbox
        assert left - 16 <= box_left and box_right <= left + OBJECT + 16, result.bbox
        assert top - 16 <= box_top and box_bottom <= top + OBJECT + 16, result.bbox

    # the CLI, on a photo larger than the model's input: the box is in the photo's own pixels
    photo = Image.new("RGB", (480, 320), GREY)
    photo.paste(_photo("cat_720p").resize((192, 192)), (288, 64))  # right edge, inside the centre crop
    photo.save(tmp_path / "wide.jpg", quality=95)
    out = tmp_path / "maps" / "cat.png"
    assert cli.main(["explain", "--run", loaded_run.id, str(tmp_path / "wide.jpg"), "--out", str(out)]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert answer["class"] == "cat" and Image.open(out).size == (480, 320)
    left, top, right, bottom = answer["bbox"]
    assert 288 - 40 <= left and right <= 480 and 64 - 40 <= top and bottom <= 256 + 40, answer["bbox"]
    assert (
        cli.main(["explain", "--run", loaded_run.id, str(tmp_path / "wide.jpg"), "--class", "hot", "--out", str(out)])
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["class"] == "hot"
    assert (
        cli.main(["explain", "--run", loaded_run.id, str(tmp_path / "wide.jpg"), "--class", "dog", "--out", str(out)])
        == 2
    )
    assert "'dog' is not one of this run's classes" in capsys.readouterr().err


@pytest.mark.slow
def test_a_logistic_regression_head_explains_through_its_class_directions(loaded_run):
    """The same run's features under a logistic regression: its weights give each class's direction."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tl_core.inference.explain import explain
    from tl_core.runs.loaded_model import LoadedModel

    keras_head = loaded_run.load_model()
    images = [
        _pasted(_photo(name), int(x), int(y))
        for name in ("cat_720p", "hot_dog")
        for x, y in np.random.default_rng(1).integers(0, CANVAS - OBJECT, (8, 2))
    ]
    features = keras_head.features(np.stack([np.asarray(i) for i in images]))
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features, [0] * 8 + [1] * 8)
    import keras

    extractor = keras.Model(keras_head.model.inputs, keras_head.model.get_layer("pool").output)  # as saved for it
    linear = LoadedModel(extractor, keras_head.class_names, CANVAS, "crop", "logreg", head)
    result = explain(linear, _pasted(_photo("hot_dog"), 0, CANVAS - OBJECT))
    assert result.class_name == "hot"
    assert result.heat[CANVAS - OBJECT :, :OBJECT].sum() / result.heat.sum() > 0.6


def test_an_svm_head_says_grad_cam_is_not_defined():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from tl_core.errors import TLError
    from tl_core.inference.explain import linear_head

    rng = np.random.default_rng(0)
    head = make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(), cv=2)).fit(
        rng.normal(size=(20, 4)), [0, 1] * 10
    )
    with pytest.raises(TLError, match=r"not defined for this run's head \(SVM on embeddings\).*Logistic regression"):
        linear_head(SimpleNamespace(head_kind="svm", sklearn_head=head, class_names=["a", "b"]))


@pytest.mark.slow
def test_every_registered_base_gives_a_map_at_its_default_size():
    """Random weights (none are on disk for most bases): the point is that the graph walk finds the last
    spatial map and the class gradient reaches it, for every base. ``grad_cam`` directly: ``explain`` would
    first predict, tracing a TensorFlow function per base (50 of this test's 130 s); the tests above run
    ``explain`` itself."""
    from tl_core.data.images import to_array
    from tl_core.inference.explain import grad_cam, to_image_frame
    from tl_core.models import architectures
    from tl_core.models.modeling import build_classifier
    from tl_core.runs.loaded_model import LoadedModel

    image = _pasted(_photo("cat_720p"), 20, 30)
    for name in architectures.names():
        arch = architectures.get(name)
        cfg = TrainConfig(data="x", base=arch.name, weights=None).resolved()
        built = build_classifier(cfg, 2, with_augmentation=False)
        loaded = LoadedModel(built.model, ["a", "b"], cfg.size, "crop")
        cam = grad_cam(loaded, to_array(image, cfg.size).astype(np.float32), class_index=1)
        assert cam.ndim == 2 and cam.shape[0] < cfg.size, (arch.name, cam.shape)  # a feature map, not the input
        heat = to_image_frame(cam, image.size, cfg.size, "crop")
        assert heat.shape == (CANVAS, CANVAS) and np.isfinite(heat).all(), arch.name
        assert cam.max() == pytest.approx(1.0) or cam.max() == 0, arch.name
        del built, loaded


@pytest.mark.usefixtures("server_past_pages_folder_mode")
@pytest.mark.slow
def test_predict_and_results_pages_show_the_map_beside_the_image(loaded_run):
    import io

    from .test_app import open_page

    predict = open_page("pages/predict.py")
    buffer = io.BytesIO()
    _pasted(_photo("hot_dog"), 0, CANVAS - OBJECT).save(buffer, "PNG")
    predict.get("file_uploader")[0].upload("dog.png", buffer.getvalue(), "image/png").run()
    predict.toggle(key="predict_explain").set_value(True).run()
    predict.selectbox(key="predict_cam_pick").set_value(0).run()
    assert not predict.exception, [e.value for e in predict.exception]
    assert predict.selectbox(key="predict_cam_class").value == "hot"
    captions = [c for image in predict.get("image") for c in image.captions]
    assert any(c.startswith("Grad-CAM for hot (p=") for c in captions), captions
    predict.selectbox(key="predict_cam_class").set_value("cat").run()
    captions = [c for image in predict.get("image") for c in image.captions]
    assert any(c.startswith("Grad-CAM for cat (p=") for c in captions), captions
