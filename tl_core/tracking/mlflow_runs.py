"""Runs logged to MLflow: live while a run trains (``LiveLog``), after the fact (``log_finished``), and
registered under a name people give (``register``).

Everything logged comes from the run folder: settings (``SETTINGS``' fields) as params, ``history.csv``'s rows
as per-epoch metrics (live: each as its epoch ends, from the progress reporter's events), ``metrics.json``'s
numbers as final metrics, tags (dataset, its version and fingerprint, base, head, user, training path), files
(metrics, settings, history, the run log, the model card, the confusion matrix and learning curves as PNG) and
the model (``pyfunc_model``). Where the run went is kept in its folder (``Run.record_mlflow``).

A tracking server that does not answer never fails or slows a run: the live log talks to MLflow on its own
thread with short timeouts (``settings.quick_requests``), gives up at the first failure, and says in the run's
log that the run can be logged later with ``python -m tl_core mlflow-log RUN``.
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from tl_core.clock import parse_stamp
from tl_core.errors import TLError
from tl_core.models.config import SETTINGS, TrainConfig
from tl_core.runs import model_card
from tl_core.runs.artifacts import METRICS
from tl_core.runs.store import CONFIG, HISTORY, LOG, Run
from tl_core.tracking import figures, settings

# history.csv's column -> the per-epoch metric's name in MLflow
EPOCH_METRICS = {key: key for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")}
EPOCH_METRICS["seconds"] = "epoch_seconds"
MODEL_CARD_FORMAT = "mlflow"
MODEL_CARD_DESCRIPTION = "MLflow pyfunc model: raw RGB pixels in, calibrated class probabilities out"
LATER = "log it later with: python -m tl_core mlflow-log {run}"
FINISH_WAIT_S = 600.0  # the most a finished run's process waits for its model and files to reach MLflow
MAX_NAME = 256


def _client(uri: str):
    settings.quick_requests()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client) -> str:
    name = settings.experiment_name()
    if name is None:
        return settings.experiment_id()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


# ------------------------------------------------------------------------------------------------ what is logged
def params(cfg: TrainConfig) -> dict[str, str]:
    """Every setting of the schema, as MLflow params (text)."""
    return {
        name: json.dumps(getattr(cfg, name)) if not isinstance(getattr(cfg, name), str) else getattr(cfg, name)
        for name in SETTINGS
    }


def final_metrics(metrics: dict) -> dict[str, float]:
    """metrics.json's numbers (accuracy, balanced accuracy, macro F1, calibration error, ...), the engine check's
    (``engine_top1_agreement``, ``engine_max_rel_diff``) and the feature pass's. One that is also an epoch's
    metric (``val_accuracy``) is the final model's: ``final_val_accuracy``, so each epoch metric's history holds
    the epochs alone."""
    out = {}
    for prefix, part in (
        ("", metrics),
        ("engine_", metrics.get("engine") or {}),
        ("feature_pass_", metrics.get("feature_pass") or {}),
    ):
        for key, value in part.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                name = prefix + key
                out[f"final_{name}" if name in EPOCH_METRICS.values() else name] = float(value)
    return out


def tags(run: Run) -> dict[str, str]:
    from tl_core.data.refs import parse_ref

    cfg, metrics, status = run.config, run.artifacts.metrics(), run.status()
    found = {
        "tl.run": run.id,
        "dataset": metrics.get("dataset") or parse_ref(cfg.data).name,
        "dataset_ref": cfg.data,
        "dataset_version": metrics.get("dataset_version"),
        "dataset_fingerprint": metrics.get("dataset_fingerprint"),
        "base": cfg.base,
        "head": cfg.head,
        "user": status.get("user") or "unknown",
        "training_path": metrics.get("training_path"),
        "device": metrics.get("device"),
    }
    if status.get("user"):
        found["mlflow.user"] = status["user"]
    if run.meta()["note"]:
        found["mlflow.note.content"] = run.meta()["note"]  # the run's note, as MLflow's description
    return {key: str(value) for key, value in found.items() if value not in (None, "")}


def epoch_metrics(row: dict) -> dict[str, float]:
    return {name: float(row[key]) for key, name in EPOCH_METRICS.items() if isinstance(row.get(key), (int, float))}


def _metric_batch(values: dict[str, float], step: int, timestamp_ms: int) -> list:
    from mlflow.entities import Metric

    return [Metric(key, value, timestamp_ms, step) for key, value in values.items()]


def _files(run: Run, folder: Path, facts) -> None:
    """The run's files and pictures, written into ``folder`` for one upload."""
    for name in (METRICS, CONFIG, HISTORY, LOG):
        if run.path(name).is_file():
            shutil.copy2(run.path(name), folder / name)
    metrics = run.artifacts.metrics()
    for name, png in (
        ("confusion_matrix.png", figures.confusion_png(metrics.get("confusion_matrix"), metrics.get("class_names"))),
        ("learning_curves.png", figures.curves_png(run.history())),
    ):
        if png:
            (folder / name).write_bytes(png)
    model_card.write(run, folder, MODEL_CARD_FORMAT, MODEL_CARD_DESCRIPTION, facts, None)


