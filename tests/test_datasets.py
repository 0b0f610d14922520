import io
import json
import zipfile

import pytest
from PIL import Image, ImageDraw

from tl_core.data import datasets
from tl_core.data.images import DEFAULT_MIN_COLORS
from tl_core.errors import TLError

from .factories import HYMENOPTERA, make_class_folders, noisy_image, require_shared, zip_folder


def test_zip_with_top_folder_imports_classes_and_splits_stratified(tmp_path, color_folder):
    archive = zip_folder(color_folder, tmp_path / "colors.zip", prefix="my_colors/")
    ds = datasets.add_zip(archive, "colors")
    assert ds.classes == ["blue", "red"]
    m = ds.manifest
    assert m["num_images"] == 12 and not m["predefined_split"]
    # 20% of 6 per class -> 1 validation image per class, stratified
    assert m["class_counts"] == {"blue": {"train": 5, "val": 1}, "red": {"train": 5, "val": 1}}
    for item in ds.items:
        assert (ds.root / item["path"]).is_file()
    assert len(m["fingerprint"]) == 64


def test_split_is_reproducible_and_independent_of_upload_order(tmp_path, color_folder):
    items = [(p.parent.name, p.name, p.read_bytes()) for p in sorted(color_folder.rglob("*.png"))]
    a = datasets.add_items(items, "a")
    b = datasets.add_items(list(reversed(items)), "b")
    split = lambda ds: sorted((it["sha256"], it["split"]) for it in ds.items)
    assert split(a) == split(b)
    assert a.fingerprint == b.fingerprint


def test_split_folders_are_respected(tmp_path):
    src = tmp_path / "src"
    make_class_folders(src, per_class=4, split="train")
    make_class_folders(src, per_class=2, split="validation", seed=1000)
    ds = datasets.add_folder(src, "splitted")
    assert ds.manifest["predefined_split"]
    assert ds.manifest["split_counts"] == {"train": 8, "val": 4}
    assert ds.validation_split == "val"


def test_corrupt_and_non_image_files_are_reported_not_counted(tmp_path, color_folder):
    (color_folder / "red" / "notes.txt").write_text("hello")
    (color_folder / "red" / "empty.jpg").write_bytes(b"")
    good = noisy_image((200, 40, 40), seed=99, fmt="JPEG")
    (color_folder / "blue" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (color_folder / "blue" / "liar.jpg").write_bytes(noisy_image((40, 40, 200), seed=77, fmt="PNG"))
    (color_folder / "red" / "copy.png").write_bytes((color_folder / "red" / "red_0.png").read_bytes())
    ds = datasets.add_folder(color_folder, "checked")
    reasons = {s["file"].split("/")[-1]: s["reason"] for s in ds.manifest["skipped"]}
    assert "not an image" in reasons["notes.txt"]
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"] or "corrupt" in reasons["truncated.jpg"]
    duplicate = reasons.get("copy.png") or reasons.get("red_0.png")
    assert duplicate and "duplicate" in duplicate
    assert ds.manifest["num_images"] == 13  # 12 good + the PNG whose extension lied
    liar = [it for it in ds.items if it["path"].endswith("liar.png")]
    assert liar, "a file whose extension lies is stored under its real format"


def test_real_placeholder_gif_is_kept_and_flagged_low_detail():
    ants = require_shared(HYMENOPTERA / "train" / "ants")
    items = [("ants", p.name, p.read_bytes()) for p in sorted(ants.iterdir())[:5]]
    items.append(("ants", "imageNotFound.gif", (ants / "imageNotFound.gif").read_bytes()))
    items += [("bees", p.name, p.read_bytes()) for p in sorted((ants.parent / "bees").iterdir())[:5]]
    ds = datasets.add_items(items, "hym_small")
    assert ds.manifest["num_images"] == 11 and ds.manifest["skipped"] == []
    flagged = [it["path"] for it in ds.items if it.get("low_detail")]
    assert len(flagged) == 1 and "imageNotFound" in flagged[0] and ds.manifest["low_detail"] == flagged
    assert "low-detail (kept, flagged" in datasets.format_report(ds)

    # drawings are datasets too: a set of few-colour images imports whole instead of "no usable images"
    def sketch(seed):
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).line([(seed % 50, 5), (60, seed % 60)], fill="black", width=3)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    drawings = datasets.add_items(
        [
            (cls, f"{cls}{i}.png", sketch(i * 7 + (0 if cls == "cat" else 3)))
            for cls in ("cat", "dog")
            for i in range(6)
        ],
        "sketches",
    )
    assert drawings.manifest["num_images"] == 12 and len(drawings.manifest["low_detail"]) == 12
    with pytest.raises(TLError, match="No usable images"):  # what the old default did to such a set
        datasets.add_items(
            [
                (cls, f"{cls}{i}.png", sketch(i * 7 + (0 if cls == "cat" else 3)))
                for cls in ("cat", "dog")
                for i in range(6)
            ],
            "strict",
            min_colors=DEFAULT_MIN_COLORS,
        )


