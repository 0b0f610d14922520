"""Head kinds, one registry: what each head on the base is and what it supports.

Code asks the registry (``head_kind(cfg.head).fine_tunes``, ``.exports``, ``.grad_cam``,
``.folds_temperature``) instead of testing head names. **A new head kind** is one ``HeadKind`` entry here
plus its training path (``tl_core.training.paths``).

Calibration: training fits a temperature T on the validation split. A linear head holds it in its weights
(kernel and bias divided by T: softmax(z / T)), so the saved model itself gives calibrated probabilities in
the app, the CLI, the REST server and every export. An SVM's probabilities come from scikit-learn's Platt
scaling, which no weight division reproduces: the loaded-model handle applies T to them
(``LoadedModel.probabilities``); no export or Grad-CAM exists for it, so every answer passes there.
"""

from __future__ import annotations

from dataclasses import dataclass

from tl_core.errors import TLError


@dataclass(frozen=True)
class HeadKind:
    name: str
    label: str  # what pages and help texts call it
    in_model: bool  # a Keras layer inside model.keras (else a scikit-learn head in head.joblib on pooled features)
    fine_tunes: bool  # can train the base's top layers with it
    linear: bool  # a softmax over one dense layer: exportable, Grad-CAM-able, temperature-foldable
    sklearn_estimator: str = ""  # the scikit-learn estimator's step name in the saved pipeline

    # A softmax over one dense layer is what every export format holds, what Grad-CAM differentiates, and
    # where a temperature divides into the weights; other heads have none of the three.
    @property
    def exports(self) -> bool:
        return self.linear

    @property
    def grad_cam(self) -> bool:
        return self.linear

    @property
    def folds_temperature(self) -> bool:
        return self.linear


HEAD_KINDS: dict[str, HeadKind] = {
    kind.name: kind
    for kind in (
        HeadKind("keras", "Keras head (dense)", in_model=True, fine_tunes=True, linear=True),
        HeadKind(
            "logreg",
            "Logistic regression on embeddings",
            in_model=False,
            fine_tunes=False,
            linear=True,
            sklearn_estimator="logisticregression",
        ),
        HeadKind(
            "svm",
            "SVM on embeddings",
            in_model=False,
            fine_tunes=False,
            linear=False,
            sklearn_estimator="calibratedclassifiercv",
        ),
    )
}


def head_kind(name: str) -> HeadKind:
    """The registry entry for ``name``; an unknown name is a ``TLError`` that lists the known ones."""
    if name not in HEAD_KINDS:
        raise TLError(f"Unknown head {name!r}; choose one of {tuple(HEAD_KINDS)}.")
    return HEAD_KINDS[name]
