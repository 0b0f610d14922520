"""A dataset's inbox: unlabelled images waiting for a person to label them, kept beside the dataset.

``datasets/<name>/inbox/`` holds the images, each once by content (``images/<sha256><ext>``), and
``index.json``: one entry per image with where it came from and its state: ``pending`` (waiting), ``accepted``
(labelled and added to the dataset: the version it joined) or ``discarded`` (set aside, restorable; nothing is
deleted). Images arrive from a zip or a folder (``add_paths``, through the same safe sources, archive limits and
decode budget as an import), from the Predict page or from the REST server (``add_bytes``; the server's
``Capturer`` keeps them off the request's path). Accepting images saves a new dataset version
(``versions.save_locked``) under the dataset's lock, the same lock every change of the index takes.
Suggestions for the pending images (a run's answers) are the inference layer's (``inference/suggest.py``).
"""

from __future__ import annotations

import hashlib
import os
import queue
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

from tl_core.clock import now_iso
from tl_core.data.archives import ZipLimits
from tl_core.data.datasets import Dataset, dataset_lock, inspected, load_dataset
from tl_core.data.images import EXTENSIONS, read_file, thumbnail_jpeg, too_large
from tl_core.data.refs import parse_ref
from tl_core.data.sources import (
    Candidate,
    candidates_from_folder,
    candidates_from_uploaded_paths,
    candidates_from_zip,
)
from tl_core.data.versions import NewImage, save_locked
from tl_core.errors import TLError
from tl_core.workspace import atomic_write_bytes, read_json, write_json

FOLDER = "inbox"
INDEX = "index.json"
STATES = ("pending", "accepted", "discarded")
CAPTURE_LIMIT_ENV = "TL_INBOX_MAX_CAPTURED"  # pending images past which the server stops capturing
DEFAULT_CAPTURE_LIMIT = 10_000
THUMBNAIL_PX = 192


def _dataset(name: str) -> Dataset:
    """The dataset an inbox belongs to, by name (an inbox is the dataset's, whatever its version)."""
    return load_dataset(parse_ref(name).name)


def folder(name: str) -> Path:
    return _dataset(name).root / FOLDER


def entries(name: str, state: Optional[str] = None) -> list[dict]:
    """The inbox's entries, oldest first; only those in ``state`` when given."""
    if state is not None and state not in STATES:
        raise TLError(f"Unknown inbox state {state!r}; one of {list(STATES)}.")
    rows = read_json(folder(name) / INDEX, {}).get("items", [])
    return [row for row in rows if state is None or row["state"] == state]


def image_path(name: str, entry: dict) -> Path:
    return folder(name) / entry["stored"]


def thumbnail(name: str, entry: dict, size: int = THUMBNAIL_PX) -> Path:
    """A small JPEG of an inbox image, made once and kept beside it."""
    path = folder(name) / ".thumbnails" / f"{entry['sha256']}-{size}.jpg"
    if not path.exists():
        atomic_write_bytes(path, thumbnail_jpeg(image_path(name, entry), (size, size)), durable=False)
    return path


@dataclass
class Added:
    """What an add did: the new entries, and the files left out with why (rejected, duplicates)."""

    added: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"added": len(self.added), "skipped": self.skipped}


def _write_index(root: Path, rows: list[dict]) -> None:
    write_json(root / INDEX, {"items": rows})


def _add(name: str, candidates: Sequence[Candidate], skipped: list[dict], origin, limit: Optional[int] = None) -> Added:
    """Check each candidate as an import does (decode budget, caps), keep each image once by content.
    ``origin(candidate)`` is (file name, source) for the index; ``limit``: the most pending entries to hold."""
    dataset = _dataset(name)
    root = dataset.root / FOLDER
    (root / "images").mkdir(parents=True, exist_ok=True)
    report = Added(skipped=skipped)
    fresh: list[dict] = []
    written: set[str] = set()  # files this call stored: removed again for images the index turns away
    for cand, data, info, reason in inspected(list(candidates), 0):
        if reason:
            report.skipped.append({"file": cand.source, "reason": reason})
            continue
        digest = hashlib.sha256(data).hexdigest()
        stored = f"images/{digest}{EXTENSIONS[info['format']]}"
        if not (root / stored).exists():
            atomic_write_bytes(root / stored, data, durable=False)
            written.add(stored)
        filename, source = origin(cand)
        fresh.append(
            {
                "id": digest[:12],
                "sha256": digest,
                "file": filename,
                "source": source,
                "stored": stored,
                "width": info["width"],
                "height": info["height"],
                "added": now_iso(),
                "state": "pending",
            }
        )
    with dataset_lock(dataset.name):
        rows = read_json(root / INDEX, {}).get("items", [])
        known = {row["sha256"]: row for row in rows}
        in_dataset = {item["sha256"]: item["path"] for item in _dataset(name).items}
        pending = sum(1 for row in rows if row["state"] == "pending")
        for entry in fresh:
            twin = known.get(entry["sha256"])
            if twin is not None:
                report.skipped.append(
                    {"file": entry["source"], "reason": f"already in the inbox ({twin['state']}) as {twin['file']}"}
                )
            elif entry["sha256"] in in_dataset:
                report.skipped.append(
                    {"file": entry["source"], "reason": f"already in the dataset as {in_dataset[entry['sha256']]}"}
                )
            elif limit is not None and pending >= limit:
                report.skipped.append({"file": entry["source"], "reason": f"the inbox holds {limit} pending images"})
            else:
                known[entry["sha256"]] = entry
                rows.append(entry)
                report.added.append(entry)
                pending += 1
        if report.added:
            _write_index(root, rows)
        # turned away (over the limit, a twin, in the dataset): nothing of it stays on disk
        for stored in written - {row["stored"] for row in rows}:
            (root / stored).unlink(missing_ok=True)
    return report


