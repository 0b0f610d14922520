"""The model card written beside every export and logged with the run's MLflow model: what the model is, what it
was trained on, how well it does, what it expects as input, and what it cannot do (``model_card.json`` for
machines, ``model_card.md`` for people). The caller says the format and whether it is integer-quantized (the
export formats' registry is above this layer).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from tl_core.clock import now_iso
from tl_core.errors import TLError
from tl_core.runs.artifacts import MODEL_CARD_JSON, MODEL_CARD_MD
from tl_core.workspace import atomic_write_text, write_json

if TYPE_CHECKING:
    from tl_core.runs.loaded_model import LoadedModel
    from tl_core.runs.store import Run

RESIZE = {"crop": "centre square crop (aspect kept), then resized", "squash": "resized without keeping aspect"}


def _dataset_part(run: Run) -> tuple[dict, list[dict]]:
    from tl_core.data.datasets import load_dataset
    from tl_core.data.refs import DatasetRef, parse_ref

    metrics = run.artifacts.metrics()
    part = {
        "name": run.config.data,
        "version": metrics.get("dataset_version", 1),
        "fingerprint": (metrics.get("dataset_fingerprint") or "")[:12] or None,
    }
    try:
        manifest = load_dataset(DatasetRef(parse_ref(run.config.data).name, part["version"])).manifest  # as trained
    except TLError:  # the dataset was deleted since: the card still describes the run
        return part, [{"name": name} for name in run.artifacts.class_names()]
    part.update(source=manifest.get("source"), current_version=manifest.get("version", 1))
    counts = manifest.get("class_counts", {})
    return part, [{"name": name, "images_by_split": counts.get(name, {})} for name in run.artifacts.class_names()]


def _unknown_part(run: Run) -> dict:
    """What the run's scope (``runs/scope.py``) answers: images unlike the training images are "unknown"."""
    from tl_core.runs.scope import scope_for

    scope = scope_for(run)
    if scope is None:
        return {"answered": False, "why": "trained before scopes existed: no unknown answers (null)"}
    return {
        "answered": True,
        **scope.summary(),
        "where": "the studio's Predict page, `python -m tl_core predict` and its REST server (`serve`); not this "
        "exported file on its own, which gives one of the classes for every image",
    }


def _limits(run: Run, quantized: bool, classes: list[dict], metrics: dict, parity: Optional[dict]) -> list[str]:
    unknown = _unknown_part(run)
    limits = [
        f"It knows only the {len(classes)} classes in labels.txt: every image is given one of them, "
        "so an image of anything else still gets a confident-looking answer"
        + (
            f" from this file; served by the studio, images farther from the training images than "
            f"{unknown['keep']:.0%} of the validation images are answered 'unknown' instead ({unknown['method_label']})."
            if unknown["answered"]
            else "."
        )
    ]
    n, accuracy = metrics.get("num_val_images", 0), metrics.get("val_accuracy")
    if n and accuracy is not None:
        margin = 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 1e-9) / n)
        limits.append(f"Validation accuracy {accuracy:.3f} was measured on {n} images (about ±{margin:.3f} at 95%).")
    weak = [row for row in metrics.get("per_class", []) if accuracy is not None and row["recall"] < accuracy - 0.1]
    for row in weak:
        limits.append(f"Class {row['class']!r} is recognised less often (recall {row['recall']:.2f}).")
    sizes = [sum(c.get("images_by_split", {}).values()) for c in classes if c.get("images_by_split")]
    if sizes and min(sizes) and max(sizes) >= 3 * min(sizes):
        limits.append(f"Classes are imbalanced ({max(sizes)} vs {min(sizes)} images): rare classes are less reliable.")
    if quantized and parity:
        limits.append(
            f"Full-integer quantization: agrees with the float model on {parity['agreement']:.1%} of "
            f"validation images, accuracy change {-parity['accuracy_drop']:+.3f}."
        )
    return limits


