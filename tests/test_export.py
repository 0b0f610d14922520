"""Exports in every format, checked in their own runtimes, and the REST server in front of a run.

One run is trained once for the module, on real photos (a hymenoptera subset) with the real ImageNet
weights of MobileNetV2 alpha 0.35, at 96 px to keep the suite quick.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
import zipfile

import numpy as np
import pytest

from .factories import HYMENOPTERA, REPO, SHARED, hymenoptera_photos

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, keras_home_copy):
    root = tmp_path_factory.mktemp("export")
    hymenoptera_photos(root / "photos", {"train": 24, "val": 16})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        from tl_core.models.config import TrainConfig
        from tl_core.training.runner import train

        run, metrics = train(
            TrainConfig(
                data=str(root / "photos"), base="MobileNetV2", alpha=0.35, size=96, epochs=12, learning_rate=3e-3
            )
        )
    assert metrics["val_accuracy"] > 0.6, metrics["val_accuracy"]
    return root / "home", run.id


@pytest.fixture
def trained_run(trained_home, monkeypatch):
    from tl_core.runs.store import get_run

    home, run_id = trained_home
    monkeypatch.setenv("TL_HOME", str(home))
    return get_run(run_id)


@pytest.mark.slow
def test_every_format_takes_pixels_and_agrees_in_its_own_runtime(trained_run, capsys):
    from tl_core import cli
    from tl_core.deploy.formats import FORMATS

    for fmt in FORMATS:
        assert cli.main(["export", "--run", trained_run.id, "--format", fmt]) == 0, fmt
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        folder = trained_run.artifacts.export_dir(fmt)
        assert result["folder"] == str(folder) and (folder / FORMATS[fmt].filename).exists()
        assert (folder / "labels.txt").read_text().split() == ["ants", "bees"]
        card = json.loads((folder / "model_card.json").read_text())
        assert card["dataset"]["version"] and card["classes"][0]["images_by_split"] == {"train": 24, "val": 16}
        assert card["input"]["shape"] == [None, 96, 96, 3] and card["metrics"]["per_class"][1]["class"] == "bees"
        assert card["known_limits"] and "## Known limits" in (folder / "model_card.md").read_text()

    parity = trained_run.artifacts.parity()
    assert set(parity) == set(FORMATS)
    for fmt, entry in parity.items():
        assert entry["images"] == 32 and entry["runtime"] == FORMATS[fmt].runtime
        assert entry["precision"] == FORMATS[fmt].precision and entry["temperature"] > 0
        if FORMATS[fmt].quantized:  # states its agreement and drop; no threshold
            assert entry["passed"] is None and 0.5 <= entry["agreement"] <= 1 and "accuracy_drop" in entry
            assert entry["file_bytes"] < parity["tflite"]["file_bytes"] / 2
        else:
            assert entry["passed"] and entry["agreement"] >= 0.995 and entry["max_abs_diff"] < 1e-3, (fmt, entry)
            assert entry["accuracy"] == pytest.approx(entry["reference_accuracy"], abs=1 / 32)
    # TF Serving wants numbered version folders under the model's base path
    assert (trained_run.artifacts.export_dir("saved_model") / "1" / "saved_model.pb").exists()
    # the Keras file needs nothing of ours to load: no custom layer is registered in it
    with zipfile.ZipFile(trained_run.artifacts.export_dir("keras") / "model.keras") as archive:
        assert "tl_core" not in archive.read("config.json").decode()
    # the int8 file takes uint8 pixels
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(trained_run.artifacts.export_dir("tflite-int8") / "model_int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert {"keras", "onnx"} <= set(trained_run.artifacts.exported_formats())
    with zipfile.ZipFile(__import__("io").BytesIO(trained_run.artifacts.export_zip("onnx"))) as archive:
        assert f"{trained_run.id}-onnx/model.onnx" in archive.namelist()


def _photos() -> list:
    """A handful of real photos the run never trained on: hymenoptera validation images past the ones it used,
    and a cat (neither class)."""
    val = HYMENOPTERA / "val"
    return [*sorted((val / "ants").glob("*.jpg"))[30:33], *sorted((val / "bees").glob("*.jpg"))[30:33]] + [
        SHARED / "samples" / "cat_720p.jpg"
    ]


@pytest.mark.slow
def test_one_model_one_answer_cli_rest_and_tflite_agree_on_real_photos(trained_run, tmp_path):
    """The issue's check: ``python -m tl_core predict``, the REST ``:classify`` and the exported TFLite model
    run in LiteRT give the same top class, with probabilities within 0.005, for a run whose temperature is
    not 1 (so an answer that skipped calibration would stand out)."""
    import subprocess
    import sys

    from ai_edge_litert.interpreter import Interpreter
    from fastapi.testclient import TestClient

    from tl_core.data.images import load_batch
    from tl_core.deploy.export import export_run
    from tl_core.deploy.serving import create_app
    from tl_core.models.head_fit import apply_temperature

    photos, classes = _photos(), ["ants", "bees"]
    temperature = trained_run.artifacts.metrics()["temperature"]
    assert json.loads(trained_run.path("model_info.json").read_text())["temperature_folded"] is True

    done = subprocess.run(
        [sys.executable, "-m", "tl_core", "predict", "--run", trained_run.id, "--top-k", "2", *map(str, photos)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=REPO,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in photos]
    cli = np.array([[{t["label"]: t["probability"] for t in line["top_k"]}[c] for c in classes] for line in lines])

    http = TestClient(create_app([trained_run]))
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    reply = http.post(f"/v1/models/{trained_run.id}:classify?top_k=2", files=files)
    assert reply.status_code == 200, reply.text
    rest = np.array(
        [[{t["label"]: t["probability"] for t in r["top_k"]}[c] for c in classes] for r in reply.json()["results"]]
    )

    export_run(trained_run, "tflite", tmp_path / "tflite", check=False)
    interpreter = Interpreter(model_path=str(tmp_path / "tflite" / "model.tflite"))
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(source["index"], (len(photos), 96, 96, 3))
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], load_batch(photos, 96, resize="crop").astype(np.float32))
    interpreter.invoke()
    tflite = interpreter.get_tensor(sink["index"]).astype(np.float64)

    for name, got in (("REST :classify", rest), ("TFLite in LiteRT", tflite)):
        assert (got.argmax(1) == cli.argmax(1)).all(), (name, got, cli)
        assert np.abs(got - cli).max() < 0.005, (name, got, cli)
    # the check has teeth: the probabilities before calibration are further than 0.005 from these
    uncalibrated = apply_temperature(cli, 1 / temperature)
    assert np.abs(uncalibrated - cli).max() > 0.005, (temperature, uncalibrated, cli)


@pytest.mark.slow
def test_an_older_run_folder_gets_its_temperature_folded_when_loaded(trained_run, tmp_path):
    """A run folder saved before folding (the model as trained, its temperature only in metrics.json) gives the
    same calibrated probabilities as one saved folded, and folding the head makes no new engine conversion."""
    import keras

    from tl_core.data.images import load_batch
    from tl_core.models import preprocessing  # noqa: F401  registers the saved model's Preprocess layer
    from tl_core.runs.artifacts import Artifacts
    from tl_core.runs.loaded_model import LoadedModel
    from tl_core.workspace import cache_dir

    temperature = trained_run.artifacts.metrics()["temperature"]
    old = tmp_path / "old-run"
    shutil.copytree(trained_run.root, old, ignore=shutil.ignore_patterns("export"))
    model = keras.models.load_model(old / "model.keras", safe_mode=True, compile=False)
    layer = model.get_layer("predictions")
    layer.set_weights([w * temperature for w in layer.get_weights()])  # undo the fold: as trained
    model.save(old / "model.keras")
    info = json.loads((old / "model_info.json").read_text())
    del info["temperature"], info["temperature_folded"]
    (old / "model_info.json").write_text(json.dumps(info))

    pixels = load_batch(_photos(), 96, resize="crop")
    current = trained_run.load_model().probabilities(pixels)
    conversions = sorted((cache_dir() / "engines").glob("*.tflite"))
    np.testing.assert_allclose(LoadedModel.from_artifacts(Artifacts(old)).probabilities(pixels), current, atol=1e-5)
    assert sorted((cache_dir() / "engines").glob("*.tflite")) == conversions and conversions


@pytest.mark.slow
def test_export_to_another_folder_and_refusals(trained_run, tmp_path, monkeypatch, capsys):
    import dataclasses

    from tl_core import cli
    from tl_core.deploy import formats
    from tl_core.deploy.export import export_run
    from tl_core.errors import TLError
    from tl_core.runs.store import new_run

    out = tmp_path / "deploy"
    result = export_run(trained_run, "onnx", out, check=False)
    assert (out / "model.onnx").exists() and "parity" not in result
    saved = (out / "model.onnx").read_bytes()

    def broken_converter(model, target, run):
        target.write_bytes(b"half a model")
        raise RuntimeError("converter crashed")

    monkeypatch.setitem(formats.FORMATS, "onnx", dataclasses.replace(formats.FORMATS["onnx"], write=broken_converter))
    with pytest.raises(RuntimeError, match="converter crashed"):
        export_run(trained_run, "onnx", out, check=False)
    assert (out / "model.onnx").read_bytes() == saved and not list(out.glob(".partial*"))

    assert cli.main(["serve"]) == 2 and "Nothing to serve" in capsys.readouterr().err
    assert cli.main(["serve", "--run", "no-such-run"]) == 2
    with pytest.raises(TLError, match="Unknown export format 'coreml'; choose one of keras, saved_model"):
        export_run(trained_run, "coreml")
    queued = new_run(trained_run.config)
    with pytest.raises(TLError, match="is queued; only a finished run can be exported"):
        export_run(queued, "keras")


def _features_and_labels(classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, 8))
    labels = np.repeat(np.arange(classes), 20)
    return centres[labels] + rng.normal(0, 1.5, (len(labels), 8)) + 5, labels


@pytest.mark.parametrize("classes,fitted_on", [(2, None), (3, None), (4, [0, 1, 3])])
def test_logistic_regression_head_bakes_into_a_softmax_layer_with_its_temperature(classes, fitted_on):
    """Binary, multinomial, and a class the classifier never saw: the baked layer gives the app's numbers,
    before and after the run's temperature is folded in."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tl_core.models.head_fit import dense_softmax
    from tl_core.models.modeling import probabilities_by_class
    from tl_core.runs.loaded_model import LoadedModel

    features, labels = _features_and_labels(classes)
    if fitted_on:
        keep = np.isin(labels, fitted_on)
        features, labels = features[keep], labels[keep]
    head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features, labels)
    loaded = LoadedModel(None, [f"c{i}" for i in range(classes)], 8, head_kind="logreg", sklearn_head=head)
    raw = probabilities_by_class(head, features, classes)
    np.testing.assert_allclose(dense_softmax(features, *loaded.linear_head()), raw, atol=1e-5)
    loaded.calibrate(2.5)
    powered = raw ** (1 / 2.5)  # softmax(z / T); a class the classifier never saw keeps probability 0
    calibrated = powered / powered.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.head_probabilities(features), calibrated, atol=1e-6)
    np.testing.assert_allclose(dense_softmax(features, *loaded.linear_head()), calibrated, atol=1e-5)
    assert loaded.temperature == 1.0  # in the weights, not applied a second time