def add_paths(
    name: str, paths: Iterable, limits: ZipLimits = ZipLimits(), shown: Optional[Mapping[str, str]] = None
) -> Added:
    """Image files, folders (every image below, at any depth) and zips into dataset ``name``'s inbox. ``shown``:
    the name a path goes by in the entries' sources (a staged upload: the file name its owner chose)."""
    _dataset(name)  # an unknown dataset is refused before any file is read
    candidates: list[Candidate] = []
    skipped: list[dict] = []
    sources: dict[int, tuple[str, str]] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        where = (shown or {}).get(str(raw), str(path))
        if path.is_dir():
            found = candidates_from_folder(path, skipped, labelled=False)
            for cand in found:
                sources[id(cand)] = (Path(cand.source).name, str(Path(where) / cand.source))
        elif path.is_file() and path.suffix.lower() == ".zip":
            found = candidates_from_zip(path, skipped, limits, labelled=False)
            for cand in found:
                sources[id(cand)] = (PurePosixPath(cand.source).name, f"{where}:{cand.source}")
        elif path.is_file():
            problem = too_large(path.stat().st_size)
            if problem:
                skipped.append({"file": str(path), "reason": problem})
                continue
            found = [Candidate(str(path), "", None, lambda p=path: read_file(p))]
            sources[id(found[0])] = (path.name, str(path))
        else:
            raise TLError(f"{str(raw)!r} is not an image file, a folder or a zip; nothing was added.")
        candidates += found
    return _add(name, candidates, skipped, lambda cand: sources[id(cand)])


def add_bytes(name: str, files: Iterable[tuple[str, bytes]], source: str, limit: Optional[int] = None) -> Added:
    """(file name, bytes) pairs, from a page or a server, into the inbox; ``source`` says where they came from."""
    skipped: list[dict] = []
    candidates = candidates_from_uploaded_paths(
        [(PurePosixPath(str(filename or "").replace("\\", "/")).name or "image", data) for filename, data in files],
        skipped,
        labelled=False,
    )
    return _add(name, candidates, skipped, lambda cand: (cand.source, source), limit)


def _resolve(rows: list[dict], ids: Iterable[str], states: Sequence[str], name: str) -> list[dict]:
    """The entries named by id (or full content hash), each in one of ``states``; anything else refused, quoted."""
    by_id = {row["id"]: row for row in rows} | {row["sha256"]: row for row in rows}
    found, unknown, wrong = [], [], []
    for wanted in dict.fromkeys(ids):
        row = by_id.get(str(wanted).strip().lower())
        if row is None:
            unknown.append(wanted)
        elif row["state"] not in states:
            wrong.append(f"{wanted} ({row['state']})")
        else:
            found.append(row)
    if unknown:
        raise TLError(
            f"No image with id {unknown[0]!r} in the inbox of dataset {name!r}"
            + (f" (nor {unknown[1:5]})" if unknown[1:] else "")
            + "; 'python -m tl_core inbox list --data NAME' shows the ids."
        )
    if wrong:
        raise TLError(f"These inbox images are not {' or '.join(states)}: {wrong[:5]}; nothing was changed.")
    return found


def _set_state(name: str, ids: Iterable[str], old: Sequence[str], new: str, user: Optional[str]) -> list[dict]:
    dataset = _dataset(name)
    with dataset_lock(dataset.name):
        rows = entries(dataset.name)
        chosen = _resolve(rows, ids, old, dataset.name)
        for row in chosen:
            row.update(state=new, changed=now_iso(), user=user)
        if chosen:
            _write_index(dataset.root / FOLDER, rows)
    return chosen


