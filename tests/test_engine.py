"""The frozen-part engine (LiteRT on CPU hosts), the array feature store and reduced-scale decoding."""

import io
import multiprocessing
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tl_core import device
from tl_core.data import images
from tl_core.errors import Cancelled, TLError
from tl_core.models import bases, modeling, preprocessing
from tl_core.models import engine as engines
from tl_core.models.config import TrainConfig
from tl_core.models.features import FeatureCache, FeatureStore
from tl_core.training.runner import train
from tl_core.workspace import cache_dir

from .factories import make_class_folders


def extractor(size=64, weights="imagenet"):
    import keras

    base = bases.build_base("MobileNetV2", 0.35, size, weights)
    pixels = keras.Input((size, size, 3), name="pixels")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(
        base(preprocessing.Preprocess("tf")(pixels), training=False)
    )
    return keras.Model(pixels, pooled, name="extractor")


def random_pixels(n, size=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


@pytest.mark.slow
def test_litert_runs_the_frozen_base_as_tensorflow_does_and_converts_once(monkeypatch):
    model = extractor()
    first = engines.engine_for(model)
    assert first.name == "litert-xnnpack"
    check = engines.agreement(first, model, random_pixels(6), head=lambda f: f[:, :5])
    assert check["max_rel_diff"] <= 1e-4 and check["top1_agreement"] == 1.0 and check["images"] == 6
    assert len(list((cache_dir() / "engines").glob("*.tflite"))) == 1

    def no_second_conversion(_):
        raise AssertionError("converted again")

    monkeypatch.setattr(engines, "convert", no_second_conversion)
    again = engines.engine_for(extractor())  # same layers and weights: same conversion
    # XNNPACK's threads may sum in another order: equal to float32 rounding, not bit for bit
    np.testing.assert_allclose(again(random_pixels(2)), first(random_pixels(2)), rtol=1e-4, atol=1e-4)
    assert engines.digest(extractor(weights=None)) != engines.digest(model)  # other weights, other conversion


@pytest.mark.slow
def test_batches_run_on_one_single_threaded_lane_per_core_and_give_what_single_images_give():
    import threading

    model = extractor()
    path = engines.conversion_path(engines.digest(model))
    engines.engine_for(model)  # converts
    engine = engines.LiteRTEngine(path, threads=2)
    pixels = random_pixels(5)
    one_by_one = np.concatenate([engine(pixels[i : i + 1]) for i in range(5)])
    assert engine._lanes is None  # single images use the interpreter with every core
    np.testing.assert_allclose(engine(pixels), one_by_one, rtol=1e-4, atol=1e-4)
    assert engine._lanes.qsize() == 2  # a batch: one lane per core, all returned after use
    results = [None] * 4

    def call(slot):
        results[slot] = engine(pixels)

    callers = [threading.Thread(target=call, args=(slot,)) for slot in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(60)
    for got in results:  # callers at once share the lanes, each gets its own rows
        np.testing.assert_allclose(got, one_by_one, rtol=1e-4, atol=1e-4)
    assert engine._lanes.qsize() == 2


@pytest.mark.slow
def test_a_frozen_prefix_runs_on_litert_as_on_tensorflow():
    cfg = TrainConfig(data="x", base="MobileNetV2", alpha=0.35, size=64, freeze_depth=116, augment=False).resolved()
    prefix, _ = modeling.suffix_model(modeling.build_classifier(cfg, 3), 116)
    engine = engines.engine_for(prefix)
    assert engine.name == "litert-xnnpack"
    assert engines.agreement(engine, prefix, random_pixels(4))["max_rel_diff"] <= 1e-4


@pytest.mark.slow
def test_a_model_that_does_not_convert_runs_on_tensorflow_and_says_why(monkeypatch):
    def refuse(model):
        raise ValueError("op not supported: FancyOp")

    monkeypatch.setattr(engines, "convert", refuse)
    heard = []
    model = extractor()
    engine = engines.engine_for(model, log=heard.append)
    assert engine.name == "tensorflow"
    assert "did not convert to LiteRT" in heard[0] and "FancyOp" in heard[0] and engine.note == heard[0]
    pixels = random_pixels(3)
    np.testing.assert_allclose(engine(pixels), model(pixels, training=False).numpy(), rtol=1e-4, atol=1e-4)


def test_engine_setting_is_checked_and_honoured(monkeypatch):
    monkeypatch.setenv("TL_ENGINE", "tensorflow")
    assert engines.engine_for(extractor()).name == "tensorflow"
    monkeypatch.setenv("TL_ENGINE", "tpu")
    with pytest.raises(TLError, match="'tpu'"):
        engines.wanted()


@pytest.mark.slow
def test_runs_record_their_engine_and_its_agreement_and_predict_through_it(tmp_path):
    from tl_core.data import datasets
    from tl_core.inference.predict import Predictor

    src = make_class_folders(tmp_path / "src", classes=("red", "blue"), per_class=8, size=48)
    datasets.add_folder(src, "colors")
    run, metrics = train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=2, batch_size=8))
    check = metrics["engine"]
    assert check["engine"] == "litert-xnnpack" and check["used"] == {"features": "litert-xnnpack"}
    assert check["max_rel_diff"] <= 1e-4 and check["top1_agreement"] == 1.0
    assert any(line.startswith("engine litert-xnnpack") for line in metrics["notes"])
    assert Predictor.from_run(run).loaded.engine.name == "litert-xnnpack"


