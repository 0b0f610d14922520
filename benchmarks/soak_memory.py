"""Soak: models loaded and evicted, sessions coming and going; the server's memory must stay bounded.

    python benchmarks/soak_memory.py [--rounds 10] [--sessions 20]

In a temporary workspace, trains two small runs (MobileNetV2 alpha 0.35 at 64 px). Then, each round,
loads one more model through the app's model cache (4 entries, so from round 5 on each load evicts
one) and opens ``--sessions`` fresh sessions on the Predict page (Streamlit's AppTest). Prints the
process's resident memory after each round, how many loaded models are still alive at the end, and
``rss_growth_last_half_mb`` (memory added over the second half of the rounds: near 0 when bounded).
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tl_soak_"))
    os.environ.update(TL_HOME=str(tmp / "workspace"), KERAS_HOME=str(tmp / "keras_home"), TF_CPP_MIN_LOG_LEVEL="2")
    os.environ.pop("TL_PASSWORD", None)
    shutil.copytree(SHARED / "keras_home", tmp / "keras_home")
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    from streamlit.testing.v1 import AppTest

    from tl_app import models
    from tl_app.streamlit_internals import run_app_tests_as_a_server_past_its_first_request
    from tl_core.data import datasets
    from tl_core.models.config import TrainConfig
    from tl_core.training.runner import train

    run_app_tests_as_a_server_past_its_first_request()
    datasets.add_folder(SHARED / "datasets" / "hymenoptera_data", "bugs")
    runs = [
        train(TrainConfig(data="bugs", base="MobileNetV2", alpha=0.35, size=64, epochs=1, seed=s))[0] for s in (1, 2)
    ]
    refs, rss = [], []
    for round_ in range(args.rounds):
        predictor = models._load_predictor(str(runs[round_ % 2].root), 1000.0 + round_)
        refs.append(weakref.ref(predictor.loaded.model))
        del predictor
        for _ in range(args.sessions):
            at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
            at.switch_page("pages/predict.py").run()
            assert not at.exception, [e.value for e in at.exception]
            del at
        gc.collect()
        rss.append(rss_mb())
        print(f"round {round_ + 1}: rss_mb={rss[-1]:.0f}", flush=True)
    alive = sum(ref() is not None for ref in refs)
    half = len(rss) // 2
    print(f"rounds={args.rounds} sessions={args.rounds * args.sessions} models_loaded={args.rounds}")
    print(f"models_alive={alive}")
    print(f"rss_first_mb={rss[0]:.0f} rss_last_mb={rss[-1]:.0f}")
    print(f"rss_growth_last_half_mb={rss[-1] - rss[half - 1]:.0f}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
