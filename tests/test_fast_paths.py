"""The fast paths train like the plain ones, never use stale cache entries, and stay off the page's path."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import partial

import numpy as np
import pytest

from tl_core.data import datasets
from tl_core.data.images import load_array
from tl_core.models.head_fit import apply_temperature
from tl_core.runs.evaluate import Interpretation
from tl_core.training.runner import train

from .factories import REPO, make_class_folders, noisy_image, small_config

cfg = partial(small_config, epochs=3, batch_size=8, augment=False, early_stopping=False)


def val_probs(run, metrics):
    return Interpretation.load(run.path("predictions.csv"), metrics["class_names"]).probs


@pytest.mark.slow
def test_cached_features_and_plain_path_train_the_same_head(colors, tmp_path):
    fast_run, fast = train(cfg(dropout=0.0), tmp_path / "fast")
    slow_run, slow = train(cfg(dropout=0.0, use_feature_cache=False), tmp_path / "slow")
    assert fast["training_path"] == "cached-features" and slow["training_path"] == "plain"
    np.testing.assert_allclose(val_probs(fast_run, fast), val_probs(slow_run, slow), atol=2e-4)
    # the saved end-to-end model reproduces what the cached-feature head predicted, calibrated
    again = fast_run.load_model().probabilities(
        np.stack(
            [
                load_array(colors.root / f, 64)
                for f in Interpretation.load(fast_run.path("predictions.csv"), fast["class_names"]).files
            ]
        )
    )
    np.testing.assert_allclose(again, apply_temperature(val_probs(fast_run, fast), fast["temperature"]), atol=1e-5)


@pytest.mark.slow
def test_frozen_prefix_computed_once_trains_like_the_plain_path(colors, tmp_path, monkeypatch):
    # the same arithmetic both ways: LiteRT's activations differ by ~1e-6 (test_engine), which three epochs
    # of training on 18 images amplify to a few hundredths of probability
    monkeypatch.setenv("TL_ENGINE", "tensorflow")
    fast_run, fast = train(cfg(freeze_depth=116), tmp_path / "fast")
    slow_run, slow = train(cfg(freeze_depth=116, use_feature_cache=False), tmp_path / "slow")
    assert any("frozen prefix computed once" in note for note in fast["notes"])
    assert not any("frozen prefix" in note for note in slow["notes"])
    np.testing.assert_allclose(val_probs(fast_run, fast), val_probs(slow_run, slow), atol=2e-4)


@pytest.mark.slow
def test_no_clean_cut_falls_back_with_a_note(colors, tmp_path):
    _, metrics = train(cfg(freeze_depth=100, epochs=1), tmp_path / "run")
    assert any("no clean cut after 100" in note for note in metrics["notes"])


@pytest.mark.slow
def test_activations_too_large_for_memory_stream_from_disk(colors, tmp_path, monkeypatch):
    monkeypatch.setenv("TL_ACTIVATION_BUDGET_MB", "0.001")
    run, metrics = train(cfg(freeze_depth=116, epochs=2), tmp_path / "run")
    assert any("stream from disk" in note for note in metrics["notes"])
    assert len(run.history()) == 2


def _cache_note(metrics):
    return next(n for n in metrics["notes"] if n.startswith("feature cache"))


@pytest.mark.slow
def test_stale_cache_entries_are_never_used(colors, tmp_path, keras_home_copy, monkeypatch):
    _, first = train(cfg(), tmp_path / "a")
    assert " 0 reused" in _cache_note(first)
    _, same = train(cfg(learning_rate=3e-3), tmp_path / "b")
    assert " 0 forward passes" in _cache_note(same)
    _, other_size = train(cfg(size=72), tmp_path / "c")
    assert " 0 reused" in _cache_note(other_size)
    # changed image content under the same file name: only that image is recomputed
    changed = tmp_path / "src2"
    shutil.copytree(colors.root / "images", changed)
    victim = next((changed / "train" / "red").iterdir())
    victim.write_bytes(noisy_image((200, 40, 40), 48, seed=4242))
    datasets.add_folder(changed, "colors2")
    _, after_edit = train(cfg(data="colors2"), tmp_path / "d")
    assert "1 forward passes, 23 reused" in _cache_note(after_edit)
    # different weights bytes under the same file name: nothing is reused
    other_home = tmp_path / "keras_home_changed"
    shutil.copytree(keras_home_copy, other_home)
    weights = next((other_home / "models").glob("mobilenet_v2*"))
    import h5py

    with h5py.File(weights, "r+") as handle:
        handle.attrs["edited_by_test"] = "yes"
    monkeypatch.setenv("KERAS_HOME", str(other_home))
    _, new_weights = train(cfg(), tmp_path / "e")
    assert " 0 reused" in _cache_note(new_weights)


def _python(code: str, env_extra=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_pages_paint_without_importing_tensorflow(colors):
    from tl_core.models import freeze

    freeze.describe("MobileNetV2", 0.35, 224)  # the Train page's default base, described once per install
    out = _python("""
        import sys
        from streamlit.testing.v1 import AppTest
        for page in ["pages/home.py", "pages/data.py", "pages/train.py", "pages/results.py"]:
            at = AppTest.from_file("streamlit_app.py", default_timeout=60).run()
            at.switch_page(page).run()
            assert not at.exception, at.exception
        print("tensorflow" in sys.modules, "keras" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "False"]


