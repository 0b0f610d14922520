"""``TrainConfig``: every choice a training run makes, saved as JSON next to the model it built.

Each field is declared once, with ``setting(...)``: its default, its choices or numeric range, its help and the
words the Train page shows for it. ``SETTINGS`` (field name -> ``Setting``) is what reads those declarations:
``TrainConfig.resolved`` checks every field with it, ``tl_core.cli`` makes one flag per field from it and the
Train page takes its defaults, ranges and help from it. **A new training setting** is one field here (plus the
code that uses it); its flag and its check follow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from tl_core import device
from tl_core.errors import TLError
from tl_core.models import architectures
from tl_core.models.heads import HEAD_KINDS, head_kind

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
CLASS_WEIGHTS = ("auto", "on", "off")
Depth = Union[int, float, str]  # freeze depth: base layers from the input, 'all', 'none' or a fraction


@dataclass(frozen=True)
class Setting:
    """How one ``TrainConfig`` field may be set. ``name``, ``default``, ``kind`` (bool, int, float, str or
    ``"depth"``) and ``optional`` (None allowed) come from the dataclass field itself."""

    label: str  # what the Train page and error messages call it
    help: str
    choices: tuple = ()  # the allowed values, if only some are
    low: Optional[float] = None  # the numeric range, bounds included unless *_open
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    flags: tuple[str, ...] = ()  # the CLI's names for it (default: --field-name)
    none_word: str = ""  # the word the CLI and the page use for None ('auto', 'none')
    lower: bool = False  # a choice read case-insensitively and kept lower-case
    widget: Mapping[str, Any] = field(default_factory=dict)  # the page's own label, narrower bounds, steps, values
    name: str = ""
    default: Any = None
    kind: Any = str
    optional: bool = False

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)

    def normalized(self, value: Any) -> Any:
        """``value`` with the none word read as None and a case-insensitive choice lower-cased."""
        if isinstance(value, str) and self.none_word and value.strip().lower() == self.none_word:
            return None
        if isinstance(value, str) and self.lower:
            return value.lower()
        return value

    def check(self, value: Any, shown: Any = None) -> None:
        """Raise a ``TLError`` unless ``value`` has this setting's type, choices and range; it quotes ``shown``
        (what the user wrote, default: ``value``)."""
        rule = self.broken_rule(value)
        if rule:
            raise TLError(f"{self.label} must be {rule}; got {value if shown is None else shown!r}.")

    def broken_rule(self, value: Any) -> str:
        """The rule ``value`` breaks, in words (empty if none)."""
        value = self.normalized(value)
        if value is None:
            return "" if self.optional else "given"
        if self.kind == "depth":
            return "" if _is_depth(value) else "a layer count, a fraction in (0, 1), 'all' or 'none'"
        if not _is_kind(value, self.kind):
            return _KIND_WORDS[self.kind]
        if self.choices and value not in self.choices:
            return f"one of {self.choice_words()}"
        return "" if self.in_range(value) else self.range_text()

    def parse(self, text: str) -> Any:
        """The value a command-line word stands for, checked (``TLError`` quoting ``text`` otherwise)."""
        value = self.normalized(text)
        if value is not None and self.kind in (int, float):
            try:
                value = self.kind(text)
            except ValueError:
                raise TLError(f"{self.label} must be {_KIND_WORDS[self.kind]}; got {text!r}.") from None
        self.check(value, shown=text)
        return value

    def in_range(self, value: float) -> bool:
        if value != value:  # NaN compares false with every bound, so it would pass them all
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def range_text(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {low}"
        return f"{'below' if self.high_open else 'at most'} {high}"

    def choice_words(self) -> tuple:
        return (*self.choices, self.none_word) if self.none_word else self.choices


_KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _number(value: Optional[float]) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _is_depth(value: Any) -> bool:
    """A freeze depth's form (its range depends on the base: ``freeze.check_config``)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        return False
    text = str(value).strip().lower()
    if text in ("all", "none"):
        return True
    try:
        number = float(text)
    except ValueError:
        return False
    return math.isfinite(number) and number >= 0 and (number < 1 or number.is_integer())


def _is_kind(value: Any, kind: type) -> bool:
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    return isinstance(value, {int: numbers.Integral, float: numbers.Real, str: str}[kind])


def setting(default: Any, label: str, help: str, **declared: Any) -> Any:
    """A ``TrainConfig`` field: its default and its ``Setting`` (see there) in the field's metadata."""
    return field(default=default, metadata={"setting": Setting(label, help, **declared)})


