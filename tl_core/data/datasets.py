"""Datasets: importing class-per-folder images into the workspace, and reading them back.

A dataset lives in ``$TL_HOME/datasets/<name>/``: its images under ``images/<split>/<class>/`` and a
manifest, ``dataset.json``, with every image's class, split and content hash, the class counts, an
image-size summary, the files that were skipped and why, and a content fingerprint. Imports are
built in a temporary folder and renamed into place, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import statistics
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np

from tl_core import audit
from tl_core.clock import now_iso
from tl_core.data.archives import ZipLimits
from tl_core.data.images import EXTENSIONS, ImageRejected, inspect_bytes, thumbnail_jpeg
from tl_core.data.refs import DatasetRef, parse_ref
from tl_core.data.sources import (
    Candidate,
    Content,
    candidates_from_folder,
    candidates_from_items,
    candidates_from_uploaded_paths,
    candidates_from_zip,
)
from tl_core.device import cpu_cores
from tl_core.errors import TLError
from tl_core.workspace import atomic_write_bytes, datasets_dir, read_json, safe_name, write_json

MANIFEST = "dataset.json"
VERSIONS = "versions"  # versions/vN.json: every saved version's manifest (see versions.py)
THUMBNAIL_PX = 192  # twice the 96 px the Data page shows, for sharp thumbnails on high-density screens
Progress = Optional[Callable[[int, int], None]]

IMBALANCE_RATIO = 3.0  # largest class / smallest class from which a dataset counts as imbalanced


@dataclass
class Dataset:
    name: str
    root: Path
    _manifest: Optional[dict] = field(default=None, repr=False)
    pinned: bool = False  # loaded as name@vN: runs keep that version

    @property
    def manifest(self) -> dict:
        """Read when first needed: listing datasets parses no manifest (one can hold 20,000 items)."""
        if self._manifest is None:
            self._manifest = read_json(self.root / MANIFEST) or {}
        return self._manifest

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

    @property
    def version(self) -> int:
        return int(self.manifest.get("version", 1))

    @property
    def ref(self) -> str:
        """How a config names this dataset: its name, or name@vN when a version was asked for."""
        return str(DatasetRef(self.name, self.version if self.pinned else None))


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


class NoUsableImages(TLError):
    """An import found no image it could use; ``skipped`` says why each file was rejected (the report the
    message points to, for the page and the CLI to show)."""

    def __init__(self, message: str, skipped: list[dict]):
        super().__init__(message)
        self.skipped = skipped


def _validate(items: list[dict], classes: list[str], skipped: list[dict]) -> None:
    if not items:
        raise NoUsableImages(
            "No usable images found. Put images in one folder per class "
            f"(e.g. ants/1.jpg, bees/2.jpg). {len(skipped)} file(s) were skipped"
            + (": the report below says why." if skipped else "; the upload held no files."),
            skipped,
        )
    if len(classes) < 2:
        raise TLError(f"Only one class found ({classes[0]!r}). A classifier needs at least two class folders.")
    counts = {c: sum(1 for it in items if it["class"] == c) for c in classes}
    small = {c: n for c, n in counts.items() if n < 2}
    if small:
        raise TLError(
            f"Every class needs at least 2 images; these have fewer: {small}. Add images or remove the class."
        )


class _ClassNames:
    """Folder names for class names, refusing two classes that would share one folder."""

    def __init__(self):
        self.raw_by_folder: dict[str, str] = {}

    def folder_for(self, raw: str) -> str:
        try:
            folder = safe_name(raw, "class name")
        except TLError:
            raise TLError(
                f"Class folder {raw!r} has no letters or digits to name a class with. "
                "Rename the folder and import again."
            ) from None
        other = self.raw_by_folder.setdefault(folder, raw)
        if other != raw:
            raise TLError(
                f"Class folders {other!r} and {raw!r} would both become class {folder!r}. "
                "Rename one of them so the names differ in letters or digits, and import again."
            )
        return folder


def _file_stem(source: str, digest: str) -> str:
    """A safe stem from the file's own name, or from its content hash when the name has nothing usable."""
    try:
        return safe_name(PurePosixPath(source).stem, "file name")[:80]
    except TLError:
        return f"image-{digest[:12]}"