def test_an_svm_head_is_calibrated_on_its_probabilities_and_names_the_formats_that_cannot_hold_it():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from tl_core.deploy.export import inference_model
    from tl_core.errors import TLError
    from tl_core.models.head_fit import apply_temperature
    from tl_core.models.modeling import probabilities_by_class
    from tl_core.runs.loaded_model import LoadedModel

    features, labels = _features_and_labels(2)
    head = make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(), cv=2)).fit(features, labels)
    loaded = LoadedModel(None, ["a", "b"], 8, head_kind="svm", sklearn_head=head)
    loaded.calibrate(0.5)
    expected = apply_temperature(probabilities_by_class(head, features, 2), 0.5)
    np.testing.assert_allclose(loaded.head_probabilities(features), expected, atol=1e-6)
    with pytest.raises(TLError, match=r"\(SVM on embeddings\).*keras, saved_model, tflite, tflite-int8, onnx"):
        inference_model(loaded)
    with pytest.raises(TLError, match="not a linear layer"):
        loaded.linear_head()


# ---------------------------------------------------------------- serving


@pytest.fixture
def client(trained_run):
    from fastapi.testclient import TestClient

    from tl_core.deploy.serving import create_app

    app = create_app([trained_run], token="s3cret", max_bytes=2_000_000, max_images=4)
    return TestClient(app), trained_run.id


