"""Grad-CAM: where in an image a trained run looked when it scored a class.

The map comes from the loaded-model handle: the base's last spatial feature map (found from the graph),
the gradient of the class's logit with respect to it, and the head as a linear layer over pooled
features: a Keras head's softmax dense layer, or a logistic regression's weights (each class's direction
in feature space, with its scaler folded in). A head kind without such a direction (``HeadKind.grad_cam``:
the kernel SVM) has no map. The run's temperature divides every logit alike, so the map (normalised to
its maximum) is the same with or without it; the probability shown is the calibrated one. The map is
drawn in the input image's own pixels (undoing the centre crop or squash), with the box around its top
20% of mass. The image is decoded as prediction decodes it (``serve_pixel_cap()``, reduced decoding), and the
map, the overlay and the box are computed at most ``SHOWN_SIDE`` pixels on the long side; the box is then
scaled to the original image's pixels, so a huge image costs what a normal photo does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
from PIL import Image, ImageDraw

from tl_core.data.images import DRAFT_FACTOR, ImageRejected, ImageSource, load_rgb, serve_pixel_cap, to_array
from tl_core.errors import TLError
from tl_core.models.heads import HEAD_KINDS, head_kind

if TYPE_CHECKING:
    from tl_core.runs.loaded_model import LoadedModel

BOX_MASS = 0.2
SHOWN_SIDE = 1024  # the map and the overlay are at most this many pixels on the long side


@dataclass
class Explanation:
    class_name: str
    probability: float
    image: Image.Image  # the input image, upright RGB, shrunk to fit SHOWN_SIDE (never enlarged)
    heat: np.ndarray  # (height, width) in ``image``'s pixels, 0..1
    bbox: list[int]  # [left, top, right, bottom] around the top BOX_MASS of the map's mass, in original pixels
    original_size: tuple[int, int]  # (width, height) of the image as given, upright

    def overlay(self, alpha: float = 0.5, box: bool = True) -> Image.Image:
        """The (shown-size) image with the map over it (warm = where the class's evidence is) and the box drawn."""
        pixels = np.asarray(self.image, dtype=np.float32)
        weight = (alpha * self.heat)[..., None]
        blended = pixels * (1 - weight) + _colormap(self.heat) * 255 * weight
        out = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
        if box:
            sx, sy = out.width / self.original_size[0], out.height / self.original_size[1]
            left, top, right, bottom = self.bbox
            shown = [round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)]
            ImageDraw.Draw(out).rectangle(shown, outline=(255, 255, 255), width=max(2, out.width // 200))
        return out

    def summary(self) -> dict:
        return {"class": self.class_name, "probability": self.probability, "bbox": self.bbox}


def _colormap(heat: np.ndarray) -> np.ndarray:
    """Jet-like: blue (cold) through green and yellow to red (hot)."""
    h = heat[..., None] * 4
    return np.clip(1.5 - np.abs(h - np.array([3.0, 2.0, 1.0])), 0, 1)


def linear_head(loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The head's (kernel, bias) over pooled features, for a head kind Grad-CAM is defined for."""
    kind = head_kind(loaded.head_kind)
    if not kind.grad_cam:
        able = " and ".join(k.label for k in HEAD_KINDS.values() if k.grad_cam)
        raise TLError(
            f"Grad-CAM is not defined for this run's head ({kind.label}): it has no per-class direction "
            f"over the features. It works for: {able}."
        )
    return loaded.linear_head()


def grad_cam(loaded: LoadedModel, pixels: np.ndarray, class_index: int) -> np.ndarray:
    """The class's Grad-CAM on the base's last spatial feature map: (h, w), non-negative, max 1 (or all 0)."""
    import keras
    import tensorflow as tf

    base = loaded.base
    probe = keras.Model(base.inputs, [base.get_layer(loaded.last_conv_layer()).output, base.output])
    kernel, bias = linear_head(loaded)
    inputs = loaded.preprocess(tf.convert_to_tensor(pixels[None], tf.float32))
    with tf.GradientTape() as tape:
        feature_map, out = probe(inputs, training=False)
        pooled = tf.reduce_mean(tf.cast(out, tf.float32), axis=(1, 2))
        logit = tf.linalg.matvec(pooled, tf.constant(kernel[:, class_index], tf.float32)) + float(bias[class_index])
    grads = tape.gradient(logit, feature_map)
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2))  # one per channel
    cam = tf.nn.relu(tf.reduce_sum(tf.cast(feature_map, tf.float32) * weights[:, None, None, :], axis=-1))[0]
    cam = cam.numpy()
    return cam / cam.max() if cam.max() > 0 else cam


def to_image_frame(cam: np.ndarray, image_size: tuple[int, int], input_size: int, resize: str) -> np.ndarray:
    """The map over the model's input, placed over the image it came from (undoing crop or squash)."""
    width, height = image_size
    if resize == "squash":
        return _resized(cam, width, height)
    side = min(width, height)  # 'crop': the input is the centre square, scaled
    heat = np.zeros((height, width), dtype=np.float32)
    left, top = (width - side) // 2, (height - side) // 2
    heat[top : top + side, left : left + side] = _resized(cam, side, side)
    return heat


def _resized(cam: np.ndarray, width: int, height: int) -> np.ndarray:
    resized = Image.fromarray(cam.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized), 0, None)