def check_splits(items: list[dict], classes: list[str]) -> None:
    """Every class can be trained: it has training images (and the dataset has validation images)."""
    by_class = {c: {it["split"] for it in items if it["class"] == c} for c in classes}
    no_train = sorted(c for c, splits in by_class.items() if "train" not in splits)
    if len(no_train) == len(classes):
        splits = sorted({it["split"] for it in items})
        raise TLError(
            f"No training images: every image is in the {' and '.join(repr(s + '/') for s in splits)} "
            "folder(s). Add a train/ folder, or put the class folders at the top so the importer "
            "splits them for you."
        )
    if no_train:
        raise TLError(
            f"Class(es) {no_train} have images only in the validation split, so they cannot be trained. "
            "Add their images under train/, or remove those class folders."
        )
    if not any(it["split"] in ("val", "test") for it in items):
        raise TLError(
            "No validation images: add a val/ folder, or leave out split folders so the importer "
            "holds back 20% of each class."
        )


def inspected(candidates: list[Candidate], min_colors: int):
    """(candidate, bytes, image info, None) or (candidate, None, None, why it is skipped), in order. Files are
    read and checked on one thread per core (Pillow decodes without holding the GIL), a window at a time."""

    def check(cand: Candidate):
        try:
            data = cand.read()
            return cand, data, inspect_bytes(data, min_colors=min_colors), None
        except ImageRejected as exc:
            return cand, None, None, str(exc)
        except OSError as exc:
            return cand, None, None, f"could not be read: {exc}"

    window = 64  # bounds the bytes held at once
    with ThreadPoolExecutor(cpu_cores()) as pool:
        for start in range(0, len(candidates), window):
            yield from pool.map(check, candidates[start : start + window])


