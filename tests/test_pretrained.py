"""Pretrained classifiers as they are: the shared TFLite ImageNet classifiers on real photos, label files as
they come, and clear errors for what is missing."""

from __future__ import annotations

import json

import pytest

from tl_core import cli

from .factories import SHARED, require_shared

TFLITE = SHARED / "tflite"
CAT = SHARED / "samples" / "cat_720p.jpg"


def _classify(capsys, *args) -> list[dict]:
    assert cli.main(["classify", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_every_shared_classifier_sees_the_cat(capsys):
    models = sorted(require_shared(TFLITE).glob("*.tflite"))
    assert len(models) >= 5
    for model in models:
        rows = _classify(
            capsys,
            "--tflite",
            str(model),
            "--labels",
            str(TFLITE / "imagenet_labels.txt"),
            str(CAT),
            str(SHARED / "samples" / "parrot.jpg"),
        )
        cat, parrot = rows
        assert cat["image"] == str(CAT) and len(cat["top_k"]) == 3
        assert any("cat" in guess["label"] for guess in cat["top_k"]), (model.name, cat)
        assert not any("cat" in guess["label"] for guess in parrot["top_k"]), (model.name, parrot)
        assert abs(sum(g["probability"] for g in cat["top_k"]) - 1) < 0.2


def test_label_files_as_they_come_and_mistakes_explained(tmp_path, capsys):
    model = TFLITE / "mobilenet_v2_1.0_224_quant.tflite"
    labels = (TFLITE / "imagenet_labels.txt").read_text().splitlines()
    (tmp_path / "no_background.txt").write_text("\n".join(labels[1:]))  # 1000 names for 1001 outputs
    rows = _classify(
        capsys, "--tflite", str(model), "--labels", str(tmp_path / "no_background.txt"), str(CAT), "--top-k", "1"
    )
    assert "cat" in rows[0]["top_k"][0]["label"]
    (tmp_path / "short.txt").write_text("\n".join(labels[:10]))
    assert cli.main(["classify", "--tflite", str(model), "--labels", str(tmp_path / "short.txt"), str(CAT)]) == 2
    assert "has 10 labels but the model has 1001 outputs" in capsys.readouterr().err
    (tmp_path / "not.tflite").write_bytes(b"nope")
    assert (
        cli.main(
            ["classify", "--tflite", str(tmp_path / "not.tflite"), "--labels", str(tmp_path / "short.txt"), str(CAT)]
        )
        == 2
    )
    assert "Not a TFLite model" in capsys.readouterr().err
    rows = _classify(
        capsys, "--tflite", str(model), "--labels", str(TFLITE / "imagenet_labels.txt"), str(tmp_path / "short.txt")
    )
    assert "error" in rows[0]


def test_a_keras_application_without_its_label_index_or_weights_says_which_file(keras_home_copy, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):  # what a download meets here, at once rather than after a network timeout
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert cli.main(["classify", "--base", "MobileNetV2", "--alpha", "0.35", str(CAT)]) == 2
    assert "put 'imagenet_class_index.json' in" in capsys.readouterr().err
    index = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}
    (keras_home_copy / "models" / "imagenet_class_index.json").write_text(json.dumps(index))
    try:  # the shared folder has only headless weights: the top's file is named, not silently downloaded
        assert cli.main(["classify", "--base", "MobileNetV2", "--alpha", "0.35", str(CAT)]) == 2
        assert "weights with the classification top for MobileNetV2 are not on disk" in capsys.readouterr().err
    finally:
        (keras_home_copy / "models" / "imagenet_class_index.json").unlink()
    with pytest.raises(SystemExit):
        cli.main(["classify"])


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_predict_page_runs_a_pretrained_tflite_classifier_without_training():
    from .test_app import open_page

    page = open_page("pages/predict.py")  # an empty workspace: no run needed for this
    page.radio(key="predict_source").set_value("Pretrained, no training").run()
    page.radio(key="predict_pretrained_kind").set_value("TFLite classifier").run()
    uploaders = {u.proto.label: u for u in page.get("file_uploader")}
    uploaders["TFLite model"].upload(
        "m.tflite", (TFLITE / "mobilenet_v1_0.25_128_quant.tflite").read_bytes(), "application/octet-stream"
    )
    uploaders["Its labels (one per line)"].upload(
        "labels.txt", (TFLITE / "imagenet_labels.txt").read_bytes(), "text/plain"
    )
    page.run()
    page.toggle(key="predict_as_table").set_value(True).run()
    images = next(u for u in page.get("file_uploader") if u.proto.label == "Images")
    images.upload("cat.jpg", CAT.read_bytes(), "image/jpeg").run()
    assert not page.exception, [e.value for e in page.exception]
    table = page.dataframe[-1].value
    assert "cat" in table["top1"][0] and table["image"][0] == "cat.jpg"


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_predict_page_offers_the_classifiers_on_the_server_first_without_uploads(monkeypatch):
    """The default Keras application needs weights with their top, which an offline server lacks: the
    classifiers an admin put on the server (TL_PRETRAINED_DIRS) come first and need nothing uploaded."""
    from tl_core.inference.pretrained import server_classifiers

    from .test_app import open_page

    monkeypatch.setenv("TL_PRETRAINED_DIRS", str(TFLITE))
    found = {c.name: c for c in server_classifiers()}
    assert "mobilenet_v1_0.25_128_quant" in found and found["mobilenet_v1_0.25_128_quant"].labels.name == (
        "imagenet_labels.txt"
    )
    page = open_page("pages/predict.py")
    page.radio(key="predict_source").set_value("Pretrained, no training").run()
    assert page.radio(key="predict_pretrained_kind").value == "On this server"
    assert not [u for u in page.get("file_uploader") if u.proto.label == "TFLite model"]
    page.selectbox(key="predict_server_classifier").set_value("mobilenet_v1_0.25_128_quant").run()
    page.toggle(key="predict_as_table").set_value(True).run()
    images = next(u for u in page.get("file_uploader") if u.proto.label == "Images")
    images.upload("cat.jpg", CAT.read_bytes(), "image/jpeg").run()
    assert not page.exception, [e.value for e in page.exception]
    assert "cat" in page.dataframe[-1].value["top1"][0]


@pytest.mark.slow
@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_a_tflite_model_that_loads_but_fails_when_run_gets_a_message_not_a_crash(tmp_path):
    """A real TFLite model whose GATHER goes out of bounds on real input: it loads, then fails when invoked."""
    import tensorflow as tf

    from .test_app import open_page

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def broken(x):
        index = tf.cast(tf.reduce_max(x) + 2.0, tf.int32)  # past the table's one row for any pixels
        return tf.gather(tf.constant([[0.5, 0.5]], tf.float32), tf.reshape(index, [1]))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([broken.get_concrete_function()], broken)
    page = open_page("pages/predict.py")
    page.radio(key="predict_source").set_value("Pretrained, no training").run()
    page.radio(key="predict_pretrained_kind").set_value("TFLite classifier").run()
    uploaders = {u.proto.label: u for u in page.get("file_uploader")}
    uploaders["TFLite model"].upload("broken.tflite", converter.convert(), "application/octet-stream")
    uploaders["Its labels (one per line)"].upload("labels.txt", b"a\nb\n", "text/plain")
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert any("loaded but failed when run" in e.value for e in page.error), [e.value for e in page.error]
