"""Artifacts: every file a training run produces, named, written and read here and nowhere else.

A run folder (``runs.py`` owns its lifecycle files: config, status, progress, history, log) also
holds what training made:

| file | what |
|---|---|
| ``model.keras`` | the whole model, raw pixels in (for a scikit-learn head: pixels -> pooled features) |
| ``head.joblib`` | the scikit-learn head (logistic regression / SVM), when the run has one |
| ``model_info.json`` | head kind, input size, resize mode, class names, what the model outputs, its temperature |
| ``class_names.json`` | class names in label order |
| ``checkpoint.json`` + ``checkpoint.weights.h5`` / ``checkpoint_head.npz`` | the best epoch so far |
| ``metrics.json``, ``predictions.csv`` | evaluation on the validation split |
| ``scope.npz`` | what the training images look like in feature space, for "unknown" answers (``scope.py``); optional |
| ``export/`` | exported formats (one folder per format) and ``parity.json``, each export checked in its runtime |

Every write is atomic. ``Run.load_model()`` gives the one loaded-model handle (``loaded_model.LoadedModel``),
``Run.interpretation()`` the evaluation (``evaluate.Interpretation``).
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from tl_core.errors import TLError
from tl_core.workspace import atomic_write_bytes, read_json, runs_dir, write_json

if TYPE_CHECKING:
    import numpy as np

MODEL = "model.keras"
HEAD = "head.joblib"
MODEL_INFO = "model_info.json"
CLASS_NAMES = "class_names.json"
CHECKPOINT = "checkpoint.json"
CHECKPOINT_MODEL = "checkpoint.weights.h5"
CHECKPOINT_HEAD = "checkpoint_head.npz"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
SCOPE = "scope.npz"
EXPORT_DIR = "export"
PARITY = "parity.json"
# inside each export folder: the model (a file, or for saved_model the version folder TF Serving wants), labels, card
EXPORT_FILES = {
    "keras": MODEL,
    "saved_model": "1",
    "tflite": "model.tflite",
    "tflite-int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
EXPORT_LABELS = "labels.txt"
MODEL_CARD_JSON, MODEL_CARD_MD = "model_card.json", "model_card.md"
# what "Download model" packs (config.json is the run's own file: the settings that built the model)
BUNDLE = (MODEL, HEAD, CLASS_NAMES, "config.json", METRICS, MODEL_INFO)


class Artifacts:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        return self.root / name

    # ------------------------------------------------------------ the trained model
    @property
    def model_path(self) -> Path:
        return self._path(MODEL)

    def has_model(self) -> bool:
        return self.model_path.exists() and self._path(MODEL_INFO).exists()

    def save_model(
        self,
        model,
        head_kind: str,
        input_size: int,
        resize: str,
        class_names: list[str],
        sklearn_head=None,
        engine_key: Optional[str] = None,
        temperature: float = 1.0,
        temperature_folded: bool = False,
    ) -> None:
        """The end-to-end model (or the extractor under a scikit-learn head), then its description.
        Written under a temporary name and renamed: a crash never leaves a half-written model.
        ``engine_key``: the cached conversion of the model's (untouched, pretrained) feature part.
        ``temperature``: the run's calibration; ``temperature_folded``: already divided into the saved head's
        weights (else the loaded-model handle applies it)."""
        if sklearn_head is not None:
            import joblib

            buffer = io.BytesIO()
            joblib.dump(sklearn_head, buffer)
            atomic_write_bytes(self._path(HEAD), buffer.getvalue())
        tmp = self.root / f".model-{os.getpid()}.tmp.keras"
        try:
            model.save(tmp)
            os.replace(tmp, self.model_path)
        finally:
            tmp.unlink(missing_ok=True)
        write_json(
            self._path(MODEL_INFO),
            {
                "head": head_kind,
                "input_size": input_size,
                "resize": resize,
                "class_names": class_names,
                "output": "probabilities" if sklearn_head is None else "features",
                "temperature": temperature,
                "temperature_folded": temperature_folded,
                **({"engine_key": engine_key} if engine_key else {}),
            },
        )

    def model_bytes(self) -> int:
        """Size on disk of what predicts: the model file and a scikit-learn head if there is one."""
        return sum(self._path(name).stat().st_size for name in (MODEL, HEAD) if self._path(name).exists())

    def model_info(self) -> dict:
        return read_json(self._path(MODEL_INFO), {})

    def sklearn_head(self, trusted: bool = False):
        """The scikit-learn head written by our own trainer, or None. ``head.joblib`` is a pickle, which can run
        any code when loaded, so it is loaded only from a run folder inside this workspace's ``runs/`` (where only
        the app's trainer writes); elsewhere a TLError says why and what to do. ``trusted``: the caller already
        runs a pickle from the same place (an MLflow model is one), so the folder may be anywhere."""
        if self.model_info().get("output") != "features":
            return None
        runs = runs_dir().resolve()
        head = self._path(HEAD).resolve()  # a link out of the workspace counts as outside
        if not trusted and not (self.root.resolve().is_relative_to(runs) and head.is_relative_to(runs)):
            raise TLError(
                f"Run folder {str(self.root)!r} is outside this workspace's runs folder {str(runs)!r}. Its "
                "scikit-learn head (head.joblib) is a pickle, which can run any code when loaded, so it is loaded "
                "only from runs inside the workspace: copy the run folder there if you trust where it came from "
                "(or set TL_HOME to the workspace it belongs to)."
            )
        import joblib

        return joblib.load(head)

    # ------------------------------------------------------------ classes, metrics, predictions
    def write_class_names(self, names: list[str]) -> None:
        write_json(self._path(CLASS_NAMES), names)

    def class_names(self) -> list[str]:
        return read_json(self._path(CLASS_NAMES), [])

    def write_metrics(self, metrics: dict) -> None:
        write_json(self._path(METRICS), metrics)

    def metrics(self) -> dict:
        return read_json(self._path(METRICS), {})

    @property
    def predictions_path(self) -> Path:
        return self._path(PREDICTIONS)

    # ------------------------------------------------------------ the scope ("unknown" answers, scope.py)
    @property
    def scope_path(self) -> Path:
        return self._path(SCOPE)

    def save_scope(self, arrays: dict) -> None:
        import numpy as np

        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(self.scope_path, buffer.getvalue())

    def scope_arrays(self) -> Optional[dict]:
        """The scope file's arrays (no pickles), or None when the run has none (trained before scopes)."""
        import numpy as np

        try:
            with np.load(self.scope_path, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------ checkpoints (best epoch so far)
    def checkpoint(self) -> Optional[dict]:
        return read_json(self._path(CHECKPOINT))

    def save_head_checkpoint(self, kernel: np.ndarray, bias: np.ndarray, epoch: int, phase: str, best: float) -> None:
        import numpy as np

        buffer = io.BytesIO()
        np.savez(buffer, kernel=kernel, bias=bias)
        atomic_write_bytes(self._path(CHECKPOINT_HEAD), buffer.getvalue())
        write_json(self._path(CHECKPOINT), {"phase": phase, "epoch": epoch, "kind": "head", "best": best})

    def load_head_checkpoint(self) -> tuple:
        import numpy as np

        with np.load(self._path(CHECKPOINT_HEAD)) as saved:
            return saved["kernel"], saved["bias"]

    def save_model_checkpoint(self, model, epoch: int, phase: str, frozen: int, best: float) -> None:
        tmp = self._path(".checkpoint.tmp.weights.h5")
        model.save_weights(tmp)
        os.replace(tmp, self._path(CHECKPOINT_MODEL))
        write_json(
            self._path(CHECKPOINT), {"phase": phase, "epoch": epoch, "kind": "model", "frozen": frozen, "best": best}
        )

    def load_model_checkpoint(self, model) -> None:
        model.load_weights(self._path(CHECKPOINT_MODEL))

    # ------------------------------------------------------------ scratch, exports, downloads
    def scratch_path(self, name: str) -> Path:
        """A large temporary file of this run (memory-mapped activations), removed with ``clear_scratch``."""
        return self._path(f"scratch-{name}")

    def clear_scratch(self) -> None:
        for path in self.root.glob("scratch-*"):
            path.unlink(missing_ok=True)

    def export_dir(self, fmt: str) -> Path:
        return self._path(EXPORT_DIR) / fmt

    @contextlib.contextmanager
    def export_lock(self):
        """Held while a format is written and checked: two users exporting the same run take turns
        instead of writing into one folder and one parity file at once."""
        import fcntl

        self._path(EXPORT_DIR).mkdir(exist_ok=True)
        with open(self._path(EXPORT_DIR) / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def exported_formats(self) -> list[str]:
        root = self._path(EXPORT_DIR)
        return (
            sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        )

    def parity(self) -> dict:
        """Per export format: agreement with the in-app model and accuracy, measured in its own runtime."""
        return read_json(self._path(EXPORT_DIR) / PARITY, {})

    def record_parity(self, fmt: str, entry: dict) -> None:
        (self._path(EXPORT_DIR)).mkdir(exist_ok=True)
        write_json(self._path(EXPORT_DIR) / PARITY, {**self.parity(), fmt: entry})

    def export_zip(self, fmt: str) -> bytes:
        """One export folder as a zip, built when its download is asked for."""
        folder = self.export_dir(fmt)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    archive.write(path, f"{self.root.name}-{fmt}/{path.relative_to(folder)}")
        return buffer.getvalue()

    def bundle(self) -> bytes:
        """A zip of the model and what it needs to be used elsewhere; built when asked, not per page run."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name in BUNDLE:
                if self._path(name).exists():
                    archive.write(self._path(name), name)
        return buffer.getvalue()