def test_error_no_images(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "x.txt").write_text("no")
    with pytest.raises(TLError, match="No usable images"):
        datasets.add_folder(tmp_path / "empty", "empty")


def test_error_single_class(tmp_path):
    make_class_folders(tmp_path / "one", classes=("red",))
    with pytest.raises(TLError, match="Only one class"):
        datasets.add_folder(tmp_path / "one", "one")


def test_error_class_with_one_image(tmp_path):
    src = make_class_folders(tmp_path / "src", per_class=3)
    for extra in list((src / "blue").iterdir())[1:]:
        extra.unlink()
    with pytest.raises(TLError, match="at least 2 images.*blue"):
        datasets.add_folder(src, "tiny")


def test_error_unknown_dataset_name():
    with pytest.raises(TLError, match="Unknown dataset 'nope'"):
        datasets.load_dataset("nope")


def test_failed_import_leaves_nothing_and_clash_keeps_existing(tmp_path, color_folder, workspace):
    first = datasets.add_folder(color_folder, "colors")
    with pytest.raises(TLError, match="already exists"):
        datasets.add_folder(color_folder, "colors")
    assert datasets.load_dataset("colors").fingerprint == first.fingerprint
    make_class_folders(tmp_path / "one", classes=("red",))
    with pytest.raises(TLError):
        datasets.add_folder(tmp_path / "one", "bad")
    leftovers = [p.name for p in (workspace / "datasets").iterdir()]
    assert leftovers == ["colors"]


def test_zip_slip_and_not_a_zip(tmp_path, workspace):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            z.writestr(f"red/r{i}.png", noisy_image((200, 40, 40), seed=i))
            z.writestr(f"blue/b{i}.png", noisy_image((40, 40, 200), seed=50 + i))
        z.writestr("../../escaped.png", noisy_image((1, 2, 3), seed=9))
        z.writestr("red/inner.zip", b"PK\x03\x04")
    ds = datasets.add_zip(archive, "evil")
    reasons = " | ".join(s["reason"] for s in ds.manifest["skipped"])
    assert "unsafe path" in reasons and "nested archive" in reasons
    assert not (tmp_path / "escaped.png").exists() and not (workspace.parent / "escaped.png").exists()
    bogus = tmp_path / "bogus.zip"
    bogus.write_text("not a zip")
    with pytest.raises(TLError, match="not a readable zip"):
        datasets.add_zip(bogus, "bogus")


def test_folder_import_outside_allowed_roots_is_refused(tmp_path, color_folder):
    with pytest.raises(TLError, match="outside the allowed import roots"):
        datasets.add_folder(color_folder, "x", allowed_roots=[tmp_path / "elsewhere"])


def test_resolve_dataset_reuses_identical_import(color_folder):
    a = datasets.resolve_dataset(str(color_folder))
    b = datasets.resolve_dataset(str(color_folder))
    assert a.name == b.name == "colors_src"
    assert len(datasets.list_datasets()) == 1


def test_rename_and_delete(color_folder):
    datasets.add_folder(color_folder, "colors")
    renamed = datasets.rename_dataset("colors", "hues")
    assert renamed.name == "hues" and json.loads((renamed.root / "dataset.json").read_text())["name"] == "hues"
    datasets.delete_dataset("hues")
    assert datasets.list_datasets() == []


def test_unicode_and_slash_names_are_made_safe(color_folder):
    ds = datasets.add_folder(color_folder, "../fleurs/été")
    assert "/" not in ds.name and ds.name.endswith("été")
    assert ds.root.parent.name == "datasets"