def build(
    run: Run, fmt: str, description: str, loaded: LoadedModel, parity: Optional[dict], quantized: bool = False
) -> dict:
    """The card's content. Of ``loaded`` only ``input_size`` and ``resize`` are read (MLflow logging passes
    what model_info.json says, without loading the model)."""
    cfg, status, metrics = run.config, run.status(), run.artifacts.metrics()
    dataset, classes = _dataset_part(run)
    size = loaded.input_size
    integer = quantized
    temperature = metrics.get("temperature", 1.0)
    return {
        "model": run.id,
        "format": fmt,
        "format_description": description,
        "exported_at": now_iso(),
        "trained_at": status.get("finished"),
        "trained_by": status.get("user") or "unknown",
        "dataset": dataset,
        "classes": classes,
        "base": {"name": cfg.base, "alpha": cfg.alpha, "weights": cfg.weights or "random"},
        "freeze_depth": cfg.freeze_depth,
        "head": cfg.head,
        "settings": {k: v for k, v in cfg.__dict__.items() if k != "data"},
        "metrics": {
            "val_accuracy": metrics.get("val_accuracy"),
            "num_val_images": metrics.get("num_val_images"),
            "per_class": metrics.get("per_class", []),
        },
        "parity": parity,
        "input": {
            "name": "pixels",
            "shape": [None, size, size, 3],
            "dtype": "uint8" if integer else "float32",
            "range": "0-255",
            "channels": "RGB",
            "resize": f"{RESIZE.get(loaded.resize, loaded.resize)} to {size}x{size}",
            "preprocessing": "inside the model",
        },
        "output": {
            "name": "predictions",
            "shape": [None, len(classes)],
            "meaning": "class probabilities in labels.txt order" + (" (uint8, multiply by 1/256)" if integer else ""),
            "calibration": f"temperature {temperature:g}, fitted on the validation split, inside the model",
        },
        "unknown": _unknown_part(run),
        "known_limits": _limits(run, quantized, classes, metrics, parity),
    }


def markdown(card: dict) -> str:
    rows = "\n".join(
        f"| {c['name']} | {', '.join(f'{k} {v}' for k, v in c.get('images_by_split', {}).items())} |"
        for c in card["classes"]
    )
    per_class = "\n".join(
        f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
        for r in card["metrics"]["per_class"]
    )
    parity = card["parity"]
    parity_line = (
        f"Checked in {parity['runtime']} {parity['runtime_version']} on {parity['images']} validation "
        f"images: top-1 agreement with the app's model {parity['agreement']:.1%}, accuracy "
        f"{parity['accuracy']:.3f}."
        if parity
        else "Not checked."
    )
    accuracy = card["metrics"]["val_accuracy"]
    return (
        f"""# Model card: {card["model"]} ({card["format"]})

{card["format_description"]}. Exported {card["exported_at"]}; trained {card["trained_at"]} by {card["trained_by"]}.

## Training
- Dataset: {card["dataset"]["name"]} (version {card["dataset"]["version"]}, fingerprint {card["dataset"]["fingerprint"]})
- Base: {card["base"]["name"]} (alpha {card["base"]["alpha"]}, weights {card["base"]["weights"]}); freeze depth \
{card["freeze_depth"]}; head {card["head"]}
- Settings: `{json.dumps(card["settings"], default=str)}`

| class | images |
|---|---|
{rows}

## Metrics (validation)
Accuracy {"n/a" if accuracy is None else f"{accuracy:.3f}"} on {card["metrics"]["num_val_images"]} images.

| class | precision | recall | F1 | support |
|---|---|---|---|---|
{per_class}

## Parity
{parity_line}

## Input and output
- Input `{card["input"]["name"]}`: shape {card["input"]["shape"]}, {card["input"]["dtype"]}, RGB values \
{card["input"]["range"]}; {card["input"]["resize"]}; preprocessing {card["input"]["preprocessing"]}.
- Output `{card["output"]["name"]}`: {card["output"]["meaning"]}; calibration: {card["output"]["calibration"]}.

## Unknown answers
{_unknown_line(card.get("unknown", {}))}

## Known limits
"""
        + "\n".join(f"- {line}" for line in card["known_limits"])
        + "\n"
    )


def _unknown_line(unknown: dict) -> str:
    if not unknown.get("answered"):
        return f"None: {unknown.get('why', 'not measured')}."
    return (
        f"An image whose {unknown['method_label']} distance exceeds {unknown['threshold']:g} (the distance that keeps "
        f"{unknown['keep']:.0%} of the {unknown['validation_images']} validation images) is answered 'unknown', with "
        f"the nearest class still shown, by {unknown['where']}."
    )


def write(
    run: Run,
    folder: Path,
    fmt: str,
    description: str,
    loaded: LoadedModel,
    parity: Optional[dict],
    quantized: bool = False,
) -> dict:
    card = build(run, fmt, description, loaded, parity, quantized)
    write_json(folder / MODEL_CARD_JSON, card)
    atomic_write_text(folder / MODEL_CARD_MD, markdown(card))
    return card
