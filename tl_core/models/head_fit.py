"""The softmax head in NumPy: what it computes (``dense_softmax``), and training it on cached feature
vectors with Keras' own rules. Imports neither Keras nor TensorFlow.

The head on cached features is one dense softmax layer with dropout on its inputs. Its training is a small
fraction of what Keras' ``fit`` spends first tracing its train step (docs/performance.md). So it trains here: the update rules are Keras' optimizers' (Adam, AdamW, SGD with momentum 0.9 and
RMSprop, at their Keras defaults), the loss is Keras' crossentropy on probabilities with class weights
(``sum_over_batch_size``) and label smoothing, metrics are tracked as ``fit`` tracks them, and early
stopping on ``val_loss`` restores the best epoch's weights as ``keras.callbacks.EarlyStopping`` does.
``tests/test_head_fit.py`` runs every optimizer step for step against Keras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

from tl_core.errors import TLError
from tl_core.models.config import OPTIMIZERS

EPSILON = 1e-7  # keras.backend.epsilon(): optimizers' epsilon and the crossentropy's clip


def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training rows in one epoch: the same in this fit and in Keras' pipelines
    (``TrainingContext.pipeline``), so the two paths train alike."""
    return np.random.default_rng([seed, epoch]).permutation(count)


class Optimizer:
    """One of Keras' optimizers over a list of float32 arrays, updated in place."""

    def __init__(self, name: str, learning_rate: float):
        if name not in OPTIMIZERS:
            raise TLError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
        self.name, self.lr, self.iterations = name, np.float32(learning_rate), 0
        self._slots: list[dict[str, np.ndarray]] = []

    def apply(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        if not self._slots:
            self._slots = [{"m": np.zeros_like(p), "v": np.zeros_like(p)} for p in params]
        step = self.iterations + 1
        for param, grad, slot in zip(params, grads, self._slots):
            grad = grad.astype(np.float32, copy=False)
            if self.name == "adamw":  # Keras applies the decay before the update, to every variable
                param -= param * np.float32(0.004) * self.lr
            if self.name in ("adam", "adamw"):
                beta_1, beta_2 = np.float32(0.9), np.float32(0.999)
                alpha = self.lr * np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
                slot["m"] += (grad - slot["m"]) * (1 - beta_1)
                slot["v"] += (grad * grad - slot["v"]) * (1 - beta_2)
                param -= slot["m"] * alpha / (np.sqrt(slot["v"]) + np.float32(EPSILON))
            elif self.name == "sgd":
                slot["m"][...] = slot["m"] * np.float32(0.9) - grad * self.lr
                param += slot["m"]
            else:  # rmsprop: rho 0.9, no momentum, not centred
                slot["v"][...] = np.float32(0.9) * slot["v"] + np.float32(0.1) * grad * grad
                param -= self.lr * grad / np.sqrt(slot["v"] + np.float32(EPSILON))
        self.iterations = step


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, in the logits' precision."""
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def dense_softmax(features: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What the head's softmax dense layer computes, in NumPy (float64): pooled features -> probabilities."""
    return softmax(np.asarray(features, dtype=np.float64) @ kernel.astype(np.float64) + bias.astype(np.float64))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T): what dividing a softmax head's logits by T gives, from its probabilities."""
    return softmax(np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature)


def targets(labels: np.ndarray, num_classes: int, label_smoothing: float = 0.0) -> np.ndarray:
    """One-hot rows, smoothed as Keras' CategoricalCrossentropy(label_smoothing) smooths them."""
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    return onehot * (1 - label_smoothing) + label_smoothing / num_classes if label_smoothing else onehot


def crossentropy(probs: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-row crossentropy of probabilities, clipped as Keras clips them."""
    return -(target * np.log(np.clip(probs, EPSILON, 1 - EPSILON))).sum(axis=1)


class Progress(Protocol):
    best: float

    def epoch_begin(self, epoch: int) -> None: ...
    def batch_end(self, batch: int, logs: dict, learning_rate: float) -> bool: ...
    def epoch_end(self, epoch: int, logs: dict, learning_rate: float) -> bool: ...


@dataclass
class HeadFit:
    """A training run of the head: its weights (updated in place) and what the fit saw."""

    kernel: np.ndarray
    bias: np.ndarray
    cancelled: bool = False
    best_epoch: Optional[int] = None
    history: list[dict] = field(default_factory=list)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """What the saved model's head computes (float64, as ``LoadedModel`` runs it)."""
        return dense_softmax(features, self.kernel, self.bias)


def fit_head(
    head: HeadFit,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    optimizer: str,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    dropout: float = 0.0,
    label_smoothing: float = 0.0,
    class_weight: Optional[dict] = None,
    seed: int = 0,
    patience: Optional[int] = None,
    initial_epoch: int = 0,
    best: float = np.inf,
    progress: Optional[Progress] = None,
) -> HeadFit:
    """Train ``head`` (kernel (D, C), bias (C,)) on feature rows ``x`` with integer labels ``y`` for epochs
    ``initial_epoch``..``epochs``-1; validation after each epoch. ``patience``: early stopping on val_loss
    (best weights restored at the end); ``best``: a resumed run's best val_loss so far."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    num_classes = head.kernel.shape[1]
    train_targets = targets(y, num_classes, label_smoothing)
    val_targets = targets(y_val, num_classes, label_smoothing)
    weights = (
        np.ones(len(y), np.float32)
        if not class_weight
        else np.array([class_weight[int(label)] for label in y], np.float32)
    )
    opt, params = Optimizer(optimizer, learning_rate), [head.kernel, head.bias]
    keep = np.float32(1.0 - dropout)
    # Keras' EarlyStopping, resumed: a finite ``best`` comes with the (restored) weights that reached it
    stop_best, best_weights, wait = best, ([p.copy() for p in params] if np.isfinite(best) else None), 0
    for epoch in range(initial_epoch, epochs):
        if progress:
            progress.epoch_begin(epoch)
        order = epoch_order(len(x), seed, epoch)
        seen, loss_sum, hits, weight_sum = 0, 0.0, 0.0, 0.0
        rng = np.random.default_rng([seed, epoch, 1])  # dropout masks
        for batch, start in enumerate(range(0, len(x), batch_size)):
            rows = order[start : start + batch_size]
            xb, tb, wb = x[rows], train_targets[rows], weights[rows]
            if dropout:
                xb = xb * ((rng.random(xb.shape, dtype=np.float32) < keep) / keep)
            probs = softmax(xb @ head.kernel + head.bias)
            loss = float((wb * crossentropy(probs, tb)).sum() / len(rows))
            grad_logits = (probs - tb) * (wb / len(rows))[:, None]
            opt.apply(params, [xb.T @ grad_logits, grad_logits.sum(axis=0)])
            seen, loss_sum = seen + len(rows), loss_sum + loss * len(rows)
            hits += float((wb * (probs.argmax(axis=1) == tb.argmax(axis=1))).sum())
            weight_sum += float(wb.sum())
            logs = {"loss": loss_sum / seen, "accuracy": hits / weight_sum}
            if progress and progress.batch_end(batch, logs, float(opt.lr)):
                head.cancelled = True
                break
        if head.cancelled:
            break
        val_probs = head.probabilities(x_val)
        logs = {
            **logs,
            "val_loss": float(crossentropy(val_probs, val_targets).mean()),
            "val_accuracy": float((val_probs.argmax(axis=1) == y_val).mean()),
        }
        head.history.append({"epoch": epoch + 1, **logs})
        if progress and progress.epoch_end(epoch, logs, float(opt.lr)):
            head.cancelled = True
        if patience is not None:
            if best_weights is None:
                best_weights = [p.copy() for p in params]
            wait += 1
            if logs["val_loss"] < stop_best:
                stop_best, best_weights, wait, head.best_epoch = (
                    logs["val_loss"],
                    [p.copy() for p in params],
                    0,
                    epoch + 1,
                )
            elif wait >= patience and epoch > 0:
                break
        if head.cancelled:
            break
    if patience is not None and best_weights is not None:
        for param, saved in zip(params, best_weights):
            param[...] = saved
    return head