@dataclass
class TrainConfig:
    """Defaults are the ones docs/performance.md's accuracy figures were measured with."""

    data: str = setting("", "Dataset", "dataset name, or a folder / zip to import")
    base: str = setting(
        "MobileNetV2", "Base model", "pretrained base (keras.applications name): " + ", ".join(architectures.names())
    )
    alpha: Optional[float] = setting(
        None,
        "Width multiplier (alpha)",
        "width multiplier of MobileNet bases (default: the base's, or one whose weights are on disk)",
        low=0,
        low_open=True,
    )
    size: Optional[int] = setting(
        None,
        "Input size (px)",
        "input image size in pixels (default: the base's)",
        low=32,
        high=1024,
        widget={"step": 16},
    )
    resize: str = setting(
        "crop", "Resize", "crop: centre square, aspect kept; squash: the whole image", choices=("crop", "squash")
    )
    weights: Optional[str] = setting(
        "imagenet", "Weights", "imagenet, or none for random initial weights", choices=("imagenet",), none_word="none"
    )
    freeze_depth: Depth = setting(
        "all",
        "Freeze depth",
        "frozen base layers from the input: N, a fraction or 'all'. All layers frozen trains only the new head "
        "(fast: base features are computed once).",
        widget={"label": "Freeze depth: base layers frozen, counted from the input"},
    )
    head: str = setting("keras", "Head", "the classifier on the base", choices=tuple(HEAD_KINDS))
    learning_rate: float = setting(
        1e-3,
        "Learning rate",
        "learning rate of the head (and the base layers that train)",
        low=0,
        high=10,
        low_open=True,
        high_open=True,
        flags=("--lr", "--learning-rate"),
        widget={"options": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)},
    )
    optimizer: str = setting("adam", "Optimizer", "optimizer", choices=OPTIMIZERS, lower=True)
    epochs: int = setting(20, "Epochs", "training epochs of the head", low=1, widget={"max_value": 500})
    batch_size: int = setting(32, "Batch size", "images per batch", low=1, widget={"options": (8, 16, 32, 64, 128)})
    dropout: float = setting(
        0.5,
        "Dropout",
        "dropout before the head",
        low=0,
        high=1,
        high_open=True,
        widget={"max_value": 0.9, "step": 0.05},
    )
    label_smoothing: float = setting(
        0.0, "Label smoothing", "label smoothing of the loss", low=0, high=1, high_open=True
    )
    augment: bool = setting(True, "Augment", "random flip / rotation / zoom on training images")
    flip: bool = setting(True, "Flip", "random horizontal flips (with augmentation)")
    rotation: float = setting(
        0.1,
        "Rotation",
        "random rotation, a fraction of a full turn (with augmentation)",
        low=0,
        high=0.5,
        widget={"step": 0.05},
    )
    zoom: float = setting(
        0.1, "Zoom", "random zoom, a fraction (with augmentation)", low=0, high=0.5, widget={"step": 0.05}
    )
    aug_views: Optional[int] = setting(
        None,
        "Cached views",
        "with a frozen base, extra augmented views of each image whose features are cached (each costs one forward "
        "pass). auto (the default): 2 for upscaled images or classes under 40 images, else 0; the run log says why.",
        low=0,
        high=16,
        none_word="auto",
        widget={"options": ("auto", 0, 1, 2, 4, 8)},
    )
    early_stopping: bool = setting(True, "Early stopping", "stop when the validation loss stops improving")
    patience: int = setting(
        5,
        "Patience (epochs)",
        "epochs without improvement before early stopping",
        low=0,
        widget={"min_value": 1, "max_value": 50},
    )
    seed: int = setting(
        42, "Seed", "random seed of the batch order, augmentation and initial weights", low=0, high=2**32 - 1
    )
    # A second phase: unfreeze down to fine_tune_depth for fine_tune_epochs at fine_tune_lr.
    fine_tune_depth: Optional[Depth] = setting(
        None,
        "Fine-tune freeze depth",
        "fine-tune phase: base layers that stay frozen in it (N, a fraction or 'all'; default: no such phase)",
        widget={"fraction": 0.7},
    )
    fine_tune_epochs: int = setting(
        0,
        "Fine-tune epochs",
        "epochs of the fine-tune phase",
        low=0,
        widget={"min_value": 1, "max_value": 200, "value": 5},
    )
    fine_tune_lr: Optional[float] = setting(
        None,
        "Fine-tune learning rate",
        "learning rate of the fine-tune phase (default: the learning rate / 10)",
        low=0,
        high=10,
        low_open=True,
        high_open=True,
        widget={"options": (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4), "value": 1e-4},
    )
    fine_tune_augment: bool = setting(
        True,
        "Fine-tune augmentation",
        "augment images in the fine-tune phase too; off, the frozen part of the base runs once (at a clean cut) "
        "instead of every epoch (the autopilot turns it off)",
    )
    budget: Optional[float] = setting(
        None,
        "Time budget (s)",
        "seconds the run may spend: after the head trains, the autopilot adds a fine-tune phase when the frozen "
        f"base falls short and one fits the budget; auto: {device.CPU_BUDGET_S:g} on a CPU host, "
        f"{device.GPU_BUDGET_S:g} with a GPU; 0: the head only",
        low=0,
        none_word="auto",
        widget={"options": ("auto", 0, 30, 60, 120, 300, 600, 1800, 3600)},
    )
    use_feature_cache: bool = setting(True, "Feature cache", "with a frozen base, compute and reuse its features once")
    mixed_precision: str = setting(
        "auto", "Mixed precision", "float16 compute: auto (on with a GPU), on or off", choices=("auto", "on", "off")
    )
    xla: bool = setting(False, "XLA", "compile the training step with XLA")
    distribute: str = setting(
        "auto", "Distribute", "auto (all GPUs), none or mirrored", choices=("auto", "none", "mirrored")
    )
    classifier_c: float = setting(
        1.0, "Classifier C", "inverse regularisation of the logreg / svm heads", low=0, low_open=True
    )
    class_weights: str = setting(
        "auto",
        "Class weights",
        "weight classes by rarity: auto turns it on when the largest class has 3x the images of the smallest",
        choices=CLASS_WEIGHTS,
    )

    def check_fields(self) -> None:
        """Each field on its own against its ``Setting``; a ``TLError`` quotes the first bad value."""
        for name, spec in SETTINGS.items():
            spec.check(getattr(self, name))

    def resolved(self) -> TrainConfig:
        """Checks every field (``check_fields``) and the rules between fields, and fills in base-dependent
        defaults; errors quote the bad value."""
        self.check_fields()
        cfg = dataclasses.replace(
            self, **{name: spec.normalized(getattr(self, name)) for name, spec in SETTINGS.items()}
        )
        arch = architectures.get(cfg.base)
        alpha = cfg.alpha
        if alpha is None and arch.alphas and cfg.weights == "imagenet":
            size = arch.check_size(cfg.size)
            if not architectures.find_weights(arch, arch.default_alpha, size):
                alpha = next((a for a in arch.alphas if architectures.find_weights(arch, a, size)), None)
        cfg = dataclasses.replace(cfg, base=arch.name, alpha=arch.check_alpha(alpha), size=arch.check_size(cfg.size))
        if cfg.budget is None:
            cfg.budget = device.default_budget()
        # with a budget, the autopilot chooses whichever of the fine-tune depth and epochs is not set by hand
        if cfg.fine_tune_epochs and cfg.fine_tune_depth is None and not cfg.budget:
            raise TLError(
                "A fine-tune phase needs --fine-tune-depth (how many base layers stay frozen in it), or a time "
                "budget (--budget) for the autopilot to choose it."
            )
        if cfg.fine_tune_depth is not None and cfg.fine_tune_epochs < 1 and not cfg.budget:
            raise TLError(
                "A fine-tune depth needs --fine-tune-epochs of at least 1, or a time budget (--budget) for the "
                "autopilot to choose them."
            )
        if (cfg.fine_tune_depth is not None or cfg.fine_tune_epochs) and not head_kind(cfg.head).fine_tunes:
            raise TLError(f"Fine-tuning needs the Keras head; the {cfg.head!r} head uses frozen features only.")
        if cfg.fine_tune_lr is None and cfg.fine_tunes:
            cfg.fine_tune_lr = cfg.learning_rate / 10
        return cfg

    @property
    def fine_tunes(self) -> bool:
        """A fine-tune phase set wholly by hand (or recorded by the autopilot): its depth and epochs."""
        return self.fine_tune_depth is not None and self.fine_tune_epochs >= 1

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
        """A saved ``config.json``; a missing or unreadable file is a ``TLError`` naming it."""
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TLError(f"Settings file not found: {str(path)!r}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TLError(f"Cannot read settings from {str(path)!r}: {exc}") from None
        if not isinstance(payload, dict):
            raise TLError(
                f"{str(path)!r} holds no training settings (a JSON object of them, like a run's config.json)."
            )
        return cls.from_dict(payload)

    @classmethod
    def from_form(cls, values: Mapping[str, Any], fine_tune: bool = False) -> TrainConfig:
        """The config a form's widget values make: each value converted to its field's type (the none word,
        like 'auto', to None); the fine-tune fields count only with ``fine_tune`` and a head that fine-tunes."""
        fields = {}
        for name, value in values.items():
            spec = SETTINGS[name]
            value = spec.normalized(value)
            fields[name] = value if value is None or spec.kind not in (int, float) else spec.kind(value)
        if not (fine_tune and head_kind(fields.get("head", SETTINGS["head"].default)).fine_tunes):
            fields.update(fine_tune_depth=None, fine_tune_epochs=0, fine_tune_lr=None)
        return cls(**fields)


def _settings() -> dict[str, Setting]:
    hints = typing.get_type_hints(TrainConfig)
    found = {}
    for f in dataclasses.fields(TrainConfig):
        args = typing.get_args(hints[f.name])
        kinds = tuple(a for a in args if a is not type(None)) or (hints[f.name],)
        kind = "depth" if set(kinds) == {int, float, str} else kinds[0]
        found[f.name] = dataclasses.replace(
            f.metadata["setting"], name=f.name, default=f.default, kind=kind, optional=type(None) in args
        )
    return found


SETTINGS: dict[str, Setting] = _settings()
