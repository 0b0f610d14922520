"""A headless base with its ImageNet weights: from ``$KERAS_HOME/models`` (a cached NumPy copy of the file),
else downloaded where the network allows, else a message naming the file and the folder to put it in."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import keras
import numpy as np

from tl_core.errors import TLError
from tl_core.models import architectures
from tl_core.workspace import atomic_write_bytes, cache_dir, read_json, write_json

if TYPE_CHECKING:
    from tl_core.models.config import TrainConfig


class WeightsUnavailable(TLError):
    pass


def build_base(name: str, alpha: Optional[float], size: int, weights: Optional[str] = "imagenet"):
    """The headless base with its ImageNet weights from ``$KERAS_HOME/models`` (downloaded if missing
    and the network allows)."""
    arch = architectures.get(name)
    alpha = arch.check_alpha(alpha)
    constructor = getattr(keras.applications, arch.constructor)
    kwargs = dict(arch.constructor_kwargs(alpha), input_shape=(size, size, 3))
    if weights is None:
        return constructor(weights=None, **kwargs)
    local = architectures.find_weights(arch, alpha, size)
    if local is not None:
        return _with_local_weights(constructor, kwargs, local)
    wanted = architectures.weights_dir() / arch.weights_filename(alpha, size)
    try:
        return constructor(weights="imagenet", **kwargs)
    except Exception as exc:  # network failure, refused host, bad hash: all mean "not available"
        raise WeightsUnavailable(
            f"ImageNet weights for {arch.name}"
            f"{f' alpha={alpha}' if alpha else ''} are not on disk and could not be downloaded "
            f"({type(exc).__name__}: {str(exc)[:200]}). Put the file {wanted.name!r} in {str(wanted.parent)!r} "
            "(set KERAS_HOME to use another folder) and try again."
        ) from None


def _with_local_weights(constructor, kwargs: dict, local: Path):
    """The base with a weights file's values, set from a NumPy copy of them cached per file, base and Keras
    version (faster than Keras' h5 loader), made on first use."""
    key = hashlib.sha256(
        json.dumps([_file_hash(local), constructor.__name__, repr(sorted(kwargs.items())), keras.__version__]).encode()
    ).hexdigest()[:20]
    copy = cache_dir() / "weights" / f"{key}.npz"
    base = constructor(weights=None, **kwargs)
    try:
        with np.load(copy) as saved:
            base.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
        return base
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none yet, torn or stale: from the file
        pass
    base.load_weights(str(local))
    buffer = io.BytesIO()
    np.savez(buffer, **{f"w{i}": w for i, w in enumerate(base.get_weights())})
    atomic_write_bytes(copy, buffer.getvalue(), durable=False)
    return base


def weights_identity(cfg: TrainConfig) -> str:
    """What identifies the base's weights for caching: the file's hash, or 'random-<seed>'."""
    if cfg.weights is None:
        return f"random-{cfg.seed}"
    arch = architectures.get(cfg.base)
    local = architectures.find_weights(arch, cfg.alpha, cfg.size)
    if local is None:
        return "imagenet-download"
    return _file_hash(local)


def _file_hash(local: Path) -> str:
    """sha256 of a weights file, remembered per path, size and modification time."""
    stat = local.stat()
    memo_path = cache_dir() / "weights_hashes.json"
    memo = read_json(memo_path, {})
    key = f"{local}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in memo:
        digest = hashlib.sha256()
        with open(local, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        memo[key] = digest.hexdigest()
        write_json(memo_path, memo)
    return memo[key]
