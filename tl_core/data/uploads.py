"""Uploads on their way into a dataset: staged as files under ``$TL_HOME/staging/``, never held twice.

A browser upload arrives in memory (Streamlit keeps it until released); from there it is copied to
disk in chunks, and the importer reads one file at a time. Class-by-class uploads wait here, on disk,
until the dataset is created, rather than in the user's session. Stale staging folders (a tab closed
mid-way) are removed after a day.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from tl_core.workspace import atomic_write_text, read_json, subdir

STALE_AFTER_S = 24 * 3600
_INDEX = "index.json"


def staging_root() -> Path:
    return subdir("staging")


def clean_stale(now: float | None = None) -> None:
    now = time.time() if now is None else now
    for folder in staging_root().iterdir():
        if folder.is_dir() and now - folder.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(folder, ignore_errors=True)


class Staging:
    """One upload's (or one class-by-class session's) files on disk."""

    def __init__(self, key: str | None = None):
        self.key = key or uuid.uuid4().hex
        if not self.key.isalnum():
            raise ValueError(f"bad staging key {self.key!r}")
        self.root = staging_root() / self.key

    def save(self, name: str, stream: BinaryIO, number: int = 0) -> Path:
        """Copy a file-like object here in 1 MiB chunks as file ``number``; returns its path."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / f"{number}-{Path(name).suffix.lower()[:10] or '.bin'}"
        stream.seek(0)
        with open(target, "wb") as handle:
            shutil.copyfileobj(stream, handle, 1 << 20)
        return target

    # ------------------------------------------------------------ files waiting for their class
    def _index(self) -> list[dict]:
        return read_json(self.root / _INDEX, [])

    def add_to_class(self, class_name: str, files: Iterable[tuple[str, BinaryIO]]) -> None:
        """Stage (file name, file-like) pairs as images of one class; the index is written once."""
        index = self._index()
        number = 1 + max((int(entry["file"].split("-", 1)[0]) for entry in index), default=-1)  # never reused
        for filename, stream in files:
            path = self.save(filename, stream, number=number)
            index.append({"class": class_name, "name": filename, "file": path.name})
            number += 1
        atomic_write_text(self.root / _INDEX, json.dumps(index))

    def remove_class(self, class_name: str) -> None:
        """Drop one staged class and its files."""
        index = self._index()
        for entry in index:
            if entry["class"] == class_name:
                (self.root / entry["file"]).unlink(missing_ok=True)
        atomic_write_text(self.root / _INDEX, json.dumps([e for e in index if e["class"] != class_name]))

    def class_samples(self, per_class: int = 4) -> dict[str, list[Path]]:
        """The first ``per_class`` staged files of each class, for thumbnails."""
        samples: dict[str, list[Path]] = {}
        for entry in self._index():
            files = samples.setdefault(entry["class"], [])
            if len(files) < per_class:
                files.append(self.root / entry["file"])
        return samples

    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self._index():
            counts[entry["class"]] = counts.get(entry["class"], 0) + 1
        return counts

    def items(self) -> list[tuple[str, str, Callable[[], bytes]]]:
        """(class, file name, reader) for the importer, which reads one file at a time."""
        return [(e["class"], e["name"], lambda p=self.root / e["file"]: p.read_bytes()) for e in self._index()]

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
