"""Datasets: importing class-per-folder images into the workspace, and reading them back.

A dataset lives in ``$TL_HOME/datasets/<name>/``: its images under ``images/<split>/<class>/`` and a
manifest, ``dataset.json``, with every image's class, split and content hash, the class counts, an
image-size summary, the files that were skipped and why, and a content fingerprint. Imports are
built in a temporary folder and renamed into place, so a failed import leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import shutil
import stat
import statistics
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .images import DEFAULT_MIN_COLORS, EXTENSIONS, ImageRejected, inspect_bytes
from .workspace import TLError, datasets_dir, read_json, safe_name, write_json

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
SYSTEM_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"}
MANIFEST = "dataset.json"
Progress = Optional[Callable[[int, int], None]]


@dataclass
class ZipLimits:
    """Caps that stop a zip bomb before it fills the disk."""
    max_total_bytes: int = 8 * 1024**3
    max_files: int = 200_000
    max_ratio: float = 200.0


@dataclass
class Candidate:
    """One file offered for import: where it came from, which class and split it claims."""
    source: str
    class_name: str
    split: Optional[str]
    read: Callable[[], bytes]


@dataclass
class Dataset:
    name: str
    root: Path
    manifest: dict = field(repr=False)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def items(self) -> list[dict]:
        return self.manifest["items"]

    def split_items(self, split: str) -> list[dict]:
        return [item for item in self.items if item["split"] == split]

    @property
    def validation_split(self) -> str:
        splits = self.manifest["split_counts"]
        return "val" if splits.get("val") else "test"

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]


# ---------------------------------------------------------------- reading sources

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
    while paths and all(len(p) >= 2 for p in paths) and any(len(p) > 2 for p in paths) \
            and len({p[0] for p in paths}) == 1 and paths[0][0].lower() not in SPLIT_ALIASES:
        paths = [p[1:] for p in paths]
    return paths


def _is_ignorable(name: str) -> bool:
    lowered = name.lower()
    return lowered in SYSTEM_NAMES or lowered.startswith("._") or lowered.startswith(".")


def candidates_from_zip(path: Path, skipped: list[dict], limits: ZipLimits = ZipLimits()) -> list[Candidate]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TLError(f"{Path(path).name!r} is not a readable zip file ({exc}). Upload a .zip of class folders.") from None
    entries, total = [], 0
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise TLError(f"The zip has {len(infos)} entries; the limit is {limits.max_files}. Split it into smaller zips.")
    for info in infos:
        name = info.filename
        parts = [p for p in PurePosixPath(name.replace("\\", "/")).parts if p not in ("", "/")]
        if info.is_dir() or not parts:
            continue
        if name.startswith("/") or ".." in parts or (len(parts[0]) == 2 and parts[0][1] == ":"):
            skipped.append({"file": name, "reason": "unsafe path in zip (absolute or '..'); not extracted"})
            continue
        if parts[0] == "__MACOSX" or any(_is_ignorable(p) for p in parts):
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            skipped.append({"file": name, "reason": "symbolic link in zip; not followed"})
            continue
        if info.flag_bits & 0x1:
            skipped.append({"file": name, "reason": "encrypted zip entry; not supported"})
            continue
        if PurePosixPath(name).suffix.lower() in ARCHIVE_SUFFIXES:
            skipped.append({"file": name, "reason": "nested archive; unzip it and upload its images"})
            continue
        if info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > 10 * 1024**2:
            skipped.append({"file": name, "reason": f"compression ratio {info.file_size / info.compress_size:.0f}:1 "
                                                    f"is over the limit of {limits.max_ratio:.0f}:1 (zip bomb guard)"})
            continue
        total += info.file_size
        if total > limits.max_total_bytes:
            raise TLError(f"The zip unpacks to more than {limits.max_total_bytes / 1024**3:.1f} GiB "
                          "(zip bomb guard). Upload a smaller zip or raise the limit.")
        entries.append((parts, info))
    stripped = _strip_common_top([parts for parts, _ in entries])
    result = []
    for parts, (_, info) in zip(stripped, entries):
        split, class_name = _split_and_class(parts[:-1])
        if class_name is None:
            skipped.append({"file": info.filename, "reason": "not inside a class folder"})
            continue
        result.append(Candidate(info.filename, class_name, split,
                                lambda info=info: _read_capped(archive, info, limits)))
    return result


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits) -> bytes:
    # file_size in the header can lie; read at most what it claims plus one byte and check.
    with archive.open(info) as handle:
        data = handle.read(min(info.file_size, limits.max_total_bytes) + 1)
    if len(data) > info.file_size:
        raise ImageRejected("zip entry is larger than its header says; not extracted")
    return data


def _candidates_from_relative(files: list[tuple[list[str], Callable[[], bytes]]],
                              skipped: list[dict]) -> list[Candidate]:
    """Files given by relative path parts: class (and split) folders read from the parts."""
    files = [(parts, read) for parts, read in files if not any(_is_ignorable(p) for p in parts)]
    stripped = _strip_common_top([parts for parts, _ in files])
    result = []
    for (original, read), parts in zip(files, stripped):
        rel = "/".join(original)
        split, class_name = _split_and_class(parts[:-1])
        if class_name is None:
            skipped.append({"file": rel, "reason": "not inside a class folder"})
            continue
        result.append(Candidate(rel, class_name, split, read))
    return result


def candidates_from_folder(folder: Path, skipped: list[dict]) -> list[Candidate]:
    folder = Path(folder)
    if not folder.is_dir():
        raise TLError(f"Folder {str(folder)!r} does not exist or is not a folder.")
    root = folder.resolve()
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(_is_ignorable(p) for p in rel.parts):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            skipped.append({"file": str(rel), "reason": "symbolic link pointing outside the folder; not followed"})
            continue
        if path.is_file():
            files.append((list(rel.parts), lambda p=path: p.read_bytes()))
    return _candidates_from_relative(files, skipped)


def candidates_from_uploaded_paths(files: Iterable[tuple[str, bytes]], skipped: list[dict]) -> list[Candidate]:
    """A browser folder upload: (relative path such as 'flowers/daisy/1.jpg', bytes) pairs."""
    entries = []
    for rel, data in files:
        parts = [p for p in PurePosixPath(str(rel).replace("\\", "/")).parts if p not in ("", "/")]
        if not parts or ".." in parts:
            skipped.append({"file": str(rel), "reason": "unsafe or empty path; not imported"})
            continue
        entries.append((parts, lambda data=data: data))
    return _candidates_from_relative(entries, skipped)


def candidates_from_items(items: Iterable[tuple[str, str, bytes]]) -> list[Candidate]:
    return [Candidate(f"{cls}/{filename}", cls, None, lambda data=data: data) for cls, filename, data in items]


# ---------------------------------------------------------------- building a dataset

def _stratified_split(items: list[dict], val_fraction: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[dict]] = {}
    for item in items:
        by_class.setdefault(item["class"], []).append(item)
    for _, members in sorted(by_class.items()):
        members.sort(key=lambda it: it["sha256"])  # order independent of file names and upload order
        order = rng.permutation(len(members))
        n_val = max(1, int(round(len(members) * val_fraction))) if len(members) >= 2 else 0
        for rank, idx in enumerate(order):
            members[idx]["split"] = "val" if rank < n_val else "train"


def _summary(values: list[int]) -> dict:
    return {"min": min(values), "median": int(statistics.median(values)), "max": max(values)} if values else {}


def _validate(items: list[dict], classes: list[str]) -> None:
    if not items:
        raise TLError("No usable images found. Put images in one folder per class "
                      "(e.g. ants/1.jpg, bees/2.jpg); see the skipped-file report for why files were rejected.")
    if len(classes) < 2:
        raise TLError(f"Only one class found ({classes[0]!r}). A classifier needs at least two class folders.")
    counts = {c: sum(1 for it in items if it["class"] == c) for c in classes}
    small = {c: n for c, n in counts.items() if n < 2}
    if small:
        raise TLError(f"Every class needs at least 2 images; these have fewer: {small}. Add images or remove the class.")


def build_dataset(name: str, candidates: list[Candidate], skipped: list[dict], *, source: str,
                  val_fraction: float = 0.2, seed: int = 42, min_colors: int = DEFAULT_MIN_COLORS,
                  progress: Progress = None, replace: bool = False) -> Dataset:
    name = safe_name(name, "dataset name")
    final = datasets_dir() / name
    if final.exists() and not replace:
        raise TLError(f"A dataset named {name!r} already exists. Choose another name or delete that one first.")
    staging = datasets_dir() / f".staging-{name}-{uuid.uuid4().hex[:8]}"
    items, seen, used_names = [], {}, set()
    try:
        for done, cand in enumerate(candidates, 1):
            try:
                data = cand.read()
                info = inspect_bytes(data, min_colors=min_colors)
            except ImageRejected as exc:
                skipped.append({"file": cand.source, "reason": str(exc)})
                continue
            except OSError as exc:
                skipped.append({"file": cand.source, "reason": f"could not be read: {exc}"})
                continue
            finally:
                if progress:
                    progress(done, len(candidates))
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                skipped.append({"file": cand.source, "reason": f"duplicate of {seen[digest]}"})
                continue
            seen[digest] = cand.source
            incoming = staging / ".incoming" / digest
            incoming.parent.mkdir(parents=True, exist_ok=True)
            incoming.write_bytes(data)
            class_name = safe_name(cand.class_name, "class name")
            split = cand.split or "unsplit"
            stem = safe_name(PurePosixPath(cand.source).stem, "file name")[:80]
            filename = stem + EXTENSIONS[info["format"]]
            key = (split, class_name, filename.lower())
            if key in used_names:
                filename = f"{stem}-{digest[:8]}{EXTENSIONS[info['format']]}"
                key = (split, class_name, filename.lower())
            used_names.add(key)
            items.append({"class": class_name, "split": split, "file": filename, "sha256": digest,
                          "width": info["width"], "height": info["height"], "source": cand.source})
        classes = sorted({it["class"] for it in items})
        _validate(items, classes)
        has_split = any(it["split"] != "unsplit" for it in items)
        if has_split:
            for it in items:
                if it["split"] == "unsplit":
                    it["split"] = "train"
            if not any(it["split"] in ("val", "test") for it in items):
                _stratified_split(items, val_fraction, seed)
        else:
            _stratified_split(items, val_fraction, seed)
        for it in items:
            it["path"] = f"images/{it['split']}/{it['class']}/{it['file']}"
            target = staging / it["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / ".incoming" / it["sha256"]).rename(target)
        shutil.rmtree(staging / ".incoming", ignore_errors=True)
        manifest = _manifest(name, source, items, classes, skipped, has_split, val_fraction, seed)
        write_json(staging / MANIFEST, manifest)
        if final.exists():
            trash = datasets_dir() / f".trash-{name}-{uuid.uuid4().hex[:8]}"
            final.rename(trash)
            staging.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise TLError(f"Could not write dataset {name!r} to the workspace {str(datasets_dir())!r}: "
                      f"{exc.strerror or exc}. Free disk space or fix the folder's permissions; "
                      "nothing was imported and existing datasets are unchanged.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Dataset(name, final, manifest)


def _manifest(name, source, items, classes, skipped, has_split, val_fraction, seed) -> dict:
    counts = {c: {} for c in classes}
    split_counts: dict[str, int] = {}
    for it in items:
        counts[it["class"]][it["split"]] = counts[it["class"]].get(it["split"], 0) + 1
        split_counts[it["split"]] = split_counts.get(it["split"], 0) + 1
    fingerprint = hashlib.sha256("\n".join(sorted(
        f"{it['split']}/{it['class']}/{it['sha256']}" for it in items)).encode()).hexdigest()
    return {
        "name": name, "source": source, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "classes": classes, "class_counts": counts, "split_counts": split_counts,
        "num_images": len(items), "predefined_split": has_split,
        "split_rule": None if has_split else {"val_fraction": val_fraction, "seed": seed, "stratified": True},
        "image_size": {"width": _summary([it["width"] for it in items]),
                       "height": _summary([it["height"] for it in items])},
        "skipped": skipped, "fingerprint": fingerprint,
        "items": [{k: it[k] for k in ("path", "class", "split", "sha256", "width", "height")} for it in items],
    }


# ---------------------------------------------------------------- public API

def add_zip(path, name: Optional[str] = None, limits: ZipLimits = ZipLimits(), **kwargs) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise TLError(f"Zip file {str(path)!r} not found.")
    skipped: list[dict] = []
    candidates = candidates_from_zip(path, skipped, limits)
    return build_dataset(name or path.stem, candidates, skipped, source=f"zip:{path.name}", **kwargs)


def add_folder(path, name: Optional[str] = None, allowed_roots: Optional[list] = None, **kwargs) -> Dataset:
    path = Path(path).expanduser()
    if allowed_roots is not None:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in allowed_roots):
            raise TLError(f"Folder {str(path)!r} is outside the allowed import roots "
                          f"{[str(r) for r in allowed_roots]}. Ask the admin to add it (TL_IMPORT_ROOTS).")
    skipped: list[dict] = []
    candidates = candidates_from_folder(path, skipped)
    return build_dataset(name or path.resolve().name, candidates, skipped, source=f"folder:{path.resolve()}", **kwargs)


def add_items(items: Iterable[tuple[str, str, bytes]], name: str, **kwargs) -> Dataset:
    return build_dataset(name, candidates_from_items(items), [], source="upload", **kwargs)


def add_uploaded_folder(files: Iterable[tuple[str, bytes]], name: str, **kwargs) -> Dataset:
    skipped: list[dict] = []
    candidates = candidates_from_uploaded_paths(files, skipped)
    return build_dataset(name, candidates, skipped, source="folder upload", **kwargs)


def add_source(source, name: Optional[str] = None, **kwargs) -> Dataset:
    """A zip file or a folder, by what the path is."""
    path = Path(source).expanduser()
    if path.is_dir():
        return add_folder(path, name, **kwargs)
    if path.is_file():
        return add_zip(path, name, **kwargs)
    raise TLError(f"{str(source)!r} is neither a zip file nor a folder.")


def list_datasets() -> list[Dataset]:
    found = []
    for folder in sorted(datasets_dir().iterdir()):
        manifest = read_json(folder / MANIFEST) if folder.is_dir() and not folder.name.startswith(".") else None
        if manifest:
            found.append(Dataset(folder.name, folder, manifest))
    return found


def load_dataset(name: str) -> Dataset:
    folder = datasets_dir() / str(name)
    manifest = read_json(folder / MANIFEST) if not str(name).startswith(".") and "/" not in str(name) else None
    if not manifest:
        known = [d.name for d in list_datasets()]
        raise TLError(f"Unknown dataset {name!r}. Known datasets: {known or 'none yet'}; add one with "
                      "'python -m tl_core datasets add SOURCE --name NAME'.")
    return Dataset(folder.name, folder, manifest)


def source_signature(path: Path) -> str:
    """Cheap identity of a folder or zip on disk: every file's relative path, size and mtime."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat_result = file.stat()
        digest.update(f"{file.relative_to(path) if file != path else file.name}|{stat_result.st_size}|"
                      f"{stat_result.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def resolve_dataset(spec: str, progress: Progress = None) -> Dataset:
    """A dataset by name, or a folder/zip imported on the fly (reusing an identical earlier import)."""
    if (datasets_dir() / spec / MANIFEST).is_file() and "/" not in spec:
        return load_dataset(spec)
    path = Path(spec).expanduser()
    if not path.exists():
        return load_dataset(spec)  # raises the "unknown dataset" error
    signature = source_signature(path)
    for other in list_datasets():
        if other.manifest.get("source_signature") == signature:
            return other  # same files, unchanged since that import
    base = safe_name(path.resolve().stem if path.is_file() else path.resolve().name, "dataset name")
    existing = {d.name: d for d in list_datasets()}
    name, n = base, 1
    while name in existing:
        n += 1
        name = f"{base}-{n}"
    fresh = add_source(path, name, progress=progress)
    manifest = dict(fresh.manifest, source_signature=signature)
    write_json(fresh.root / MANIFEST, manifest)
    fresh = Dataset(fresh.name, fresh.root, manifest)
    for other in existing.values():
        if other.fingerprint == fresh.fingerprint:
            delete_dataset(fresh.name)
            return other
    return fresh


def delete_dataset(name: str) -> None:
    dataset = load_dataset(name)
    trash = datasets_dir() / f".trash-{dataset.name}-{uuid.uuid4().hex[:8]}"
    dataset.root.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def rename_dataset(old: str, new: str) -> Dataset:
    dataset = load_dataset(old)
    new = safe_name(new, "dataset name")
    target = datasets_dir() / new
    if target.exists():
        raise TLError(f"A dataset named {new!r} already exists. Choose another name.")
    dataset.root.rename(target)
    manifest = dict(dataset.manifest, name=new)
    write_json(target / MANIFEST, manifest)
    return Dataset(new, target, manifest)


def format_report(dataset: Dataset) -> str:
    m = dataset.manifest
    lines = [f"Dataset {dataset.name!r}: {m['num_images']} images, {len(m['classes'])} classes "
             f"({'split folders kept' if m['predefined_split'] else 'stratified split, seed %d' % m['split_rule']['seed']})",
             "  splits: " + ", ".join(f"{k}={v}" for k, v in sorted(m["split_counts"].items()))]
    for cls in m["classes"]:
        lines.append(f"  {cls}: " + ", ".join(f"{k}={v}" for k, v in sorted(m["class_counts"][cls].items())))
    w, h = m["image_size"]["width"], m["image_size"]["height"]
    lines.append(f"  image size: width {w['min']}-{w['max']} (median {w['median']}), "
                 f"height {h['min']}-{h['max']} (median {h['median']})")
    lines.append(f"  skipped: {len(m['skipped'])} file(s)")
    lines += [f"    {s['file']}: {s['reason']}" for s in m["skipped"]]
    lines.append(f"  fingerprint: {m['fingerprint'][:16]}")
    return "\n".join(lines)


def iter_class_examples(dataset: Dataset, per_class: int = 6) -> Iterator[tuple[str, list[Path]]]:
    for cls in dataset.classes:
        paths = [dataset.root / it["path"] for it in dataset.items if it["class"] == cls][:per_class]
        yield cls, paths
