"""Jobs on the local backend: process identity, cancel of a dead run, the workspace handed to workers,
a queued run whose dataset was deleted, run ids from URLs, early stopping across a resume."""

import os

import numpy as np
import pytest

from tl_core.backends import local
from tl_core.data import datasets
from tl_core.device import process_start_time
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.runs.store import new_run
from tl_core.training.callbacks import ResumableEarlyStopping
from tl_core.training.runner import execute

from .factories import make_class_folders

backend = local.LocalBackend()


pytestmark = pytest.mark.colors(per_class=4)


def running_run(pid: int, pid_start):
    run = new_run(TrainConfig(data="colors").resolved())
    run.set_status("running", pid=pid, pid_start=pid_start)
    return run


def test_a_reused_pid_does_not_keep_a_dead_run_running():
    """After a reboot the recorded PID may belong to another process: the start time tells them apart.
    A real process stands in for the one that now has the number."""
    import subprocess

    other = subprocess.Popen(["sleep", "60"])
    try:
        alive = running_run(other.pid, process_start_time(other.pid))
        reused = running_run(other.pid, process_start_time(other.pid) - 1000)  # the number, not the process
        assert backend.check_alive(alive) == "running"
        assert backend.check_alive(reused) == "interrupted"
        other.kill()
        other.wait()
        assert backend.check_alive(alive) == "interrupted"  # and once it is gone, the first one too
    finally:
        other.kill()


def test_cancel_ends_a_run_whose_process_is_gone():
    run = running_run(2**22 + 12345, 1)  # no such process
    backend.cancel(run, user="ana@example.com")
    assert run.state == "cancelled"
    assert "cancel requested by ana@example.com" in run.log_text()


def test_workers_get_the_workspace_as_an_absolute_path(tmp_path, monkeypatch):
    """Started from another directory with a relative TL_HOME, the app and its worker must share one workspace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TL_HOME", "relative_ws")
    started = []
    monkeypatch.setattr(local.subprocess, "Popen", lambda args, **kw: started.append(kw) or None)
    assert local.start_worker()
    env_home = started[0]["env"]["TL_HOME"]
    assert os.path.isabs(env_home) and env_home == str(tmp_path / "relative_ws")


def test_a_queued_run_whose_dataset_was_deleted_fails_saying_so(colors, tmp_path, monkeypatch):
    run = backend.submit(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64), start_worker=False)
    datasets.delete_dataset("colors")
    monkeypatch.chdir(tmp_path)  # a folder named like the dataset must not be imported in its place
    make_class_folders(tmp_path / "colors", per_class=4)
    with pytest.raises(TLError, match="dataset deleted"):
        execute(run)
    assert run.state == "failed" and "dataset deleted" in run.status()["message"]
    assert datasets.list_datasets() == []


def test_submitting_for_an_unknown_dataset_is_refused_before_queueing():
    with pytest.raises(TLError, match="Unknown dataset 'nope'"):
        backend.submit(TrainConfig(data="nope"), start_worker=False)
    assert backend.queue() == []


def test_resumed_early_stopping_keeps_the_checkpoint_as_best():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint_weights = [w.copy() for w in model.get_weights()]
    stopper = ResumableEarlyStopping(0.25, monitor="val_loss", patience=2, restore_best_weights=True)
    stopper.set_model(model)
    stopper.on_train_begin()
    for epoch, val_loss in enumerate([0.4, 0.5]):  # both worse than the checkpoint's 0.25
        model.set_weights([w + 1.0 for w in model.get_weights()])
        stopper.on_epoch_end(epoch + 5, {"val_loss": val_loss})
    assert model.stop_training and stopper.best == 0.25
    stopper.on_train_end()
    for got, want in zip(model.get_weights(), checkpoint_weights):
        np.testing.assert_array_equal(got, want)


def test_gpu_memory_is_shared_by_growth_on_every_gpu(monkeypatch):
    """On a GPU host each process asks for memory growth on every GPU (and tolerates an already
    initialised one); on a CPU host it does nothing and does not import TensorFlow for it."""
    import tensorflow as tf

    from tl_core import device

    monkeypatch.setattr(device, "gpu_names", lambda: ())
    assert device.share_gpu_memory() == []
    grown = []

    def set_memory_growth(gpu, enable):
        if gpu.name.endswith(":1"):
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        grown.append((gpu.name, enable))

    fake = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(2)]
    monkeypatch.setattr(device, "gpu_names", lambda: ("H100", "H100"))
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: fake)
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", set_memory_growth)
    assert device.share_gpu_memory() == ["/physical_device:GPU:0"]
    assert grown == [("/physical_device:GPU:0", True)]


def test_a_relative_workspace_is_resolved_once(tmp_path, monkeypatch):
    from tl_core.workspace import home

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TL_HOME", "ws_resolved_once")
    first = home()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert home() == first == tmp_path / "ws_resolved_once"


def test_a_queued_job_with_nothing_running_is_said_to_be_next_not_waiting_on_a_running_one(colors):
    """The walk of issue 27: 'Waiting ... It starts when a running job finishes.' with no job running."""
    import time

    from streamlit.testing.v1 import AppTest

    from .factories import small_config

    first = new_run(small_config(data="colors"))
    first.set_status("queued", queued_at=time.time())
    second = new_run(small_config(data="colors"))
    second.set_status("queued", queued_at=time.time() + 1)

    def panel(run_id):
        from tl_app.widgets import job_progress
        from tl_core.runs.store import get_run

        job_progress(get_run(run_id), "test")

    infos = {}
    for run in (first, second):
        at = AppTest.from_function(panel, args=(run.id,)).run()
        assert not at.exception, [e.value for e in at.exception]
        infos[run.id] = " ".join(i.value for i in at.info)
    assert "Next in the queue" in infos[first.id] and "running job" not in infos[first.id]
    assert "position 2" in infos[second.id] and "before it finish" in infos[second.id]