def _log_outcome(client, uri: str, run_id: str, run: Run, end_ms: Optional[int] = None) -> dict:
    """A finished run's final metrics, tags, files and model into MLflow run ``run_id``, then marked finished;
    returns what ``Run.record_mlflow`` keeps."""
    import mlflow

    from tl_core.tracking import pyfunc_model

    stamp = end_ms or int(time.time() * 1000)
    facts = pyfunc_model.ModelFacts.of(run)
    client.log_batch(
        run_id,
        metrics=_metric_batch(final_metrics(run.artifacts.metrics()), 0, stamp),
        tags=[_tag(key, value) for key, value in tags(run).items()],
    )
    with tempfile.TemporaryDirectory(prefix="tl-mlflow-files-") as tmp:
        _files(run, Path(tmp), facts)
        client.log_artifacts(run_id, tmp)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):  # the active run puts the model in the run's experiment (MLflow 3)
        info = pyfunc_model.log_model(run, run_id, facts)
    client.set_terminated(run_id, "FINISHED", end_time=stamp)
    return {"model_uri": info.model_uri, "complete": True}


def _record(run: Run, uri: str, experiment_id: str, run_id: str, **fields) -> dict:
    return run.record_mlflow(
        tracking_uri=uri,
        experiment_id=experiment_id,
        run_id=run_id,
        url=settings.run_url(uri, experiment_id, run_id),
        **fields,
    )


def _ms(stamp: Optional[str]) -> Optional[int]:
    parsed = parse_stamp(stamp)
    return int(parsed.timestamp() * 1000) if parsed else None


# ------------------------------------------------------------------------------------------------ live
class LiveLog:
    """A run logged to MLflow while it trains: params at the start, each epoch's metrics as it ends, the rest when
    it ends. Every call to MLflow runs on this object's thread, in order; the first failure stops them all and
    the run's log says so. ``start`` gives a ``LiveLog`` that does nothing when MLflow is off."""

    def __init__(self, run: Run, uri: Optional[str]):
        self.run, self.uri = run, uri
        self.client = None
        self.experiment_id = self.run_id = None
        self.failed: Optional[str] = None
        self._tasks: queue.Queue = queue.Queue()
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def start(cls, run: Run) -> LiveLog:
        try:
            uri = settings.tracking_uri()
        except TLError as exc:  # a broken secrets file: the run trains all the same
            run.log(f"mlflow: not logged: {exc}")
            uri = None
        live = cls(run, uri)
        if uri is not None:
            live._thread = threading.Thread(target=live._work, name="mlflow-log", daemon=True)
            live._thread.start()
            live._tasks.put(live._open)
        return live

    @property
    def on(self) -> bool:
        return self._thread is not None

    def progress(self, callback: Optional[Callable[[dict], None]]) -> Optional[Callable[[dict], None]]:
        """The progress callback, also sending each finished epoch's metrics to MLflow."""
        if not self.on:
            return callback

        def forward(event: dict) -> None:
            if callback:
                callback(event)
            if event.get("kind") == "epoch" and self.failed is None:
                step = len(self.run.history())  # the row's place in history.csv, as mlflow-log numbers it
                values, stamp = epoch_metrics(event), int(time.time() * 1000)
                self._tasks.put(lambda: self.client.log_batch(self.run_id, metrics=_metric_batch(values, step, stamp)))

        return forward

    def end(self, state: str) -> None:
        """The run ended (``finished``, ``failed``, ``cancelled``): log what it left, then wait for the thread."""
        if not self.on:
            return
        self._tasks.put(self._finish if state == "finished" else lambda: self._stop(state))
        self._tasks.put(None)
        self._thread.join(FINISH_WAIT_S)
        if self._thread.is_alive():
            self.run.log(
                f"mlflow: still sending after {FINISH_WAIT_S:.0f} s, given up; " + LATER.format(run=self.run.id)
            )

    # -------------------------------------------------------------------------------------- on the thread
    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            if self.failed is not None:
                continue
            try:
                task()
            except Exception as exc:  # noqa: BLE001  any failure of the tracking server leaves the run alone
                self.failed = _why(exc)
                self.run.log(
                    f"mlflow: not logged: the tracking server at {self.uri} did not answer or refused "
                    f"({self.failed}). The run itself is unaffected; " + LATER.format(run=self.run.id)
                )
                self.run.record_mlflow(tracking_uri=self.uri, complete=False, error=self.failed)

    def _open(self) -> None:
        why = settings.unreachable(self.uri)
        if why:
            raise ConnectionError(f"{self.uri} unreachable: {why}")
        self.client = _client(self.uri)
        self.experiment_id = _experiment_id(self.client)
        created = self.client.create_run(
            self.experiment_id, run_name=self.run.name or self.run.id, tags={"tl.run": self.run.id}
        )
        self.run_id = created.info.run_id
        record = _record(self.run, self.uri, self.experiment_id, self.run_id, complete=False, error=None)
        self.client.log_batch(self.run_id, params=[_param(k, v) for k, v in params(self.run.config).items()])
        self.run.log(f"mlflow: logging to {record['url'] or self.uri} (MLflow run {self.run_id})")

    def _finish(self) -> None:
        outcome = _log_outcome(self.client, self.uri, self.run_id, self.run)
        record = _record(self.run, self.uri, self.experiment_id, self.run_id, **outcome, error=None)
        self.run.log(f"mlflow: logged with its model: {record['url'] or self.run_id}")
        self.client.log_artifact(self.run_id, str(self.run.path(LOG)))  # the log with that line

    def _stop(self, state: str) -> None:
        status = {"cancelled": "KILLED"}.get(state, "FAILED")
        if self.run.path(LOG).is_file():
            self.client.log_artifact(self.run_id, str(self.run.path(LOG)))
        self.client.set_terminated(self.run_id, status)


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value)


