"""Head kinds, one registry: what each head on the base is and what it supports.

Code asks the registry (``head_kind(cfg.head).fine_tunes``) instead of testing head names. **A new head
kind** is one ``HeadKind`` entry here plus its training path (``tl_core.training.paths``).
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
        HeadKind("svm", "SVM on embeddings", in_model=False, fine_tunes=False, linear=False, sklearn_estimator="svc"),
    )
}


def head_kind(name: str) -> HeadKind:
    """The registry entry for ``name``; an unknown name is a ``TLError`` that lists the known ones."""
    if name not in HEAD_KINDS:
        raise TLError(f"Unknown head {name!r}; choose one of {tuple(HEAD_KINDS)}.")
    return HEAD_KINDS[name]
