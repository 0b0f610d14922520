"""Workspace layout and atomic file writes.

Everything the app makes lives under one folder, ``$TL_HOME`` (default ``./workspace``):
``datasets/``, ``runs/`` and ``cache/``. Every write goes to a temporary name in the same folder
and is renamed into place, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from tl_core.errors import TLError

_NAME_RE = re.compile(r"[^\w.\- ]+", re.UNICODE)


_RESOLVED: dict[str, Path] = {}


def home() -> Path:
    """The workspace root (``$TL_HOME``, default ``./workspace``), made absolute the first time it is asked
    for, so a later change of directory does not move it; processes the app starts get the absolute path."""
    raw = os.environ.get("TL_HOME", "workspace")
    root = _RESOLVED.setdefault(raw, Path(raw).expanduser().resolve())
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def datasets_dir() -> Path:
    return subdir("datasets")


def runs_dir() -> Path:
    return subdir("runs")


def cache_dir() -> Path:
    return subdir("cache")


def safe_name(raw: str, what: str = "name") -> str:
    """A file-system-safe version of a user-given name (unicode letters kept, slashes and dots not)."""
    text = unicodedata.normalize("NFC", str(raw)).strip()
    text = _NAME_RE.sub("_", text.replace("/", "_").replace("\\", "_"))
    text = text.strip(" .")
    if not text or set(text) <= {"_"}:
        raise TLError(f"Invalid {what} {raw!r}: use letters, digits, spaces, '-', '_' or '.'.")
    return text[:100]


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temporary name, then rename. ``durable=False`` skips fsync: for cache entries, where a
    torn file after a power cut is detected on read and recomputed (an fsync per entry slowed the feature
    cache down too much: docs/performance.md)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return default


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell):
    """A CSV cell no spreadsheet runs as a formula: text starting with ``= + - @``, a tab or a carriage return
    gets a leading apostrophe (so does text starting with an apostrophe, so ``spreadsheet_text`` reads every
    cell back exactly). Numbers pass through. Every CSV the app or the CLI writes goes through this."""
    if isinstance(cell, str) and cell[:1] in (*_FORMULA_STARTS, "'"):
        return "'" + cell
    return cell


def spreadsheet_text(cell: str) -> str:
    """The text that ``spreadsheet_safe`` turned into ``cell``."""
    return cell[1:] if cell.startswith("'") else cell