def _check_split_rule(val_fraction, seed) -> None:
    """The split settings an import is given, checked before any file is read."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise TLError(
            f"Validation fraction must be a number between 0 and 1 (both excluded), such as 0.2; got {val_fraction!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise TLError(f"Seed must be a whole number from 0 to {2**32 - 1}; got {seed!r}.")


def build_dataset(
    name: str,
    candidates: list[Candidate],
    skipped: list[dict],
    *,
    source: str,
    val_fraction: float = 0.2,
    seed: int = 42,
    min_colors: int = 0,
    progress: Progress = None,
    replace: bool = False,
    user: Optional[str] = None,
) -> Dataset:
    """Write the usable candidates as dataset ``name``; ``user``, who imports it, is kept in its manifest."""
    _check_split_rule(val_fraction, seed)
    name = safe_name(name, "dataset name")
    final = datasets_dir() / name
    if final.exists() and not replace:
        raise TLError(f"A dataset named {name!r} already exists. Choose another name or delete that one first.")
    staging = datasets_dir() / f".staging-{name}-{uuid.uuid4().hex[:8]}"
    items, seen, used_names = [], {}, set()
    conflicts: dict[str, list[dict]] = {}  # content hash -> every file of it, when they are in different classes
    class_names = _ClassNames()
    try:
        for done, (cand, data, info, reason) in enumerate(inspected(candidates, min_colors), 1):
            if progress:
                progress(done, len(candidates))
            if reason:
                skipped.append({"file": cand.source, "reason": reason})
                continue
            digest = hashlib.sha256(data).hexdigest()
            class_name = class_names.folder_for(cand.class_name)
            if digest in seen:
                first_source, first_class = seen[digest]
                if first_class == class_name:
                    skipped.append({"file": cand.source, "reason": f"duplicate of {first_source}"})
                else:  # one photo, two labels: the user decides which is right
                    conflicts.setdefault(digest, [{"file": first_source, "class": first_class}])
                    conflicts[digest].append({"file": cand.source, "class": class_name})
                continue
            seen[digest] = (cand.source, class_name)
            incoming = staging / ".incoming" / digest
            incoming.parent.mkdir(parents=True, exist_ok=True)
            incoming.write_bytes(data)
            split = cand.split or "unsplit"
            stem = _file_stem(cand.source, digest)
            filename = stem + EXTENSIONS[info["format"]]
            key = (split, class_name, filename.lower())
            if key in used_names:
                filename = f"{stem}-{digest[:8]}{EXTENSIONS[info['format']]}"
                key = (split, class_name, filename.lower())
            used_names.add(key)
            items.append(
                {
                    "class": class_name,
                    "split": split,
                    "file": filename,
                    "sha256": digest,
                    "width": info["width"],
                    "height": info["height"],
                    "source": cand.source,
                    "low_detail": info["low_detail"],
                }
            )
        kept_out = {it["sha256"]: it for it in items if it["sha256"] in conflicts}
        items = [it for it in items if it["sha256"] not in conflicts]
        classes = sorted({it["class"] for it in items})
        try:
            _validate(items, classes, skipped)
        except TLError as exc:
            if conflicts:  # the conflicts may be why a class came up short: say so in the same message
                exc.args = (f"{exc} {_conflicts_sentence(_label_conflicts(conflicts, kept_out, False))}",)
            raise
        has_split = any(it["split"] != "unsplit" for it in items)
        if has_split:
            for it in items:
                if it["split"] == "unsplit":
                    it["split"] = "train"
            if not any(it["split"] in ("val", "test") for it in items):
                _stratified_split(items, val_fraction, seed)
        else:
            _stratified_split(items, val_fraction, seed)
        check_splits(items, classes)
        for it in items:
            it["path"] = f"images/{it['split']}/{it['class']}/{it['file']}"
            target = staging / it["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / ".incoming" / it["sha256"]).rename(target)
        label_conflicts = _label_conflicts(conflicts, kept_out, has_split)
        for row in label_conflicts:  # one copy of each, outside every class, so the user can assign it later
            target = staging / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / ".incoming" / row["sha256"]).rename(target)
        shutil.rmtree(staging / ".incoming", ignore_errors=True)
        manifest = manifest_for(name, source, items, classes, skipped, has_split, val_fraction, seed, label_conflicts)
        if user:
            manifest["user"] = user
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
        raise TLError(
            f"Could not write dataset {name!r} to the workspace {str(datasets_dir())!r}: "
            f"{exc.strerror or exc}. Free disk space or fix the folder's permissions; "
            "nothing was imported and existing datasets are unchanged."
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Dataset(name, final, manifest)


CONFLICTS = "conflicts"  # the dataset folder's copy of each image found under two classes


def _label_conflicts(conflicts: dict[str, list[dict]], kept_out: dict[str, dict], has_split: bool) -> list[dict]:
    """One entry per image found under two or more classes: its files and their classes, why it is out, and
    where its one copy is kept (``path``, with its ``split``, ``width``, ``height``), so that a saved version
    can give it the class the user chooses (``versions.save_version(..., conflicts=...)``)."""
    rows = []
    for digest, files in conflicts.items():
        first = kept_out[digest]
        classes = sorted({f["class"] for f in files})
        rows.append(
            {
                "sha256": digest,
                "classes": classes,
                "files": [f["file"] for f in files],
                "reason": (
                    f"the same image is in classes {' and '.join(map(repr, classes))}; it was kept out of "
                    "every class until you choose its class"
                ),
                "path": f"{CONFLICTS}/{digest[:16]}{PurePosixPath(first['file']).suffix}",
                "split": first["split"] if has_split and first["split"] in ("train", "val", "test") else "train",
                "width": first["width"],
                "height": first["height"],
            }
        )
    return rows


def _conflicts_sentence(label_conflicts: list[dict]) -> str:
    shown = "; ".join(f"{' = '.join(row['files'])} ({', '.join(row['classes'])})" for row in label_conflicts[:5])
    return (
        f"{len(label_conflicts)} image(s) were found in more than one class folder and kept out of every class: "
        f"{shown}{' …' if len(label_conflicts) > 5 else ''}. Keep each in the one folder where it belongs."
    )


def manifest_for(name, source, items, classes, skipped, has_split, val_fraction, seed, label_conflicts=()) -> dict:
    """``label_conflicts``: images found under several classes and kept out of all (``build_dataset``)."""
    counts = {c: {} for c in classes}
    split_counts: dict[str, int] = {}
    for it in items:
        counts[it["class"]][it["split"]] = counts[it["class"]].get(it["split"], 0) + 1
        split_counts[it["split"]] = split_counts.get(it["split"], 0) + 1
    fingerprint = hashlib.sha256(
        "\n".join(sorted(f"{it['split']}/{it['class']}/{it['sha256']}" for it in items)).encode()
    ).hexdigest()
    return {
        "name": name,
        "source": source,
        "created": now_iso(),
        "classes": classes,
        "class_counts": counts,
        "split_counts": split_counts,
        "num_images": len(items),
        "predefined_split": has_split,
        "split_rule": None if has_split else {"val_fraction": val_fraction, "seed": seed, "stratified": True},
        "image_size": {
            "width": _summary([it["width"] for it in items]),
            "height": _summary([it["height"] for it in items]),
        },
        "skipped": skipped,
        "label_conflicts": list(label_conflicts),
        "fingerprint": fingerprint,
        "low_detail": [it["path"] for it in items if it.get("low_detail")],
        "items": [
            {
                **{k: it[k] for k in ("path", "class", "split", "sha256", "width", "height")},
                **({"low_detail": True} if it.get("low_detail") else {}),
            }
            for it in items
        ],
    }


# ---------------------------------------------------------------- public API


def add_zip(
    path, name: Optional[str] = None, limits: ZipLimits = ZipLimits(), upload_name: Optional[str] = None, **kwargs
) -> Dataset:
    """A dataset from a zip on disk; ``upload_name``: the file name the user chose, when ``path`` is where
    an upload was staged (the manifest's source names what the user knows, not the staging file)."""
    path = Path(path)
    if not path.is_file():
        raise TLError(f"Zip file {str(path)!r} not found.")
    skipped: list[dict] = []
    candidates = candidates_from_zip(path, skipped, limits)
    shown = Path(upload_name).name if upload_name else path.name
    return build_dataset(name or path.stem, candidates, skipped, source=f"zip:{shown}", **kwargs)


def add_folder(path, name: Optional[str] = None, allowed_roots: Optional[list] = None, **kwargs) -> Dataset:
    path = Path(path).expanduser()
    if allowed_roots is not None:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(Path(root).expanduser().resolve()) for root in allowed_roots):
            raise TLError(
                f"Folder {str(path)!r} is outside the allowed import roots "
                f"{[str(r) for r in allowed_roots]}. Ask the admin to add it (TL_IMPORT_ROOTS)."
            )
    skipped: list[dict] = []
    candidates = candidates_from_folder(path, skipped)
    return build_dataset(name or path.resolve().name, candidates, skipped, source=f"folder:{path.resolve()}", **kwargs)


