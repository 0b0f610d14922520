"""Training: run one ``TrainConfig`` into its run folder.

- ``context``: the run, its config and data, and the inputs training paths feed (pixels, cached
  features, frozen-prefix activations, tf.data pipelines, the resume point)
- ``paths``: the training paths, each with its rule for when it applies, and the fine-tune phase
- ``callbacks``: progress, cancellation and NumPy validation hooks for Keras ``fit``
- ``runner``: ``execute`` (a queued run, in this process) and ``train`` (new run folder, then execute)

Saving goes through ``artifacts``; evaluation through ``evaluate``.
"""
from .runner import execute, train

__all__ = ["execute", "train"]
