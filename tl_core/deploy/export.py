"""Export: a finished run's model in the formats teams deploy, each one raw RGB pixels in, probabilities out.

Every format is written from one *inference model* built here from the loaded-model handle: a per-pixel
affine layer that does the base's preprocessing (``preprocessing.pixel_affine``, a plain ``Dense(3)``, so
the file loads with stock Keras and converts to any runtime), the base, global pooling and a softmax
``Dense`` head: the loaded model's linear head, calibrated (the run's temperature is in its weights), so
every format gives the app's probabilities. A logistic-regression head is baked into that dense layer (its
scaler folded in); a head kind that is not linear (``HeadKind.exports``: the kernel SVM) exports in no
format. Beside each model: ``labels.txt`` and the model card. ``parity.py`` then checks the export in its
own runtime.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from tl_core.deploy.formats import FORMATS, get_format
from tl_core.deploy.parity import check_export
from tl_core.errors import TLError
from tl_core.models.heads import HEAD_KINDS, head_kind
from tl_core.models.preprocessing import pixel_affine
from tl_core.runs import model_card
from tl_core.runs.artifacts import EXPORT_LABELS, MODEL_CARD_JSON
from tl_core.workspace import read_json

if TYPE_CHECKING:
    import keras

    from tl_core.runs.loaded_model import LoadedModel
    from tl_core.runs.store import Run

# ---------------------------------------------------------------- the inference model


def inference_model(loaded: LoadedModel) -> keras.Model:
    """Raw RGB pixels (float32, 0-255, size x size x 3) -> class probabilities, in built-in layers only."""
    import keras

    kind = head_kind(loaded.head_kind)
    if not kind.exports:
        raise TLError(
            f"This run's head ({kind.label}) cannot be written as a layer, so no export format "
            f"({', '.join(FORMATS)}) can hold it. Retrain with a head that exports "
            f"({', '.join(k.label for k in HEAD_KINDS.values() if k.exports)}), or use 'Download model (zip)' "
            "(model.keras + head.joblib) from Python."
        )
    kernel, bias = loaded.linear_head()
    size = loaded.input_size
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="pixels")
    x = inputs
    affine = pixel_affine(loaded.preprocess.mode)
    if affine is not None:
        layer = keras.layers.Dense(3, name="preprocess_pixels")
        x = layer(x)
        layer.set_weights([affine[0].astype(np.float32), affine[1].astype(np.float32)])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(loaded.base(x, training=False))
    head = keras.layers.Dense(len(loaded.class_names), activation="softmax", dtype="float32", name="predictions")
    outputs = head(x)
    head.set_weights([kernel, bias])
    return keras.Model(inputs, outputs, name=f"{loaded.base.name}_export")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _check_out(folder: Path, run: Run) -> None:
    """A folder the user named may be written into when it is new, empty, or an earlier export of this same run
    (its model card names the run): anything else holds files this export did not write, which it would
    overwrite or delete."""
    if folder.exists() and not folder.is_dir():
        raise TLError(f"--out {str(folder)!r} is a file, not a folder; name a new or empty folder.")
    try:
        if not folder.is_dir() or not any(folder.iterdir()):
            return
        card = read_json(folder / MODEL_CARD_JSON)
    except (OSError, ValueError) as exc:  # unreadable folder, or a model_card.json that is no JSON text
        raise TLError(f"--out {str(folder)!r} cannot be checked ({exc}); name a new or empty folder.") from None
    exported = card.get("model") if isinstance(card, dict) else None
    if exported != run.id:
        what = f"an export of another run ({exported!r})" if exported else "not an earlier export of this run"
        raise TLError(
            f"--out {str(folder)!r} is not empty and is {what}: exporting there could overwrite or delete files "
            f"this export did not write. Name a new or empty folder, or an earlier export of run {run.id!r}; "
            "nothing was written."
        )


def export_run(run: Run, fmt: str, out: Optional[Path] = None, check: bool = True) -> dict:
    """Write ``fmt`` for a finished run into ``out`` (default: the run's ``export/<fmt>``), with labels and
    model card; then, unless ``check`` is off, its parity. Returns what was written. ``out`` must be a new or
    empty folder, or an earlier export of this run (TLError otherwise, before anything is written)."""
    spec = get_format(fmt)
    if run.state != "finished" or not run.artifacts.has_model():
        raise TLError(f"Run {run.id!r} is {run.state}; only a finished run can be exported.")
    with run.artifacts.export_lock():
        folder = Path(out) if out else run.artifacts.export_dir(fmt)
        if out:
            _check_out(folder, run)
        loaded = run.load_model()
        model = inference_model(loaded)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / spec.filename
        staging = folder / f".partial-{spec.filename}"  # keeps the extension Keras checks
        _remove(staging)
        try:
            spec.write(model, staging, run)
            _remove(target)
            staging.rename(target)  # a failed conversion leaves the previous export in place
        finally:
            _remove(staging)
        (folder / EXPORT_LABELS).write_text("\n".join(loaded.class_names) + "\n", encoding="utf-8")
        result = {"run": run.id, "format": fmt, "path": str(target), "folder": str(folder)}
        if check:
            result["parity"] = check_export(run, spec, target, loaded)
        model_card.write(run, folder, fmt, spec.description, loaded, result.get("parity"), spec.quantized)
    return result