def discard(name: str, ids: Iterable[str], user: Optional[str] = None) -> list[dict]:
    """Set pending images aside; they stay in the inbox, listed as discarded, until restored."""
    return _set_state(name, ids, ("pending",), "discarded", user)


def restore(name: str, ids: Iterable[str], user: Optional[str] = None) -> list[dict]:
    """Put discarded images back among the pending ones."""
    return _set_state(name, ids, ("discarded",), "pending", user)


def accept(name: str, labels: Mapping[str, str], user: Optional[str] = None, note: str = "") -> Dataset:
    """Label pending images (``labels``: id -> class) and add them to the dataset's training images as its next
    version; the entries become ``accepted`` with that version. A class the dataset does not have is refused,
    quoted, and nothing changes."""
    if not labels:
        raise TLError("Nothing to accept: choose at least one inbox image and its class.")
    labels = {str(key).strip().lower(): label for key, label in labels.items()}  # ids as _resolve reads them
    dataset = _dataset(name)
    with dataset_lock(dataset.name):
        current = load_dataset(dataset.name)
        bad = sorted({str(label) for label in labels.values() if label not in current.classes})
        if bad:
            raise TLError(
                f"Unknown class {bad[0]!r} for dataset {current.name!r}; its classes are {current.classes}. "
                "Nothing was accepted."
            )
        rows = entries(current.name)
        chosen = _resolve(rows, labels, ("pending",), current.name)
        label_of = {row["sha256"]: labels.get(row["id"], labels.get(row["sha256"])) for row in chosen}
        root = current.root / FOLDER
        added = [
            NewImage(
                root / row["stored"], label_of[row["sha256"]], row["sha256"], row["width"], row["height"], row["file"]
            )
            for row in chosen
        ]
        saved = save_locked(current.name, {}, set(), note or f"{len(added)} added from the inbox", user, added)
        for row in chosen:
            row.update(
                state="accepted", label=label_of[row["sha256"]], version=saved.version, changed=now_iso(), user=user
            )
        _write_index(root, rows)
    return saved


def capture_limit() -> int:
    raw = os.environ.get(CAPTURE_LIMIT_ENV, "").strip()
    if not raw:
        return DEFAULT_CAPTURE_LIMIT
    if not raw.isdigit() or int(raw) <= 0:
        raise TLError(f"{CAPTURE_LIMIT_ENV}={raw!r} is not a positive whole number of images.")
    return int(raw)


class Capturer:
    """Images a server answered, kept in a dataset's inbox off the request's path: ``offer`` only queues them
    (and drops them when ``max_queued_bytes`` are already waiting); one thread writes what has queued up, in one
    index update. The inbox stops growing at ``capture_limit()`` pending images. ``kept`` and ``dropped`` count
    images."""

    def __init__(self, dataset: str, max_queued_bytes: int = 64 << 20):
        self.dataset = _dataset(dataset).name  # an unknown dataset is refused now, not at the first request
        self.max_queued_bytes, self.limit = max_queued_bytes, capture_limit()
        self.kept = self.dropped = 0
        self._queue: queue.Queue = queue.Queue()
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def offer(self, files: Sequence[tuple[str, bytes]], source: str) -> bool:
        """Queue (file name, bytes) pairs for the inbox, ``source`` saying where they came from; False (and
        counted as dropped) when the queue is full. Never blocks on the disk."""
        size = sum(len(data) for _, data in files)
        with self._lock:
            if self._queued_bytes + size > self.max_queued_bytes:
                self.dropped += len(files)
                return False
            self._queued_bytes += size
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="inbox-capture", daemon=True)
                self._thread.start()
        self._queue.put((list(files), source))
        return True

    def wait(self) -> None:
        """Until every image offered so far is written (or dropped)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            batches = [self._queue.get()]
            while not self._queue.empty():
                batches.append(self._queue.get_nowait())
            by_source: dict[str, list] = {}
            for files, source in batches:
                by_source.setdefault(source, []).extend(files)
            for source, files in by_source.items():
                try:
                    report = add_bytes(self.dataset, files, source, limit=self.limit)
                    self.kept += len(report.added)
                    self.dropped += sum(1 for row in report.skipped if "pending images" in row["reason"])
                except Exception as exc:  # a full disk or a deleted dataset must not stop the server
                    self.dropped += len(files)
                    print(f"warning: could not keep {len(files)} image(s) in the inbox: {exc}", file=sys.stderr)
            with self._lock:
                self._queued_bytes -= sum(len(data) for files, _ in batches for _, data in files)
            for _ in batches:
                self._queue.task_done()
