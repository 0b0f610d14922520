"""Batch prediction: a folder (recursively) or a zip of any size through a run's model into one CSV.

Memory is bounded by a chunk, not by the input: files are listed (names only), then read, decoded and
predicted ``CHUNK`` images at a time (at most ``CHUNK_BYTES`` of zip entries held at once), decoding the next
chunk on ``decode_threads()`` threads while the engine runs the current one. Folder files are read with the
decode budget of ``data/images.py``; zip entries one by one with the safe reader of ``data/archives.py``
(unsafe paths, links, encryption, nested archives, over-compressed or oversized entries get a row saying
why, unread). A file that cannot be read is a row with the reason: one bad file never stops the batch.

Each image is decoded as single-image ``predict`` decodes it (``load_array`` under ``serve_pixel_cap()``) and
goes through the same ``Predictor.probabilities_and_distances``, with the run's unknown flag: one model, one answer. The CSV (``answer_table``'s
columns, spreadsheet-safe cells) is written under a temporary name and renamed when complete, so a crash or
a cancel leaves no half file under the name asked for.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from tl_core.data import archives
from tl_core.data.images import ImageRejected, ImageSource, decode_threads, load_array, serve_pixel_cap
from tl_core.data.sources import is_ignorable, zip_entries
from tl_core.errors import Cancelled, TLError
from tl_core.inference.answer_table import batch_columns, batch_row
from tl_core.inference.topk import top_k as top_labels

CHUNK = 64  # images decoded and predicted together
CHUNK_BYTES = 128 * 1024**2  # zip entries held at once for one chunk (each at most archives' per-entry cap)


@dataclass
class Item:
    """One file of the input: its name in the CSV, and how to get its bytes or path (or why it is skipped)."""

    name: str
    read: Optional[Callable[[], ImageSource]] = None
    problem: Optional[str] = None
    size: int = 0


def _walk(root: Path) -> Iterator[Path]:
    """The folder's files, recursively, in name order, skipping system files (``.DS_Store``, ``._x``...);
    folders are listed one at a time, so a huge tree is never held whole. Links to folders are not followed."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not is_ignorable(d))
        for name in sorted(files):
            if not is_ignorable(name):
                yield Path(folder) / name


def _folder_items(root: Path) -> Iterator[Item]:
    resolved = root.resolve()
    for path in _walk(root):
        name = path.relative_to(root).as_posix()
        if path.is_symlink() and not path.resolve().is_relative_to(resolved):
            yield Item(name, problem="symbolic link pointing outside the folder; not followed")
        else:
            yield Item(name, read=lambda p=path: p)


def _zip_items(archive, infos, limits: archives.ZipLimits) -> Iterator[Item]:
    for info, _, problem in zip_entries(infos, limits):
        name = info.filename
        if problem:
            yield Item(name, problem=problem)
        else:
            yield Item(name, read=lambda i=info: archives.read_entry(archive, i, limits), size=info.file_size)


class Inputs:
    """A folder or a zip as a stream of ``Item``; ``total`` counts them first (names only, nothing read). The
    whole zip's size is not capped as an import's is: nothing is extracted to disk and each entry is read on
    its own, within the per-entry limits."""

    def __init__(self, source):
        self.source = Path(source)
        self._archive = None
        if self.source.is_dir():
            self.total = sum(1 for _ in _walk(self.source))
        elif self.source.is_file():
            limits = archives.ZipLimits(max_total_bytes=1 << 62, max_files=10_000_000)
            self._archive, infos = archives.open_archive(self.source, limits)
            self._infos, self._limits = infos, limits
            self.total = sum(1 for _ in _zip_items(None, infos, limits))
        else:
            raise TLError(
                f"--input {str(source)!r} is neither a folder nor a zip file. Name a folder of images or a .zip."
            )

    def __iter__(self) -> Iterator[Item]:
        if self._archive is None:
            return _folder_items(self.source)
        return _zip_items(self._archive, self._infos, self._limits)

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()


def check_input(source, allowed_roots: Optional[list] = None) -> Path:
    """The input as an absolute path: an existing folder or zip file (inside ``allowed_roots`` when given, as
    the app's server folders are); TLError quoting it otherwise."""
    path = Path(str(source)).expanduser()
    resolved = path.resolve()
    # the allowed folders first: what exists outside them is not the app user's to learn
    if allowed_roots is not None and not any(
        resolved.is_relative_to(Path(root).expanduser().resolve()) for root in allowed_roots
    ):
        raise TLError(
            f"Folder {str(source)!r} is outside the allowed folders {[str(r) for r in allowed_roots]}. "
            "Ask the admin to add it (TL_IMPORT_ROOTS)."
        )
    if not path.exists():
        raise TLError(f"Input {str(source)!r} does not exist. Name a folder of images or a .zip file.")
    if path.is_file() and path.suffix.lower() != ".zip":
        raise TLError(f"Input {str(source)!r} is a file but not a .zip. Name a folder of images or a .zip file.")
    return resolved


