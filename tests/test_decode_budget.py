"""Small files that decode to gigabytes: every decode path stays within a memory budget per image.

Each memory claim is measured as the peak RSS growth of a separate process (the CLI import, a real REST server
on 127.0.0.1, an explanation) from the moment its modules are loaded. The images are tiny on disk (a gradient
compresses to a few hundred kB) and huge in pixels, as in the issue.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data import images

from .factories import REPO, make_class_folders, small_config
from .test_hostile import PEAK_RSS_MB, encode, sixteen_bit_png


def gradient_png(path: Path, width: int, height: int, bits: int = 16, top: float = 0.9) -> Path:
    """A left-to-right gradient PNG (16-bit greyscale or 8-bit RGB) up to ``top`` of full scale: a few hundred
    kB for tens of megapixels."""
    ramp = np.linspace(0, top * (65535 if bits == 16 else 255), width, dtype=np.float32)
    if bits == 16:
        image = Image.fromarray(np.broadcast_to(ramp[None, :], (height, width)).astype(np.uint16))
    else:
        image = Image.fromarray(np.broadcast_to(ramp[None, :], (height, width)).astype(np.uint8)).convert("RGB")
    image.save(path, "PNG", compress_level=9)
    return path


def run_measured(body: str, env: dict | None = None, timeout: int = 300) -> dict:
    """Run ``body`` in a fresh Python (it defines ``result`` and may call ``mark()`` once its modules are
    loaded); returns ``result`` with ``growth_mb``: the peak RSS growth past the mark."""
    code = PEAK_RSS_MB + "import json\nbase = [None]\ndef mark():\n    base[0] = peak_rss_mb()\n"
    code += textwrap.dedent(body) + "\nresult['growth_mb'] = peak_rss_mb() - base[0]\nprint(json.dumps(result))\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- decoding itself
def test_sixteen_bit_images_scale_to_their_maximum_band_by_band(monkeypatch):
    """The band-wise conversion gives what a whole-image conversion gives: each value * 255 // maximum."""
    monkeypatch.setattr(images, "_BAND_PIXELS", 100)  # 2 rows per band: many band edges in a 40x40 image
    data = sixteen_bit_png(3)
    values = np.asarray(Image.open(io.BytesIO(data))).astype(np.int64)
    got = np.asarray(images.load_rgb(data))
    assert got.shape == (40, 40, 3)
    assert np.array_equal(got[..., 0], (values * 255 // values.max()).astype(np.uint8))


def test_large_non_jpeg_images_decode_reduced_and_look_like_full_decodes():
    """A PNG many times the model's input is reduced by a whole factor right after decoding (still at least
    twice the input), and the model's input is what a full-size decode gives."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    big = encode(Image.fromarray(small).resize((3000, 2000), Image.Resampling.BICUBIC), "PNG")
    reduced = images.load_rgb(big, draft_size=images.DRAFT_FACTOR * 224)
    assert reduced.size == (750, 500) and reduced.info["original_size"] == (3000, 2000)
    full = images.to_array(images.load_rgb(big), 224).astype(float)
    assert np.abs(images.load_array(big, 224).astype(float) - full).mean() < 1.5


def test_pixel_caps_refuse_from_the_header_quoting_the_size_and_are_settable(monkeypatch, tmp_path):
    big = gradient_png(tmp_path / "big.png", 2000, 1500, bits=8).read_bytes()
    monkeypatch.setenv("TL_MAX_SERVE_PIXELS", "1000000")
    assert images.serve_pixel_cap() == 1_000_000
    with pytest.raises(images.ImageRejected, match=r"2000x1500 pixels \(3\.0 megapixels\) is over the limit of 1 "):
        images.load_array(big, 64, max_pixels=images.serve_pixel_cap())
    assert images.load_array(big, 64).shape == (64, 64, 3)  # the import cap is higher
    monkeypatch.setenv("TL_MAX_IMAGE_PIXELS", "lots")
    from tl_core.errors import TLError

    with pytest.raises(TLError, match="TL_MAX_IMAGE_PIXELS='lots' is not a positive whole number"):
        images.import_pixel_cap()


# ---------------------------------------------------------------- import
def test_a_huge_sixteen_bit_png_is_refused_and_a_large_one_imports_within_a_budget(tmp_path, workspace):
    """The issue's 9400x9400 16-bit PNG (under Pillow's own limit) through the CLI import: refused from its
    header, quoting its size; two 6000x6000 16-bit PNGs (36 megapixels, under the cap) import without a
    full-size float copy, one after the other although the import checks files on a thread per core. The
    import's peak memory grows by far less than one float64 copy of either size (288 MB, 707 MB), and less than
    two such images decoded at once."""
    folder = make_class_folders(tmp_path / "photos", per_class=4)
    gradient_png(folder / "red" / "huge16.png", 9400, 9400)
    gradient_png(folder / "blue" / "large16.png", 6000, 6000)
    gradient_png(folder / "red" / "other16.png", 6000, 6000, top=0.5)
    result = run_measured(
        f"""
        from tl_core.cli import main
        import tl_core.data.datasets
        mark()
        code = main(["datasets", "add", {str(folder)!r}, "--name", "deep"])
        from tl_core.data.datasets import load_dataset
        ds = load_dataset("deep")
        result = {{"code": code, "skipped": ds.manifest["skipped"],
                   "sizes": {{it["path"].split("/")[-1]: (it["width"], it["height"]) for it in ds.items}}}}
        """,
        env={"TL_HOME": str(workspace)},
    )
    assert result["code"] == 0
    assert [s["file"] for s in result["skipped"]] == ["red/huge16.png"]
    assert "9400x9400 pixels (88.4 megapixels) is over the limit of 50 megapixels" in result["skipped"][0]["reason"]
    assert result["sizes"]["large16.png"] == result["sizes"]["other16.png"] == [6000, 6000]
    assert result["growth_mb"] < 200, result


def test_an_oversized_file_in_a_folder_is_skipped_by_its_size_unread(tmp_path, workspace):
    """A sparse 2 GiB file among a folder's images: reported with its size and the limit, never read (the
    import's peak memory grows by far less than the file), and the images beside it import."""
    folder = make_class_folders(tmp_path / "photos", per_class=4)
    with open(folder / "red" / "sparse.png", "wb") as handle:
        handle.truncate(2 * 1024**3)
    result = run_measured(
        f"""
        from tl_core.data import datasets
        mark()
        ds = datasets.add_folder({str(folder)!r}, "sparse")
        result = {{"images": ds.manifest["num_images"], "skipped": ds.manifest["skipped"]}}
        """,
        env={"TL_HOME": str(workspace)},
    )
    assert result["images"] == 8
    assert result["skipped"] == [
        {"file": "red/sparse.png", "reason": "2048 MiB, over the 64 MiB limit for one image file; not read"}
    ]
    assert result["growth_mb"] < 100, result


# ---------------------------------------------------------------- the REST server and explanations
@pytest.fixture(scope="module")
def served_run(tmp_path_factory, keras_home_copy):
    """A small trained run (colors, MobileNetV2 at 64 px) in its own workspace."""
    from .factories import colors_dataset

    root = tmp_path_factory.mktemp("budget")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TL_HOME", str(root / "home"))
        patch.setenv("KERAS_HOME", str(keras_home_copy))
        colors_dataset(root, per_class=6)
        from tl_core.training.runner import train

        run, _ = train(small_config(epochs=1))
    return root / "home", run.id


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _vm(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(field)


@pytest.mark.slow
def test_rest_classify_refuses_huge_images_from_their_headers_and_decodes_within_a_budget(
    served_run, tmp_path, keras_home_copy
):
    """A real server on 127.0.0.1: the 9400x9400 16-bit PNG is a 422 quoting its size; 64 images of 23
    megapixels each (1.5 GB of pixels in a 1.5 MB body) are a 413 naming the limit, answered at once; a
    25-megapixel 16-bit PNG at the per-image cap is classified. The server's peak memory grows by far less
    than a float64 copy of the last (200 MB) over all of it."""
    import httpx

    home, run_id = served_run
    huge = gradient_png(tmp_path / "huge16.png", 9400, 9400).read_bytes()
    at_cap = gradient_png(tmp_path / "at_cap16.png", 5000, 5000).read_bytes()
    many = encode(Image.new("L", (4800, 4800)), "PNG")
    port = _free_port()
    env = {**os.environ, "TL_HOME": str(home), "KERAS_HOME": str(keras_home_copy)}
    server = subprocess.Popen(
        [sys.executable, "-m", "tl_core", "serve", "--run", run_id, "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):  # up to 2 minutes for TensorFlow and the model to load
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("server did not start: " + server.stderr.read1().decode(errors="replace")[-2000:])
        small = encode(Image.new("RGB", (64, 64), (200, 30, 30)), "PNG")
        classify = f"{url}/v1/models/{run_id}:classify"
        assert httpx.post(classify, files=[("files", ("warm.png", small))], timeout=60).status_code == 200
        before = _vm(server.pid, "VmHWM")

        reply = httpx.post(classify, files=[("files", ("huge16.png", huge))], timeout=60)
        assert reply.status_code == 422, reply.text
        error = reply.json()["error"]
        assert "huge16.png: 9400x9400 pixels (88.4 megapixels) is over the limit of 25 megapixels" in error

        start = time.perf_counter()
        reply = httpx.post(classify, files=[("files", (f"{i}.png", many)) for i in range(64)], timeout=120)
        took = time.perf_counter() - start
        assert reply.status_code == 413, reply.text
        error = reply.json()["error"]
        assert "64 images of 1474.6 megapixels together in one request; at most 200 megapixels" in error
        assert took < 5, f"refusing took {took:.1f} s: the images were decoded"

        reply = httpx.post(classify, files=[("files", ("at_cap16.png", at_cap))], timeout=120)
        assert reply.status_code == 200, reply.text
        growth = _vm(server.pid, "VmHWM") - before
        assert growth < 250, f"the server grew by {growth:.0f} MB"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_explain_computes_its_map_at_a_bounded_size_and_scales_the_box(served_run, tmp_path, keras_home_copy):
    """Grad-CAM on a 25-megapixel PNG (at the per-image cap): the map is at most SHOWN_SIDE pixels, the box is
    in the original's pixels, and peak memory grows by a fraction of one full-size float map (100 MB) and its
    sorted copy; a 6000x6000 PNG is refused with a message quoting its size, through the CLI too."""
    home, run_id = served_run
    big = gradient_png(tmp_path / "big.png", 5000, 5000, bits=8)
    over = gradient_png(tmp_path / "over.png", 6000, 6000, bits=8)
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64), (20, 200, 30)).save(small)
    env = {"TL_HOME": str(home), "KERAS_HOME": str(keras_home_copy)}
    result = run_measured(
        f"""
        from tl_core.inference.explain import explain
        from tl_core.runs.store import get_run
        loaded = get_run({run_id!r}).load_model()
        explain(loaded, {str(small)!r})  # the graph traced and the weights loaded before the mark
        mark()
        answer = explain(loaded, {str(big)!r})
        overlay = answer.overlay()
        result = {{"heat": list(answer.heat.shape), "bbox": answer.bbox, "overlay": list(overlay.size),
                   "original": list(answer.original_size)}}
        """,
        env=env,
    )
    assert result["heat"] == [1024, 1024] and result["overlay"] == [1024, 1024], result
    assert result["original"] == [5000, 5000]
    left, top, right, bottom = result["bbox"]
    assert 0 <= left < right <= 5000 and 0 <= top < bottom <= 5000 and max(right, bottom) > 1024, result
    assert result["growth_mb"] < 150, result

    out = subprocess.run(
        [sys.executable, "-m", "tl_core", "explain", "--run", run_id, str(over), "--out", str(tmp_path / "o.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "6000x6000 pixels (36.0 megapixels) is over the limit of 25 megapixels" in out.stderr
