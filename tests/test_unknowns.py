"""'Unknown' answers (a run's scope) and the watch on deployed models (recorded predictions, drift, Monitoring).

One tiny run is trained once for the module on the synthetic colors (MobileNetV2 alpha 0.35, 64 px); photos of
other subjects come from ../shared (the samples and a few hymenoptera photos).
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from .factories import HYMENOPTERA, SHARED, cli, colors_dataset, small_config

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def _outside() -> list:
    return sorted((SHARED / "samples").glob("*.jpg")) + sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[:8]


@pytest.fixture(scope="module")
def scoped_home(tmp_path_factory, keras_home_copy):
    root = tmp_path_factory.mktemp("unknowns")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        from tl_core.training.runner import train

        colors_dataset(root, classes=("red", "blue", "green"), per_class=12, size=48)
        run, metrics = train(small_config(epochs=4))
    assert metrics["scope"]["method"] == "knn", metrics["scope"]
    return root / "home", run.id


@pytest.fixture
def scoped_run(scoped_home, monkeypatch):
    from tl_core.runs.store import get_run

    home, run_id = scoped_home
    monkeypatch.setenv("TL_HOME", str(home))
    shutil.rmtree(home / "monitoring", ignore_errors=True)  # each test starts with no recorded predictions
    return get_run(run_id)


def _own_images(run):
    from tl_core.data import datasets

    dataset = datasets.load_dataset(run.config.data)
    split = lambda name: [dataset.root / it["path"] for it in dataset.split_items(name)]  # noqa: E731
    return split(dataset.validation_split), split("train")


@pytest.mark.slow
def test_a_run_answers_unknown_for_other_subjects_and_not_for_its_own_images(scoped_run):
    from tl_core.inference.predict import Predictor

    predictor = Predictor.from_run(scoped_run)
    val, training = _own_images(scoped_run)
    own = predictor.predict_each([p.read_bytes() for p in val + training])
    assert sum(answer["unknown"] for answer in own) <= 1, [a["distance"] for a in own]
    outside = predictor.predict_each([p.read_bytes() for p in _outside()])
    assert all(answer["unknown"] is True for answer in outside), [a["distance"] for a in outside]
    # the nearest class is still given, and distances are what decides: the threshold lies between
    assert all(answer["top_k"][0]["label"] in ("red", "blue", "green") for answer in outside)
    assert max(a["distance"] for a in own) <= predictor.scope.threshold < min(a["distance"] for a in outside)
    # a looser threshold (keep every validation image) never flags more
    assert sum(a["unknown"] for a in predictor.predict_each([p.read_bytes() for p in val], keep=1.0)) == 0

    # a run trained before scopes existed says "not measured", not false
    old = Predictor(predictor.loaded, None).predict_each([val[0].read_bytes()])[0]
    assert old["unknown"] is None and old["distance"] is None and old["top_k"]


@pytest.mark.slow
def test_rest_classify_carries_unknown_and_monitor_reports_drift_only_for_unrelated_photos(scoped_run):
    from fastapi.testclient import TestClient

    from tl_core.deploy.serving import create_app
    from tl_core.inference import monitoring

    app = create_app([scoped_run])
    http = TestClient(app)
    recorder = app.state.models[scoped_run.id].recorder
    url = f"/v1/models/{scoped_run.id}:classify"

    val, training = _own_images(scoped_run)
    own = val + training
    for start in range(0, len(own), 12):
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in own[start : start + 12]]
        reply = http.post(url, files=files)
        assert reply.status_code == 200, reply.text
        assert all(result["unknown"] is False for result in reply.json()["results"]), reply.json()
    recorder.flush()
    calm = monitoring.report(scoped_run)
    assert calm["predictions"] == len(own) and calm["unknown_rate"] == 0.0
    assert calm["drift"] is False, calm

    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in _outside()]
    results = http.post(url, files=files).json()["results"]
    assert [r["unknown"] for r in results] == [True] * len(files) and all(r["distance"] > 0 for r in results)
    recorder.flush()

    done = cli("monitor", "--run", scoped_run.id)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["predictions"] == len(own) + len(files)
    assert report["unknown_rate"] == pytest.approx(len(files) / (len(own) + len(files)), abs=1e-3)
    assert report["drift"] is True and report["tests"]["unknown_rate"]["flagged"] is True
    assert any("unknown" in warning for warning in report["warnings"]), report["warnings"]


@pytest.mark.slow
def test_cli_predict_lines_carry_the_unknown_flag(scoped_run, capsys):
    from tl_core import cli as commands

    val, _ = _own_images(scoped_run)
    cat = SHARED / "samples" / "cat_720p.jpg"
    assert commands.main(["predict", "--run", scoped_run.id, "--top-k", "2", str(val[0]), str(cat)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["image"], line["unknown"]) for line in lines] == [(str(val[0]), False), (str(cat), True)]
    assert len(lines[1]["top_k"]) == 2 and lines[1]["distance"] > lines[0]["distance"]


@pytest.mark.slow
@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_predict_page_answers_unknown_and_the_monitoring_page_shows_it_with_the_drift_warning(scoped_run):
    from tl_core.inference import monitoring

    from .test_app import open_page, texts

    monitor = open_page("pages/monitor.py")
    assert "No predictions recorded" in texts(monitor)

    predict = open_page("pages/predict.py")
    assert predict.slider(key="predict_unknown_keep").value == pytest.approx(0.95)
    predict.toggle(key="predict_as_table").set_value(True).run()
    cat = SHARED / "samples" / "cat_720p.jpg"
    predict.get("file_uploader")[0].upload("cat.jpg", cat.read_bytes(), "image/jpeg").run()
    assert not predict.exception, [e.value for e in predict.exception]
    table = predict.dataframe[-1].value
    assert table["answer"][0] == "unknown" and table["top1"][0] in ("red", "blue", "green")
    predict.run()  # a rerun shows the same upload: recorded once
    recorded = monitoring.read(scoped_run.id)
    assert len(recorded) == 1 and recorded["unknown"][0] == 1 and recorded["source"][0] == 0

    now = time.time()
    calm = monitoring.records([0, 1, 2] * 10, [0.9] * 30, [False] * 30, [0.2] * 30, "rest", when=now)
    far = monitoring.records([0] * 20, [0.5] * 20, [True] * 20, [1.3] * 20, "app", when=now)
    monitoring.append(scoped_run.id, np.concatenate([calm, far]))
    monitor.run()
    assert not monitor.exception, [e.value for e in monitor.exception]
    metrics = {m.label: m.value for m in monitor.metric}
    assert metrics["Predictions recorded"] == "51" and metrics["Drift"] == "yes", metrics
    assert monitor.warning and "unknown" in monitor.warning[0].value
    assert len(monitor.get("plotly_chart")) == 3
    assert monitor.button(key="monitor_again")  # drift: train again on the dataset's newest version


def test_the_prediction_log_is_bounded_and_ignores_a_torn_record(monkeypatch):
    from tl_core.inference import monitoring

    monkeypatch.setattr(monitoring, "MAX_RECORDS", 10)
    for batch in range(5):
        monitoring.append("r1", monitoring.records([batch] * 4, [0.5] * 4, [None] * 4, [None] * 4, "app"))
    rows = monitoring.read("r1")
    assert len(rows) <= 2 * (10 + 4) and rows["label"][-1] == 4  # the oldest went, the newest are kept
    assert (rows["unknown"] == -1).all() and np.isnan(rows["distance"]).all()
    with open(monitoring.log_dir("r1") / monitoring.LOG, "ab") as log:
        log.write(b"\x01\x02\x03")  # a crash mid-record
    assert len(monitoring.read("r1")) == len(rows)
    monitoring.append("r1", monitoring.records([7], [0.9], [True], [1.0], "rest"))
    assert monitoring.read("r1")["label"][-1] == 7


def test_a_buffered_recorder_writes_in_the_background_on_count_and_time_and_on_flush():
    import time

    from tl_core.inference import monitoring

    def written(count):
        deadline = time.monotonic() + 10
        while len(monitoring.read("r2")) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(monitoring.read("r2"))

    recorder = monitoring.Recorder("r2", flush_every=3, flush_after_s=60)
    one = lambda: monitoring.records([1], [0.7], [False], [0.1], "rest")  # noqa: E731
    recorder.record(one())
    recorder.record(one())
    assert len(monitoring.read("r2")) == 0  # buffered
    recorder.record(one())
    assert written(3) == 3  # the third filled the buffer: written by another thread
    recorder.record(one())
    recorder.flush()
    assert len(monitoring.read("r2")) == 4
    quick = monitoring.Recorder("r2", flush_every=100, flush_after_s=0.05)
    quick.record(one())
    assert written(5) == 5  # a lone record is written shortly after


def test_scope_thresholds_keep_the_share_of_validation_images_asked():
    from tl_core.errors import TLError
    from tl_core.runs.scope import SCOPE_METHODS, Scope, fit_scope

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 32))
    labels = np.repeat(np.arange(3), 40)
    train = centres[labels] + rng.normal(0, 0.2, (120, 32))
    val = centres[np.repeat(np.arange(3), 20)] + rng.normal(0, 0.2, (60, 32))
    far = rng.normal(0, 1, (20, 32)) * 3
    for method in SCOPE_METHODS:
        scope = fit_scope(train, labels, val, 3, method=method)
        assert np.mean(~scope.is_unknown(scope.distances(val))) >= 0.95
        assert scope.is_unknown(scope.distances(far)).mean() > 0.9, method
        assert scope.threshold_for(0.5) < scope.threshold <= scope.threshold_for(1.0)
        again = Scope.from_arrays(scope.to_arrays())
        np.testing.assert_allclose(again.distances(far), scope.distances(far))
    with pytest.raises(TLError, match="'cosine'"):
        fit_scope(train, labels, val, 3, method="cosine")


def test_the_drift_tests_agree_with_scipy():
    from scipy import stats

    from tl_core.inference.monitoring import binomial_upper, chi_square, ks_lower

    for successes, trials, rate in [(10, 46, 0.05), (3, 30, 0.05), (1, 10, 0.05), (5000, 100000, 0.05), (20, 20, 0.05)]:
        exact = stats.binomtest(successes, trials, rate, alternative="greater").pvalue
        assert binomial_upper(successes, trials, rate) == pytest.approx(exact, rel=1e-6)
    rng = np.random.default_rng(0)
    for low in (0.0, 0.3):  # the same distribution, then a sample lying lower
        sample, reference = rng.uniform(0, 1 - low, 400), rng.uniform(0, 1, 120)
        statistic, p = ks_lower(sample, reference)
        expected = stats.ks_2samp(sample, reference, alternative="greater", method="asymp")
        assert statistic == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue, rel=0.5)
    for observed in ([30.0, 10, 10], [100.0, 80, 120, 90, 110]):
        observed = np.array(observed)
        expected = np.full(len(observed), observed.sum() / len(observed))
        statistic, p = chi_square(observed, expected)
        assert statistic == pytest.approx(stats.chisquare(observed, expected).statistic)
        assert p == pytest.approx(stats.chisquare(observed, expected).pvalue, rel=0.35)


def test_a_damaged_scope_file_is_a_clear_error_and_a_missing_one_means_not_measured(tmp_path):
    from tl_core.errors import TLError
    from tl_core.models.config import TrainConfig
    from tl_core.runs.scope import fit_scope, scope_for
    from tl_core.runs.store import new_run

    run = new_run(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64))
    assert scope_for(run) is None
    features = np.random.default_rng(0).normal(0, 1, (12, 8))
    run.artifacts.save_scope(fit_scope(features, np.arange(12) % 2, features[:4], 2).to_arrays())
    assert scope_for(run).method == "knn"
    run.artifacts.scope_path.write_bytes(b"not a zip")
    with pytest.raises(TLError, match="scope.npz"):
        scope_for(run)


def test_predictions_per_day_are_whole_days_with_quiet_days_at_zero():
    from tl_app.monitor_sections import per_day_figure

    one = per_day_figure({"2026-12-06": 10})
    assert list(one.data[0].x) == ["2026-12-06"] and one.layout.xaxis.type == "category"  # not a millisecond axis
    gap = per_day_figure({"2026-12-04": 2, "2026-12-06": 5})
    assert list(gap.data[0].x) == ["2026-12-04", "2026-12-05", "2026-12-06"] and list(gap.data[0].y) == [2, 0, 5]
    assert len(per_day_figure({}).data[0].x) == 0
