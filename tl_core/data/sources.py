"""Sources of images to import: zips, folders, browser uploads, class-by-class uploads.

Each source yields ``Candidate`` files: where a file came from, which class (and split) its folders
claim, and how to read it. Nothing is read or written here until a candidate's ``read`` is called by
the importer (``datasets.build_dataset``); zip entries are judged and read by ``archives``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from tl_core.data import archives
from tl_core.data.archives import ZipLimits
from tl_core.data.images import MAX_FILE_BYTES, read_file, too_large
from tl_core.errors import TLError

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


@dataclass
class Candidate:
    """One file offered for import: where it came from, which class and split it claims."""

    source: str
    class_name: str
    split: Optional[str]
    read: Callable[[], bytes]


def _split_and_class(parts: list[str]) -> tuple[Optional[str], Optional[str]]:
    """Interpret a file's folder parts (file name excluded) as (split, class)."""
    if not parts:
        return None, None
    split = SPLIT_ALIASES.get(parts[0].lower())
    if split and len(parts) >= 2:
        return split, parts[1]
    return None, parts[0]


def _strip_common_top(paths: list[list[str]]) -> list[list[str]]:
    """Drop a single top folder that holds everything (``flowers/daisy/1.jpg`` -> ``daisy/1.jpg``)."""
    while (
        paths
        and all(len(p) >= 2 for p in paths)
        and any(len(p) > 2 for p in paths)
        and len({p[0] for p in paths}) == 1
        and paths[0][0].lower() not in SPLIT_ALIASES
    ):
        paths = [p[1:] for p in paths]
    return paths


def is_ignorable(name: str) -> bool:
    lowered = name.lower()
    return lowered in SYSTEM_NAMES or lowered.startswith("._") or lowered.startswith(".")


def zip_entries(infos, limits: ZipLimits):
    """Each file entry of a zip as ``(info, path parts, problem)``, ``problem`` None for one that may be read
    (``archives.entry_problem``); folders, ``__MACOSX`` and system files (``is_ignorable``) are left out unless
    their path is unsafe, which is always reported."""
    for info in infos:
        name = info.filename
        parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", "/")]
        if info.is_dir() or not parts:
            continue
        if not archives.unsafe_path(name, parts) and (parts[0] == "__MACOSX" or any(is_ignorable(p) for p in parts)):
            continue
        yield info, parts, archives.entry_problem(info, parts, limits)


def candidates_from_zip(
    path: Path, skipped: list[dict], limits: ZipLimits = ZipLimits(), labelled: bool = True
) -> list[Candidate]:
    """The zip's entries as candidates; ``labelled=False`` (unlabelled images, for an inbox): any entry may be
    a candidate, its class left empty, instead of only entries inside a class folder."""
    archive, infos = archives.open_archive(path, limits)
    entries, total = [], 0
    for info, parts, problem in zip_entries(infos, limits):
        if problem:
            skipped.append({"file": info.filename, "reason": problem})
            continue
        total += info.file_size
        archives.check_total(total, limits)
        entries.append((parts, info))
    stripped = _strip_common_top([parts for parts, _ in entries])
    result = []
    for parts, (_, info) in zip(stripped, entries):
        split, class_name = _split_and_class(parts[:-1]) if labelled else (None, "")
        if class_name is None:
            skipped.append({"file": info.filename, "reason": "not inside a class folder"})
            continue
        result.append(
            Candidate(info.filename, class_name, split, lambda info=info: archives.read_entry(archive, info, limits))
        )
    return result


def _candidates_from_relative(
    files: list[tuple[list[str], Callable[[], bytes]]], skipped: list[dict], labelled: bool = True
) -> list[Candidate]:
    """Files given by relative path parts: class (and split) folders read from the parts (unless not
    ``labelled``: then every file, its class empty)."""
    files = [(parts, read) for parts, read in files if not any(is_ignorable(p) for p in parts)]
    stripped = _strip_common_top([parts for parts, _ in files])
    result = []
    for (original, read), parts in zip(files, stripped):
        rel = "/".join(original)
        split, class_name = _split_and_class(parts[:-1]) if labelled else (None, "")
        if class_name is None:
            skipped.append({"file": rel, "reason": "not inside a class folder"})
            continue
        result.append(Candidate(rel, class_name, split, read))
    return result


def candidates_from_folder(
    folder: Path, skipped: list[dict], max_file_bytes: int = MAX_FILE_BYTES, labelled: bool = True
) -> list[Candidate]:
    """The folder's files as candidates; a file over ``max_file_bytes`` is skipped by its size, unread;
    ``labelled`` as for ``candidates_from_zip``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TLError(f"Folder {str(folder)!r} does not exist or is not a folder.")
    root = folder.resolve()
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(is_ignorable(p) for p in rel.parts):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            skipped.append({"file": str(rel), "reason": "symbolic link pointing outside the folder; not followed"})
            continue
        if path.is_file():
            problem = too_large(path.stat().st_size, max_file_bytes)
            if problem:
                skipped.append({"file": str(rel), "reason": problem})
                continue
            files.append((list(rel.parts), lambda p=path: read_file(p, max_file_bytes)))
    return _candidates_from_relative(files, skipped, labelled)


Content = Union[bytes, Callable[[], bytes]]  # the bytes, or a reader called when the importer gets to it


def _reader(content: Content) -> Callable[[], bytes]:
    return content if callable(content) else (lambda: content)


def candidates_from_uploaded_paths(
    files: Iterable[tuple[str, Content]], skipped: list[dict], labelled: bool = True
) -> list[Candidate]:
    """A browser folder upload: (relative path such as 'flowers/daisy/1.jpg', content) pairs; ``labelled`` as
    for ``candidates_from_zip``."""
    entries = []
    for rel, content in files:
        parts = [p for p in PurePosixPath(str(rel).replace("\\", "/")).parts if p not in ("", "/")]
        if not parts or ".." in parts:
            skipped.append({"file": str(rel), "reason": "unsafe or empty path; not imported"})
            continue
        entries.append((parts, _reader(content)))
    return _candidates_from_relative(entries, skipped, labelled)


def candidates_from_items(items: Iterable[tuple[str, str, Content]]) -> list[Candidate]:
    """Class-by-class uploads: (class, file name, content) triples."""
    return [Candidate(f"{cls}/{filename}", cls, None, _reader(content)) for cls, filename, content in items]
