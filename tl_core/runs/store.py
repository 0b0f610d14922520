"""Run folders: one per training run, with its settings and its lifecycle.

``$TL_HOME/runs/<run id>/`` keeps ``config.json`` (the ``TrainConfig``), ``status.json`` (queued,
running, finished, failed, cancelled or interrupted, with timestamps), ``progress.json`` (the latest
progress event), ``history.csv`` (one row per epoch), ``log.txt``, ``process.log`` (the training
process's stderr), ``cancel`` (a cancellation request), ``run_meta.json`` (the name and note people gave
the run; optional: older runs have none) and ``mlflow.json`` (where the run was logged in MLflow; optional). What training produces (model, head,
checkpoints, metrics, predictions, exports) is named and read by ``artifacts.py``, reached as
``run.artifacts``. Nothing lives only in memory: any process can read a run.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from tl_core import audit
from tl_core.clock import compact_stamp, now_iso, order_key
from tl_core.data.refs import parse_ref
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.runs.artifacts import METRICS as ARTIFACT_METRICS
from tl_core.runs.artifacts import Artifacts
from tl_core.workspace import atomic_write_text, read_json, runs_dir, safe_name, write_json

if TYPE_CHECKING:
    from tl_core.runs.evaluate import Interpretation
    from tl_core.runs.loaded_model import LoadedModel

CONFIG, STATUS, PROGRESS, HISTORY, LOG, PROCESS_LOG, CANCEL, META, MLFLOW = (
    "config.json",
    "status.json",
    "progress.json",
    "history.csv",
    "log.txt",
    "process.log",
    "cancel",
    "run_meta.json",
    "mlflow.json",
)
NAME_MAX, NOTE_MAX = 80, 4000  # characters: a name fits a table cell and a picker's line
ACTIVE = ("queued", "running")
DONE = ("finished", "failed", "cancelled", "interrupted")
HISTORY_FIELDS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]


_SUMMARIES: dict[Path, tuple[tuple, dict]] = {}  # run folder -> (its files' stamps, summary row)
_STATUSES: dict[Path, tuple[tuple, dict]] = {}  # status.json -> (its stamp, its content)


def _stamp(path: Path) -> tuple:
    """What changes whenever the file is rewritten: every write renames a new file (a new inode) into place,
    so even two writes within one clock tick differ."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return ()
    return info.st_ino, info.st_mtime_ns, info.st_size


def _status_when_changed(path: Path) -> Optional[dict]:
    """A status file's content, parsed again only when the file changed: listing 500 runs costs 500 stat
    calls, not 500 JSON parses."""
    stamp = _stamp(path)
    if not stamp:
        return None
    cached = _STATUSES.get(path)
    if cached is None or cached[0] != stamp:
        cached = (stamp, read_json(path))
        _STATUSES[path] = cached
    return dict(cached[1]) if cached[1] else None


