"""The Ray backend: each run is a Ray job (Jobs API), placed by Ray on a node with a free GPU (or CPUs).

On when ``TL_RAY_ADDRESS`` names the cluster's dashboard (``http://head:8265``). The workspace and this
checkout sit on a filesystem every node mounts at the same path, and every node has the same Python
environment: a job's entrypoint is ``python -m tl_core execute RUN_FOLDER``, the command the local worker
runs, so run folders, progress and checkpoints are written exactly as on one host.

Ray's job status is the truth about the process: PENDING (queued on the cluster), RUNNING, SUCCEEDED,
FAILED, STOPPED. The run folder says what training reached; where the process ended without saying so
(killed, node lost), the run shows as interrupted and resumes from its checkpoint as a new job.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from typing import Optional

from tl_core.backends.base import ExecutionBackend
from tl_core.backends.local import REPO_ROOT
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.runs.jobs import PredictJob, list_jobs
from tl_core.runs.store import ACTIVE, Run
from tl_core.tracking import settings as tracking
from tl_core.workspace import home

LIVE = ("PENDING", "RUNNING")
UNKNOWN = "UNKNOWN"  # the cluster did not answer: nothing is concluded about the run
_CLIENTS: dict[str, object] = {}
_RESOURCES: dict[str, tuple[float, dict]] = {}  # address -> (when read, usage): every open tab's sidebar asks
RESOURCES_TTL_S = 5.0


def _client(address: str):
    """One Jobs API client per address and process (creating one makes a request)."""
    if address not in _CLIENTS:
        from ray.job_submission import JobSubmissionClient

        try:
            _CLIENTS[address] = JobSubmissionClient(address)
        except Exception as exc:  # connection refused, bad address, old version: all mean "no cluster here"
            raise TLError(
                f"No Ray cluster answers at TL_RAY_ADDRESS={address!r} ({type(exc).__name__}: "
                f"{str(exc)[:200]}). Start the head (ray start --head --dashboard-host 0.0.0.0) or "
                "unset TL_RAY_ADDRESS to train on this host."
            ) from None
    return _CLIENTS[address]


class RayBackend(ExecutionBackend):
    name = "ray"

    def __init__(self, address: str):
        self.address = address.rstrip("/")

    @property
    def client(self):
        return _client(self.address)

    # ------------------------------------------------------------ jobs
    def _gpus_in_cluster(self) -> float:
        try:
            return self.resources().get("GPU", (0, 0))[1]
        except Exception as exc:  # placement depends on it: guessing could queue a GPU job on CPUs
            raise TLError(
                f"The Ray dashboard at {self.address} did not report the cluster's resources "
                f"({type(exc).__name__}); try again when the head is up."
            ) from None

    def _submit_job(self, run: Run) -> str:
        attempt = int(run.status().get("ray_attempt", 0)) + 1
        job_id = f"tl-{run.id}-{attempt}"
        entrypoint = (
            f"cd {shlex.quote(str(REPO_ROOT))} && "
            f"{shlex.quote(sys.executable)} -m tl_core execute {shlex.quote(str(run.root))}"
        )
        env = {"TL_HOME": str(home()), "TF_CPP_MIN_LOG_LEVEL": "2"}
        if os.environ.get("KERAS_HOME"):
            env["KERAS_HOME"] = os.environ["KERAS_HOME"]
        env.update(tracking.job_env())  # the job logs to MLflow where this process would
        placement = (
            {"entrypoint_num_gpus": 1}
            if self._gpus_in_cluster()
            else {"entrypoint_num_cpus": float(os.environ.get("TL_RAY_CPUS_PER_RUN", "1"))}
        )
        # the job id goes into the run folder first: the job may start (and write "running") at once
        run.set_status("queued", ray_job=job_id, ray_attempt=attempt)
        try:
            self.client.submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env={"env_vars": env},
                metadata={"tl_run": run.id},
                **placement,
            )
        except Exception as exc:
            run.set_status("failed", message=f"Ray refused the job: {type(exc).__name__}: {str(exc)[:300]}")
            raise TLError(f"Ray at {self.address} refused run {run.id!r}: {exc}") from None
        run.log(f"submitted to Ray at {self.address} as job {job_id} ({placement})")
        return job_id

    def job_status(self, run: Run) -> Optional[str]:
        """Ray's status of the run's job; None if the cluster does not know it, UNKNOWN if it did not answer."""
        job_id = run.status().get("ray_job")
        if not job_id:
            return None
        try:
            return str(self.client.get_job_status(job_id).value)
        except RuntimeError:  # the cluster no longer knows the job (head restarted)
            return None
        except Exception:  # head unreachable for now (TLError, connection errors): conclude nothing
            return UNKNOWN

    # ------------------------------------------------------------ the seam
    def submit(self, cfg: TrainConfig, user: Optional[str] = None) -> Run:
        _ = self.client  # no cluster, no run folder: say so before writing anything
        run = self.queued_run(cfg, user)
        self._submit_job(run)
        return run

    def cancel(self, run: Run, user: Optional[str] = None) -> None:
        """Record the request, then stop the job. With the head not answering the request stays recorded
        (the run stops when it next reads it) and a ``TLError`` says the cluster is not answering."""
        self.request_cancel(run, user)  # a running job stops after its batch if it reads this first
        job_id = run.status().get("ray_job")
        if job_id:
            try:
                self.client.stop_job(job_id)
            except Exception as exc:  # refused connection, timeout, a head that restarted: it did not stop it
                raise TLError(
                    f"The Ray cluster at {self.address} is not answering ({type(exc).__name__}); the cancel "
                    f"request for run {run.id!r} is recorded and the run stops when it next reads it."
                ) from None
            deadline = time.time() + 30
            while self.job_status(run) in LIVE and time.time() < deadline:
                time.sleep(0.5)
        if run.state in ACTIVE:
            run.set_status("cancelled", message=f"Cancelled by {user or 'anonymous'} (Ray job stopped).")

    def resume(self, run: Run) -> None:
        run.queue_resume()
        self._submit_job(run)

    def is_alive(self, run: Run) -> bool:
        return self.job_status(run) in (*LIVE, UNKNOWN)  # an unreachable head does not interrupt runs

    def start_job(self, job: PredictJob) -> None:
        _ = self.client
        self._submit_job(job)

    def _checked(self, runs: list) -> list:
        """As the base class, and a queued run (or job) whose Ray job ended before it began says why."""
        runs = super()._checked(runs)
        for run in runs:
            if run.listed_state == "queued" and run.listed.get("ray_job") and not run.cancel_requested():
                state = self.job_status(run)
                if state not in (*LIVE, UNKNOWN):
                    run.set_status(
                        "failed",
                        message=f"Ray job {run.listed['ray_job']} ended {state} before training started; see the log.",
                    )
                    run.listed = run.status()
        return runs

    def logs(self, run: Run) -> str:
        text = run.log_text()
        job_id = run.status().get("ray_job")
        if not job_id:
            return text
        try:
            job_log = self.client.get_job_logs(job_id).strip()
        except RuntimeError as exc:
            job_log = f"(Ray has no logs for {job_id}: {exc})"
        except Exception as exc:  # the head is gone or unreachable: the run's own log is still worth showing
            job_log = (
                f"(the Ray cluster at {self.address} is not answering: {type(exc).__name__}; its job log is not shown)"
            )
        return text + (f"\n--- Ray job {job_id} ---\n{job_log}\n" if job_log else "")

    def ensure_running(self) -> None:
        """Queued runs whose job the cluster lost (a restarted head) are submitted again."""
        for run in self.queue() + self.queue(list_jobs()):
            if self.job_status(run) is None and not run.cancel_requested():
                self._submit_job(run)

    # ------------------------------------------------------------ the sidebar
    def resources(self) -> dict[str, tuple[float, float]]:
        """Cluster resources as {name: (used, total)}, from the dashboard's cluster status (read at most
        every few seconds)."""
        import requests

        when, usage = _RESOURCES.get(self.address, (0.0, {}))
        if time.time() - when > RESOURCES_TTL_S:
            reply = requests.get(f"{self.address}/api/cluster_status", timeout=5)
            reply.raise_for_status()
            report = ((reply.json().get("data") or {}).get("clusterStatus") or {}).get("loadMetricsReport", {})
            usage = {
                name: (float(used), float(total))
                for name, (used, total) in report.get("usage", {}).items()
                if name in ("CPU", "GPU")
            }
            _RESOURCES[self.address] = (time.time(), usage)
        return usage

    def describe(self) -> dict:
        try:
            usage = self.resources()
            cluster = (
                ", ".join(f"{name} {total - used:g} free of {total:g}" for name, (used, total) in sorted(usage.items()))
                or "no resources reported yet"
            )
        except Exception as exc:  # the sidebar must render even when the head is down
            cluster = f"cluster not answering ({type(exc).__name__})"
        waiting = sum(1 for run in self.queue() if self.job_status(run) == "PENDING")
        return {"backend": f"Ray cluster at {self.address}", "device": cluster, "cluster": cluster, "waiting": waiting}
