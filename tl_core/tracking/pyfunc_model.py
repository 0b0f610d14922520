"""The run's model as an MLflow model: raw RGB pixels in, the run's calibrated class probabilities out.

``RunModel`` is an ``mlflow.pyfunc.PythonModel`` that loads the run's own saved files (``model.keras``, a
scikit-learn head, ``model_info.json``) as the engine loads any run (``LoadedModel``): preprocessing and
calibration are inside, and on a CPU host the run's own LiteRT conversion of its feature model (shipped as an
artifact) runs it, so the answers equal the run's. The engine's code travels with the model (``code_paths``),
so it loads where only the listed requirements are installed.

Input: ``pixels``, float32 of shape (N, size, size, 3), RGB values 0-255 at the run's input size (decoded and
resized as ``tl_core.data.images.load_array`` does). Output: a table, one column of probabilities per class.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import mlflow.pyfunc
import numpy as np
import pandas as pd

from tl_core.errors import TLError
from tl_core.runs.artifacts import CLASS_NAMES, HEAD, METRICS, MODEL, MODEL_INFO

if TYPE_CHECKING:
    from tl_core.runs.store import Run

ARTIFACT_PATH = "model"  # the model's name within its MLflow run
RUN_FILES = (MODEL, HEAD, MODEL_INFO, CLASS_NAMES, METRICS)  # what RunModel loads (HEAD only when present)
ENGINE_FILE = "engine.tflite"
# what a fresh environment needs to load it: the engine's own imports when it predicts
REQUIREMENTS = (
    "mlflow",
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "pillow",
    "scikit-learn",
    "joblib",
    "ai-edge-litert",
)
ENGINE_PACKAGE = Path(__file__).resolve().parents[1]  # tl_core


class RunModel(mlflow.pyfunc.PythonModel):
    """A run's model, loaded from the run's files logged as this model's artifacts."""

    def load_context(self, context) -> None:
        from tl_core.runs.artifacts import Artifacts
        from tl_core.runs.loaded_model import LoadedModel

        engine = context.artifacts.get("engine")
        # an MLflow model is itself a pickle: the head.joblib logged with it is trusted as much
        self.loaded = LoadedModel.from_artifacts(
            Artifacts(Path(context.artifacts["run"])), trusted=True, engine_file=Path(engine) if engine else None
        )

    def predict(self, context, model_input, params=None):
        loaded = self.loaded
        if isinstance(model_input, dict):  # a serving request's named tensors: {"pixels": ...}
            model_input = model_input.get("pixels", next(iter(model_input.values()), None))
        pixels = np.asarray(model_input, dtype=np.float32)
        expected = (loaded.input_size, loaded.input_size, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise TLError(
                f"This model takes raw RGB pixels of shape (N, {expected[0]}, {expected[1]}, 3), values 0-255; "
                f"got shape {pixels.shape}."
            )
        return pd.DataFrame(loaded.probabilities(pixels), columns=loaded.class_names)


def _requirements() -> list[str]:
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


@dataclass(frozen=True)
class ModelFacts:
    """What logging needs to know of a run's model, from its ``model_info.json`` (no model loaded)."""

    input_size: int
    resize: str
    class_names: list[str]
    engine_key: Optional[str]

    @classmethod
    def of(cls, run: Run) -> ModelFacts:
        info = run.artifacts.model_info()
        if not info or not run.artifacts.model_path.is_file():
            raise TLError(f"Run {run.id!r} has no saved model to log. Pick a finished run.")
        return cls(
            int(info["input_size"]), info.get("resize", "squash"), list(info["class_names"]), info.get("engine_key")
        )


def signature(facts: ModelFacts):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    size = facts.input_size
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, size, size, 3), "pixels")]),
        outputs=Schema([ColSpec("double", name) for name in facts.class_names]),
    )


def input_example(run: Run, facts: ModelFacts) -> np.ndarray:
    """One validation image of the run, as the model takes it (a mid-grey image when none can be read)."""
    from tl_core.data.images import load_array

    size = facts.input_size
    try:
        interp = run.interpretation()
        if interp is not None and interp.files:
            return load_array(Path(interp.files[0]), size, facts.resize)[None].astype(np.float32)
    except (OSError, TLError, ValueError):
        pass
    return np.full((1, size, size, 3), 128.0, np.float32)


def engine_file(run: Run, facts: ModelFacts) -> Optional[Path]:
    """The LiteRT conversion the run's model runs on, on this host (None where TensorFlow runs it). A run whose
    base training left untouched names it in model_info; any other is loaded to find (or make) it."""
    from tl_core.models import engine as engines

    if engines.wanted() != "litert":
        return None
    if facts.engine_key:
        found = engines.cached_conversion(facts.engine_key)
        if found is not None:
            return found
    path = getattr(run.load_model().engine, "path", None)
    return Path(path) if path is not None and Path(path).is_file() else None


def log_model(run: Run, run_id: str, facts: Optional[ModelFacts] = None):
    """Log the run's model into MLflow run ``run_id`` (at the tracking URI set in ``mlflow``); returns MLflow's
    ``ModelInfo``. MLflow checks that the input example serves: it loads the logged model once and predicts."""
    from mlflow.models import Model

    facts = facts or ModelFacts.of(run)
    with tempfile.TemporaryDirectory(prefix="tl-mlflow-") as tmp:
        folder = Path(tmp) / "run"
        folder.mkdir()
        for name in RUN_FILES:
            if run.path(name).is_file():
                shutil.copy2(run.path(name), folder / name)
        artifacts = {"run": str(folder)}
        engine = engine_file(run, facts)
        if engine is not None:
            shutil.copy2(engine, Path(tmp) / ENGINE_FILE)
            artifacts["engine"] = str(Path(tmp) / ENGINE_FILE)
        return Model.log(
            artifact_path=None,
            name=ARTIFACT_PATH,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=RunModel(),
            artifacts=artifacts,
            code_paths=[str(ENGINE_PACKAGE)],
            signature=signature(facts),
            input_example=input_example(run, facts),
            pip_requirements=_requirements(),
            metadata={"tl_run": run.id, "class_names": facts.class_names, "input_size": facts.input_size},
        )