# ------------------------------------------------------------------ the feature store


def test_store_appends_rows_and_reads_them_back_after_reopening(tmp_path):
    store = FeatureStore(tmp_path / "key")
    store.append(["a.v0", "b.v0"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    store.append(["c.v0"], np.array([[7, 8, 9]], np.float32))
    reopened = FeatureStore(tmp_path / "key")
    assert reopened.index == {"a.v0": 0, "b.v0": 1, "c.v0": 2}
    np.testing.assert_array_equal(reopened.read([2, 0]), [[7, 8, 9], [1, 2, 3]])
    assert sorted(p.name for p in (tmp_path / "key").iterdir()) == [".lock", "index.tsv", "meta.json", "rows.f32"]


def test_store_ignores_what_a_crash_tore_and_appends_cleanly_after_it(tmp_path):
    store = FeatureStore(tmp_path / "key")
    store.append(["a.v0"], np.array([[1, 2]], np.float32))
    with open(store.rows_path, "ab") as rows:  # a crash mid-append: half a row, half an index line
        rows.write(np.float32(9).tobytes())
    with open(store.index_path, "a") as index:
        index.write("b.v0\t1")
    reopened = FeatureStore(tmp_path / "key")
    assert reopened.index == {"a.v0": 0}
    reopened.append(["c.v0"], np.array([[5, 6]], np.float32))
    final = FeatureStore(tmp_path / "key")
    assert final.index == {"a.v0": 0, "c.v0": 1}
    np.testing.assert_array_equal(final.read([1]), [[5, 6]])


def _append_many(root, worker):
    store = FeatureStore(root)
    for i in range(20):
        store.append([f"w{worker}-{i}"], np.full((1, 4), worker * 100 + i, np.float32))


def test_processes_appending_at_once_never_mix_their_rows(tmp_path):
    FeatureStore(tmp_path / "key").append(["seed"], np.zeros((1, 4), np.float32))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(tmp_path / "key", w)) for w in (1, 2, 3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
    store = FeatureStore(tmp_path / "key")
    assert len(store.index) == 61
    for entry, row in store.index.items():
        if entry != "seed":
            worker, i = entry[1:].split("-")
            np.testing.assert_array_equal(store.read([row])[0], np.full(4, int(worker) * 100 + int(i)))


@pytest.mark.slow
def test_feature_cache_keeps_a_dataset_in_two_files_and_reuses_every_row(tmp_path):
    src = make_class_folders(tmp_path / "src", classes=("red", "blue"), per_class=10, size=48)
    paths = sorted(p for p in src.rglob("*.png"))
    shas = [f"{i:064x}" for i in range(len(paths))]
    cfg = TrainConfig(data="x", base="MobileNetV2", alpha=0.35, size=64).resolved()
    model = extractor()
    first = FeatureCache(cfg, model)
    features = first.features(paths, shas, views=2)
    assert features.shape == (20, 2, model.output_shape[-1]) and first.computed == 40
    second = FeatureCache(cfg, model)
    np.testing.assert_array_equal(second.features(paths[::-1], shas[::-1], views=2), features[::-1])
    assert second.computed == 0 and second.reused == 40 and second._engine is None  # no engine built
    store_files = [p for p in (cache_dir() / "features").rglob("*") if p.is_file()]
    assert len(store_files) == 4  # rows, index, meta, lock: not one file per image and view
    expected = model(np.stack([images.load_array(p, 64) for p in paths[:3]]).astype(np.float32)).numpy()
    np.testing.assert_allclose(features[:3, 0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_feature_pass_on_a_batched_engine_matches_the_lanes_and_stops_when_asked(tmp_path, monkeypatch):
    src = make_class_folders(tmp_path / "src", classes=("red", "blue"), per_class=10, size=48)
    paths = sorted(p for p in src.rglob("*.png"))
    shas = [f"{i:064x}" for i in range(len(paths))]
    cfg = TrainConfig(data="x", base="MobileNetV2", alpha=0.35, size=64).resolved()
    model = extractor()
    lanes = FeatureCache(cfg, model, batch_size=3)
    assert lanes.engine.lane_count == 2
    on_lanes = lanes.features(paths, shas)
    monkeypatch.setenv("TL_ENGINE", "tensorflow")  # the GPU host's path: one batched engine, decode beside it
    monkeypatch.setenv("TL_HOME", str(tmp_path / "other_home"))
    batched = FeatureCache(cfg, model, batch_size=3)
    assert batched.engine.lane_count == 1
    np.testing.assert_allclose(batched.features(paths, shas), on_lanes, rtol=1e-4, atol=1e-4)

    for engine_name in ("tensorflow", "litert"):
        monkeypatch.setenv("TL_ENGINE", engine_name)
        monkeypatch.setenv("TL_HOME", str(tmp_path / f"cancel_{engine_name}"))
        cache, seen = FeatureCache(cfg, model, batch_size=2), []
        with pytest.raises(Cancelled, match="cancelled"):
            cache.features(
                paths,
                shas,
                progress=lambda done, total, seen=seen: seen.append(done),
                should_stop=lambda seen=seen: len(seen) > 2,
            )
        assert 0 < cache.computed < len(paths) and len(cache.store.index) == cache.computed


@pytest.mark.slow
def test_lanes_and_decoding_threads_follow_the_cores_this_process_may_use(tmp_path, monkeypatch):
    """A GPU host's 16 cores decode beside the GPU on 16 threads, not the 4 that keep 2 cores busy; a CPU
    host runs a lane per core it may use (its affinity, which a container may narrow)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    assert device.cpu_cores() == 6 and images.decode_threads() == 6
    src = make_class_folders(tmp_path / "src", classes=("red", "blue"), per_class=8, size=48)
    paths = sorted(p for p in src.rglob("*.png"))
    shas = [f"{i:064x}" for i in range(len(paths))]
    cfg = TrainConfig(data="x", base="MobileNetV2", alpha=0.35, size=64).resolved()
    model = extractor()
    monkeypatch.setenv("TL_ENGINE", "tensorflow")  # one batched engine: the GPU host's path
    batched, decoders = FeatureCache(cfg, model, batch_size=1), set()
    decode = batched._pixels

    def slow_decode(*args):  # long enough that no thread is free again before all have started
        decoders.add(threading.get_ident())
        time.sleep(0.05)
        return decode(*args)

    monkeypatch.setattr(batched, "_pixels", slow_decode)
    assert batched.features(paths, shas).shape[0] == len(paths)
    assert len(decoders) == 6
    monkeypatch.setenv("TL_ENGINE", "litert")
    assert FeatureCache(cfg, model).engine.lane_count == 6


# ------------------------------------------------------------------ decoding


def jpeg(width, height):
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    array = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 128.0),
        ],
        axis=2,
    ).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_exif_orientation_turns_the_pixels_upright_without_touching_a_callers_image():
    array = np.zeros((40, 60, 3), np.uint8)
    array[:, :30] = (250, 10, 10)  # left half red, right half blue, as stored
    array[:, 30:] = (10, 10, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # viewed turned 90 degrees clockwise: red on top
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", exif=exif.tobytes())
    upright = np.asarray(images.load_rgb(buffer.getvalue()))
    assert upright.shape == (60, 40, 3)
    assert (upright[:30, :, 0] > 200).all() and (upright[30:, :, 2] > 200).all()
    callers = Image.open(io.BytesIO(buffer.getvalue()))
    assert images.load_rgb(callers).size == (40, 60) and callers.size == (60, 40)


def test_thumbnails_decode_only_as_large_as_shown_and_look_like_full_decodes():
    big = jpeg(2000, 1200)
    assert images._thumbnail_side(big, (200, 800)) == 120  # shown 200x120: 1/8 scale (250x150) suffices
    thumb = Image.open(io.BytesIO(images.thumbnail_jpeg(big, (200, 800))))
    assert thumb.size == (200, 120)
    reference = Image.open(io.BytesIO(big)).convert("RGB")
    reference.thumbnail((200, 800))
    assert np.abs(np.asarray(thumb, float) - np.asarray(reference, float)).mean() < 3.0
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 600x400, shown 400x600
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg(600, 400))).save(buffer, "JPEG", exif=exif.tobytes())
    assert images._thumbnail_side(buffer.getvalue(), (200, 800)) == 200
    assert Image.open(io.BytesIO(images.thumbnail_jpeg(buffer.getvalue(), (200, 800)))).size == (200, 300)


def test_large_jpegs_decode_at_a_reduced_scale_still_twice_the_input_and_look_the_same():
    big = jpeg(2000, 1200)
    drafted = images.load_rgb(big, draft_size=images.DRAFT_FACTOR * 224)
    assert drafted.size == (1000, 600)  # 1/2: the next step, 1/4, would be under 448 px
    assert images.load_rgb(jpeg(500, 375), draft_size=images.DRAFT_FACTOR * 224).size == (500, 375)
    full = images.to_array(images.load_rgb(big), 224).astype(float)
    assert np.abs(images.load_array(big, 224).astype(float) - full).mean() < 1.0