@pytest.mark.slow
def test_mirrored_strategy_trains_with_two_replicas_on_cpu(colors, tmp_path):
    out = _python(f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tl_core.models.config import TrainConfig
        from tl_core.inference.predict import Predictor
        from tl_core.training.runner import train
        cfg = TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=2, batch_size=8,
                          freeze_depth=116, distribute="mirrored")
        run, metrics = train(cfg, {str(tmp_path / "mirrored")!r})
        top = Predictor.from_run(run).predict([{str(colors.root / colors.items[0]["path"])!r}], 1)[0]
        print(json.dumps({{"replicas": metrics["replicas"], "epochs": len(run.history()), "label": top[0]["label"]}}))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"replicas": 2, "epochs": 2, "label": result["label"]} and result["label"] in colors.classes


@pytest.mark.slow
def test_predictor_builds_its_engine_once_for_any_batch_size(colors, tmp_path):
    from tl_core.inference.predict import Predictor
    from tl_core.workspace import cache_dir

    run, _ = train(cfg(epochs=1), tmp_path / "run")
    predictor = Predictor.from_run(run)
    engine = predictor.loaded.engine  # built at load, from training's own conversion of the base
    conversions = sorted((cache_dir() / "engines").iterdir())
    paths = [colors.root / item["path"] for item in colors.items[:5]]
    first = predictor.predict(paths[:1])
    for count in (2, 5, 1):
        predictor.predict(paths[:count])
    assert predictor.loaded.engine is engine and sorted((cache_dir() / "engines").iterdir()) == conversions
    assert len(conversions) == 1 and predictor.predict(paths[:1]) == first


@pytest.mark.slow
def test_predictor_remembers_images_it_has_seen_and_computes_only_new_ones(colors, tmp_path):
    from tl_core.inference.predict import Predictor

    run, _ = train(cfg(epochs=1), tmp_path / "run")
    predictor = Predictor.from_run(run)
    photos = [(colors.root / item["path"]).read_bytes() for item in colors.items[:4]]
    computed = []
    real = predictor.probabilities_and_distances  # the one forward pass predict_each makes (with the scope's)
    predictor.probabilities_and_distances = lambda pixels, **kw: computed.append(len(pixels)) or real(pixels, **kw)

    first = predictor.predict_each(photos[:3], top_k=2)
    again = predictor.predict_each(photos[:3] + [b"not an image", photos[3]], top_k=2)  # a rerun adding two files
    assert computed == [3, 1]
    assert again[:3] == first and "error" in again[3] and len(again[4]["top_k"]) == 2
    assert again[4] == Predictor.from_run(run).predict_each([photos[3]], top_k=2)[0]

    predictor.remembered = 2
    predictor.predict_each([(colors.root / item["path"]).read_bytes() for item in colors.items[4:7]], top_k=1)
    assert len(predictor._seen) == 2  # bounded memory


