"""``ExecutionBackend``: what every backend does (queue, start, cancel, resume, logs) and the steps they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

from tl_core import audit
from tl_core.data import datasets
from tl_core.models import freeze
from tl_core.models.config import TrainConfig
from tl_core.runs.jobs import PredictJob, list_jobs, new_job
from tl_core.runs.store import Run, list_runs, new_run


class ExecutionBackend(ABC):
    name = ""

    @abstractmethod
    def submit(self, cfg: TrainConfig, user: Optional[str] = None) -> Run:
        """Check the config, write a queued run folder, see that something will train it."""

    def start_job(self, job: PredictJob) -> None:
        """See that something will run a queued prediction job; by default what picks up queued runs."""
        self.ensure_running()

    def submit_predict(
        self, run, source, out=None, top_k: int = 3, tta: str = "none", user=None, allowed_roots=None, input_name=None
    ) -> PredictJob:
        """Check a batch prediction (``inference.batch.check_spec``), write its queued job folder, start it."""
        from tl_core.inference.batch import check_spec

        job = new_job(check_spec(run, source, out, top_k, tta, allowed_roots, input_name), user=user)
        job.log(f"queued by {user or 'anonymous'}")
        self.start_job(job)
        return job

    @abstractmethod
    def cancel(self, run: Run, user: Optional[str] = None) -> None:
        """Stop a queued or running run (a running one stops after its current batch)."""

    @abstractmethod
    def resume(self, run: Run) -> None:
        """Queue an interrupted, failed or cancelled run again; it continues from its best checkpoint."""

    @abstractmethod
    def is_alive(self, run: Run) -> bool:
        """Whether the process training a 'running' run still exists."""

    @abstractmethod
    def logs(self, run: Run) -> str:
        """The run's log and whatever its process wrote."""

    @abstractmethod
    def ensure_running(self) -> None:
        """After a server restart, queued runs need something to train them again."""

    @abstractmethod
    def describe(self) -> dict:
        """What the sidebar shows of the backend: its name and resources."""

    # ---------------------------------------------------------------- shared steps of every backend
    @staticmethod
    def queued_run(cfg: TrainConfig, user: Optional[str] = None) -> Run:
        """Check a config (freeze depth, a dataset of this workspace) and write its queued run folder."""
        cfg = cfg.resolved()
        freeze.check_config(cfg)
        datasets.load_dataset(cfg.data)  # a dataset of this workspace, by name
        run = new_run(cfg, user=user)
        run.log(f"queued by {user or 'anonymous'}")
        return run

    @staticmethod
    def request_cancel(run: Run, user: Optional[str] = None) -> None:
        """Audit the cancel and leave the request where the training process reads it."""
        audit.record("cancel run", run.id, user, owner=run.status().get("user"), state=run.state)
        run.request_cancel()
        run.log(f"cancel requested by {user or 'anonymous'}")

    # ---------------------------------------------------------------- shared queries
    def refresh(self) -> list[Run]:
        """All runs, newest first, with 'running' runs whose process is gone marked interrupted. Each
        run's ``listed`` status is current; pass the list to ``queue``/``active`` to read nothing twice."""
        return self._checked(list_runs())

    def refresh_jobs(self) -> list[PredictJob]:
        """All prediction jobs, newest first, checked as ``refresh`` checks runs."""
        return self._checked(list_jobs())

    def _checked(self, runs: list) -> list:
        for run in runs:
            if run.listed_state == "running" and self.check_alive(run) != "running":
                run.listed = run.status()
        return runs

    def check_alive(self, run: Run) -> str:
        """The run's state, after marking it interrupted if it claims to run but its process is gone."""
        state = run.state
        if state == "running" and not self.is_alive(run):
            run.set_status(
                "interrupted",
                message="The training process stopped unexpectedly (server restart or crash). History so far is kept.",
            )
            run.log("interrupted: training process no longer running")
            return "interrupted"
        return state

    def queue(self, runs: Optional[list[Run]] = None) -> list[Run]:
        """Queued runs in the order they will train (from ``runs`` if given, else a fresh listing)."""
        runs = list_runs() if runs is None else runs
        return sorted((r for r in runs if r.listed_state == "queued"), key=lambda r: r.listed.get("queued_at", 0))

    def active(self, runs: Optional[list[Run]] = None) -> list[Run]:
        """Runs training now, oldest first (from ``runs`` if given, else a fresh, refreshed listing)."""
        runs = self.refresh() if runs is None else runs
        return [r for r in reversed(runs) if r.listed_state == "running"]
