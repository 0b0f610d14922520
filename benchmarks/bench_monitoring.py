"""Benchmark: what the watch on a deployed model costs. Recording a prediction, and opening the Monitoring view.

    python benchmarks/bench_monitoring.py [--records 100000] [--classes 12]

In a temporary workspace (never the repository's):

- ``record_us_*``: a REST server's recording of one prediction (``monitoring.records`` for one image, then
  ``Recorder.record``: the buffered append), timed per call over ``--records`` calls, flushes to disk included
  (every 256 records, in the recorder's own thread), as the mean, median, 99th and 99.9th percentiles, the
  largest, and how many calls took over a millisecond; then the same for only building the records (no
  recorder), which is the machine's own noise floor;
- ``report_ms_first`` / ``report_ms``: ``monitoring.report`` (the first call imports SciPy's statistics) over ``--records`` recorded predictions spread over 30 days (read, per
  day counts, the binomial, Kolmogorov-Smirnov and chi-square tests);
- ``page_s_first`` / ``page_s_again``: the Monitoring page (``pages/monitor.py``) through Streamlit's AppTest
  (server time, no browser) with those records: the first run after switching to the page (importing the
  page's modules), a rerun, and another session opening the page on the same server.

The run is a stand-in made here (a finished run folder with its class names and a scope fitted on random
features; its model file is a placeholder the page never opens). Prints key=value lines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def stand_in_run(classes: int):
    from tl_core.models.config import TrainConfig
    from tl_core.runs.scope import fit_scope
    from tl_core.runs.store import new_run

    run = new_run(TrainConfig(data="flowers", base="MobileNetV2", alpha=0.35, size=96))
    names = [f"class{i}" for i in range(classes)]
    run.artifacts.write_class_names(names)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), 50)
    train = rng.normal(0, 1, (classes, 64))[labels] + rng.normal(0, 0.3, (len(labels), 64))
    scope = fit_scope(train, labels, train[::5] + 0.1, classes, val_confidence=rng.uniform(0.5, 1.0, 120))
    run.artifacts.save_scope(scope.to_arrays())
    run.artifacts.model_path.write_bytes(b"placeholder")
    (run.root / "model_info.json").write_text(json.dumps({"class_names": names}))
    run.set_status("finished", val_accuracy=0.9)
    return run, scope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=12)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    os.environ["TL_HOME"] = str(tmp / "workspace")
    sys.path.insert(0, str(REPO))
    try:
        measure(args.records, args.classes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(count: int, classes: int) -> None:
    from tl_core.inference import monitoring

    run, scope = stand_in_run(classes)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, classes, count)
    probabilities = rng.uniform(0.3, 1.0, count)
    distances = rng.uniform(0.0, 1.5, count)
    recorder = monitoring.Recorder(run.id)
    threshold = scope.threshold
    costs = np.empty(count)
    for i in range(count):
        started = time.perf_counter()
        recorder.record(
            monitoring.records(
                [labels[i]], [probabilities[i]], [bool(distances[i] > threshold)], [distances[i]], "rest"
            )
        )
        costs[i] = time.perf_counter() - started
    recorder.flush()
    # the machine's own noise: building the same records without recording them
    building = np.empty(count)
    for i in range(count):
        started = time.perf_counter()
        monitoring.records([labels[i]], [probabilities[i]], [bool(distances[i] > threshold)], [distances[i]], "rest")
        building[i] = time.perf_counter() - started
    print(
        f"build_only_us_mean={building.mean() * 1e6:.1f} build_only_us_p999={np.percentile(building, 99.9) * 1e6:.0f} "
        f"build_only_calls_over_1ms={int((building > 1e-3).sum())}"
    )
    print(
        f"records={count} record_us_mean={costs.mean() * 1e6:.1f} record_us_median={np.median(costs) * 1e6:.1f} "
        f"record_us_p99={np.percentile(costs, 99) * 1e6:.1f} record_us_p999={np.percentile(costs, 99.9) * 1e6:.0f} "
        f"record_us_max={costs.max() * 1e6:.0f} calls_over_1ms={int((costs > 1e-3).sum())}"
    )
    # spread the recorded times over the last 30 days (the log is rewritten with those times)
    rows = monitoring.read(run.id).copy()
    rows["time"] = time.time() - np.sort(rng.uniform(0, 30 * monitoring.DAY, len(rows)))[::-1]
    (monitoring.log_dir(run.id) / monitoring.LOG).write_bytes(rows.tobytes())
    print(f"log_bytes={(monitoring.log_dir(run.id) / monitoring.LOG).stat().st_size}")

    started = time.perf_counter()
    monitoring.report(run)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    report = monitoring.report(run)
    print(
        f"report_ms_first={cold * 1000:.1f} report_ms={(time.perf_counter() - started) * 1000:.1f} "
        f"predictions={report['predictions']} window={report['window_predictions']} drift={report['drift']}"
    )

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    started = time.perf_counter()
    at.switch_page("pages/monitor.py").run()
    first = time.perf_counter() - started
    assert not at.exception, [e.value for e in at.exception]
    assert at.metric[0].value == f"{count:,}", at.metric[0].value
    started = time.perf_counter()
    at.run()
    again = time.perf_counter() - started
    # another visitor opening the page on the same server (its modules loaded): what a person waits for
    other = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    started = time.perf_counter()
    other.switch_page("pages/monitor.py").run()
    opened = time.perf_counter() - started
    print(f"page_s_first={first:.3f} page_s_again={again:.3f} page_s_new_session={opened:.3f}")


if __name__ == "__main__":
    main()