def mass_box(heat: np.ndarray, fraction: float = BOX_MASS) -> list[int]:
    """[left, top, right, bottom] around the hottest pixels holding ``fraction`` of the map's mass."""
    total = float(heat.sum())
    if total <= 0:
        return [0, 0, heat.shape[1], heat.shape[0]]
    values = np.sort(heat.ravel())[::-1]
    threshold = values[np.searchsorted(np.cumsum(values), fraction * total)]
    rows, cols = np.nonzero(heat >= threshold)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


def scaled_box(box: list[int], shown: tuple[int, int], original: tuple[int, int]) -> list[int]:
    """A [left, top, right, bottom] box in an image of size ``shown`` as the same region of ``original``."""
    sx, sy = original[0] / shown[0], original[1] / shown[1]
    left, top, right, bottom = box
    return [
        max(0, math.floor(left * sx)),
        max(0, math.floor(top * sy)),
        min(original[0], math.ceil(right * sx)),
        min(original[1], math.ceil(bottom * sy)),
    ]


def explain(loaded: LoadedModel, source: ImageSource, class_name: Optional[str] = None) -> Explanation:
    """Grad-CAM for ``class_name`` (default: the predicted class) on one image. An image that cannot be
    decoded, or is over ``serve_pixel_cap()``, raises TLError saying why."""
    try:
        image = load_rgb(
            source,
            draft_size=DRAFT_FACTOR * loaded.input_size,
            box=(SHOWN_SIDE, SHOWN_SIDE),
            max_pixels=serve_pixel_cap(),
        )
    except ImageRejected as exc:
        raise TLError(f"Cannot explain this image: {exc}.") from None
    except OSError as exc:
        raise TLError(f"Cannot read the image: {exc}.") from None
    original = image.info["original_size"]
    pixels = to_array(image, loaded.input_size, loaded.resize)
    image.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
    probs = loaded.probabilities(pixels[None])[0]
    if class_name is None:
        index = int(probs.argmax())
    elif class_name in loaded.class_names:
        index = loaded.class_names.index(class_name)
    else:
        raise TLError(f"Class {class_name!r} is not one of this run's classes: {loaded.class_names}.")
    cam = grad_cam(loaded, pixels.astype(np.float32), index)
    heat = to_image_frame(cam, image.size, loaded.input_size, loaded.resize)
    heat = heat / heat.max() if heat.max() > 0 else heat
    bbox = scaled_box(mass_box(heat), image.size, original)
    return Explanation(loaded.class_names[index], float(probs[index]), image, heat, bbox, original)
