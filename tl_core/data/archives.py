"""Zip archives offered for import: which entries may be read, and reading one with bounded memory.

Every entry is judged on its own: unsafe paths, links, encryption, nested archives, over-compressed
or oversized entries are skipped with a reason before anything is read; an entry that turns out bad
while reading (a CRC error, a compression method zipfile lacks, more bytes than its header says) is
skipped too, and the rest of the archive still imports. No entry is ever read past
``ZipLimits.max_entry_bytes``, so one entry cannot take the server's memory whatever the zip claims.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tl_core.data.images import MAX_FILE_BYTES, ImageRejected
from tl_core.errors import TLError

ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"}
_CHUNK = 1 << 20


@dataclass
class ZipLimits:
    """Caps that stop a zip bomb before it fills the disk or the memory."""

    max_total_bytes: int = 8 * 1024**3  # all entries together, uncompressed
    max_files: int = 200_000
    max_ratio: float = 200.0  # per entry, for entries over 10 MiB
    max_entry_bytes: int = MAX_FILE_BYTES  # one image file; larger entries are skipped unread


def _mib(n: int) -> str:
    return f"{n / 1024**2:.0f} MiB"


def unsafe_path(name: str, parts: list[str]) -> bool:
    return name.startswith("/") or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":")


def entry_problem(info: zipfile.ZipInfo, parts: list[str], limits: ZipLimits) -> str | None:
    """Why an entry must not be read, judged from its header alone; None if it may be read."""
    name = info.filename
    if unsafe_path(name, parts):
        return "unsafe path in zip (absolute or '..'); not extracted"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link in zip; not followed"
    if info.flag_bits & 0x1:
        return "encrypted zip entry; not supported"
    if PurePosixPath(name).suffix.lower() in ARCHIVE_SUFFIXES:
        return "nested archive; unzip it and upload its images"
    if info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > 10 * 1024**2:
        return (
            f"compression ratio {info.file_size / info.compress_size:.0f}:1 is over the limit of "
            f"{limits.max_ratio:.0f}:1 (zip bomb guard)"
        )
    if info.file_size > limits.max_entry_bytes:
        return f"{_mib(info.file_size)} uncompressed, over the {_mib(limits.max_entry_bytes)} limit for one image"
    return None


def open_archive(path: Path, limits: ZipLimits) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TLError(
            f"{Path(path).name!r} is not a readable zip file ({exc}). Upload a .zip of class folders."
        ) from None
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise TLError(f"The zip has {len(infos)} entries; the limit is {limits.max_files}. Split it into smaller zips.")
    return archive, infos


def check_total(total: int, limits: ZipLimits) -> None:
    """The entries that will be read, together, stay under the cap."""
    if total > limits.max_total_bytes:
        raise TLError(
            f"The zip unpacks to more than {limits.max_total_bytes / 1024**3:.1f} GiB "
            "(zip bomb guard). Upload a smaller zip or raise the limit."
        )


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits) -> bytes:
    """The entry's bytes, read in chunks and never past what its header says nor past the per-entry cap."""
    cap = min(info.file_size, limits.max_entry_bytes)
    chunks, size = [], 0
    try:
        with archive.open(info) as handle:
            while chunk := handle.read(min(_CHUNK, cap + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    raise ImageRejected("zip entry is larger than its header says; not extracted")
    except zipfile.BadZipFile as exc:
        raise ImageRejected(f"corrupt zip entry ({exc}); not extracted") from None
    except NotImplementedError as exc:
        raise ImageRejected(f"zip entry uses a compression method this server cannot read ({exc})") from None
    except (zlib.error, EOFError, OSError) as exc:
        raise ImageRejected(f"corrupt zip entry ({type(exc).__name__}: {exc}); not extracted") from None
    return b"".join(chunks)