PREFETCH_NOTE = "feature pass started beside the model build"


@pytest.mark.slow
def test_with_its_conversion_cached_the_feature_pass_runs_beside_the_model_build(colors, tmp_path):
    from tl_core.inference.predict import Predictor
    from tl_core.models.engine import conversion_path

    _, first = train(cfg(), tmp_path / "a")
    assert not any(PREFETCH_NOTE in note for note in first["notes"])  # nothing converted yet: needs the model
    conversions = sorted(conversion_path("any").parent.iterdir())
    other = datasets.add_folder(
        make_class_folders(tmp_path / "src2", classes=("red", "blue", "green"), per_class=8, size=48, seed=500),
        "colors-other",
    )
    for head in ("keras", "logreg"):
        run, metrics = train(cfg(data=other.name, head=head))  # in the workspace (scikit-learn heads load only there)
        assert any(PREFETCH_NOTE in note for note in metrics["notes"]), head
        assert metrics["engine"]["used"] == ({"features": "litert-xnnpack"} if head == "keras" else {})  # all reused
        assert metrics["engine"]["max_rel_diff"] < 1e-4 and metrics["engine"]["top1_agreement"] == 1.0
        # the new images' features were computed by the first run's prefetch, once
        assert ("24 forward passes, 0 reused" if head == "keras" else "0 forward passes, 24 reused") in _cache_note(
            metrics
        )
        # the saved model runs on that same conversion, also when loaded later: nothing new is converted
        predictor = Predictor.from_run(run)
        top = predictor.predict([other.root / other.items[0]["path"]], 1)[0][0]
        assert top["label"] == other.items[0]["class"]
        assert sorted(conversion_path("any").parent.iterdir()) == conversions
    # a fine-tuned base changes: its run does not reuse the untouched base's conversion when loaded
    tuned_run, _ = train(cfg(data=other.name, epochs=1, fine_tune_depth=100, fine_tune_epochs=1), tmp_path / "c")
    assert "engine_key" not in json.loads(tuned_run.path("model_info.json").read_text())


@pytest.mark.slow
def test_a_failed_model_build_stops_the_feature_pass_it_started(colors, tmp_path, monkeypatch):
    import threading

    from tl_core.training import runner

    train(cfg(), tmp_path / "a")  # converts the base

    def broken(*args, **kwargs):
        raise RuntimeError("build failed on purpose")

    monkeypatch.setattr(runner, "build_classifier", broken)
    with pytest.raises(RuntimeError, match="on purpose"):
        train(cfg(seed=7), tmp_path / "b")
    assert not [t for t in threading.enumerate() if t.name == "feature-prefetch"]


@pytest.mark.slow
def test_a_cancel_during_the_feature_pass_beside_the_build_cancels_the_run(colors, tmp_path):
    from tl_core.runs.store import new_run
    from tl_core.training.runner import execute

    train(cfg(), tmp_path / "a")  # converts the base
    many = datasets.add_folder(
        make_class_folders(tmp_path / "src3", classes=("red", "blue", "green"), per_class=40, size=48, seed=900),
        "colors-many",
    )
    run = new_run(cfg(data=many.name).resolved(), tmp_path / "b")

    def cancel_at_first_features(event):
        if event["kind"] == "features" and event["done"]:
            run.request_cancel()

    assert execute(run, cancel_at_first_features) == {}
    assert run.state == "cancelled"
    assert any(PREFETCH_NOTE in line for line in run.path("log.txt").read_text().splitlines())
    assert not run.artifacts.model_path.exists()