def check_out(out) -> Path:
    """The CSV to write, as an absolute path: a ``.csv`` name in a folder that exists (or can be made)."""
    path = Path(str(out)).expanduser()
    if path.suffix.lower() != ".csv":
        raise TLError(f"--out must name a .csv file; got {str(out)!r}.")
    if path.is_dir():
        raise TLError(f"--out {str(out)!r} is a folder; name a .csv file in it.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLError(f"Cannot make the folder for --out {str(out)!r} ({exc.strerror or exc}).") from None
    return path.resolve()


class ProgressBar:
    """``[#####.....] done/total  N img/s`` on a stream (stderr): redrawn in place on a terminal, a line every
    10% (and at the end) elsewhere, so a log file is not flooded."""

    def __init__(self, total: int, stream=None, width: int = 30):
        self.total, self.width = total, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._shown, self._last = -1, 0.0

    def update(self, event: dict) -> None:
        done, total = event["done"], max(1, self.total)
        tenth = done * 10 // total
        if self.tty:
            if done < self.total and time.monotonic() - self._last < 0.2:
                return
        elif tenth == self._shown and done < self.total:
            return
        self._shown, self._last = tenth, time.monotonic()
        filled = self.width * done // total
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
            f"{event['images_per_s']:.1f} img/s, {event['skipped']} skipped"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _decode(source: ImageSource, size: int, resize: str):
    try:
        return load_array(source, size, resize, serve_pixel_cap())
    except (ImageRejected, OSError) as exc:
        return f"{exc}" if isinstance(exc, ImageRejected) else f"cannot read the file ({exc.strerror or exc})"


def _chunks(items: Iterator[Item]) -> Iterator[list[tuple[Item, object]]]:
    """Chunks of (item, bytes or path, or an error message); a zip entry is read here, in this thread."""
    chunk, held = [], 0
    for item in items:
        if item.problem:
            chunk.append((item, item.problem))
        else:
            try:
                source = item.read()
            except (ImageRejected, OSError) as exc:
                source = str(exc)
            if isinstance(source, str):
                chunk.append((item, source))
            else:
                chunk.append((item, ("source", source)))
                held += len(source) if isinstance(source, bytes) else 0
        if len(chunk) >= CHUNK or held >= CHUNK_BYTES:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def predict_to_csv(
    predictor,
    source,
    out,
    top_k: int = 3,
    tta: str = "none",
    progress: Optional[Callable[[dict], None]] = None,
    cancelled: Optional[Callable[[], bool]] = None,
) -> dict:
    """Predict every file of the folder or zip ``source`` with ``predictor`` (a ``Predictor``) into the CSV
    ``out``; returns ``{"out", "images", "predicted", "skipped", "seconds", "images_per_s"}``. ``progress``
    gets ``{"kind": "predict", "done", "total", "predicted", "skipped", "images_per_s"}`` after each chunk;
    ``cancelled()`` true stops it (``Cancelled``) with no CSV written."""
    out = check_out(out)
    inputs = Inputs(check_input(source))
    k = max(1, min(int(top_k), len(predictor.class_names)))
    size, resize = predictor.input_size, predictor.resize
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    counts = {"done": 0, "predicted": 0, "skipped": 0}
    start = time.perf_counter()

    def finish(prepared, writer) -> None:
        rows: list = [value if isinstance(value, str) else value.result() for _, value in prepared]
        good = [i for i, row in enumerate(rows) if not isinstance(row, str)]
        probs, distances = (
            predictor.probabilities_and_distances(np.stack([rows[i] for i in good]), tta=tta) if good else ([], [])
        )
        by_index = dict(zip(good, zip(probs, distances)))
        for index, (item, _) in enumerate(prepared):
            if index in by_index:
                row, distance = by_index[index]
                top = top_labels(row, predictor.class_names, k)
                writer.writerow(batch_row(item.name, k, top, unknown=predictor.unknown(distance), distance=distance))
                counts["predicted"] += 1
            else:
                writer.writerow(batch_row(item.name, k, error=rows[index]))
                counts["skipped"] += 1
        counts["done"] += len(prepared)
        if progress is not None:
            elapsed = max(1e-9, time.perf_counter() - start)
            progress({"kind": "predict", "total": inputs.total, **counts, "images_per_s": counts["done"] / elapsed})
        if cancelled is not None and cancelled():
            raise Cancelled("Cancelled; no CSV was written.")

    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle, ThreadPoolExecutor(decode_threads()) as pool:
            writer = csv.writer(handle)
            writer.writerow(batch_columns(k))
            pending: Optional[list[tuple[Item, object]]] = None
            for chunk in _chunks(iter(inputs)):
                prepared: list[tuple[Item, object]] = [
                    (item, value if isinstance(value, str) else pool.submit(_decode, value[1], size, resize))
                    for item, value in chunk
                ]
                if pending is not None:  # the engine runs this chunk while the threads decode the next
                    finish(pending, writer)
                pending = prepared
            if pending is not None:
                finish(pending, writer)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    finally:
        inputs.close()
        tmp.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    return {
        "out": str(out),
        "images": counts["done"],
        "predicted": counts["predicted"],
        "skipped": counts["skipped"],
        "seconds": round(seconds, 2),
        "images_per_s": round(counts["done"] / max(seconds, 1e-9), 1),
    }


def check_spec(
    run, source, out=None, top_k: int = 3, tta: str = "none", allowed_roots=None, input_name: Optional[str] = None
) -> dict:
    """A prediction job's ``job.json`` content, checked before it is queued: a finished run with a model, an
    existing folder or zip, a ``.csv`` to write (None: the job's own folder), top-k of at least 1, a known
    test-time augmentation. TLError quoting what is wrong."""
    from tl_core.inference.tta import MODES
    from tl_core.runs.store import get_run

    found = get_run(run)
    if not found.artifacts.has_model():
        raise TLError(f"Run {found.id!r} has no trained model ({found.state}); pick a finished run.")
    if int(top_k) < 1:
        raise TLError(f"--top-k must be at least 1; got {top_k!r}.")
    if tta not in MODES:
        raise TLError(f"Unknown test-time augmentation {tta!r}; use one of {list(MODES)}.")
    return {
        "run": str(found.root),
        "run_id": found.id,
        "input": str(check_input(source, allowed_roots)),
        "input_name": input_name or Path(str(source)).name,
        "out": str(check_out(out)) if out else None,
        "top_k": int(top_k),
        "tta": tta,
    }


def uploads_dir() -> Path:
    from tl_core.runs.jobs import jobs_dir

    return jobs_dir() / "uploads"


def stage_upload(stream) -> Path:
    """A zip uploaded for a prediction job (a file-like object), copied to disk in 1 MiB chunks under
    ``jobs/uploads/`` (never held twice in memory); its job removes it when it ends."""
    folder = uploads_dir() / uuid.uuid4().hex
    folder.mkdir(parents=True)
    target = folder / "input.zip"
    stream.seek(0)
    with open(target, "wb") as handle:
        shutil.copyfileobj(stream, handle, 1 << 20)
    return target


def drop_staged(source: str) -> None:
    """Remove a zip ``stage_upload`` staged (its folder under the uploads folder); any other path is left alone."""
    path = Path(source)
    if path.parent.parent == uploads_dir():
        shutil.rmtree(path.parent, ignore_errors=True)


def execute_job(job) -> dict:
    """Run a queued prediction job (a ``runs.jobs.PredictJob``) in this process, writing its status, progress
    and log as training writes a run's; returns the summary (empty when cancelled)."""
    from tl_core import device
    from tl_core.clock import now_iso
    from tl_core.inference.predict import Predictor

    spec = job.spec()
    job.set_status(
        "running", pid=os.getpid(), pid_start=device.process_start_time(os.getpid()), started=now_iso(), message=None
    )
    job.log(f"started in process {os.getpid()}: {spec.get('input')} with run {spec.get('run_id')}")
    try:
        if job.cancel_requested():
            raise Cancelled("Cancelled before it started.")
        predictor = Predictor.from_run(spec["run"])
        bar = ProgressBar(0)

        def progress(event: dict) -> None:
            job.write_progress(event)
            bar.total = event["total"]
            bar.update(event)

        summary = predict_to_csv(
            predictor,
            spec["input"],
            job.out,
            spec.get("top_k", 3),
            spec.get("tta", "none"),
            progress,
            job.cancel_requested,
        )
    except Cancelled as exc:
        job.set_status("cancelled", message=str(exc))
        job.log("cancelled")
        return {}
    except TLError as exc:
        job.set_status("failed", message=str(exc))
        job.log(f"failed: {exc}")
        raise
    except Exception as exc:
        job.set_status("failed", message=f"{type(exc).__name__}: {exc}")
        job.log(f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        drop_staged(spec.get("input", ""))
    message = f"{summary['predicted']} predicted, {summary['skipped']} skipped"
    job.set_status("finished", message=message, **{k: v for k, v in summary.items()})
    job.log(f"finished: {message}; {summary['images_per_s']} images/s; CSV {summary['out']}")
    return summary
