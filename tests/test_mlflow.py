"""Runs in MLflow, against a real MLflow tracking server started here (SQLite store, artifacts in a temporary
folder), read back with MLflow's own client: params, per-epoch metrics, final metrics, tags, files, the model
registered and loaded with ``mlflow.pyfunc.load_model``, predicting as the run does on real photos. A tracking
server that does not answer leaves the run finished and says so in its log; ``mlflow-log`` logs it later."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tl_core.errors import TLError
from tl_core.models.config import SETTINGS

from .factories import SHARED, cli, require_shared, small_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``mlflow server`` on 127.0.0.1 with a SQLite store and a local artifact folder. It starts in the
    background (several seconds): ``url`` waits for it to answer."""

    def __init__(self, root):
        self.root, self.port = root, _free_port()
        self.log = open(root / "server.log", "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.answered = False

    @property
    def url(self) -> str:
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 180
        while not self.answered:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    self.answered = answer.status == 200
            except OSError:
                if self.process.poll() is not None or time.time() > deadline:
                    self.stop()
                    log = (self.root / "server.log").read_text(errors="replace")[-3000:]
                    pytest.fail("mlflow server did not start:\n" + log)
                time.sleep(0.3)
        return url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One tracking server for this module's tests, started in the background: a test trains while it boots."""
    server = Server(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def _photos(size: int, resize: str) -> np.ndarray:
    from tl_core.data.images import load_batch

    files = sorted(require_shared(SHARED / "samples").glob("*.jpg"))
    assert len(files) >= 4
    return load_batch(files, size, resize=resize).astype(np.float32)


@pytest.mark.slow
def test_a_dead_tracking_server_leaves_the_run_finished_and_mlflow_log_logs_it_later(
    colors, mlflow_server, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from tl_core.tracking.mlflow_runs import log_finished
    from tl_core.training.runner import train

    dead = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", dead)
    monkeypatch.setenv("TL_MLFLOW_EXPERIMENT", "later")
    started = time.time()
    run, _ = train(small_config(epochs=2))
    took = time.time() - started
    assert run.state == "finished"
    assert took < 120, took  # connection refused at once: no retries, no back-off
    assert "mlflow: not logged" in run.log_text() and f"mlflow-log {run.id}" in run.log_text()
    assert not run.mlflow().get("complete") and dead in run.mlflow()["error"]

    # the command's contract, quickly: nothing configured is refused before TensorFlow loads
    refused = cli("mlflow-log", run.root, env_extra={"TL_MLFLOW_TRACKING_URI": ""})
    assert refused.returncode == 2 and "TL_MLFLOW_TRACKING_URI" in refused.stderr

    url = mlflow_server.url
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", url)
    printed = log_finished(run)  # what ``python -m tl_core mlflow-log RUN`` prints
    assert printed["run"] == run.id and printed["url"].startswith(url)

    client = MlflowClient(url)
    logged = client.get_run(printed["mlflow_run_id"])
    assert logged.info.status == "FINISHED" and logged.data.params["epochs"] == "2"
    assert client.get_experiment(logged.info.experiment_id).name == "later"
    points = client.get_metric_history(printed["mlflow_run_id"], "val_loss")
    assert sorted(p.step for p in points) == [1, 2]
    assert logged.data.metrics["final_val_accuracy"] == pytest.approx(run.artifacts.metrics()["val_accuracy"])
    assert "model_card.md" in {item.path for item in client.list_artifacts(printed["mlflow_run_id"])}
    [model] = client.search_logged_models([logged.info.experiment_id])  # in the run's experiment, from the run
    assert model.source_run_id == printed["mlflow_run_id"] and model.name == "model"
    assert run.mlflow()["complete"] and run.mlflow()["run_id"] == printed["mlflow_run_id"]

    with pytest.raises(TLError, match="already logged"):
        log_finished(run)
    print(f"training with a dead tracking server took {took:.1f} s")


@pytest.mark.slow
def test_a_run_is_logged_live_and_its_registered_model_predicts_as_the_run(colors, mlflow_server, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from tl_core.tracking.mlflow_runs import register
    from tl_core.training.runner import train

    tracked = mlflow_server.url
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", tracked)
    run, metrics = train(small_config(epochs=2))
    record = run.mlflow()
    assert record["complete"] and record["tracking_uri"] == tracked and record["url"].startswith(tracked)
    assert "mlflow: logged with its model" in run.log_text()

    client = MlflowClient(tracked)
    logged = client.get_run(record["run_id"])
    assert logged.info.status == "FINISHED" and logged.info.experiment_id == "0"  # none named: MLflow's Default
    assert set(SETTINGS) <= set(logged.data.params)
    assert logged.data.params["base"] == "MobileNetV2" and logged.data.params["epochs"] == "2"
    assert logged.data.params["data"] == run.config.data

    history = run.history()
    assert len(history) == 2
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        points = sorted(client.get_metric_history(record["run_id"], key), key=lambda m: m.step)
        assert [p.step for p in points] == [1, 2], key
        assert [p.value for p in points] == pytest.approx([row[key] for row in history]), key

    final = logged.data.metrics
    for key in ("final_val_accuracy", "val_balanced_accuracy", "val_macro_f1", "ece_after", "engine_top1_agreement"):
        assert key in final, key
    assert final["final_val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert final["val_macro_f1"] == pytest.approx(metrics["val_macro_f1"])

    tags = logged.data.tags
    assert tags["dataset"] == "colors" and tags["base"] == "MobileNetV2"
    assert tags["dataset_version"] == str(metrics["dataset_version"])
    assert tags["dataset_fingerprint"] == metrics["dataset_fingerprint"]
    assert tags["training_path"] == metrics["training_path"] and tags["user"]

    files = {item.path for item in client.list_artifacts(record["run_id"])}
    for name in (
        "metrics.json",
        "log.txt",
        "history.csv",
        "model_card.md",
        "confusion_matrix.png",
        "learning_curves.png",
    ):
        assert name in files, name
    local = client.download_artifacts(record["run_id"], "confusion_matrix.png", str(run.root / "dl"))
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    done = cli(
        "mlflow-register", run.root, "--name", "colors-classifier", env_extra={"TL_MLFLOW_TRACKING_URI": tracked}
    )
    assert done.returncode == 0, done.stderr
    registered = json.loads(done.stdout.strip().splitlines()[-1])
    assert registered["version"] == "1" and registered["model_uri"] == "models:/colors-classifier/1"
    assert registered["url"].startswith(tracked)
    assert run.mlflow()["models"][0]["name"] == "colors-classifier"

    mlflow.set_tracking_uri(tracked)
    model = mlflow.pyfunc.load_model("models:/colors-classifier/1")
    loaded = run.load_model()
    inputs = model.metadata.get_input_schema().inputs[0]
    assert tuple(inputs.shape) == (-1, loaded.input_size, loaded.input_size, 3)
    assert model.metadata.get_output_schema().input_names() == loaded.class_names

    pixels = _photos(loaded.input_size, loaded.resize)
    answers = model.predict(pixels)
    assert list(answers.columns) == loaded.class_names
    np.testing.assert_allclose(answers.to_numpy(), loaded.probabilities(pixels), atol=1e-5)
    with pytest.raises(TLError, match="registered model name"):
        register(run, "a/b")


# ---------------------------------------------------------------- fast: settings, what is logged, the Results section


def test_the_tracking_uri_comes_from_the_environment_else_the_secrets_file(tmp_path, monkeypatch):
    from tl_core.tracking import settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TL_MLFLOW_TRACKING_URI")
    for name in ("TL_MLFLOW_EXPERIMENT", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    assert settings.tracking_uri() is None and not settings.enabled()  # off by default
    assert settings.experiment_name() is None and settings.experiment_id() == "0"  # MLflow's Default experiment
    secrets = tmp_path / ".streamlit" / "secrets.toml"
    secrets.parent.mkdir()
    secrets.write_text('password = "x"\n[mlflow]\ntracking_uri = "http://mlflow.example:5000"\nexperiment = "ants"\n')
    assert settings.tracking_uri() == "http://mlflow.example:5000" and settings.experiment_name() == "ants"
    assert settings.job_env() == {
        "TL_MLFLOW_TRACKING_URI": "http://mlflow.example:5000",
        "TL_MLFLOW_EXPERIMENT": "ants",
    }
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert settings.tracking_uri() == "http://127.0.0.1:5001"  # the environment wins
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", "")
    assert settings.tracking_uri() is None and settings.job_env() == {"TL_MLFLOW_TRACKING_URI": ""}  # off on purpose
    monkeypatch.delenv("TL_MLFLOW_TRACKING_URI")
    secrets.write_text("[mlflow]\ntracking_uri = 5000\n")
    with pytest.raises(TLError, match="5000"):
        settings.tracking_uri()
    secrets.write_text("[mlflow\n")
    with pytest.raises(TLError, match="not valid TOML"):
        settings.tracking_uri()
    with pytest.raises(TLError, match="not valid TOML"):
        settings.required_uri()


def test_final_metrics_keep_epoch_metric_names_for_the_epochs_and_the_pictures_are_pngs():
    from tl_core.tracking import figures
    from tl_core.tracking.mlflow_runs import epoch_metrics, final_metrics

    final = final_metrics(
        {
            "val_accuracy": 0.9,
            "val_macro_f1": 0.8,
            "ece_after": 0.03,
            "num_val_images": 20,
            "features_cached": True,
            "engine": {"top1_agreement": 1.0, "max_rel_diff": 2e-6, "engine": "litert-xnnpack"},
            "class_names": ["a", "b"],
        }
    )
    assert final == {
        "final_val_accuracy": 0.9,
        "val_macro_f1": 0.8,
        "ece_after": 0.03,
        "num_val_images": 20.0,
        "engine_top1_agreement": 1.0,
        "engine_max_rel_diff": 2e-6,
    }
    row = {"epoch": 2, "phase": "head", "loss": 0.5, "val_accuracy": 0.75, "learning_rate": 1e-3, "seconds": 1.5}
    assert epoch_metrics(row) == {"loss": 0.5, "val_accuracy": 0.75, "learning_rate": 1e-3, "epoch_seconds": 1.5}
    png = figures.confusion_png([[3, 1], [0, 4]], ["ants", "bees"])
    assert png.startswith(b"\x89PNG") and figures.curves_png([row, {**row, "loss": 0.4}]).startswith(b"\x89PNG")
    assert figures.confusion_png([[1] * 60] * 60, [str(i) for i in range(60)]) is None  # unreadable: not drawn


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_results_links_a_logged_run_to_its_mlflow_page_and_offers_to_register_it(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tl_core.runs.evaluate import evaluate
    from tl_core.runs.store import new_run

    from .factories import REPO

    uri = f"http://127.0.0.1:{_free_port()}"  # nobody listens: registering fails, and says so
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", uri)
    run = new_run(small_config())
    summary = evaluate(run.artifacts, ["red", "blue"], np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]), ["a", "b"])
    run.artifacts.write_metrics(summary)
    run.set_status("finished", val_accuracy=1.0)
    page = f"{uri}/#/experiments/3/runs/abc"
    run.record_mlflow(
        tracking_uri=uri, experiment_id="3", run_id="abc", url=page, complete=True, model_uri="models:/m-abc"
    )

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/results.py").run()
    assert not at.exception, [e.value for e in at.exception]
    links = [element.proto.url for element in at.get("link_button")]
    assert page in links
    assert at.text_input(key=f"results_mlflow_name_{run.id}").value == "colors"
    at.text_input(key=f"results_mlflow_name_{run.id}").input("ants / bees")
    at.button(key="results_mlflow_register").click().run()
    assert any("registered model name" in e.value and "ants / bees" in e.value for e in at.error)
    at.text_input(key=f"results_mlflow_name_{run.id}").input("ants-and-bees")
    at.button(key="results_mlflow_register").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("did not register 'ants-and-bees'" in e.value for e in at.error), [e.value for e in at.error]
    assert "models" not in run.mlflow()


@pytest.mark.usefixtures("server_past_pages_folder_mode")
def test_results_offers_no_second_log_while_the_runs_process_still_logs_it(monkeypatch):
    """A run shows finished while its process still sends the model to MLflow (seconds on a small model): the
    panel says so instead of "not logged yet" with a Log button that would log it twice."""
    import os

    from streamlit.testing.v1 import AppTest

    from tl_core import device
    from tl_core.runs.evaluate import evaluate
    from tl_core.runs.store import new_run

    from .factories import REPO

    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("TL_MLFLOW_TRACKING_URI", uri)
    run = new_run(small_config())
    summary = evaluate(run.artifacts, ["red", "blue"], np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]), ["a", "b"])
    run.artifacts.write_metrics(summary)
    run.set_status("finished", val_accuracy=1.0, pid=os.getpid(), pid_start=device.process_start_time(os.getpid()))
    run.record_mlflow(tracking_uri=uri, experiment_id="0", run_id="abc", url=None, complete=False, error=None)

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/results.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("still logging" in c.value and "abc" in c.value for c in at.caption), [c.value for c in at.caption]
    assert not [b for b in at.button if b.key == "results_mlflow_log"]

    run.set_status("finished", pid=2**22 + 7, pid_start=None)  # that process is gone: logging can be retried
    at.run()
    assert any("not logged" in c.value for c in at.caption), [c.value for c in at.caption]
    assert at.button(key="results_mlflow_log")
