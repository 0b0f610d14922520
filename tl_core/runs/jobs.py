"""Prediction job folders: a batch prediction (a folder or zip of images into a CSV) queued as a background job.

``$TL_HOME/jobs/<job id>/`` holds ``job.json`` (what to predict: the run, the input folder or zip, the CSV to
write, top-k, test-time augmentation) and the lifecycle files of a run folder (``status.json``,
``progress.json``, ``log.txt``, ``process.log``, ``cancel``), written by the same code: ``PredictJob`` is a
``Run`` whose work is a prediction, so every backend queues, starts (``python -m tl_core execute FOLDER``),
follows, cancels and lists a job as it does a training run. The CSV is ``answers.csv`` in the job's
folder unless the job names another file. Jobs live beside ``runs/``, never in it: the runs table, the
leaderboard and the dataset locks see training runs only.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Optional, Union

from tl_core.clock import compact_stamp, now_iso, order_key
from tl_core.errors import TLError
from tl_core.runs.store import STATUS, Run, get_run
from tl_core.workspace import read_json, subdir, write_json

SPEC, RESULT_CSV = "job.json", "answers.csv"
PREFIX = "predict-"


def jobs_dir() -> Path:
    return subdir("jobs")


class PredictJob(Run):
    """A batch prediction's folder: a run's lifecycle (status, progress, log, cancel), a prediction's work."""

    kind = "predict"

    def spec(self) -> dict:
        """``{"run", "input", "out", "top_k", "tta"}`` as submitted (``out``: the CSV's absolute path)."""
        return read_json(self.path(SPEC), {})

    @property
    def out(self) -> Path:
        return Path(self.spec().get("out") or self.path(RESULT_CSV))

    @property
    def config(self):
        raise TLError(f"{self.id!r} is a prediction job, not a training run; it has no training settings.")

    def can_resume(self) -> bool:
        return False  # a prediction has no checkpoint: submit it again

    def queue_resume(self) -> None:
        raise TLError(f"Prediction job {self.id!r} cannot resume; submit it again (it starts from the first image).")

    def summary(self) -> dict:
        """One row for a list of jobs: what it predicts, how far it got, what it wrote."""
        status, spec, progress = self.status(), self.spec(), self.progress()
        return {
            "job": self.id,
            "kind": self.kind,
            "state": status.get("state"),
            "run": spec.get("run"),
            "input": spec.get("input_name") or spec.get("input"),
            "out": str(self.out),
            "done": status.get("images", progress.get("done")),
            "total": status.get("images", progress.get("total")),
            "predicted": status.get("predicted", progress.get("predicted")),
            "skipped": status.get("skipped", progress.get("skipped")),
            "images_per_s": status.get("images_per_s", progress.get("images_per_s")),
            "message": status.get("message"),
            "created": status.get("created"),
            "user": status.get("user"),
        }


def new_job(spec: dict, user: Optional[str] = None) -> PredictJob:
    """A queued job folder for a checked ``spec`` (``out`` left empty: the CSV goes into the folder)."""
    root = jobs_dir() / f"{PREFIX}{compact_stamp()}-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    job = PredictJob(root)
    write_json(job.path(SPEC), {**spec, "out": str(spec.get("out") or job.path(RESULT_CSV))})
    write_json(
        job.path(STATUS),
        {"state": "queued", "kind": PredictJob.kind, "created": now_iso(), "queued_at": time.time(), "user": user},
    )
    return job


def list_jobs() -> list[PredictJob]:
    """Every prediction job, newest first, each with ``listed`` (its status as read for this listing)."""
    jobs = []
    for folder in jobs_dir().iterdir():
        status = read_json(folder / STATUS) if folder.is_dir() else None
        if status:
            job = PredictJob(folder)
            job.listed = status
            jobs.append(job)
    return sorted(jobs, key=lambda j: (order_key(j.listed.get("created")), j.listed.get("queued_at", 0)), reverse=True)


def is_job(folder: Path) -> bool:
    return (Path(folder) / SPEC).is_file() and (Path(folder) / STATUS).is_file()


def get_job(job_id_or_path) -> PredictJob:
    path = Path(job_id_or_path)
    for candidate in (path, jobs_dir() / str(job_id_or_path)):
        if is_job(candidate):
            return PredictJob(candidate)
    raise TLError(
        f"No prediction job found at {str(job_id_or_path)!r}. List them with: python -m tl_core runs --predict"
    )


def job_by_id(job_id: str) -> PredictJob:
    """A job of this workspace by its id alone (as a page keeps it): no paths, no '..'."""
    text = str(job_id)
    if not text or text != Path(text).name or text in (".", "..") or not is_job(jobs_dir() / text):
        raise TLError(f"No prediction job {text!r} in this workspace.")
    return PredictJob(jobs_dir() / text)


def get_run_or_job(id_or_path) -> Union[Run, PredictJob]:
    """A training run or a prediction job, by id or folder (``wait`` and ``execute`` take either)."""
    path = Path(id_or_path)
    if is_job(path) or is_job(jobs_dir() / str(id_or_path)):
        return get_job(id_or_path)
    try:
        return get_run(id_or_path)
    except TLError:
        raise TLError(
            f"No run or prediction job found at {str(id_or_path)!r}. List them with: python -m tl_core runs "
            "(or runs --predict)."
        ) from None
