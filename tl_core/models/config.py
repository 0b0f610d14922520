"""``TrainConfig``: every choice a training run makes, saved as JSON next to the model it built."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from tl_core.errors import TLError
from tl_core.models import architectures
from tl_core.models.heads import HEAD_KINDS, head_kind

# The head kinds and optimizers a run can use, with the words pages and the CLI show for them.
HEADS = {name: kind.label for name, kind in HEAD_KINDS.items()}  # the words pages and the CLI show
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
CLASS_WEIGHTS = ("auto", "on", "off")
Depth = Union[int, float, str]  # freeze depth: base layers from the input, 'all', 'none' or a fraction


@dataclass
class TrainConfig:
    """Defaults are the ones docs/performance.md's accuracy figures were measured with."""

    data: str = ""
    base: str = "MobileNetV2"
    alpha: Optional[float] = None  # None: the base's default (or the one whose weights are on disk)
    size: Optional[int] = None  # None: the base's default input size
    resize: str = "crop"  # crop (centre square, aspect kept) | squash
    weights: str = "imagenet"  # "imagenet" or None (random init, for tests)
    freeze_depth: Depth = "all"  # base layers, counted from the input, that stay frozen
    head: str = "keras"  # keras | logreg | svm
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    epochs: int = 20
    batch_size: int = 32
    dropout: float = 0.5
    label_smoothing: float = 0.0
    augment: bool = True  # random flip / rotation / zoom on training images
    flip: bool = True
    rotation: float = 0.1  # fraction of a full turn, as keras RandomRotation
    zoom: float = 0.1
    aug_views: Optional[int] = None  # extra augmented views per image cached when the base is frozen;
    # None: chosen from the data (training/context.py)
    # (each costs one forward pass; 0 keeps head training ~1 pass)
    early_stopping: bool = True
    patience: int = 5
    seed: int = 42
    fine_tune_depth: Optional[Depth] = None  # second phase: unfreeze down to this depth...
    fine_tune_epochs: int = 0  # ...for this many epochs...
    fine_tune_lr: Optional[float] = None  # ...at this learning rate (default: learning_rate / 10)
    use_feature_cache: bool = True
    mixed_precision: str = "auto"  # auto (on with a GPU) | on | off
    xla: bool = False
    distribute: str = "auto"  # auto (all GPUs) | none | mirrored
    classifier_c: float = 1.0  # regularisation of the logreg / svm heads
    class_weights: str = "auto"  # auto (on when the largest class has >= 3x the smallest) | on | off

    def resolved(self) -> TrainConfig:
        """Checks every field and fills in base-dependent defaults; errors quote the bad value."""
        arch = architectures.get(self.base)
        alpha = self.alpha
        if alpha is None and arch.alphas and self.weights == "imagenet":
            size = arch.check_size(self.size)
            if not architectures.find_weights(arch, arch.default_alpha, size):
                alpha = next((a for a in arch.alphas if architectures.find_weights(arch, a, size)), None)
        cfg = dataclasses.replace(self, base=arch.name, alpha=arch.check_alpha(alpha), size=arch.check_size(self.size))
        if cfg.resize not in ("crop", "squash"):
            raise TLError(f"Unknown resize mode {cfg.resize!r}; choose 'crop' or 'squash'.")
        if cfg.aug_views is not None and not 0 <= cfg.aug_views <= 16:
            raise TLError(f"Cached augmented views must be between 0 and 16 (or automatic); got {cfg.aug_views!r}.")
        if cfg.class_weights not in CLASS_WEIGHTS:
            raise TLError(f"Class weights must be one of {CLASS_WEIGHTS}; got {cfg.class_weights!r}.")
        head = head_kind(cfg.head)
        if cfg.optimizer.lower() not in OPTIMIZERS:
            raise TLError(f"Unknown optimizer {cfg.optimizer!r}; choose one of {OPTIMIZERS}.")
        cfg.optimizer = cfg.optimizer.lower()
        if not (0 < cfg.learning_rate < 10):
            raise TLError(f"Learning rate must be between 0 and 10; got {cfg.learning_rate!r}.")
        if cfg.epochs < 1 or cfg.batch_size < 1:
            raise TLError(
                f"Epochs and batch size must be at least 1; got epochs={cfg.epochs!r}, batch size={cfg.batch_size!r}."
            )
        if not (0 <= cfg.dropout < 1):
            raise TLError(f"Dropout must be in [0, 1); got {cfg.dropout!r}.")
        if cfg.weights not in ("imagenet", None, "none"):
            raise TLError(f"Weights must be 'imagenet' or none; got {cfg.weights!r}.")
        if cfg.weights == "none":
            cfg.weights = None
        if cfg.fine_tune_epochs and cfg.fine_tune_depth is None:
            raise TLError("A fine-tune phase needs --fine-tune-depth (how many base layers stay frozen in it).")
        if cfg.fine_tune_depth is not None and cfg.fine_tune_epochs < 1:
            raise TLError("A fine-tune depth needs --fine-tune-epochs of at least 1.")
        if cfg.fine_tune_depth is not None and not head.fine_tunes:
            raise TLError(f"Fine-tuning needs the Keras head; the {cfg.head!r} head uses frozen features only.")
        if cfg.fine_tune_lr is None and cfg.fine_tune_depth is not None:
            cfg.fine_tune_lr = cfg.learning_rate / 10
        return cfg

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, payload: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        payload = {k: v for k, v in payload.items() if not (k == "extra" and not v)}  # older runs saved extra={}
        unknown = set(payload) - known
        if unknown:
            raise TLError(f"Unknown training settings {sorted(unknown)}; known ones are {sorted(known)}.")
        return cls(**payload)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