def add_items(items: Iterable[tuple[str, str, Content]], name: str, **kwargs) -> Dataset:
    return build_dataset(name, candidates_from_items(items), [], source="upload", **kwargs)


def add_uploaded_folder(files: Iterable[tuple[str, Content]], name: str, **kwargs) -> Dataset:
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
    """Every dataset, by name; manifests are read only when a caller looks at one."""
    return [
        Dataset(folder.name, folder)
        for folder in sorted(datasets_dir().iterdir())
        if not folder.name.startswith(".") and (folder / MANIFEST).is_file()
    ]


def load_dataset(name: str | DatasetRef, missing: str = "unknown") -> Dataset:
    """A dataset of this workspace by reference (``refs.py``): ``name`` at its latest version, ``name@vN`` at
    version N (see ``versions.py``). ``missing='deleted'`` words the error for a run whose dataset went away after
    it was queued."""
    ref = parse_ref(name)
    name = ref.name
    folder = datasets_dir() / name
    manifest = read_json(folder / MANIFEST) if not name.startswith(".") and "/" not in name else None
    if manifest and ref.version is not None and int(manifest.get("version", 1)) != ref.version:
        manifest = read_json(folder / VERSIONS / f"v{ref.version}.json")
        if not manifest:
            raise TLError(
                f"Dataset {name!r} has no version '{ref.version}'; its versions are listed on the Data page "
                f"(now at v{read_json(folder / MANIFEST, {}).get('version', 1)})."
            )
    if manifest and ref.version is not None:
        return Dataset(folder.name, folder, manifest, pinned=True)
    if not manifest:
        known = [d.name for d in list_datasets()]
        why = "dataset deleted after this run was queued" if missing == "deleted" else "no such dataset"
        raise TLError(
            f"Unknown dataset {name!r} ({why}). Known datasets: {known or 'none yet'}; add one with "
            "'python -m tl_core datasets add SOURCE --name NAME'."
        )
    return Dataset(folder.name, folder, manifest)


