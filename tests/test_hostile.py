"""Hostile uploads: dozens of bad zips and images through the zip, upload and folder import paths.

Each case says whether the file must be imported or reported; the test asserts no crash, every bad
file reported with a reason, every good file imported, and nothing written outside the workspace.
"""

import io
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from tl_core.data import datasets
from tl_core.data.images import load_rgb
from tl_core.errors import TLError

from .factories import noisy_image

# The process's own peak memory. Not ru_maxrss: a child started from this (TensorFlow-sized) test process
# inherits its high-water mark through fork and exec; VmHWM starts afresh with the new program.
PEAK_RSS_MB = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb() -> bytes:
    """A few hundred bytes claiming 30000 x 30000 pixels."""
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def photo(seed: int, size=(48, 40), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    return image.convert(mode) if mode != "RGB" else image


def exif_rotated_jpeg(seed) -> bytes:
    image = photo(seed, (60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return encode(image, "JPEG", exif=exif.tobytes())


def animated_gif(seed) -> bytes:
    frames = [photo(seed + s, (40, 40)).convert("P", palette=Image.Palette.ADAPTIVE) for s in (1, 2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def sixteen_bit_png(seed) -> bytes:
    array = np.random.default_rng(seed).integers(0, 65535, (40, 40), dtype=np.uint16)
    return encode(Image.fromarray(array), "PNG")


def palette_with_transparency(seed) -> bytes:
    image = photo(seed, (40, 40)).convert("P", palette=Image.Palette.ADAPTIVE)
    return encode(image, "PNG", transparency=0)


GOOD_IMAGES = {
    "plain.jpg": lambda s: encode(photo(s), "JPEG"),
    "plain.png": lambda s: encode(photo(s + 1), "PNG"),
    "lying_extension.jpg": lambda s: encode(photo(s + 2), "PNG"),
    "cmyk.jpg": lambda s: encode(photo(s + 3, mode="CMYK"), "JPEG"),
    "gray.png": lambda s: encode(photo(s + 4, mode="L"), "PNG"),
    "rgba.png": lambda s: encode(photo(s + 5, mode="RGBA"), "PNG"),
    "palette_transparent.png": lambda s: palette_with_transparency(s + 6),
    "sixteen_bit.png": lambda s: sixteen_bit_png(s + 7),
    "animated.gif": lambda s: animated_gif(s + 8),
    "exif_rotated.jpg": lambda s: exif_rotated_jpeg(s + 10),
    "bitmap.bmp": lambda s: encode(photo(s + 11), "BMP"),
    "web.webp": lambda s: encode(photo(s + 12), "WEBP"),
    "placeholder.png": lambda s: encode(Image.new("RGB", (64, 64), (200, 200, s % 251)), "PNG"),  # kept, flagged
    "scan.tif": lambda s: encode(photo(s + 13), "TIFF"),
}
BAD_IMAGES = {
    "truncated.jpg": (lambda s: encode(photo(s + 20), "JPEG")[:300], "corrupt or truncated"),
    "truncated.png": (lambda s: encode(photo(s + 21), "PNG")[:120], "corrupt or truncated"),
    "garbage.jpg": (lambda s: b"\xff\xd8\xff\xe0" + os.urandom(500), "corrupt or truncated|not an image"),
    "text.png": (lambda s: b"just some text pretending", "not an image"),
    "empty.jpg": (lambda s: b"", "empty file"),
    "bomb.png": (lambda s: png_bomb(), "decompression bomb"),
    "tiny.png": (lambda s: encode(photo(s + 22, (4, 4)), "PNG"), "too small"),
    "vector.svg": (lambda s: b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not an image"),
    "duplicate.jpg": (None, "duplicate of"),
}


def image_items(cls: str):
    """(class, name, bytes, expected): expected None for files that must import, else the reason pattern."""
    seed = 0 if cls == "ants" else 1000
    items = [(cls, name, make(seed), None) for name, make in GOOD_IMAGES.items()]
    for name, (make, reason) in BAD_IMAGES.items():
        data = items[0][2] if make is None else make(seed)
        items.append((cls, name, data, reason))
    return items


def check(dataset, cases, prefix=""):
    reported = {s["file"].split("/")[-1]: s["reason"] for s in dataset.manifest["skipped"]}
    stored = {it["path"].split("/")[-1].rsplit(".", 1)[0] for it in dataset.items}
    for _cls, name, _, expected in cases:
        stem = name.rsplit(".", 1)[0]
        if expected is None:
            assert stem in stored, f"{name} should have been imported"
        else:
            import re

            assert name in reported, f"{name} should have been reported"
            assert re.search(expected, reported[name]), f"{name}: {reported[name]!r} !~ {expected!r}"
    return len(cases)


def test_hostile_images_through_upload_path(capsys):
    cases = image_items("ants") + image_items("bees")
    dataset = datasets.add_items([(c, n, d) for c, n, d, _ in cases], "upload_fuzz")
    check(dataset, [c for c in cases if c[0] == "ants"])
    # EXIF-rotated photos are stored as uploaded but read upright: 60x40 with orientation 6 -> 40x60
    rotated = next(it for it in dataset.items if it["path"].endswith("exif_rotated.jpg"))
    assert load_rgb(dataset.root / rotated["path"]).size == (40, 60)
    assert (rotated["width"], rotated["height"]) == (40, 60)
    with capsys.disabled():
        print(f"\nhostile image cases tried through the upload path: {len(cases)}")


def hostile_zip(path, workspace_marker):
    good = image_items("ants")[:3] + image_items("bees")[:3]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for cls, name, data, _ in good:
            archive.writestr(f"top/{cls}/{name}", data)
        archive.writestr("../../escape.png", noisy_image((1, 2, 3), seed=1))
        archive.writestr("/abs/escape.png", noisy_image((1, 2, 3), seed=2))
        archive.writestr(f"top/ants/..//../{workspace_marker}", noisy_image((1, 2, 3), seed=3))
        link = zipfile.ZipInfo("top/ants/link.png")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("top/bees/secret.png", noisy_image((5, 5, 5), seed=4))
        archive.writestr("top/bees/inner.zip", b"PK\x05\x06" + b"\0" * 18)
        archive.writestr("top/bees/zeros.png", b"\0" * (20 * 1024 * 1024))
        archive.writestr("top/readme.txt", "not in a class folder")
        archive.writestr("__MACOSX/top/ants/._plain.jpg", b"resource fork")
        archive.writestr("top/ants/.DS_Store", b"junk")
    mark_encrypted(path, "top/bees/secret.png")
    return good


def mark_encrypted(path, name: str) -> None:
    """Set the 'encrypted' flag of one entry in the central directory (zipfile cannot write encrypted)."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) != -1:
        name_len = struct.unpack("<H", data[start + 28 : start + 30])[0]
        if data[start + 46 : start + 46 + name_len].decode() == name:
            data[start + 8] |= 0x1
        start += 4
    path.write_bytes(bytes(data))


def test_hostile_zip_reports_every_bad_entry_and_writes_nothing_outside(tmp_path, workspace, capsys):
    before = {p for p in tmp_path.parent.rglob("*") if workspace not in p.parents and p != workspace}
    archive = tmp_path / "hostile.zip"
    good = hostile_zip(archive, "escaped_marker.png")
    dataset = datasets.add_zip(archive, "zip_fuzz")
    reasons = {s["file"]: s["reason"] for s in dataset.manifest["skipped"]}
    expect = {
        "../../escape.png": "unsafe path",
        "/abs/escape.png": "unsafe path",
        "top/ants/..//../escaped_marker.png": "unsafe path",
        "top/ants/link.png": "symbolic link",
        "top/bees/secret.png": "encrypted",
        "top/bees/inner.zip": "nested archive",
        "top/bees/zeros.png": "compression ratio",
        "top/readme.txt": "not inside a class folder",
    }
    for name, reason in expect.items():
        assert reason in reasons.get(name, ""), (name, reasons.get(name))
    assert dataset.manifest["num_images"] == len(good)
    after = {p for p in tmp_path.parent.rglob("*") if workspace not in p.parents and p != workspace}
    assert after - before == {archive}, after - before
    assert not list(tmp_path.parent.parent.glob("escape*.png"))
    with capsys.disabled():
        print(f"hostile zip entries tried: {len(expect) + len(good) + 2}")


@pytest.mark.parametrize(
    "limits, message",
    [
        (datasets.ZipLimits(max_total_bytes=10_000), "zip bomb guard"),
        (datasets.ZipLimits(max_files=3), "the limit is 3"),
    ],
)
def test_zip_caps_refuse_with_a_clear_message_and_leave_nothing(tmp_path, workspace, limits, message):
    archive = tmp_path / "big.zip"
    hostile_zip(archive, "m.png")
    with pytest.raises(TLError, match=message):
        datasets.add_zip(archive, "capped", limits=limits)
    folder = workspace / "datasets"
    assert not folder.exists() or [p.name for p in folder.iterdir()] == []


def test_thousands_of_tiny_files_are_reported_quickly(tmp_path):
    items = [("a" if i % 2 else "b", f"t{i}.png", encode(photo(i, (3, 3)), "PNG")) for i in range(2000)]
    items += [
        ("a", "ok1.png", noisy_image((200, 0, 0), seed=1)),
        ("a", "ok2.png", noisy_image((200, 0, 0), seed=2)),
        ("b", "ok3.png", noisy_image((0, 0, 200), seed=3)),
        ("b", "ok4.png", noisy_image((0, 0, 200), seed=4)),
    ]
    dataset = datasets.add_items(items, "tiny_files")
    assert dataset.manifest["num_images"] == 4 and len(dataset.manifest["skipped"]) == 2000


def test_folder_import_does_not_follow_symlinks_out_of_the_folder(tmp_path):
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(2):
            (src / cls / f"{i}.png").write_bytes(noisy_image((9, 99, 199), seed=10 * ord(cls) + i))
    outside = tmp_path / "outside.png"
    outside.write_bytes(noisy_image((1, 1, 1), seed=5))
    (src / "a" / "sneaky.png").symlink_to(outside)
    dataset = datasets.add_folder(src, "linked", allowed_roots=[src])
    assert any("outside the folder" in s["reason"] for s in dataset.manifest["skipped"])
    assert dataset.manifest["num_images"] == 4
    with pytest.raises(TLError, match="outside the allowed import roots"):
        datasets.add_folder(src / "a" / ".." / "..", "escape", allowed_roots=[src])


def test_folder_upload_paths_with_dot_dot_are_refused():
    files = [
        ("set/a/1.png", noisy_image((200, 0, 0), seed=1)),
        ("set/a/2.png", noisy_image((200, 0, 0), seed=2)),
        ("set/b/1.png", noisy_image((0, 0, 200), seed=3)),
        ("set/b/2.png", noisy_image((0, 0, 200), seed=4)),
        ("set/../../etc/x.png", noisy_image((0, 200, 0), seed=5)),
    ]
    dataset = datasets.add_uploaded_folder(files, "uploaded")
    assert dataset.classes == ["a", "b"]
    assert any("unsafe" in s["reason"] for s in dataset.manifest["skipped"])


def test_disk_full_during_import_gives_a_clear_error_and_leaves_nothing(tmp_path, workspace, monkeypatch):
    import errno
    from pathlib import Path

    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(3):
            (src / cls / f"{i}.png").write_bytes(noisy_image((9, 99, 199), seed=10 * ord(cls) + i))
    datasets.add_folder(src, "kept")
    real_write = Path.write_bytes
    calls = []

    def fill_disk(self, data):
        calls.append(self)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", fill_disk)
    with pytest.raises(TLError, match="No space left on device.*nothing was imported"):
        datasets.add_folder(src, "second")
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert [p.name for p in (workspace / "datasets").iterdir()] == ["kept"]
    assert datasets.load_dataset("kept").manifest["num_images"] == 6


# ---------------------------------------------------------------- one bad entry never sinks an import
def patch_entry(path, name: str, *, method: int | None = None, corrupt: bool = False) -> None:
    """Rewrite one stored entry in place: its compression method (local and central headers), or one data byte."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
    local = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[local + 26 : local + 30])
    if corrupt:
        data[local + 30 + name_len + extra_len + 5] ^= 0xFF
    if method is not None:
        data[local + 8 : local + 10] = struct.pack("<H", method)
        start = 0
        while (start := data.find(b"PK\x01\x02", start)) != -1:
            n = struct.unpack("<H", data[start + 28 : start + 30])[0]
            if data[start + 46 : start + 46 + n].decode() == name:
                data[start + 10 : start + 12] = struct.pack("<H", method)
            start += 4
    path.write_bytes(bytes(data))


def awkward_zip(path):
    """Good photos plus entries that used to abort a whole import."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for cls, seed in (("ants", 0), ("bees", 500)):
            for i in range(3):
                archive.writestr(f"set/{cls}/{i}.png", encode(photo(seed + i), "PNG"))
        archive.writestr("set/ants/😀.jpg", encode(photo(41), "JPEG"))
        archive.writestr("set/bees/!!!.png", encode(photo(42), "PNG"))
        archive.writestr("set/ants/bad_crc.png", encode(photo(43), "PNG"))
        archive.writestr("set/bees/ppmd.png", encode(photo(44), "PNG"))
    patch_entry(path, "set/ants/bad_crc.png", corrupt=True)
    patch_entry(path, "set/bees/ppmd.png", method=98)  # PPMd: zipfile cannot decompress it
    return path


def test_bad_crc_unsupported_compression_and_odd_names_are_reported_not_fatal(tmp_path):
    dataset = datasets.add_zip(awkward_zip(tmp_path / "awkward.zip"), "awkward")
    reasons = {s["file"]: s["reason"] for s in dataset.manifest["skipped"]}
    assert "corrupt zip entry" in reasons["set/ants/bad_crc.png"], reasons
    assert "compression method" in reasons["set/bees/ppmd.png"], reasons
    assert dataset.manifest["num_images"] == 8, reasons  # 6 photos + the two with unusable names
    names = sorted(it["path"].split("/")[-1] for it in dataset.items)
    assert sum(n.startswith("image-") for n in names) == 2, names  # named by content hash instead


def test_class_folders_that_would_merge_are_refused_naming_both(tmp_path):
    items = [
        ("cat?", "1.png", noisy_image((200, 0, 0), seed=1)),
        ("cat?", "2.png", noisy_image((200, 0, 0), seed=2)),
        ("cat!", "3.png", noisy_image((0, 0, 200), seed=3)),
        ("cat!", "4.png", noisy_image((0, 0, 200), seed=4)),
    ]
    with pytest.raises(TLError, match=r"'cat\?' and 'cat!' would both become class 'cat_'"):
        datasets.add_items(items, "merged")
    with pytest.raises(TLError, match=r"'\?\?\?' has no letters or digits"):
        datasets.add_items([("???", "1.png", noisy_image((0, 200, 0), seed=5))] + items[:2], "unnamed")
    assert datasets.list_datasets() == []


@pytest.mark.parametrize(
    "layout, message",
    [
        (
            {"train/a": 3, "train/b": 3, "val/a": 1, "val/b": 1, "val/c": 2},
            r"\['c'\] have images only in the validation",
        ),
        ({"test/a": 3, "test/b": 3}, r"No training images: every image is in the 'test/' folder"),
    ],
)
def test_splits_that_cannot_train_are_refused_at_import(tmp_path, layout, message):
    archive = tmp_path / "split.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for folder, count in layout.items():
            for i in range(count):
                z.writestr(f"{folder}/{i}.png", noisy_image((10 * i, 90, 160), seed=hash(folder) % 1000 + i))
    with pytest.raises(TLError, match=message):
        datasets.add_zip(archive, "unsplittable")
    assert datasets.list_datasets() == []


def test_an_oversized_entry_is_skipped_unread_and_memory_stays_bounded(tmp_path):
    """A ~2 MB zip whose one entry unpacks to 300 MiB (compressed ~137:1, under the ratio guard): the import
    skips it from its header, reads nothing of it, and the process's peak memory grows by far less than 300 MiB."""
    import subprocess
    import sys
    import textwrap

    from .factories import REPO

    archive = tmp_path / "inflating.zip"
    rng = np.random.default_rng(0)
    block = np.zeros(1 << 20, dtype=np.uint8)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for cls, seed in (("a", 0), ("b", 100)):
            for i in range(3):
                z.writestr(f"{cls}/{i}.png", encode(photo(seed + i), "PNG"))
        with z.open("a/huge.png", "w", force_zip64=True) as handle:
            for _ in range(300):
                block[::600] = rng.integers(0, 255, block[::600].shape, dtype=np.uint8)
                handle.write(block.tobytes())
    with zipfile.ZipFile(archive) as z:
        info = z.getinfo("a/huge.png")
    assert 100 < info.file_size / info.compress_size < 200, "under the ratio guard, like the reported bomb"
    code = PEAK_RSS_MB + textwrap.dedent(f"""
        import json
        from tl_core.data import datasets
        before = peak_rss_mb()
        ds = datasets.add_zip({str(archive)!r}, "inflating")
        print(json.dumps({{"growth_mb": peak_rss_mb() - before, "images": ds.manifest["num_images"],
                          "skipped": ds.manifest["skipped"]}}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["growth_mb"] < 100, result
    assert result["images"] == 6
    assert "over the 64 MiB limit for one image" in result["skipped"][0]["reason"]


def test_hostile_zip_through_the_command_line_gives_a_report_never_a_traceback(tmp_path, workspace):
    import subprocess
    import sys

    from .factories import REPO

    good = hostile_zip(tmp_path / "hostile.zip", "m.png")
    awkward = awkward_zip(tmp_path / "awkward.zip")
    env = {**os.environ, "TL_HOME": str(workspace)}
    for archive, name, images in ((tmp_path / "hostile.zip", "cli_hostile", len(good)), (awkward, "cli_awkward", 8)):
        out = subprocess.run(
            [sys.executable, "-m", "tl_core", "datasets", "add", str(archive), "--name", name],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert f"{images} images" in out.stdout and "skipped:" in out.stdout
    refused = tmp_path / "only_test.zip"
    with zipfile.ZipFile(refused, "w") as z:
        for cls in ("a", "b"):
            for i in range(2):
                z.writestr(f"test/{cls}/{i}.png", noisy_image((20, 120, 220), seed=ord(cls) * 10 + i))
    out = subprocess.run(
        [sys.executable, "-m", "tl_core", "datasets", "add", str(refused)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2 and "error: No training images" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- every case, through the CLI and the upload page
def everything_zip(path):
    """Every image case of both classes, the unsafe entries and the entries that used to abort an import,
    in one zip. Returns {entry name: expected reason pattern, or None for 'imported'}."""
    cases = {}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for cls in ("ants", "bees"):
            for _, name, data, expected in image_items(cls):
                archive.writestr(f"all/{cls}/{name}", data)
                cases[f"all/{cls}/{name}"] = expected
        unsafe = {
            "../../escape.png": "unsafe path",
            "/abs/escape.png": "unsafe path",
            "all/ants/..//../escaped.png": "unsafe path",
            "all/bees/inner.zip": "nested archive",
            "all/readme.txt": "not inside a class folder",
        }
        for name in unsafe:
            archive.writestr(name, noisy_image((1, 2, 3), seed=len(name)))
        cases.update(unsafe)
        link = zipfile.ZipInfo("all/ants/link.png")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
        cases["all/ants/link.png"] = "symbolic link"
        archive.writestr("all/ants/😀.jpg", encode(photo(141), "JPEG"))
        archive.writestr("all/bees/!!!.png", encode(photo(142), "PNG"))
        archive.writestr("all/ants/bad_crc.png", encode(photo(143), "PNG"))
        archive.writestr("all/bees/ppmd.png", encode(photo(144), "PNG"))
        archive.writestr("all/bees/secret.png", noisy_image((5, 5, 5), seed=4))
        cases.update(
            {
                "all/ants/😀.jpg": None,
                "all/bees/!!!.png": None,
                "all/ants/bad_crc.png": "corrupt zip entry",
                "all/bees/ppmd.png": "compression method",
                "all/bees/secret.png": "encrypted",
            }
        )
    patch_entry(path, "all/ants/bad_crc.png", corrupt=True)
    patch_entry(path, "all/bees/ppmd.png", method=98)
    mark_encrypted(path, "all/bees/secret.png")
    return cases


def check_everything(dataset, cases) -> None:
    import re

    reported = {s["file"]: s["reason"] for s in dataset.manifest["skipped"]}
    for name, expected in cases.items():
        if expected is None:
            assert name not in reported, f"{name} should have been imported: {reported.get(name)}"
        else:
            assert name in reported and re.search(expected, reported[name]), (name, reported.get(name), expected)
    assert dataset.manifest["num_images"] == sum(v is None for v in cases.values())


def files_outside(root, workspace):
    return {p for p in root.rglob("*") if workspace not in p.parents and p != workspace}


def test_every_hostile_case_through_the_command_line(tmp_path, workspace, capsys):
    import subprocess
    import sys

    from .factories import REPO

    archive = tmp_path / "everything.zip"
    cases = everything_zip(archive)
    before = files_outside(tmp_path.parent, workspace)
    code = (
        f"import sys\n{PEAK_RSS_MB}\nfrom tl_core.cli import main\ncode = main(sys.argv[1:])\n"
        "print('peak_rss_mb', peak_rss_mb())\nsys.exit(code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "datasets", "add", str(archive), "--name", "everything"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TL_HOME": str(workspace)},
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    check_everything(datasets.load_dataset("everything"), cases)
    assert files_outside(tmp_path.parent, workspace) - before == set()
    peak = float(out.stdout.split("peak_rss_mb")[-1])
    assert peak < 250, f"peak memory of the import {peak:.0f} MB"
    with capsys.disabled():
        print(f"\nhostile cases through the CLI: {len(cases)}, peak RSS {peak:.0f} MB")


@pytest.mark.slow
def test_every_hostile_case_through_the_upload_page(tmp_path, workspace, server_past_pages_folder_mode, capsys):
    from streamlit.testing.v1 import AppTest

    from .factories import REPO

    archive = tmp_path / "everything.zip"
    cases = everything_zip(archive)
    before = files_outside(tmp_path.parent, workspace)
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=300).run()
    at.switch_page("pages/data.py").run()
    at.get("file_uploader")[0].upload("everything.zip", archive.read_bytes(), "application/zip").run()
    at.text_input(key="data_zip_name").set_value("uploaded everything").run()
    at.button(key="data_zip_go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success and not at.error, [e.value for e in at.error]
    check_everything(datasets.load_dataset("uploaded everything"), cases)
    assert files_outside(tmp_path.parent, workspace) - before == set()
    with capsys.disabled():
        print(f"\nhostile cases through the upload page: {len(cases)}")