AUTH = {"Authorization": "Bearer s3cret"}


@pytest.mark.slow
def test_rest_predict_speaks_tf_serving_and_matches_the_app(client, trained_run):
    from tl_core.data.images import load_array

    http, name = client
    cat = (SHARED / "samples" / "cat_720p.jpg").read_bytes()
    pixels = load_array(cat, 96, "crop")
    reply = http.post(f"/v1/models/{name}:predict", json={"instances": [pixels.tolist()]}, headers=AUTH)
    assert reply.status_code == 200
    expected = trained_run.load_model().probabilities(pixels[None])
    np.testing.assert_allclose(reply.json()["predictions"], expected, atol=1e-5)
    assert http.get(f"/v1/models/{name}", headers=AUTH).json()["model_version_status"][0]["state"] == "AVAILABLE"
    meta = http.get(f"/v1/models/{name}/metadata", headers=AUTH).json()
    assert meta["metadata"]["class_names"] == ["ants", "bees"] and meta["metadata"]["input"]["shape"] == [
        None,
        96,
        96,
        3,
    ]
    assert "/v1/models/{name}:classify" in http.get("/openapi.json").json()["paths"]
    assert http.get("/docs").status_code == 200 and http.get("/healthz").json() == {"status": "ok"}


@pytest.mark.slow
def test_rest_classify_takes_files_and_bad_input_gets_a_reason(client):
    http, name = client
    bee = next((HYMENOPTERA / "val" / "bees").glob("*.jpg"))
    files = [("files", ("bee.jpg", bee.read_bytes(), "image/jpeg")), ("files", ("bee2.jpg", bee.read_bytes()))]
    reply = http.post(f"/v1/models/{name}:classify?top_k=1", files=files, headers=AUTH)
    assert reply.status_code == 200
    results = reply.json()["results"]
    assert [r["file"] for r in results] == ["bee.jpg", "bee2.jpg"] and len(results[0]["top_k"]) == 1

    cases = [  # (request, status, words of the reason)
        (dict(files=[("files", ("notes.jpg", b"not a picture"))]), 422, "notes.jpg: not an image"),
        (dict(files=[("files", ("empty.png", b""))]), 422, "empty.png: empty file"),
        (dict(files=[("files", (f"{i}.jpg", bee.read_bytes())) for i in range(5)]), 413, "at most 4"),
        (dict(files=[("files", ("big.jpg", b"\xff" * 2_100_000))]), 413, "at most 2000000"),
    ]
    for request, status, reason in cases:
        reply = http.post(f"/v1/models/{name}:classify", headers=AUTH, **request)
        assert reply.status_code == status and reason in reply.json()["error"], (reply.status_code, reply.text)
    predict = f"/v1/models/{name}:predict"
    for body, reason in (
        ({"instances": [[[1, 2, 3]]]}, "shape [96, 96, 3]"),
        ({"rows": []}, '"instances"'),
        ({"instances": [np.full((96, 96, 3), 300).tolist()]}, "between 0 and 255"),
    ):
        reply = http.post(predict, json=body, headers=AUTH)
        assert reply.status_code == 400 and reason in reply.json()["error"], reply.text
    reply = http.post(predict, content=b"{nope", headers={**AUTH, "content-type": "application/json"})
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]
    assert http.post("/v1/models/nobody:predict", json={"instances": []}, headers=AUTH).status_code == 404


