"""Image decoding: the one place where bytes become pixels.

Import, training and prediction all call these functions, so an image is read the same way
everywhere: Pillow decodes it (its decompression-bomb limit honoured), EXIF rotation is applied,
and it is converted to 8-bit RGB and resized to the model's square input.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tl_core.device import cpu_cores

ImageSource = Union[str, Path, bytes, Image.Image]

# Photos have thousands of distinct colours; placeholders, blank frames, sketches and icons a handful.
# Such images are kept and flagged (a dataset of drawings is all of them); the user decides.
DEFAULT_MIN_COLORS = 48
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


class ImageRejected(ValueError):
    """A file that cannot be used as a training image; the message says why."""


def _open(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode fully; a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale still at least
    ``draft_size`` on both sides, so a large photo decodes far fewer pixels."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    with warnings.catch_warnings():
        # Pillow warns between 1x and 2x its pixel limit and raises above; treat both as a bomb.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            image.info["original_size"] = image.size
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(f"too many pixels (decompression bomb guard): {exc}") from None
        except UnidentifiedImageError:
            raise ImageRejected("not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"corrupt or truncated image: {exc}") from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB: EXIF orientation applied (to ``image`` itself), alpha composited on white, 16-bit
    scaled down."""
    ImageOps.exif_transpose(image, in_place=True)  # in place: the copy Pillow makes otherwise costs a decode's tenth
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def inspect_bytes(data: bytes, min_colors: int = 0) -> dict:
    """Validate an image file's bytes; return its format, upright size and whether it is low-detail (fewer
    than DEFAULT_MIN_COLORS distinct colours: blank, placeholder, sketch, icon), or raise ImageRejected
    (with ``min_colors``, for fewer colours than that)."""
    image = _open(data, draft_size=256)
    fmt = image.format or "unknown"
    if fmt not in EXTENSIONS:
        raise ImageRejected(f"unsupported image format {fmt!r}")
    frames = getattr(image, "n_frames", 1)
    original, decoded = image.info["original_size"], image.size
    rgb = to_rgb(image)
    upright = original[::-1] if rgb.size == decoded[::-1] and decoded[0] != decoded[1] else original
    if min(upright) < 8:
        raise ImageRejected(f"too small ({upright[0]}x{upright[1]} pixels; need at least 8x8)")
    colors = rgb.getcolors(maxcolors=max(min_colors, DEFAULT_MIN_COLORS))
    if min_colors and colors is not None and len(colors) < min_colors:
        raise ImageRejected(f"only {len(colors)} distinct colours: looks like a placeholder or blank image")
    return {
        "format": fmt,
        "width": upright[0],
        "height": upright[1],
        "frames": frames,
        "low_detail": colors is not None and len(colors) < DEFAULT_MIN_COLORS,
    }


def load_rgb(source: ImageSource, draft_size: int | None = None) -> Image.Image:
    """Upright RGB. With ``draft_size``, JPEGs decode at a reduced scale (1/2, 1/4, 1/8) no smaller than
    that on either side: the model's input is then still a downscale, at a fraction of the decoding time."""
    if isinstance(source, Image.Image):
        return to_rgb(source.copy())  # to_rgb turns an image upright in place: not the caller's
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    return to_rgb(_open(data, draft_size))


def thumbnail_jpeg(source: ImageSource, box: tuple[int, int], quality: int = 85) -> bytes:
    """A small JPEG of an image, fitting ``box`` (aspect kept), for showing it, not for a model. A JPEG
    decodes at the smallest DCT scale still as large as the thumbnail: a 500x375 photo shown 200 px wide
    decodes at half size, 4x fewer pixels (the Predict page makes one per upload)."""
    if isinstance(source, Image.Image):  # already decoded: nothing to draft
        image = load_rgb(source)
    else:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        image = load_rgb(data, draft_size=_thumbnail_side(data, box))
    image.thumbnail(box)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _thumbnail_side(data: bytes, box: tuple[int, int]) -> int:
    """The shorter side of the image's thumbnail in ``box``, read from its header (upright, as shown)."""
    try:
        header = Image.open(io.BytesIO(data))
        width, height = header.size
        if header.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # shown turned a quarter: sides swap
            width, height = height, width
    except Exception:  # unreadable here: load_rgb says why
        return min(box)
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(1, math.floor(min(width, height) * scale))


RESIZE_MODES = ("crop", "squash")
# How model inputs are decoded (part of the feature cache's key): a JPEG at least DRAFT_FACTOR times the
# input on both sides decodes at a reduced DCT scale (1/2..1/8) still that large, so the final resize
# always shrinks it at least 2x. Drafting right down to the input size cost accuracy; at 2x it changes
# nothing measurable (docs/performance.md).
DRAFT_FACTOR = 2
DECODING = f"draft-{DRAFT_FACTOR}x-v1"


def to_array(image: Image.Image, size: int, resize: str = "crop") -> np.ndarray:
    """A (size, size, 3) uint8 array: the model's raw-pixel input.

    'crop' scales the short side to ``size`` and keeps the centre square (aspect ratio kept; more accurate
    than 'squash', which stretches the whole image: docs/performance.md).
    """
    if image.size != (size, size):
        if resize == "crop":
            image = ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
        elif resize == "squash":
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        else:
            raise ValueError(f"Unknown resize mode {resize!r}; use one of {RESIZE_MODES}")
    return np.asarray(image, dtype=np.uint8)


def load_array(source: ImageSource, size: int, resize: str = "crop") -> np.ndarray:
    """The model's input for one image, decoded as training and prediction both decode (``DECODING``)."""
    return to_array(load_rgb(source, draft_size=DRAFT_FACTOR * size), size, resize)


def decode_threads() -> int:
    """Threads that decode beside a batched engine: one per core (Pillow releases the GIL while it decodes
    and resizes, so they run in parallel), at least 4: a fixed 4 would hold a fast GPU to what 4 cores
    decode."""
    return max(4, cpu_cores())


def load_batch(sources: Iterable[ImageSource], size: int, resize: str = "crop") -> np.ndarray:
    """Decode and resize many images on ``decode_threads()`` threads."""
    sources = list(sources)
    out = np.empty((len(sources), size, size, 3), dtype=np.uint8)
    if len(sources) <= 1:  # one image (Predict, the REST server): no thread pool to start and stop
        for index, source in enumerate(sources):
            out[index] = load_array(source, size, resize)
        return out

    def work(index: int) -> None:
        out[index] = load_array(sources[index], size, resize)

    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        list(pool.map(work, range(len(sources))))
    return out
