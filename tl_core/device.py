"""Which accelerator training will use, found without importing TensorFlow (so pages paint fast)."""
from __future__ import annotations

import functools
import shutil
import subprocess


@functools.lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def describe() -> str:
    gpus = gpu_names()
    if not gpus:
        return "CPU"
    return ", ".join(gpus) if len(gpus) > 1 else gpus[0]
