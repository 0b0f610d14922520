"""Evaluation: an interpretation of a model's validation predictions, computed once and saved.

``Interpretation`` holds the true labels and predicted probabilities; everything else (accuracy,
top-k, confusion matrix, per-class precision/recall/F1, most-confused pairs, top losses) derives
from them. The run folder keeps ``predictions.csv`` (one row per validation image) and the summary
in ``metrics.json``; pages redraw from those without recomputing anything.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from tl_core.models.head_fit import apply_temperature
from tl_core.runs.accuracy import accuracy_interval
from tl_core.workspace import atomic_write_text, spreadsheet_safe, spreadsheet_text

if TYPE_CHECKING:
    from tl_core.runs.artifacts import Artifacts


@dataclass
class Interpretation:
    class_names: list[str]
    y_true: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, C) float
    files: list[str]

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def accuracy(self) -> float:
        return float((self.y_pred == self.y_true).mean()) if len(self.y_true) else 0.0

    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present: what accuracy hides when one class dominates."""
        recalls = [row["recall"] for row in self.per_class() if row["support"]]
        return float(np.mean(recalls)) if recalls else 0.0

    def macro_f1(self) -> float:
        scores = [row["f1"] for row in self.per_class() if row["support"]]
        return float(np.mean(scores)) if scores else 0.0

    def top_k_accuracy(self, k: int) -> float:
        k = min(k, self.probs.shape[1])
        top = np.argsort(-self.probs, axis=1)[:, :k]
        return float((top == self.y_true[:, None]).any(axis=1).mean()) if len(self.y_true) else 0.0

    def losses(self) -> np.ndarray:
        picked = self.probs[np.arange(len(self.y_true)), self.y_true]
        return -np.log(np.clip(picked, 1e-12, 1.0))

    def confusion_matrix(self, normalize: bool = False) -> np.ndarray:
        matrix = confusion_matrix(self.y_true, self.y_pred, labels=range(len(self.class_names)))
        if normalize:
            rows = matrix.sum(axis=1, keepdims=True)
            return np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
        return matrix

    def calibrated(self, temperature: float) -> Interpretation:
        """The same predictions with probabilities softmax(log p / T), as the run's calibrated model gives them
        (the predicted classes do not change)."""
        if temperature == 1.0:
            return self
        return Interpretation(self.class_names, self.y_true, apply_temperature(self.probs, temperature), self.files)

    def confusion_focus(self, limit: int, normalize: bool = False) -> tuple[np.ndarray, list[str]]:
        """The confusion matrix restricted to at most ``limit`` classes: all of them when they fit, else those
        with the most mistakes (as true or as predicted class), in class order. Rows are normalised over the
        full row, so a row's share stays what it is in the whole matrix."""
        matrix = self.confusion_matrix(normalize=normalize)
        if len(self.class_names) <= limit:
            return matrix, list(self.class_names)
        counts = self.confusion_matrix()
        errors = counts.sum(axis=0) + counts.sum(axis=1) - 2 * np.diag(counts)
        keep = np.sort(np.argsort(-errors, kind="stable")[:limit])
        return matrix[np.ix_(keep, keep)], [self.class_names[i] for i in keep]

    def per_class(self) -> list[dict]:
        precision, recall, f1, support = precision_recall_fscore_support(
            self.y_true, self.y_pred, labels=range(len(self.class_names)), zero_division=0
        )
        return [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(self.class_names, precision, recall, f1, support)
        ]

    def most_confused(self, min_count: int = 1) -> list[dict]:
        matrix = self.confusion_matrix()
        pairs = [
            {"true": self.class_names[i], "predicted": self.class_names[j], "count": int(matrix[i, j])}
            for i in range(len(matrix))
            for j in range(len(matrix))
            if i != j and matrix[i, j] >= min_count
        ]
        return sorted(pairs, key=lambda p: -p["count"])

    def in_cell(self, true: str, predicted: str) -> list[str]:
        """The files of one confusion-matrix cell, most confident first."""
        t, p = self.class_names.index(true), self.class_names.index(predicted)
        rows = np.flatnonzero((self.y_true == t) & (self.y_pred == p))
        return [self.files[i] for i in rows[np.argsort(-self.probs[rows, p])]]

    def top_losses(self, k: Optional[int] = None, misclassified_only: bool = False) -> list[dict]:
        losses = self.losses()
        order = np.argsort(-losses)
        rows = []
        for i in order:
            wrong = self.y_pred[i] != self.y_true[i]
            if misclassified_only and not wrong:
                continue
            rows.append(
                {
                    "file": self.files[i],
                    "true": self.class_names[self.y_true[i]],
                    "predicted": self.class_names[self.y_pred[i]],
                    "probability": float(self.probs[i, self.y_pred[i]]),
                    "true_probability": float(self.probs[i, self.y_true[i]]),
                    "loss": float(losses[i]),
                }
            )
            if k is not None and len(rows) >= k:
                break
        return rows

    def misclassified(self) -> list[dict]:
        return self.top_losses(misclassified_only=True)

    def summary(self) -> dict:
        k = min(5, len(self.class_names))
        return {
            "val_accuracy": self.accuracy(),
            "val_balanced_accuracy": self.balanced_accuracy(),
            "val_macro_f1": self.macro_f1(),
            f"val_top{k}_accuracy": self.top_k_accuracy(k),
            "num_val_images": int(len(self.y_true)),
            "val_accuracy_interval": list(accuracy_interval(self.accuracy(), len(self.y_true))),
            "class_names": self.class_names,
            "confusion_matrix": self.confusion_matrix().tolist(),
            "per_class": self.per_class(),
            "most_confused": self.most_confused(),
            "misclassified": self.misclassified(),
        }

    # ------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file", "true", "predicted"] + [f"p_{c}" for c in range(len(self.class_names))])
        for f, t, row in zip(self.files, self.y_true, self.probs):
            writer.writerow([spreadsheet_safe(f), int(t), int(row.argmax())] + [f"{v:.6g}" for v in row])
        atomic_write_text(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, class_names: list[str]) -> Interpretation:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))[1:]
        files = [spreadsheet_text(r[0]) for r in rows]
        y_true = np.array([int(r[1]) for r in rows], dtype=np.int64)
        probs = np.array([[float(v) for v in r[3:]] for r in rows], dtype=np.float64).reshape(
            len(rows), len(class_names)
        )
        return cls(class_names, y_true, probs, files)


def evaluate(artifacts: Artifacts, class_names: list[str], y_true, probs, files: list[str]) -> dict:
    """Interpret a model's validation probabilities, save them as the run's predictions, return the summary."""
    interp = Interpretation(class_names, np.asarray(y_true), np.asarray(probs, dtype=np.float64), files)
    interp.save(artifacts.predictions_path)
    return interp.summary()
