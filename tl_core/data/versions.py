"""Dataset versions: fixes to a dataset's labels (move an image to another class, exclude it) saved as a
new version, with every earlier version kept readable.

A dataset folder's ``dataset.json`` is its latest version; ``versions/vN.json`` holds each saved version's
manifest. Saves take the dataset's lock (``datasets.dataset_lock``): two users saving at the same moment get
consecutive versions, the second applied on top of the first, and no version file is ever overwritten. Image files are never moved or deleted by a fix (an excluded image just leaves the item list), so
a run trained on an older version stays reproducible (``load_dataset("name@vN")``), and the feature cache,
keyed by image content, serves the new version without recomputing anything.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

from tl_core import audit
from tl_core.clock import now_iso
from tl_core.data.datasets import (
    MANIFEST,
    VERSIONS,
    Dataset,
    check_splits,
    dataset_lock,
    load_dataset,
    manifest_for,
)
from tl_core.data.refs import DatasetRef, parse_ref
from tl_core.errors import TLError
from tl_core.workspace import read_json, safe_name, write_json


def list_versions(dataset: Dataset) -> list[dict]:
    """Every version, oldest first: number, date, image count, what changed, who saved it."""
    folder = dataset.root / VERSIONS
    saved = {int(p.stem[1:]): p for p in folder.glob("v*.json") if p.stem[1:].isdigit()} if folder.is_dir() else {}
    rows = []
    for number in sorted(set(saved) | {dataset.version}):
        manifest = dataset.manifest if number == dataset.version else read_json(saved[number], {})
        rows.append(
            {
                "version": number,
                "created": manifest.get("created"),
                "images": manifest.get("num_images"),
                "classes": len(manifest.get("classes", [])),
                "note": manifest.get("note", "imported"),
                "user": manifest.get("saved_by") or manifest.get("user") or "anonymous",
                "fingerprint": manifest.get("fingerprint", "")[:12],
            }
        )
    return rows


def save_version(
    name: str,
    moves: Optional[Mapping[str, str]] = None,
    exclude=(),
    note: str = "",
    user: Optional[str] = None,
    added: Sequence[NewImage] = (),
    conflicts: Optional[Mapping[str, Optional[str]]] = None,
) -> Dataset:
    """A new latest version of dataset ``name`` with images moved to other classes (``moves``: path -> class),
    images left out (``exclude``: paths) and new images added to the training split (``added``, for example
    from the dataset's inbox). The current version stays readable as ``name@vN``.

    ``conflicts`` settles label conflicts (an image the import found under two classes and kept out of both,
    ``manifest["label_conflicts"]``): content hash -> the class it belongs to (it joins that class, in the split
    its first file came from) or None (it stays out for good). Settled conflicts leave the new version's list.

    The fix is applied to the latest version as of the save, under the dataset's lock: when someone else saved
    since the caller looked, this one becomes the next version on top of theirs (its number says which), or is
    refused with a TLError when it names images their version no longer has. Nothing saved is overwritten."""
    moves, exclude, conflicts = dict(moves or {}), set(exclude), dict(conflicts or {})
    if not moves and not exclude and not added and not conflicts:
        raise TLError("Nothing to save: move, exclude or add at least one image, or settle a label conflict, first.")
    with dataset_lock(load_dataset(parse_ref(name).name).name):
        return save_locked(name, moves, exclude, note, user, added, conflicts)


def _settled(current: Dataset, conflicts: dict) -> tuple[list[dict], list[dict]]:
    """(items the settled conflicts add, the label conflicts still open)."""
    open_rows = current.manifest.get("label_conflicts", [])
    by_hash = {row["sha256"]: row for row in open_rows}
    unknown = sorted(set(conflicts) - set(by_hash))
    if unknown:
        raise TLError(
            f"No open label conflict for image(s) {[h[:12] for h in unknown]} in dataset {current.name!r} "
            f"(version {current.version}). Reload the page: they may have been settled since."
        )
    added = []
    for digest, cls in conflicts.items():
        if cls is None:
            continue
        row = by_hash[digest]
        if cls not in current.classes:
            raise TLError(f"Unknown class {cls!r} for dataset {current.name!r}; choose one of {current.classes}.")
        if not row.get("path") or not (current.root / row["path"]).is_file():
            raise TLError(
                f"The image {' = '.join(row['files'])} was not kept by its import (an older import); put it "
                "in the one folder where it belongs and import the dataset again."
            )
        added.append({k: row[k] for k in ("path", "split", "sha256", "width", "height")} | {"class": cls})
    return added, [row for row in open_rows if row["sha256"] not in conflicts]


@dataclass(frozen=True)
class NewImage:
    """An image joining a dataset in a new version: the file to copy in, its class and what the manifest keeps."""

    source: Path
    label: str
    sha256: str
    width: int
    height: int
    name: str  # the file name people know it by: its stem names the copy in images/train/<class>/ (made unique)


def _place(current: Dataset, added: Sequence[NewImage]) -> list[dict]:
    """Manifest items for the images not already in the dataset (by content), each at a free path under
    ``images/train/<class>/``."""
    bad = sorted({image.label for image in added if image.label not in current.classes})
    if bad:
        raise TLError(
            f"Unknown class(es) {bad} for dataset {current.name!r}; label images with one of {current.classes}."
        )
    have = {item["sha256"] for item in current.items}
    taken = {item["path"].lower() for item in current.items}
    items = []
    for image in added:
        if image.sha256 in have:
            continue
        have.add(image.sha256)
        try:  # the name people gave the file, made safe; its format's extension, from the stored copy
            stem = safe_name(PurePosixPath(image.name.replace("\\", "/")).stem, "file name")[:80]
        except TLError:
            stem = f"image-{image.sha256[:12]}"
        suffix = Path(image.source).suffix.lower()
        path = f"images/train/{image.label}/{stem}{suffix}"
        if path.lower() in taken or (current.root / path).exists():
            path = f"images/train/{image.label}/{stem}-{image.sha256[:8]}{suffix}"
        taken.add(path.lower())
        items.append(
            {
                "path": path,
                "class": image.label,
                "split": "train",
                "sha256": image.sha256,
                "width": image.width,
                "height": image.height,
                "copy_from": image.source,
            }
        )
    return items


def save_locked(
    name: str,
    moves: dict,
    exclude: set,
    note: str,
    user: Optional[str],
    added: Sequence[NewImage] = (),
    conflicts: Optional[dict] = None,
) -> Dataset:
    """``save_version`` for a caller already holding the dataset's lock (``datasets.dataset_lock``)."""
    conflicts = dict(conflicts or {})
    current = load_dataset(name)
    settled, still_open = _settled(current, conflicts)
    known = {item["path"] for item in current.items}
    unknown = sorted((set(moves) | exclude) - known)
    if unknown:
        raise TLError(
            f"These files are not in dataset {name!r} (version {current.version}): {unknown[:5]}. "
            "Reload the page: the dataset may have changed since."
        )
    bad = sorted({cls for cls in moves.values() if cls not in current.classes})
    if bad:
        raise TLError(f"Unknown class(es) {bad} for dataset {name!r}; move images to one of {current.classes}.")
    new_items = _place(current, added)
    if added and not new_items and not moves and not exclude:
        raise TLError(f"Nothing to save: every image given is already in dataset {name!r} (by content).")
    items = (
        [
            {**item, "class": moves.get(item["path"], item["class"])}
            for item in current.items
            if item["path"] not in exclude
        ]
        + settled
        + [{k: v for k, v in item.items() if k != "copy_from"} for item in new_items]
    )
    classes = [cls for cls in current.classes if any(item["class"] == cls for item in items)]
    if len(classes) < 2:
        raise TLError(f"After these changes only {classes} would be left; a classifier needs two classes.")
    check_splits(items, classes)
    old = current.manifest
    rule = old.get("split_rule") or {}
    manifest = manifest_for(
        name,
        old.get("source"),
        items,
        classes,
        old.get("skipped", []),
        old.get("predefined_split"),
        rule.get("val_fraction", 0.2),
        rule.get("seed", 42),
        still_open,
    )
    folder = current.root / VERSIONS
    folder.mkdir(exist_ok=True)
    saved = [int(p.stem[1:]) for p in folder.glob("v*.json") if p.stem[1:].isdigit()]
    # past every version file, also one a save cut short (by a crash) left without updating dataset.json
    number = max([current.version, *saved]) + 1
    manifest.update(
        version=number,
        parent=current.version,
        note=note or _note(moves, exclude, new_items if added else None, conflicts),
        saved_by=user,
        changes={
            "moved": moves,
            "excluded": sorted(exclude),
            **({"added": {item["path"]: item["class"] for item in new_items}} if added else {}),
            **({"conflicts": conflicts} if conflicts else {}),
        },
        created=now_iso(),
    )
    copied = []
    try:
        for item in new_items:  # the images first: a version never lists a file that is not there
            target = current.root / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item["copy_from"], target)
            copied.append(target)
        if not (folder / f"v{current.version}.json").exists():  # the imported version, kept before it is replaced
            write_json(folder / f"v{current.version}.json", {**old, "version": current.version})
        write_json(folder / f"v{number}.json", manifest)
        write_json(current.root / MANIFEST, manifest)
    except OSError as exc:
        (folder / f"v{number}.json").unlink(missing_ok=True)  # not saved: no half of it left to list
        for target in copied:
            target.unlink(missing_ok=True)
        raise TLError(
            f"Could not save version {number} of dataset {name!r} ({exc.strerror or exc}); free disk space or fix "
            f"the folder's permissions and save again. Version {current.version} is unchanged."
        ) from None
    audit.record(
        "save dataset version",
        str(DatasetRef(current.name, number)),
        user,
        moved=len(moves),
        excluded=len(exclude),
        **({"added": len(new_items)} if added else {}),
        **({"conflicts_settled": len(conflicts)} if conflicts else {}),
    )
    return Dataset(current.name, current.root, manifest)


def _note(moves: dict, exclude: set, new_items: Optional[list], conflicts: dict) -> str:
    note = f"{len(moves)} moved, {len(exclude)} excluded"
    if new_items is not None:
        note += f", {len(new_items)} added"
    if conflicts:
        given = sum(cls is not None for cls in conflicts.values())
        note += f", {given} label conflict(s) given a class, {len(conflicts) - given} left out"
    return note
