"""What a dataset's manifest says, shaped for reading: the headline counts and a one-line description.

Reads only the manifest (``Dataset.manifest``): nothing here opens an image.
"""

from __future__ import annotations


def overview(manifest: dict) -> dict:
    """The headline numbers: images, classes, splits (``split_names`` ``"train / val"`` and ``splits``
    ``"3472 / 839"``, short enough for a metric tile, splits sorted by name) and skipped files."""
    splits = sorted(manifest["split_counts"].items())
    return {
        "images": manifest["num_images"],
        "classes": len(manifest["classes"]),
        "split_names": " / ".join(split for split, _ in splits),
        "splits": " / ".join(str(count) for _, count in splits),
        "skipped": len(manifest["skipped"]),
    }


def describe(manifest: dict) -> str:
    """One sentence each on the image sizes, the source, and how the split was made."""
    width, height = manifest["image_size"]["width"], manifest["image_size"]["height"]
    split = (
        "Split folders kept."
        if manifest["predefined_split"]
        else f"Stratified split, seed {manifest['split_rule']['seed']}."
    )
    return (
        f"Image sizes: width {width['min']}–{width['max']} (median {width['median']}), "
        f"height {height['min']}–{height['max']} (median {height['median']}). "
        f"Source: {manifest['source']}. {split}"
    )


def import_summary(name: str, manifest: dict) -> str:
    """The sentence that reports a finished import."""
    return (
        f"Imported {name!r}: {manifest['num_images']} images in {len(manifest['classes'])} classes; "
        f"{len(manifest['skipped'])} file(s) skipped."
    )
