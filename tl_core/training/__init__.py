"""Training: run one ``TrainConfig`` into its run folder, and the tools that choose its settings.

- ``context``: the run, its config and data, and the inputs training paths feed (pixels, cached
  features, frozen-prefix activations, tf.data pipelines, the resume point)
- ``paths``: the training paths, each with its rule for when it applies, and the fine-tune phase
- ``callbacks``: progress, cancellation and NumPy validation hooks for Keras ``fit``
- ``runner``: ``execute`` (a queued run, in this process) and ``train`` (new run folder, then execute)
- ``calibration``: temperature scaling fitted on the validation split
- ``lr_find``: the learning-rate range test; ``compare``: choosing a base

Saving goes through ``tl_core.runs.artifacts``; evaluation through ``tl_core.runs.evaluate``.
"""
