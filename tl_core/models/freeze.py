"""Freeze depth: the one owner of how deep a base stays frozen.

A depth counts base layers from the input: an int, ``'all'``, ``'none'`` or a fraction in (0, 1).
This module parses it, applies it to a built base, previews what it means without building one
(from a cached layer description), checks it when a run is submitted, and finds the *clean cuts*:
depths where exactly one tensor crosses from the frozen layers into the trainable ones, so the
frozen prefix can run once instead of every epoch.

Finding cuts and replaying the layers above one reads Keras' functional graph through private
attributes (``_inbound_nodes``, ``_nodes``, ``_keras_history``). They are touched here and nowhere
else; ``tests/test_freeze.py`` fails loudly when a Keras upgrade moves them.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Optional

from tl_core.errors import TLError
from tl_core.models import architectures
from tl_core.models.config import Depth
from tl_core.workspace import cache_dir, read_json, write_json

if TYPE_CHECKING:
    from tl_core.models.config import TrainConfig


def parse_depth(value: Depth, num_layers: int) -> int:
    """Freeze depth -> number of frozen base layers: an int, 'all', 'none' or a fraction in (0, 1)."""
    text = str(value).strip().lower()
    if text == "all":
        return num_layers
    if text == "none":
        return 0
    try:
        number = float(text)
    except ValueError:
        raise TLError(f"Freeze depth must be a layer count, a fraction or 'all'; got {value!r}.") from None
    if 0 < number < 1 and ("." in text or isinstance(value, float)):
        return int(round(number * num_layers))
    if number != int(number) or not (0 <= number <= num_layers):
        raise TLError(
            f"Freeze depth {value!r} is out of range: this base has {num_layers} layers "
            f"(use 0..{num_layers}, a fraction like 0.7, or 'all')."
        )
    return int(number)


def keeps_inference_mode(layer) -> bool:
    """BatchNorm layers stay frozen at every depth.

    In Keras 3 a functional model passes its own ``training`` flag down to nested layers, overriding
    the ``training=False`` recorded when the base was called; a frozen BatchNorm layer, though, always
    runs in inference mode. Keeping them frozen is what keeps the base's statistics intact.
    """
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def apply(base, depth: Depth) -> int:
    """Freeze the first ``depth`` base layers (from the input), unfreeze the rest; returns the count.
    Recompile the model afterwards: Keras reads ``trainable`` when it compiles."""
    layers = base.layers
    frozen = parse_depth(depth, len(layers))
    base.trainable = frozen < len(layers)
    for index, layer in enumerate(layers):
        layer.trainable = index >= frozen and not keeps_inference_mode(layer)
    return frozen


def first_trainable_layer(base) -> Optional[str]:
    return next((layer.name for layer in base.layers if layer.trainable and layer.trainable_weights), None)


# ---------------------------------------------------------------- the base's graph (private Keras API)
def _base_node(layer, base):
    """The layer's call inside the base's own graph (Keras keys those nodes '<id>_ib-<index>')."""
    nodes = [node for index, node in enumerate(layer._inbound_nodes) if f"{id(layer)}_ib-{index}" in base._nodes]
    return nodes[0] if len(nodes) == 1 else None


def crossing_tensors(base, frozen: int) -> Optional[list]:
    """Tensors that flow from the first ``frozen`` base layers into the rest (None: graph unclear)."""
    layers = base.layers
    frozen_ids = {id(layer) for layer in layers[:frozen]}
    crossing = {}
    for layer in layers[frozen:]:
        node = _base_node(layer, base)
        if node is None:
            return None
        for tensor in node.input_tensors:
            if id(tensor._keras_history.operation) in frozen_ids:
                crossing[id(tensor)] = tensor
    return list(crossing.values())


def clean_cuts(base) -> list[int]:
    """Freeze depths at which exactly one tensor crosses the cut (between blocks)."""
    return [depth for depth in range(1, len(base.layers)) if len(crossing_tensors(base, depth) or ()) == 1]


def split_base(base, frozen: int):
    """Cut the base after its first ``frozen`` layers: (prefix model, cut tensor), or None.

    A clean cut exists when exactly one tensor flows from the frozen layers into the trainable
    ones (true between blocks of MobileNet/ResNet-style bases, not inside a residual block).
    """
    import keras

    if not 0 < frozen < len(base.layers):
        return None
    crossing = crossing_tensors(base, frozen)
    if not crossing or len(crossing) != 1:
        return None
    cut = crossing[0]
    return keras.Model(base.inputs, cut, name=f"{base.name}_prefix"), cut


def replay_above(base, frozen: int, cut, new_input):
    """The base's output computed from ``new_input`` standing in for the cut tensor, by calling the
    layers above the cut again (their weights are shared with the base)."""
    import keras

    tensors = {id(cut): new_input}
    for layer in base.layers[frozen:]:
        node = _base_node(layer, base)
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = layer(*args, **kwargs)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(old)] = new
    return tensors[id(base.outputs[0])]


# ---------------------------------------------------------------- preview without building
def describe(name: str, alpha: Optional[float] = None, size: Optional[int] = None) -> dict:
    """Layer names, per-layer parameter counts and clean cuts of a base, cached on disk.

    The first call for a base builds it without weights (imports Keras); later calls read JSON, so
    pages can show the freeze-depth slider without loading TensorFlow.
    """
    arch = architectures.get(name)
    alpha = arch.check_alpha(alpha)
    size = arch.check_size(size)
    memo_path = cache_dir() / "base_descriptions.json"
    memo = read_json(memo_path, {})
    key = f"{arch.name}|{alpha}|{size}|keras-{version('keras')}|bn-frozen|cuts"
    if key not in memo:
        import keras
        import numpy as np

        from tl_core.models.bases import build_base

        base = build_base(arch.name, alpha, size, weights=None)
        layers = [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "params": int(sum(np.prod(w.shape) for w in layer.weights)),
                "trainable_params": 0
                if keeps_inference_mode(layer)
                else int(sum(np.prod(w.shape) for w in layer.trainable_weights)),
            }
            for layer in base.layers
        ]
        memo = read_json(memo_path, {})
        memo[key] = {
            "name": arch.name,
            "alpha": alpha,
            "size": size,
            "num_layers": len(layers),
            "params": int(base.count_params()),
            "feature_dim": int(base.output.shape[-1]),
            "clean_cuts": clean_cuts(base),
            "layers": layers,
        }
        write_json(memo_path, memo)
        keras.backend.clear_session()
    return memo[key]


def preview(description: dict, depth: Depth) -> dict:
    """What a freeze depth means for a base, without building it: the cut, trainable and frozen params."""
    layers = description["layers"]
    frozen = parse_depth(depth, len(layers))
    trainable = sum(layer["trainable_params"] for layer in layers[frozen:])
    total = sum(layer["params"] for layer in layers)
    cut = next((layer["name"] for layer in layers[frozen:] if layer["trainable_params"]), None)
    cuts = description.get("clean_cuts", [])
    return {
        "frozen_layers": frozen,
        "num_layers": len(layers),
        "first_trainable_layer": cut,
        "base_trainable_params": trainable,
        "base_frozen_params": total - trainable,
        "clean_cut": frozen in cuts or frozen in (0, len(layers)),
        "nearest_clean_cuts": [
            max([c for c in cuts if c < frozen], default=None),
            min([c for c in cuts if c > frozen], default=None),
        ],
    }


def check_config(cfg: TrainConfig) -> None:
    """Both depths of a resolved config fit its base, so a bad depth fails at submission, not in the worker."""
    depths = [("freeze depth", cfg.freeze_depth)]
    if cfg.fine_tune_depth is not None:
        depths.append(("fine-tune depth", cfg.fine_tune_depth))
    for label, depth in depths:
        text = str(depth).strip().lower()
        if text in ("all", "none"):
            continue
        num_layers = describe(cfg.base, cfg.alpha, cfg.size)["num_layers"]
        try:
            parse_depth(depth, num_layers)
        except TLError as exc:
            raise TLError(f"{label.capitalize()}: {exc}") from None