def _names_a_dataset(spec: str) -> bool:
    try:
        return (datasets_dir() / parse_ref(spec).name / MANIFEST).is_file()
    except TLError:
        return False  # not a reference, so maybe a file name


def source_signature(path: Path) -> str:
    """Cheap identity of a folder or zip on disk: every file's relative path, size and mtime."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat_result = file.stat()
        digest.update(
            f"{file.relative_to(path) if file != path else file.name}|{stat_result.st_size}|"
            f"{stat_result.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def resolve_dataset(spec: str, progress: Progress = None) -> Dataset:
    """A dataset by reference (``refs.py``), or a folder/zip imported on the fly (reusing an identical earlier
    import). A bare name of an existing dataset wins over a file of that name in the working directory."""
    path = Path(spec).expanduser()
    if not path.exists() or ("/" not in spec and _names_a_dataset(spec)):
        return load_dataset(spec)  # raises for a malformed reference or an unknown dataset
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


@contextlib.contextmanager
def dataset_lock(name: str):
    """Held while a dataset's files change (a version saved, the dataset deleted): two processes doing so at once
    take turns, so neither overwrites what the other wrote. The lock file lives outside the dataset's folder,
    under ``datasets/.locks/``, so deleting the folder leaves the lock in place for whoever waits on it."""
    folder = datasets_dir() / ".locks"
    folder.mkdir(exist_ok=True)
    with open(folder / f"{safe_name(name, 'dataset name')}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def delete_dataset(name: str, user: Optional[str] = None, active_runs: Sequence[str] = ()) -> None:
    """Delete a whole dataset, every version, images and manifests (runs trained on it keep their own files);
    audited. ``active_runs``: the queued or running runs that train on it (``runs.store.runs_using``); while
    there are any, deletion is refused and names them. A reference to one version (``name@vN``) is refused:
    versions are never deleted one by one (runs trained on them stay reproducible)."""
    ref = parse_ref(name)
    if ref.version is not None:
        raise TLError(
            f"{str(ref)!r} names one version of dataset {ref.name!r}; versions cannot be deleted one by one, so "
            f"nothing was deleted. To delete the whole dataset with all its versions, name it without "
            f"'@v{ref.version}': {ref.name!r}."
        )
    if active_runs:
        raise TLError(
            f"Dataset {ref.name!r} is used by {len(active_runs)} queued or running run(s): "
            f"{', '.join(map(str, active_runs))}. Wait for them to end or cancel them, then delete it; "
            "nothing was deleted."
        )
    with dataset_lock(load_dataset(ref.name).name):  # an unknown name is refused before any lock file is made
        dataset = load_dataset(ref.name)  # again: another process may have deleted it while this one waited
        audit.record("delete dataset", dataset.name, user, images=dataset.manifest["num_images"])
        trash = datasets_dir() / f".trash-{dataset.name}-{uuid.uuid4().hex[:8]}"
        dataset.root.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def rename_dataset(old: str, new: str, user: Optional[str] = None) -> Dataset:
    """Rename a dataset; audited."""
    dataset = load_dataset(old)
    new = safe_name(new, "dataset name")
    target = datasets_dir() / new
    if target.exists():
        raise TLError(f"A dataset named {new!r} already exists. Choose another name.")
    audit.record("rename dataset", dataset.name, user, to=new)
    dataset.root.rename(target)
    manifest = dict(dataset.manifest, name=new)
    write_json(target / MANIFEST, manifest)
    return Dataset(new, target, manifest)


def imbalance_warning(dataset: Dataset) -> Optional[str]:
    """A sentence about rare classes when the largest has at least IMBALANCE_RATIO times the smallest's images."""
    counts = {cls: dataset.manifest["class_counts"][cls].get("train", 0) for cls in dataset.classes}
    rare, common = min(counts, key=counts.get), max(counts, key=counts.get)
    if not counts[rare] or counts[common] / counts[rare] < IMBALANCE_RATIO:
        return None
    few = sorted(cls for cls, n in counts.items() if n * IMBALANCE_RATIO <= counts[common])
    return (
        f"Imbalanced classes: {common!r} has {counts[common]} training images, {rare!r} only {counts[rare]} "
        f"({counts[common] / counts[rare]:.0f}:1). Rare class(es) {few} will be weighted up in training "
        "(class weights, on by default); judge runs by balanced accuracy, and add images to them if you can."
    )


