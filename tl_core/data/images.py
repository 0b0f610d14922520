"""Image decoding: the one place where bytes become pixels.

Import, training, thumbnails, prediction, the REST server and explanations all call these functions, so an
image is read the same way everywhere and within a memory budget:

- the header is read first (size, mode) and an image over a pixel cap is refused, unread, with a message
  quoting its size: ``import_pixel_cap()`` for import and training, the lower ``serve_pixel_cap()`` for
  prediction, serving and explanations (both well below Pillow's decompression-bomb limit, which stays on);
- an image is decoded only as large as its use needs: a JPEG at a reduced DCT scale (``draft``), any other
  format reduced by an integer factor right after decoding, both still at least the size asked for;
- 16-bit and 32-bit images become 8-bit a band of rows at a time, never as a full-size float copy;
- EXIF rotation is applied, alpha composited on white, and the result is 8-bit RGB.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tl_core.device import cpu_cores
from tl_core.errors import TLError

ImageSource = Union[str, Path, bytes, Image.Image]

# Photos have thousands of distinct colours; placeholders, blank frames, sketches and icons a handful.
# Such images are kept and flagged (a dataset of drawings is all of them); the user decides.
DEFAULT_MIN_COLORS = 48
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}

# Pixel caps (width x height as stored). Import and training: a 50-megapixel camera's full frame fits. Prediction,
# serving and explanations run inside shared servers: a 24-megapixel camera's frame fits. Pillow's own limit
# (89 megapixels warns, 179 refuses) is far above both; a cap set above it is still bounded by its refusal.
IMPORT_PIXELS_ENV, DEFAULT_IMPORT_PIXELS = "TL_MAX_IMAGE_PIXELS", 50_000_000
SERVE_PIXELS_ENV, DEFAULT_SERVE_PIXELS = "TL_MAX_SERVE_PIXELS", 25_000_000
MAX_FILE_BYTES = 64 * 1024**2  # one image file, in a folder or a zip: larger ones are skipped unread
_BAND_PIXELS = 1 << 20  # 16/32-bit images are scaled to 8 bits this many pixels at a time
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_TRANSPOSE = {  # EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(ValueError):
    """A file that cannot be used as an image here; the message says why."""


def env_pixels(env: str, default: int) -> int:
    """A pixel count from the environment variable ``env`` (``default`` when unset); TLError when not a count."""
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise TLError(f"{env}={raw!r} is not a positive whole number of pixels (e.g. {default}).")
    return value


def import_pixel_cap() -> int:
    """The most pixels an image may have to be imported or trained on (``TL_MAX_IMAGE_PIXELS``)."""
    return env_pixels(IMPORT_PIXELS_ENV, DEFAULT_IMPORT_PIXELS)


def serve_pixel_cap() -> int:
    """The most pixels an image may have to be classified or explained (``TL_MAX_SERVE_PIXELS``)."""
    return env_pixels(SERVE_PIXELS_ENV, DEFAULT_SERVE_PIXELS)


@dataclass(frozen=True)
class Header:
    """What an image file says about itself before any pixel is decoded."""

    format: str
    mode: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def describe(self) -> str:
        return f"{self.width}x{self.height} pixels ({self.pixels / 1e6:.1f} megapixels)"


def over_cap(header: Header, cap: int) -> Optional[str]:
    """Why an image with this header is refused under ``cap`` pixels, or None."""
    if header.pixels <= cap:
        return None
    return (
        f"{header.describe()} is over the limit of {cap / 1e6:g} megapixels for one image "
        "(decompression bomb guard); scale it down and try again"
    )


def _opened(data: bytes) -> Image.Image:
    """The image opened lazily: its header read, no pixels decoded."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    with warnings.catch_warnings():
        # Our caps are far below Pillow's warning level: its warning is not needed; its refusal (2x) stays.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"too many pixels (decompression bomb guard): {exc}") from None
        except UnidentifiedImageError:
            raise ImageRejected("not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"corrupt or truncated image: {exc}") from None


def read_header(data: bytes) -> Header:
    """The file's format, mode and size, decoding no pixels (raises ImageRejected for a file that is no image)."""
    image = _opened(data)
    return Header(image.format or "unknown", image.mode, *image.size)


class _PixelBudget:
    """Full-size decodes running at once, in pixels: the threads that decode for an import, a training run or
    a server wait while others hold more than ``limit`` pixels, so concurrency does not multiply the memory of
    large images (an image over the limit decodes alone; small ones never wait)."""

    def __init__(self, limit: int):
        self.limit, self.in_use = limit, 0
        self._changed = threading.Condition()

    @contextmanager
    def share(self, pixels: int):
        with self._changed:
            while self.in_use and self.in_use + pixels > self.limit:
                self._changed.wait()
            self.in_use += pixels
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= pixels
                self._changed.notify_all()


_DECODING = _PixelBudget(DEFAULT_IMPORT_PIXELS)


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: shown as stored
        return 1
    return value if value in _TRANSPOSE else 1


def _fit_side(size: tuple[int, int], box: tuple[int, int]) -> int:
    """The shorter side of an image of ``size`` once it fits ``box`` (never enlarged)."""
    width, height = size
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(1, math.floor(min(width, height) * scale))


def _upright(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _eight_bit(image: Image.Image) -> Image.Image:
    """The image in one of L, LA, RGB, RGBA: 16/32-bit scaled to its maximum, band by band."""
    if image.mode in _DEEP_MODES:
        return _scaled_to_l(image)
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    if image.mode in ("1", "F"):
        return image.convert("L")
    if image.mode in ("La", "RGBa"):
        return image.convert(image.mode.upper())
    return image.convert("RGB")


def _scaled_to_l(image: Image.Image) -> Image.Image:
    """A 16- or 32-bit greyscale image as 8-bit, its maximum at 255, negatives at 0; in bands of rows, so the
    only full-size copy is the 8-bit result."""
    width, height = image.size
    rows = max(1, _BAND_PIXELS // max(1, width))
    bands = [(0, y, width, min(height, y + rows)) for y in range(0, height, rows)]
    top = max(int(np.asarray(image.crop(band)).max()) for band in bands) if bands else 0
    top = top if top > 0 else 1
    out = np.empty((height, width), dtype=np.uint8)
    for left, upper, right, lower in bands:
        block = np.clip(np.asarray(image.crop((left, upper, right, lower))).astype(np.int64), 0, None)
        out[upper:lower] = block * 255 // top
    return Image.fromarray(out, "L")


def _reduced(image: Image.Image, min_side: int, keep_colors: bool) -> Image.Image:
    """Shrunk by the largest whole factor that keeps both sides at least ``min_side`` (box-averaged, or
    every k-th pixel with ``keep_colors``, so colours are counted, not blended)."""
    factor = min(image.size) // max(1, min_side)
    if factor < 2:
        return image
    if keep_colors:
        size = (math.ceil(image.width / factor), math.ceil(image.height / factor))
        return image.resize(size, Image.Resampling.NEAREST)
    return image.reduce(factor)


def _flattened(image: Image.Image) -> Image.Image:
    """RGB: alpha composited on white."""
    if image.mode in ("LA", "RGBA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _decode(
    source: ImageSource,
    max_pixels: Optional[int],
    draft_size: Optional[int] = None,
    box: Optional[tuple[int, int]] = None,
    keep_colors: bool = False,
) -> tuple[Image.Image, Header]:
    """Upright 8-bit RGB, decoded no larger than needed: both sides at least ``draft_size`` and at least the
    shorter side of the image fitted into ``box`` (either may be None: full size). Refuses (ImageRejected)
    an image over ``max_pixels`` (default ``import_pixel_cap()``) before decoding it."""
    cap = import_pixel_cap() if max_pixels is None else max_pixels
    ours = not isinstance(source, Image.Image)  # a caller's image is neither drafted nor turned in place
    if ours:
        image = _opened(source if isinstance(source, bytes) else read_file(Path(source)))
    else:
        image = source
    header = Header(image.format or "unknown", image.mode, *image.size)
    problem = over_cap(header, cap)
    if problem:
        raise ImageRejected(problem)

    def need(size: tuple[int, int]) -> int:
        return max(draft_size or 0, _fit_side(_upright(size, orientation), box) if box else 0)

    try:
        orientation = _orientation(image) if image.format != "PNG" else 1  # a PNG's EXIF is read after decoding
        if ours and need(image.size) and image.format == "JPEG":
            image.draft("RGB", (need(image.size), need(image.size)))
        with _DECODING.share(image.width * image.height), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            if image.format == "PNG":
                orientation = _orientation(image)
            converted = _eight_bit(image)
            if need(image.size):
                converted = _reduced(converted, need(image.size), keep_colors)
            if ours and converted is not image:
                image.close()  # the full-size decode is freed before the budget is handed back
        if orientation != 1:
            converted = converted.transpose(_TRANSPOSE[orientation])
        rgb = _flattened(converted)
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"corrupt or truncated image: {exc}") from None
    if rgb is source:
        rgb = rgb.copy()
    rgb.info["original_size"] = _upright((header.width, header.height), orientation)
    return rgb, header


def too_large(size: int, cap: int = MAX_FILE_BYTES) -> Optional[str]:
    """Why a file of ``size`` bytes is not read as an image, or None."""
    if size <= cap:
        return None
    return f"{size / 1024**2:.0f} MiB, over the {cap / 1024**2:.0f} MiB limit for one image file; not read"


def read_file(path: Path, cap: int = MAX_FILE_BYTES) -> bytes:
    """A file's bytes, refused (ImageRejected) unread when its size is over ``cap``, and never read past it
    (a file that grows while read is refused too)."""
    problem = too_large(path.stat().st_size, cap)
    if problem:
        raise ImageRejected(problem)
    with open(path, "rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise ImageRejected(too_large(len(data), cap))
    return data


def inspect_bytes(data: bytes, min_colors: int = 0, max_pixels: Optional[int] = None) -> dict:
    """Validate an image file's bytes; return its format, upright size and whether it is low-detail (fewer
    than DEFAULT_MIN_COLORS distinct colours: blank, placeholder, sketch, icon), or raise ImageRejected
    (with ``min_colors``, for fewer colours than that; over ``max_pixels``, default ``import_pixel_cap()``)."""
    header = read_header(data)
    if header.format not in EXTENSIONS:
        raise ImageRejected(f"unsupported image format {header.format!r}")
    frames = getattr(_opened(data), "n_frames", 1)
    rgb, _ = _decode(data, max_pixels, draft_size=256, keep_colors=True)
    upright = rgb.info["original_size"]
    if min(upright) < 8:
        raise ImageRejected(f"too small ({upright[0]}x{upright[1]} pixels; need at least 8x8)")
    colors = rgb.getcolors(maxcolors=max(min_colors, DEFAULT_MIN_COLORS))
    if min_colors and colors is not None and len(colors) < min_colors:
        raise ImageRejected(f"only {len(colors)} distinct colours: looks like a placeholder or blank image")
    return {
        "format": header.format,
        "width": upright[0],
        "height": upright[1],
        "frames": frames,
        "low_detail": colors is not None and len(colors) < DEFAULT_MIN_COLORS,
    }


def load_rgb(
    source: ImageSource,
    draft_size: int | None = None,
    *,
    box: tuple[int, int] | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Upright RGB, its upright size before any reduction in ``info["original_size"]``. With ``draft_size``
    (and/or ``box``) it is decoded at a reduced scale still at least ``draft_size`` on both sides (and at least
    as large as the image fitted into ``box``): a JPEG at 1/2, 1/4 or 1/8 of its DCT, any image then reduced
    by a whole factor, so the model's input is still a downscale at a fraction of the memory and time.
    Refuses an image over ``max_pixels`` (default ``import_pixel_cap()``) from its header."""
    return _decode(source, max_pixels, draft_size, box)[0]


def thumbnail_jpeg(
    source: ImageSource, box: tuple[int, int], quality: int = 85, max_pixels: int | None = None
) -> bytes:
    """A small JPEG of an image, fitting ``box`` (aspect kept), for showing it, not for a model, decoded
    only as large as the thumbnail (a 500x375 photo shown 200 px wide decodes at half size)."""
    image = load_rgb(source, box=box, max_pixels=max_pixels)
    image.thumbnail(box)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _thumbnail_side(data: bytes, box: tuple[int, int]) -> int:
    """The shorter side of the image's thumbnail in ``box``, read from its header (upright, as shown)."""
    try:
        header = _opened(data)
    except ImageRejected:  # unreadable here: load_rgb says why
        return min(box)
    return _fit_side(_upright(header.size, _orientation(header) if header.format != "PNG" else 1), box)


RESIZE_MODES = ("crop", "squash")
# How model inputs are decoded (part of the feature cache's key): a JPEG at least DRAFT_FACTOR times the
# input on both sides decodes at a reduced DCT scale (1/2..1/8) still that large, so the final resize
# always shrinks it at least 2x. Drafting right down to the input size cost accuracy; at 2x it changes
# nothing measurable (docs/performance.md). v2: other formats are reduced the same way (box-averaged by a
# whole factor, still at least that large), so features cached under v1 for large PNGs are not reused.
DRAFT_FACTOR = 2
DECODING = f"draft-{DRAFT_FACTOR}x-v2"


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


def load_array(source: ImageSource, size: int, resize: str = "crop", max_pixels: int | None = None) -> np.ndarray:
    """The model's input for one image, decoded as training and prediction both decode (``DECODING``); over
    ``max_pixels`` (default ``import_pixel_cap()``; prediction passes ``serve_pixel_cap()``) it is refused."""
    return to_array(load_rgb(source, draft_size=DRAFT_FACTOR * size, max_pixels=max_pixels), size, resize)


def decode_threads() -> int:
    """Threads that decode beside a batched engine: one per core (Pillow releases the GIL while it decodes
    and resizes, so they run in parallel), at least 4: a fixed 4 would hold a fast GPU to what 4 cores
    decode."""
    return max(4, cpu_cores())


def load_batch(
    sources: Iterable[ImageSource], size: int, resize: str = "crop", max_pixels: int | None = None
) -> np.ndarray:
    """Decode and resize many images on ``decode_threads()`` threads (each as ``load_array``)."""
    sources = list(sources)
    out = np.empty((len(sources), size, size, 3), dtype=np.uint8)
    if len(sources) <= 1:  # one image (Predict, the REST server): no thread pool to start and stop
        for index, source in enumerate(sources):
            out[index] = load_array(source, size, resize, max_pixels)
        return out

    def work(index: int) -> None:
        out[index] = load_array(sources[index], size, resize, max_pixels)

    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        list(pool.map(work, range(len(sources))))
    return out
