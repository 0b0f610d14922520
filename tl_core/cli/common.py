"""What every command module shares: TensorFlow imported quietly and cheaply, for the commands that run a model."""

from __future__ import annotations

import gc
import os
import sys


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_tensorflow() -> None:
    """For commands that run a model: TensorFlow's logging quieted, then Keras (and so TensorFlow) imported
    with the collector paused, and what the import made frozen out of its sight. Their few hundred thousand
    long-lived objects otherwise set off several full collections over the growing heap while importing, at the
    start of every such command and of every training job (each runs in its own process; figures in
    docs/performance.md). Module objects live as long as the process: freezing them loses nothing."""
    quiet_tensorflow()
    if "keras" in sys.modules:  # an earlier command in this process imported it: nothing left to save
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        import keras  # noqa: F401
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