def format_report(dataset: Dataset) -> str:
    m = dataset.manifest
    split = "split folders kept" if m["predefined_split"] else f"stratified split, seed {m['split_rule']['seed']}"
    lines = [
        f"Dataset {dataset.name!r}: {m['num_images']} images, {len(m['classes'])} classes ({split})",
        "  splits: " + ", ".join(f"{k}={v}" for k, v in sorted(m["split_counts"].items())),
    ]
    for cls in m["classes"]:
        lines.append(f"  {cls}: " + ", ".join(f"{k}={v}" for k, v in sorted(m["class_counts"][cls].items())))
    w, h = m["image_size"]["width"], m["image_size"]["height"]
    lines.append(
        f"  image size: width {w['min']}-{w['max']} (median {w['median']}), "
        f"height {h['min']}-{h['max']} (median {h['median']})"
    )
    flagged = m.get("low_detail", [])
    if flagged:
        lines.append(
            f"  low-detail (kept, flagged; exclude them from a new version if they are not real examples): "
            f"{len(flagged)} file(s)"
        )
        lines += [f"    {path}" for path in flagged[:20]]
    lines.append(f"  skipped: {len(m['skipped'])} file(s)")
    lines += [f"    {s['file']}: {s['reason']}" for s in m["skipped"]]
    conflicts = m.get("label_conflicts", [])
    if conflicts:
        lines.append(f"  label conflicts: {len(conflicts)} image(s) in more than one class, kept out of every class")
        for row in conflicts:
            lines.append(f"    {' = '.join(row['files'])}: classes {', '.join(row['classes'])}")
    warning = imbalance_warning(dataset)
    if warning:
        lines.append(f"  warning: {warning}")
    lines.append(f"  fingerprint: {m['fingerprint'][:16]}")
    return "\n".join(lines)


def iter_class_examples(dataset: Dataset, per_class: int = 6) -> Iterator[tuple[str, list[Path]]]:
    """A few small thumbnails per class (made once, kept beside the images), not the full-size originals."""
    for cls in dataset.classes:
        items = [it for it in dataset.items if it["class"] == cls][:per_class]
        yield cls, [thumbnail(dataset, it) for it in items]


def thumbnail(dataset: Dataset, item: dict, size: int = THUMBNAIL_PX) -> Path:
    path = dataset.root / ".thumbnails" / f"{item['sha256']}-{size}.jpg"
    if not path.exists():
        atomic_write_bytes(path, thumbnail_jpeg(dataset.root / item["path"], (size, size)), durable=False)
    return path
