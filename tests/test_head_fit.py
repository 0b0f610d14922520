"""The NumPy head fit against Keras: same update rules, loss, class weights, label smoothing and early stopping."""

import keras
import numpy as np
import pytest

from tl_core.models.config import OPTIMIZERS
from tl_core.models.head_fit import HeadFit, epoch_order, fit_head
from tl_core.models.modeling import make_optimizer

CLASS_WEIGHT = {0: 2.0, 1: 1.0, 2: 0.5}


class Recorder:
    """Progress that keeps every batch's running logs and every epoch's weights."""

    def __init__(self, head=None, stop_at_batch=None):
        self.best, self.head, self.stop_at_batch = np.inf, head, stop_at_batch
        self.batches, self.epochs, self.weights = [], [], []

    def epoch_begin(self, epoch):
        pass

    def batch_end(self, batch, logs, learning_rate):
        self.batches.append(dict(logs))
        return self.stop_at_batch is not None and len(self.batches) > self.stop_at_batch

    def epoch_end(self, epoch, logs, learning_rate):
        self.epochs.append(dict(logs))
        self.weights.append(self.head.kernel.copy())
        return False


def problem(seed=0, n=40, dim=16, classes=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y, rng.normal(scale=0.1, size=(dim, classes)).astype(np.float32), np.zeros(classes, np.float32)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_steps_as_keras_does(optimizer):
    x, y, kernel, bias = problem()
    epochs, batch, seed, lr, smoothing = 3, 8, 3, 0.05, 0.1
    ours = HeadFit(kernel.copy(), bias.copy())
    recorder = Recorder(ours)
    fit_head(
        ours,
        x,
        y,
        x[:8],
        y[:8],
        optimizer=optimizer,
        learning_rate=lr,
        epochs=epochs,
        batch_size=batch,
        seed=seed,
        class_weight=CLASS_WEIGHT,
        label_smoothing=smoothing,
        progress=recorder,
    )

    inputs = keras.Input((x.shape[1],))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.layers[-1].set_weights([kernel, bias])
    model.compile(
        optimizer=make_optimizer(optimizer, lr), loss=keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    )
    onehot = np.eye(3, dtype=np.float32)[y]
    keras_losses = []
    for epoch in range(epochs):  # the same batches in the same order
        order = epoch_order(len(x), seed, epoch)
        for start in range(0, len(x), batch):
            rows = order[start : start + batch]
            keras_losses.append(float(model.train_on_batch(x[rows], onehot[rows], class_weight=CLASS_WEIGHT)))
    keras_kernel, keras_bias = model.layers[-1].get_weights()
    np.testing.assert_allclose(ours.kernel, keras_kernel, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.bias, keras_bias, rtol=1e-4, atol=1e-5)
    # the first batch's loss (before any update) is Keras' weighted, smoothed crossentropy
    assert recorder.batches[0]["loss"] == pytest.approx(keras_losses[0], rel=1e-4)
    assert len(ours.history) == epochs and not ours.cancelled


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    x, y, kernel, bias = problem(seed=1, n=60)
    x_val, y_val = x[:20] + 0.5, (y[:20] + 1) % 3  # a validation set the head gets worse on
    head = HeadFit(kernel.copy(), bias.copy())
    recorder = Recorder(head)
    fit_head(
        head,
        x,
        y,
        x_val,
        y_val,
        optimizer="adam",
        learning_rate=0.1,
        epochs=30,
        batch_size=16,
        patience=3,
        progress=recorder,
    )
    val_losses = [row["val_loss"] for row in recorder.epochs]
    best = int(np.argmin(val_losses))
    assert len(val_losses) == best + 1 + 3 < 30  # stopped three epochs after the best one
    assert head.best_epoch == best + 1
    np.testing.assert_array_equal(head.kernel, recorder.weights[best])


def test_without_early_stopping_the_last_epoch_is_kept():
    x, y, kernel, bias = problem(seed=1, n=60)
    head = HeadFit(kernel.copy(), bias.copy())
    recorder = Recorder(head)
    fit_head(
        head,
        x,
        y,
        x[:20] + 0.5,
        (y[:20] + 1) % 3,
        optimizer="adam",
        learning_rate=0.1,
        epochs=6,
        batch_size=16,
        progress=recorder,
    )
    assert len(recorder.epochs) == 6
    np.testing.assert_array_equal(head.kernel, recorder.weights[-1])


def test_a_stop_request_ends_the_fit_mid_epoch_without_a_history_row():
    x, y, kernel, bias = problem()
    head = HeadFit(kernel.copy(), bias.copy())
    recorder = Recorder(head, stop_at_batch=6)  # epoch 2 of 5-batch epochs
    fit_head(head, x, y, x[:8], y[:8], optimizer="sgd", learning_rate=0.1, epochs=5, batch_size=8, progress=recorder)
    assert head.cancelled and len(recorder.batches) == 7 and len(head.history) == 1


def test_dropout_trains_and_is_reproducible_from_the_seed():
    x, _, kernel, bias = problem(n=80)
    y = (x[:, :3] * [1.0, -1.0, 0.5]).argmax(axis=1)  # a rule a linear head can learn
    runs = [
        fit_head(
            HeadFit(kernel.copy(), bias.copy()),
            x,
            y,
            x,
            y,
            optimizer="adam",
            learning_rate=0.05,
            epochs=15,
            batch_size=16,
            dropout=0.3,
            seed=7,
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].kernel, runs[1].kernel)
    assert runs[0].history[-1]["val_accuracy"] >= 0.9 > runs[0].history[0]["val_accuracy"]