@pytest.mark.slow
def test_rest_wants_the_bearer_token(client):
    http, name = client
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        reply = http.get("/v1/models", headers=headers)
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
        assert (
            http.post(f"/v1/models/{name}:classify", headers=headers, files=[("files", ("a.jpg", b"x"))]).status_code
            == 401
        )
    assert http.get("/v1/models", headers=AUTH).status_code == 200


@pytest.mark.slow
def test_concurrent_requests_share_forward_passes_over_real_http(trained_run):
    """A real uvicorn server on loopback; the load benchmark's own client, small."""
    import uvicorn

    from benchmarks.load_serve import load_test, validation_photos
    from tl_core.deploy.serving import create_app

    app = create_app([trained_run], token="t")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        result = asyncio.run(
            load_test(
                f"http://127.0.0.1:{port}",
                trained_run.id,
                validation_photos(trained_run.root),
                clients=8,
                per_client=3,
                token="t",
                deadline_s=120,
            )
        )
    finally:
        server.should_exit = True
        thread.join(30)
    assert result["errors"] == 0 and result["ok"] == 24, result
    batcher = app.state.models[trained_run.id].batcher
    assert batcher.images == 24 and batcher.passes < 24  # some requests were answered together


@pytest.mark.usefixtures("server_past_pages_folder_mode")
@pytest.mark.slow
def test_results_page_builds_an_export_when_asked_and_shows_its_parity(trained_run):
    from .test_app import open_page, texts

    results = open_page("pages/results.py")
    assert results.selectbox(key="results_run").value == trained_run.id
    results.selectbox(key="results_export_format").set_value("keras").run()
    results.button(key="results_export_build").click().run()
    assert not results.exception, [e.value for e in results.exception]
    assert "keras export ready." in texts(results), texts(results)
    table = next(d.value for d in results.dataframe if "agreement" in d.value.columns)
    row = table[table["format"] == "keras"].iloc[0]
    assert row["check"] == "passed" and row["agreement"] >= 0.995 and row["runtime"].startswith("keras")
    labels = [b.proto.label for b in results.get("download_button")]
    assert "Download keras (zip)" in labels


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe", "builtin"])
def test_the_exported_pixel_affine_computes_what_the_preprocess_layer_does(mode):
    """Every base's preprocessing survives export: one table per mode, and the built-in Dense(3) and the NumPy
    map derived from it give the Preprocess layer's numbers."""
    from tl_core.models.preprocessing import Preprocess, pixel_affine, preprocess_pixels

    pixels = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    expected = np.asarray(Preprocess(mode)(pixels))
    affine = pixel_affine(mode)
    got = pixels if affine is None else pixels @ affine[0] + affine[1]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(preprocess_pixels(pixels, mode), expected, rtol=1e-6, atol=1e-5)
