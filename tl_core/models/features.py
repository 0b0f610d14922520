"""The feature cache: a frozen base's pooled output, computed once per image and reused.

Entries are keyed by what determines them: the base, alpha, input size, a hash of the weights file,
Keras version and decoding (the *model key*), the image's content hash, and for augmented views the
view number and augmentation settings. A changed image, weights file or size gives a new key, so a
stale entry is never read. Augmented views are drawn deterministically from (image hash, view number, seed).

Storage (``FeatureStore``) is one append-only float32 array per model key, memory-mapped for reading,
with an index of entry -> row: a 50,000-image dataset is two files, not 100,000, and reading a
20,000-image run's features holds only that run's rows in memory. The forward pass goes through the
host's engine (``engine.py``): on CPU each core decodes and runs its own batches; with a single
batched engine (a GPU) the next batch decodes in other threads meanwhile.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import keras
import numpy as np
from PIL import Image, ImageOps

from tl_core.data.images import DECODING, DRAFT_FACTOR, decode_threads, load_array, load_rgb, to_array
from tl_core.errors import Cancelled
from tl_core.models import engine as engines
from tl_core.models.bases import weights_identity
from tl_core.models.config import TrainConfig
from tl_core.workspace import cache_dir, write_json

if TYPE_CHECKING:
    from tl_core.data.datasets import Dataset

Progress = Optional[Callable[[int, int], None]]


def model_key(cfg: TrainConfig) -> str:
    ident = {
        "base": cfg.base,
        "alpha": cfg.alpha,
        "size": cfg.size,
        "weights": weights_identity(cfg),
        "keras": keras.__version__,
        "pooling": "avg",
        "resize": cfg.resize,
        "decoding": DECODING,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def augmentation_key(cfg: TrainConfig) -> str:
    ident = {"flip": cfg.flip, "rotation": cfg.rotation, "zoom": cfg.zoom, "seed": cfg.seed, "v": 1}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def augmented_view(image: Image.Image, size: int, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """One random flip / rotation / zoom of an image, like the Keras layers the plain path uses."""
    if cfg.flip and rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if cfg.rotation:
        angle = float(rng.uniform(-cfg.rotation, cfg.rotation)) * 360.0
        width, height = image.size
        pad = max(width, height) // 4
        padded = Image.fromarray(np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
        image = padded.rotate(angle, resample=Image.Resampling.BILINEAR).crop((pad, pad, pad + width, pad + height))
    if cfg.zoom:
        scale = float(rng.uniform(1.0 - cfg.zoom, 1.0))
        width, height = image.size
        crop_w, crop_h = max(1, int(width * scale)), max(1, int(height * scale))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        image = image.crop((left, top, left + crop_w, top + crop_h))
    return to_array(image, size, cfg.resize)


class FeatureStore:
    """Float32 rows of one model key: ``rows.f32`` (N x dim, appended) and ``index.tsv`` (``entry<TAB>row``
    lines, appended after their rows are written). Appends hold a file lock, so training processes that
    share a base never interleave; a crash mid-append leaves unindexed rows or a torn last index line,
    both ignored on read."""

    def __init__(self, root: Path):
        self.root = root
        self.rows_path, self.index_path = root / "rows.f32", root / "index.tsv"
        self.dim = (json.loads((root / "meta.json").read_text()) if (root / "meta.json").is_file() else {}).get("dim")
        self.index: dict[str, int] = {}
        self._read_index()

    def _read_index(self) -> None:
        if not self.index_path.is_file() or not self.dim:
            return
        complete = self.rows_path.stat().st_size // (4 * self.dim) if self.rows_path.is_file() else 0
        for line in self.index_path.read_text(encoding="utf-8").splitlines():
            entry, _, row = line.partition("\t")
            if row.isdigit() and int(row) < complete:
                self.index[entry] = int(row)

    def read(self, rows: Sequence[int]) -> np.ndarray:
        if not len(rows):
            return np.zeros((0, self.dim or 0), np.float32)
        count = self.rows_path.stat().st_size // (4 * self.dim)
        array = np.memmap(self.rows_path, dtype=np.float32, mode="r", shape=(count, self.dim))
        return np.array(array[np.asarray(rows)])

    def append(self, entries: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            write_json(self.root / "meta.json", {"dim": self.dim})
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with open(self.rows_path, "ab") as rows:
                size = rows.tell()
                first = size // (4 * self.dim)
                if size % (4 * self.dim):  # a torn row from a crash: start the next one on a row boundary
                    rows.truncate(first * 4 * self.dim)
                    rows.seek(0, 2)
                rows.write(vectors.tobytes())
            with open(self.index_path, "ab+") as index:
                _drop_torn_line(index)
                index.write("".join(f"{entry}\t{first + i}\n" for i, entry in enumerate(entries)).encode())
        self.index.update({entry: first + i for i, entry in enumerate(entries)})


def _drop_torn_line(index) -> None:
    """Cut a last line without its newline (a crash mid-write): completed, it could name a row that
    the next append reuses."""
    size = index.seek(0, 2)
    if not size:
        return
    index.seek(max(0, size - 4096))
    tail = index.read()
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    index.truncate(size - len(tail) + cut + 1 if cut >= 0 else 0)
    index.seek(0, 2)


class FeatureCache:
    """Pooled features of one frozen base, under ``$TL_HOME/cache/features/<model key>/``."""

    def __init__(self, cfg: TrainConfig, extractor, batch_size: int = 32, log=None):
        self.cfg = cfg
        self.extractor = extractor
        self.log = log
        self.batch_size = batch_size
        self.key = model_key(cfg)
        # the model key names the base's outputs (base, weights file, size, decoding), so it names their
        # conversion too; precision changes the converted graph
        self.engine_key = f"features-{self.key}-{keras.mixed_precision.global_policy().name}"
        self.aug_key = augmentation_key(cfg)
        self.store = FeatureStore(cache_dir() / "features" / self.key)
        self._engine = None
        self.computed = 0  # forward passes this object ran (cache misses)
        self.reused = 0  # entries read from the store

    @property
    def engine(self):
        """Built on the first miss: a fully cached run never converts or loads an engine."""
        if self._engine is None:
            self._engine = engines.engine_for(self.extractor, log=self.log, key=self.engine_key)
        return self._engine

    def engine_ready(self) -> bool:
        """Whether the engine can start without the Keras model: its conversion is cached."""
        return engines.cached_conversion(self.engine_key) is not None

    def _entry(self, sha: str, view: int) -> str:
        return f"{sha}.v0" if view == 0 else f"{sha}.{self.aug_key}.v{view}"

    def _pixels(self, source: Path, sha: str, view: int) -> np.ndarray:
        if view == 0:
            return load_array(source, self.cfg.size, self.cfg.resize)
        # a zoomed view crops up to ``zoom`` of the image away: decode large enough that the crop still shrinks
        image = load_rgb(source, draft_size=math.ceil(DRAFT_FACTOR * self.cfg.size / (1.0 - min(self.cfg.zoom, 0.9))))
        seed = int(sha[:12], 16) ^ (view * 7919) ^ self.cfg.seed
        return augmented_view(image, self.cfg.size, np.random.default_rng(seed), self.cfg)

    def _forward(
        self, chunks: list, decode: Callable[[list], np.ndarray], should_stop: Optional[Callable[[], bool]]
    ) -> Iterator[tuple[list, np.ndarray]]:
        """(chunk, engine outputs) for each chunk of jobs, in order, a few chunks ahead in threads. With one
        lane per core (LiteRT) a thread decodes a chunk and runs it on its own single-threaded lane, with no
        hand-off; with one batched engine (TensorFlow, a GPU) a thread per core decodes while the engine runs."""
        if not chunks:
            return  # everything cached: no engine is built
        engine = self.engine
        if engine.lane_count > 1:
            task, finish, workers = (lambda chunk: engine.in_lane(decode(chunk))), (lambda out: out), engine.lane_count
        else:
            task, finish, workers = decode, engine, decode_threads()
        ahead = workers + 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = deque(pool.submit(task, chunk) for chunk in chunks[:ahead])
            try:
                for index, chunk in enumerate(chunks):
                    if should_stop and should_stop():
                        raise Cancelled("cancelled while computing features")
                    result = pending.popleft().result()
                    if index + ahead < len(chunks):
                        pending.append(pool.submit(task, chunks[index + ahead]))
                    yield chunk, finish(result)
            finally:
                for future in pending:  # cancelled or failed: decode nothing more that nobody will read
                    future.cancel()

    def features(
        self,
        sources: Sequence[Path],
        shas: Sequence[str],
        views: int = 1,
        progress: Progress = None,
        should_stop: Optional[Callable[[], bool]] = None,
    ) -> np.ndarray:
        """Array (N, views, D): view 0 is the plain image, views 1.. augmented."""
        jobs = [(i, v) for i in range(len(sources)) for v in range(views)]
        entries = [self._entry(shas[i], v) for i, v in jobs]
        missing = [job for job, entry in zip(jobs, entries) if entry not in self.store.index]
        self.reused += len(jobs) - len(missing)
        done = len(jobs) - len(missing)
        if progress:
            progress(done, len(jobs))
        chunks = [missing[start : start + self.batch_size] for start in range(0, len(missing), self.batch_size)]
        decode = lambda chunk: np.stack([self._pixels(sources[i], shas[i], v) for i, v in chunk])
        for chunk, output in self._forward(chunks, decode, should_stop):
            self.store.append([self._entry(shas[i], v) for i, v in chunk], np.asarray(output, dtype=np.float32))
            self.computed += len(chunk)
            done += len(chunk)
            if progress:
                progress(done, len(jobs))
        if not jobs:
            return np.zeros((len(sources), views, self.store.dim or 0), np.float32)
        rows = [self.store.index[entry] for entry in entries]
        return self.store.read(rows).reshape(len(sources), views, -1)


def dataset_features(
    dataset: Dataset,
    base: str = "MobileNetV2",
    alpha: Optional[float] = None,
    size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    about: Optional[dict] = None,
) -> np.ndarray:
    """Pooled features (N, D) of every item of the dataset, in manifest order, through the feature cache
    (``about``, if given, receives the base's parameter count)."""
    from tl_core.models.modeling import build_classifier

    cfg = TrainConfig(data=dataset.name, base=base, alpha=alpha, size=size).resolved()
    items = dataset.items
    cache = FeatureCache(cfg, None)
    # the Keras model only when some image's features are not cached yet (or its size is asked for): building
    # it costs a second or more, reading the cache a fraction of that
    if about is not None or any(cache._entry(it["sha256"], 0) not in cache.store.index for it in items):
        cache.extractor = build_classifier(cfg, len(dataset.classes), with_augmentation=False).extractor
        if about is not None:
            about["params"] = int(cache.extractor.count_params())
    return cache.features(
        [dataset.root / it["path"] for it in items], [it["sha256"] for it in items], progress=progress
    )[:, 0, :]
