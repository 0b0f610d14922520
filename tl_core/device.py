"""Device policy: which accelerator training uses, its precision and distribution strategy, and which
process is which. GPUs are found without importing TensorFlow (so pages paint fast)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Optional


@functools.lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container or ``taskset`` may allow fewer than
    the host has): one engine lane each, and the decoding threads beside a GPU."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def describe() -> str:
    gpus = gpu_names()
    if not gpus:
        return "CPU"
    return ", ".join(gpus) if len(gpus) > 1 else gpus[0]


def share_gpu_memory() -> list[str]:
    """Let every process on a GPU host take GPU memory as it needs it (TensorFlow's memory growth)
    instead of nearly all of it at start: the app's server process (small models for prediction) and
    each training process share the GPU. Call before TensorFlow first touches a GPU; a process whose GPUs
    are already initialised keeps its setting. Returns the GPUs it applied to."""
    gpus_named = gpu_names()
    if not gpus_named:
        return []
    import tensorflow as tf

    applied = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            applied.append(gpu.name)
        except RuntimeError:  # already initialised in this process: too late to change, keep going
            pass
    return applied


def precision_policy(setting: str) -> str:
    """'mixed_float16' with setting 'on', or 'auto' on a GPU host; else 'float32'."""
    if setting == "on" or (setting == "auto" and gpu_names()):
        return "mixed_float16"
    return "float32"


def strategy(setting: str):
    """MirroredStrategy over all GPUs (setting 'auto' with several, or 'mirrored'), else the default one."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if setting == "mirrored" or (setting == "auto" and len(gpus) > 1):
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


# A run's default time budget (seconds; ``TrainConfig.budget``): on a CPU a fine-tune phase fits only small data
CPU_BUDGET_S = 120.0
GPU_BUDGET_S = 600.0


def default_budget() -> float:
    """The budget a run gets unless its settings name one: ``TL_DEFAULT_BUDGET`` (seconds) where set (the test
    suite sets 0: its runs keep to the head unless a test asks), else by the host's accelerator."""
    given = os.environ.get("TL_DEFAULT_BUDGET", "").strip()
    if given:
        try:
            return max(0.0, float(given))
        except ValueError:
            pass  # a typo in the environment falls back to the host's default
    return GPU_BUDGET_S if gpu_names() else CPU_BUDGET_S


def process_start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (Linux), which with its PID identifies it:
    after a reboot or PID reuse, the same number belongs to a process with another start time."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return int(fields[19]) if fields[0] != "Z" else None  # field 22 of stat; a zombie counts as gone