@dataclass
class Run:
    root: Path
    listed: dict = field(default_factory=dict, repr=False, compare=False)  # status when listed

    @property
    def id(self) -> str:
        return self.root.name

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def artifacts(self) -> Artifacts:
        return Artifacts(self.root)

    # ---------------------------------------------------------------- config and status
    def load_model(self) -> LoadedModel:
        """The trained model with its parts (imports Keras)."""
        from tl_core.runs.loaded_model import LoadedModel

        return LoadedModel.from_artifacts(self.artifacts)

    def interpretation(self) -> Optional[Interpretation]:
        """The validation predictions, with the run's temperature applied: the probabilities its model gives
        (``predictions.csv`` holds them as evaluated, before calibration). None before there are any."""
        from tl_core.runs.evaluate import Interpretation

        metrics = self.artifacts.metrics()
        if not metrics or not self.artifacts.predictions_path.exists():
            return None
        interp = Interpretation.load(self.artifacts.predictions_path, metrics["class_names"])
        return interp.calibrated(metrics.get("temperature", 1.0))

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.load(self.path(CONFIG))

    def write_config(self, cfg: TrainConfig) -> None:
        """Replace the run's settings (``config.json``) at once: "train again" and a resume read what is here."""
        atomic_write_text(self.path(CONFIG), cfg.to_json() + "\n")

    @property
    def dataset_name(self) -> str:
        """The name of the dataset the run trained on, without the ``@vN`` its config may pin."""
        return parse_ref(self.config.data).name

    def status(self) -> dict:
        return read_json(self.path(STATUS), {"state": "unknown"})

    @property
    def listed_state(self) -> str:
        """The state as of the listing this run came from (``state`` reads it afresh)."""
        return self.listed.get("state", "unknown") if self.listed else self.state

    @property
    def state(self) -> str:
        return self.status().get("state", "unknown")

    def set_status(self, state: str, **fields) -> dict:
        status = {**self.status(), **fields, "state": state, "updated": now_iso()}
        if state == "running" and "started" not in fields:
            status.setdefault("started", now_iso())
        if state in DONE:
            status["finished"] = now_iso()
        try:
            write_json(self.path(STATUS), status)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            # a full disk has no room for the new copy an atomic write makes: overwrite the file in place, in
            # the blocks it already has, so a run that failed for want of space does not stay 'running'
            with open(self.path(STATUS), "r+", encoding="utf-8") as handle:
                handle.write(json.dumps(status))
                handle.truncate()
        return status

    # ---------------------------------------------------------------- progress, history, log
    def write_progress(self, event: dict) -> None:
        write_json(self.path(PROGRESS), {**event, "time": time.time()})

    def progress(self) -> dict:
        return read_json(self.path(PROGRESS), {})

    def append_history(self, row: dict) -> None:
        self.reset_history(self.history() + [row])

    def reset_history(self, rows: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path(HISTORY), buffer.getvalue())

    def history(self) -> list[dict]:
        try:
            with open(self.path(HISTORY), newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except FileNotFoundError:
            return []
        for row in rows:
            for key, value in row.items():
                if key != "phase" and value not in ("", None):
                    row[key] = float(value) if key != "epoch" else int(float(value))
        return rows

    def log(self, message: str) -> None:
        with open(self.path(LOG), "a", encoding="utf-8") as handle:
            handle.write(f"{now_iso()} {message}\n")

    def log_text(self) -> str:
        try:
            return self.path(LOG).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    # ---------------------------------------------------------------- cancellation
    def request_cancel(self) -> None:
        atomic_write_text(self.path(CANCEL), now_iso())
        if self.state == "queued":
            self.set_status("cancelled", message="Cancelled before it started.")

    def cancel_requested(self) -> bool:
        return self.path(CANCEL).exists()

    def can_resume(self) -> bool:
        return self.state in ("interrupted", "failed", "cancelled") and self.artifacts.checkpoint() is not None

    def queue_resume(self) -> None:
        """Queue this run again; training continues from its best checkpoint."""
        if not self.can_resume():
            raise TLError(f"Run {self.id!r} ({self.state}) has no checkpoint to resume from.")
        self.path(CANCEL).unlink(missing_ok=True)
        self.set_status("queued", resume=True, queued_at=time.time(), message="queued to resume from its checkpoint")
        self.log("queued to resume from checkpoint")

    # ---------------------------------------------------------------- name and note
    def meta(self) -> dict:
        """``{"name": ..., "note": ...}`` as people gave them (empty strings when never given), plus who changed
        them last and when."""
        saved = read_json(self.path(META), {})
        saved = saved if isinstance(saved, dict) else {}
        return {
            **saved,
            "name": str(saved.get("name") or ""),
            "note": str(saved.get("note") or ""),
        }

    @property
    def name(self) -> str:
        """The name people gave the run; empty when it has none."""
        return self.meta()["name"]

    def set_meta(self, name: str, note: str, user: Optional[str] = None) -> dict:
        """Save the run's name (one line, at most ``NAME_MAX`` characters, surrounding spaces dropped) and note
        (at most ``NOTE_MAX`` characters) in ``run_meta.json`` in one atomic write; a change is recorded in the
        audit log. A ``TLError`` quotes a name or note that breaks the rules; nothing is saved then."""
        name, note = " ".join(str(name).split()), str(note).strip()
        if len(name) > NAME_MAX:
            raise TLError(f"A run name is at most {NAME_MAX} characters; {name[:NAME_MAX]!r}… has {len(name)}.")
        if len(note) > NOTE_MAX:
            raise TLError(f"A run note is at most {NOTE_MAX} characters; this one has {len(note)}: shorten it.")
        before = self.meta()
        if (before["name"], before["note"]) == (name, note):
            return before
        meta = {"name": name, "note": note, "updated": now_iso(), "user": user}
        write_json(self.path(META), meta)
        changed = {"name": name, "previous_name": before["name"]} if name != before["name"] else {}
        audit.record("describe run", self.id, user, note_changed=note != before["note"], **changed)
        return meta

    # ---------------------------------------------------------------- MLflow
    def mlflow(self) -> dict:
        """Where this run was logged in MLflow (``tracking_uri``, ``experiment_id``, ``run_id``, ``url``,
        ``complete``: everything logged, ``models``: registered versions); empty when it never was."""
        saved = read_json(self.path(MLFLOW), {})
        return saved if isinstance(saved, dict) else {}

    def record_mlflow(self, **fields) -> dict:
        record = {**self.mlflow(), **fields, "updated": now_iso()}
        write_json(self.path(MLFLOW), record)
        return record

    def summary(self) -> dict:
        """One row for the runs table; remembered until one of the files it reads changes."""
        stamp = tuple(_stamp(self.path(name)) for name in (STATUS, CONFIG, HISTORY, ARTIFACT_METRICS, META))
        cached = _SUMMARIES.get(self.root)
        if cached and cached[0] == stamp:
            return dict(cached[1])
        row = self._summary()
        _SUMMARIES[self.root] = (stamp, row)
        return dict(row)

    def _summary(self) -> dict:
        status, metrics, history = self.status(), self.artifacts.metrics(), self.history()
        try:
            cfg = self.config
        except (OSError, TLError, TypeError, ValueError):
            cfg = TrainConfig()
        val = [row["val_accuracy"] for row in history if isinstance(row.get("val_accuracy"), float)]
        features = feature_pass(metrics)
        return {
            "run": self.id,
            "name": self.name,
            "state": status.get("state"),
            "dataset": cfg.data,
            "base": cfg.base,
            "alpha": cfg.alpha,
            "size": cfg.size,
            "head": cfg.head,
            "freeze_depth": str(cfg.freeze_depth),
            "learning_rate": cfg.learning_rate,
            "epochs": len(history) or None,
            "final_val_accuracy": metrics.get("val_accuracy"),
            "best_val_accuracy": max(val) if val else metrics.get("val_accuracy"),
            "balanced_val_accuracy": metrics.get("val_balanced_accuracy"),
            "macro_f1": metrics.get("val_macro_f1"),
            "duration_s": metrics.get("duration_s"),
            "features_cached": features["cached"] if features else None,
            "features": feature_words(features),
            "created": status.get("created"),
            "user": status.get("user"),
        }


_FEATURE_NOTE = re.compile(r"feature cache \S+: (\d+) forward passes, (\d+) reused")


def feature_pass(metrics: dict) -> Optional[dict]:
    """How a finished run got its frozen base's features: ``{"computed": N, "reused": M, "cached": bool}``
    (``cached``: every feature came from the feature cache, no forward pass ran), from its metrics, or from the
    run notes of runs trained before metrics recorded it. None for a run that trained without the cache."""
    recorded = metrics.get("feature_pass")
    if isinstance(recorded, dict) and {"computed", "reused"} <= set(recorded):
        computed, reused = int(recorded["computed"]), int(recorded["reused"])
    else:
        found = next(filter(None, (_FEATURE_NOTE.search(str(n)) for n in metrics.get("notes") or ())), None)
        if found is None:
            return None
        computed, reused = int(found[1]), int(found[2])
    return {"computed": computed, "reused": reused, "cached": computed == 0 and reused > 0}


def feature_words(features: Optional[dict]) -> Optional[str]:
    """What the runs table says beside a run's time about its feature pass."""
    if not features:
        return None
    if features["cached"]:
        return "reused cached features"
    if features["reused"]:
        total = features["reused"] + features["computed"]
        return f"partly cached ({features['reused']} of {total} reused)"
    return "computed features"


def new_run(cfg: TrainConfig, run_dir: Optional[Path] = None, user: Optional[str] = None) -> Run:
    """A queued run folder for a (resolved) config."""
    if run_dir is None:
        stamp = compact_stamp()
        run_dir = runs_dir() / f"{stamp}-{safe_name(cfg.base)}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TLError(f"Run folder {str(run_dir)!r} is a file, not a folder. Pick a new --run-dir.")
    try:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise TLError(f"Run folder {str(run_dir)!r} already exists and is not empty. Pick a new --run-dir.")
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # the disk, not the choice of folder: the caller says so
            raise
        raise TLError(
            f"Run folder {str(run_dir)!r} cannot be made ({exc.strerror or exc}). Pick a --run-dir you can write to."
        ) from None
    run = Run(run_dir)
    run.write_config(cfg)
    # queued_at orders the queue: two submissions within one second still train first-come first-served
    write_json(run.path(STATUS), {"state": "queued", "created": now_iso(), "queued_at": time.time(), "user": user})
    return run


def list_runs() -> list[Run]:
    """Every run, newest first, each with ``listed``: its status as read for this listing (one read per run)."""
    runs = []
    for folder in runs_dir().iterdir():
        if not folder.is_dir():  # a stray file (a note, an editor's backup) is no run
            continue
        status = _status_when_changed(folder / STATUS)
        if status:
            run = Run(folder)
            run.listed = status
            runs.append(run)
    return sorted(runs, key=lambda r: (order_key(r.listed.get("created")), r.listed.get("queued_at", 0)), reverse=True)


def runs_using(dataset_name: str, runs: Optional[list[Run]] = None) -> list[Run]:
    """The queued or running runs that train on dataset ``dataset_name`` (any version of it), from ``runs`` (a
    backend's ``refresh()``, so runs whose process died are not counted) or else a fresh listing."""
    using = []
    for run in list_runs() if runs is None else runs:
        if run.listed_state not in ACTIVE:
            continue
        try:
            name = run.dataset_name
        except (OSError, TLError, TypeError, ValueError):  # an unreadable config names no dataset
            continue
        if name == dataset_name:
            using.append(run)
    return using


def get_run(run_id_or_path) -> Run:
    path = Path(run_id_or_path)
    for candidate in (path, runs_dir() / str(run_id_or_path)):
        if (candidate / STATUS).exists():
            return Run(candidate)
    raise TLError(f"No run found at {str(run_id_or_path)!r}. List runs in the Results page or under {runs_dir()}.")


def run_by_id(run_id: str) -> Run:
    """A run of this workspace by its id alone, as a page receives it from a URL: no paths, no '..'."""
    text = str(run_id)
    if not text or text != Path(text).name or text in (".", ".."):
        raise TLError(f"{text!r} is not a run id.")
    candidate = runs_dir() / text
    if not (candidate / STATUS).exists():
        raise TLError(f"No run {text!r} in this workspace.")
    return Run(candidate)