def _tag(key: str, value: str):
    from mlflow.entities import RunTag

    return RunTag(key, value)


# ------------------------------------------------------------------------------------------------ after the fact
def log_finished(run: Run, again: bool = False) -> dict:
    """Log a finished run now: params, per-epoch history, final metrics, files, model. Returns where it went."""
    if run.state != "finished":
        raise TLError(f"Run {run.id!r} is {run.state}; only a finished run can be logged to MLflow.")
    uri = settings.required_uri()
    before = run.mlflow()
    if before.get("complete") and before.get("tracking_uri") == uri and not again:
        raise TLError(
            f"Run {run.id!r} is already logged at {uri} as MLflow run {before['run_id']!r}"
            f"{' (' + before['url'] + ')' if before.get('url') else ''}. Pass --again to log another copy."
        )
    status = run.status()
    start_ms, end_ms = _ms(status.get("started")) or _ms(status.get("created")), _ms(status.get("finished"))
    try:
        client = _client(uri)
        experiment_id = _experiment_id(client)
        created = client.create_run(
            experiment_id, start_time=start_ms, run_name=run.name or run.id, tags={"tl.run": run.id}
        )
        run_id = created.info.run_id
        client.log_batch(run_id, params=[_param(k, v) for k, v in params(run.config).items()])
        clock = start_ms or int(time.time() * 1000)
        batch = []
        for step, row in enumerate(run.history(), start=1):
            clock += int(1000 * float(row.get("seconds") or 0))
            batch += _metric_batch(epoch_metrics(row), step, clock)
        for first in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per call
            client.log_batch(run_id, metrics=batch[first : first + 1000])
        outcome = _log_outcome(client, uri, run_id, run, end_ms)
    except TLError:
        raise
    except Exception as exc:  # noqa: BLE001  the server's words, for a person
        raise TLError(
            f"MLflow at {uri!r} did not take run {run.id!r} ({_why(exc)}). Check that the tracking server is up "
            f"and {settings.URI_ENV} points at it, then run mlflow-log again."
        ) from None
    record = _record(run, uri, experiment_id, run_id, **outcome, error=None)
    run.log(f"mlflow: logged after the fact: {record['url'] or run_id}")
    return {"run": run.id, "mlflow_run_id": run_id, "experiment_id": experiment_id, "url": record["url"]}


# ------------------------------------------------------------------------------------------------ registry
def check_model_name(name: str) -> str:
    text = str(name).strip()
    if not text or len(text) > MAX_NAME or any(c in text for c in "/\\:%\n\r\t"):
        raise TLError(
            f"A registered model name is 1 to {MAX_NAME} characters without / \\ : % or line breaks; got {name!r}."
        )
    return text


def register(run: Run, name: str) -> dict:
    """Register the run's MLflow model under ``name`` (a new version of it); logs the run first if needed."""
    name = check_model_name(name)
    uri = settings.required_uri()
    record = run.mlflow()
    if not (record.get("complete") and record.get("tracking_uri") == uri and record.get("model_uri")):
        log_finished(run, again=True)
        record = run.mlflow()
    import mlflow

    try:
        settings.quick_requests()
        mlflow.set_tracking_uri(uri)
        version = mlflow.register_model(record["model_uri"], name, await_registration_for=30)
    except Exception as exc:  # noqa: BLE001
        raise TLError(
            f"MLflow at {uri!r} did not register {name!r} ({_why(exc)}). Check the server, then retry."
        ) from None
    entry = {"name": name, "version": str(version.version), "url": settings.model_url(uri, name, str(version.version))}
    run.record_mlflow(models=[*record.get("models", []), entry])
    run.log(f"mlflow: registered as {name!r} version {entry['version']}")
    return {"run": run.id, **entry, "model_uri": f"models:/{name}/{entry['version']}"}
