"""Benchmark: the mislabelled-suspects list against plain confident learning on the same features.

    python benchmarks/bench_suspects.py [--data DIR] [--pixels 48] [--size 48] [--noise 0.03]
                                        [--seeds 1] [--keras-home DIR]

Makes a hard set in a temporary folder (never in the repository): the photos of ``--data`` (default the
shared oxford17 subset, class folders under train/ and test/) downscaled to ``--pixels`` px (0 keeps them),
with ``--noise`` of the training images moved to another class (fixed seed per ``--seeds`` round). Imports
it into a temporary workspace, computes the features once (MobileNetV2 alpha 0.35 at ``--size`` px, ImageNet
weights from ../shared/keras_home copied to a temporary KERAS_HOME), then ranks suspects two ways:

- ``new``: ``tl_core.inspection.suspects.analyse`` (calibrated out-of-fold probe, confident-learning
  thresholds, ranked by 1 - p(label), then margin, then a content hash);
- ``cl``: plain confident learning written here (no cleanlab): a scikit-learn logistic regression with its
  defaults on standardized features, 5-fold out-of-fold probabilities, per-class thresholds t_j = mean p_j
  over images labelled j, an image flagged when the likeliest class clearing its threshold is not its label
  (off-diagonal of the confident joint), ranked by self-confidence p(label).

Prints key=value lines per round and summed over rounds: flags, precision and recall of the moved images
among the flags, how many moved images are in the top 2x(moved) and how many of those suggest their true
class, the probes' out-of-fold accuracy, and the outlier and duplicate counts of the new list.

``--page N`` then times the Inspect page with Streamlit's AppTest (server time, no browser) on a set of N
images made from the same photos (each copy a different crop, so every image is new content), at the
page's defaults (MobileNetV2 at its default size): the first computation, then each interaction (choose a
fix, type a note, change the list length and kinds, change the map's splits), then a second session.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED", REPO.parent / "shared"))
BASE, ALPHA = "MobileNetV2", 0.35


def make_set(source: Path, target: Path, pixels: int, noise: float, seed: int) -> dict[str, str]:
    """Copy ``source`` (split/class/photo) into ``target``, downscaled, with ``noise`` of the training photos
    moved to another class; returns {"train/<photo name>": true class} for the moved ones."""
    from PIL import Image

    for photo in sorted(p for p in source.glob("*/*/*") if p.is_file()):
        out = target / photo.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not pixels:
            shutil.copyfile(photo, out)
            continue
        try:
            with Image.open(photo) as image:
                image.convert("RGB").resize((pixels, pixels), Image.Resampling.LANCZOS).save(out.with_suffix(".jpg"))
        except OSError:
            shutil.copyfile(photo, out)  # not a photo (a placeholder): the import decides what to do with it
    train = sorted(p for p in (target / "train").glob("*/*") if p.is_file())
    classes = sorted(d.name for d in (target / "train").iterdir() if d.is_dir())
    rng = random.Random(seed)
    moved = {}
    for photo in rng.sample(train, round(noise * len(train))):
        other = rng.choice([c for c in classes if c != photo.parent.name])
        moved[f"train/{photo.name}"] = photo.parent.name
        photo.rename(target / "train" / other / photo.name)
    return moved


def confident_learning(features, labels, seed: int = 0):
    """Plain confident learning: (flagged indices ranked by self-confidence, suggested class per image,
    out-of-fold accuracy)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    probs = cross_val_predict(probe, features, labels, cv=folds, method="predict_proba")
    thresholds = np.array([probs[labels == j, j].mean() for j in range(probs.shape[1])])
    clears = probs >= thresholds
    suggested = np.where(clears.any(axis=1), np.where(clears, probs, -1).argmax(axis=1), labels)
    own = probs[np.arange(len(labels)), labels]
    flagged = np.flatnonzero(suggested != labels)
    return flagged[np.argsort(own[flagged], kind="stable")], suggested, float((probs.argmax(1) == labels).mean())


def scores(ranked: list[int], suggested: dict[int, str], truth: dict[int, str]) -> dict[str, float]:
    hits = [i for i in ranked if i in truth]
    top = [i for i in ranked[: 2 * len(truth)] if i in truth]
    return {
        "flags": len(ranked),
        "moved_flagged": len(hits),
        "precision": round(len(hits) / len(ranked), 3) if ranked else 0.0,
        "recall": round(len(hits) / len(truth), 3) if truth else 0.0,
        "top2x": len(top),
        "top2x_true_class": sum(suggested[i] == truth[i] for i in top),
    }


def run_round(source: Path, work: Path, args, seed: int) -> dict[str, float]:
    import numpy as np

    from tl_core.data import datasets
    from tl_core.inspection.suspects import analyse
    from tl_core.models.features import dataset_features

    folder = work / f"set{seed}"
    moved = make_set(source, folder, args.pixels, args.noise, seed)
    dataset = datasets.add_folder(folder, f"hard{seed}")
    start = time.perf_counter()
    features = dataset_features(dataset, BASE, ALPHA, args.size)
    features_s = time.perf_counter() - start
    items, classes = dataset.items, dataset.classes
    truth = {}
    for index, item in enumerate(items):
        key = f"{item['split']}/{Path(item['path']).name}"
        if key in moved:
            truth[index] = moved[key]
    labels = np.array([classes.index(it["class"]) for it in items])

    start = time.perf_counter()
    result = analyse(dataset, features)
    suspects_s = time.perf_counter() - start
    index_of = {it["path"]: i for i, it in enumerate(items)}
    mislabelled = [r for r in result["rows"] if r["kind"] == "mislabelled"]
    new_ranked = [index_of[r["file"]] for r in mislabelled]
    new_suggested = {index_of[r["file"]]: r["suggested"] for r in mislabelled}
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    with threadpool_limits(1):  # as analyse does: the same footing for the timings
        cl_ranked, cl_suggested, cl_accuracy = confident_learning(features, labels)
    cl_s = time.perf_counter() - start

    out = {"images": len(items), "moved": len(truth), "features_s": round(features_s, 1)}
    out.update({f"new_{k}": v for k, v in scores(new_ranked, new_suggested, truth).items()})
    out.update(
        {
            f"cl_{k}": v
            for k, v in scores(list(cl_ranked), {i: classes[s] for i, s in enumerate(cl_suggested)}, truth).items()
        }
    )
    out["new_probe_accuracy"] = result["trust"]["accuracy"]
    out["new_trust_level"] = result["trust"]["level"]
    out["cl_probe_accuracy"] = round(cl_accuracy, 4)
    for kind in ("outlier", "duplicate", "low-detail"):
        out[f"{kind.replace('-', '_')}_flags"] = sum(r["kind"] == kind for r in result["rows"])
    out["new_s"], out["cl_s"] = round(suspects_s, 1), round(cl_s, 1)
    return out


def make_page_set(source: Path, target: Path, count: int, pixels: int) -> None:
    """``count`` images cycled from ``source``'s training photos, each a different crop, under train/<class>/."""
    from PIL import Image

    photos = sorted(p for p in (source / "train").glob("*/*") if p.is_file())
    for index in range(count):
        photo = photos[index % len(photos)]
        turn = index // len(photos)
        out = target / "train" / photo.parent.name / f"{photo.stem}_{turn}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(photo) as image:
            image = image.convert("RGB")
            cut = 2 * turn + 1  # a different crop per turn
            image = image.crop((cut, cut, image.width - cut, image.height - cut))
            image.resize((pixels or image.width, pixels or image.height), Image.Resampling.LANCZOS).save(out)


def time_page(source: Path, work: Path, count: int, pixels: int) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    from tl_app.streamlit_internals import run_app_tests_as_a_server_past_its_first_request
    from tl_core.data import datasets
    from tl_core.inspection import suspects

    make_page_set(source, work / "page", count, pixels)
    datasets.add_folder(work / "page", "page")
    run_app_tests_as_a_server_past_its_first_request()
    os.chdir(REPO)
    computed = []  # seconds of each computation, in the server
    compute = suspects.compute_report

    def timed_compute(*args, **kwargs):
        start = time.perf_counter()
        try:
            return compute(*args, **kwargs)
        finally:
            computed.append(time.perf_counter() - start)

    suspects.compute_report = timed_compute

    def opened() -> AppTest:
        page = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=600).run()
        page.switch_page("pages/inspect.py").run()
        page.selectbox(key="inspect_data").set_value("page").run()
        return page

    out: dict[str, float] = {"page_images": count}
    page = opened()
    start = time.perf_counter()
    page.toggle(key="inspect_on").set_value(True).run()
    out["page_first_computation_s"] = round(time.perf_counter() - start, 1)
    interactions = {
        "fix": lambda: page.selectbox(key="inspect_fix_0").set_value("exclude"),
        "note": lambda: page.text_input(key="inspect_fixes_note").set_value("checked"),
        "show": lambda: page.slider(key="inspect_top").set_value(50),
        "kinds": lambda: page.multiselect(key="inspect_kinds").set_value(["mislabelled"]),
        "map_splits": lambda: page.multiselect(key="inspect_splits").set_value(["train"]),
    }
    for name, interact in interactions.items():
        start = time.perf_counter()
        interact().run()
        out[f"page_{name}_s"] = round(time.perf_counter() - start, 3)
        assert not page.exception, [e.value for e in page.exception]
    suspects._READ.clear()  # as after a restart: only the workspace holds the result
    second = opened()
    start = time.perf_counter()
    second.toggle(key="inspect_on").set_value(True).run()
    out["page_second_session_s"] = round(time.perf_counter() - start, 3)
    out["page_computations"] = len(computed)
    out["page_worst_interaction_s"] = max(
        v
        for k, v in out.items()
        if k.startswith("page_") and k.endswith("_s") and k not in ("page_first_computation_s",)
    )
    # saving the fix makes version 2 and reruns the page, which computes version 2's suspects (features cached)
    start = time.perf_counter()
    page.button(key="inspect_fixes_save").click().run()
    out["page_save_s"] = round(time.perf_counter() - start, 3)
    out["page_computations_right_after_save"] = len(computed)
    start = time.perf_counter()
    page.slider(key="inspect_top").set_value(20).run()
    out["page_new_version_computation_s"] = round(time.perf_counter() - start, 1)
    out["page_computations_after_save"] = len(computed)
    # version 2 is saved from version 1, whose probe is kept: its computation starts from it (cached features)
    out["page_version2_computation_in_server_s"] = round(computed[-1], 2)
    out["page_version1_computation_in_server_s"] = round(computed[0], 2)
    return out


def print_totals(totals: dict[str, float]) -> None:
    print("# all rounds")
    for key, value in totals.items():
        print(f"total_{key}={round(value, 1)}")
    for side in ("new", "cl"):
        flags, hits = totals[f"{side}_flags"], totals[f"{side}_moved_flagged"]
        print(f"total_{side}_precision={hits / flags if flags else 0:.3f}")
        print(f"total_{side}_recall={hits / totals['moved'] if totals['moved'] else 0:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "datasets" / "oxford17_subset12_224")
    parser.add_argument("--pixels", type=int, default=48, help="downscale the photos to this size (0: keep)")
    parser.add_argument("--size", type=int, default=48, help="the base's input size")
    parser.add_argument("--noise", type=float, default=0.03, help="share of training photos moved to another class")
    parser.add_argument("--seeds", type=int, default=1, help="rounds, each with its own moved photos")
    parser.add_argument("--keras-home", type=Path, default=SHARED / "keras_home")
    parser.add_argument("--page", type=int, default=0, help="also time the Inspect page on a set of this many images")
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        parser.error(f"--data {str(args.data)!r} has no train/ folder of class folders")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="bench_suspects_") as tmp:
        work = Path(tmp)
        shutil.copytree(args.keras_home, work / "keras_home")
        os.environ["KERAS_HOME"] = str(work / "keras_home")
        os.environ["TL_HOME"] = str(work / "workspace")
        sys.path.insert(0, str(REPO))
        totals: dict[str, float] = {}
        for seed in range(args.seeds):
            result = run_round(args.data, work, args, seed)
            print(f"# round seed={seed}")
            for key, value in result.items():
                print(f"seed{seed}_{key}={value}")
                if isinstance(value, (int, float)) and not key.endswith(("accuracy", "precision", "recall")):
                    totals[key] = totals.get(key, 0) + value
        if args.seeds:
            print_totals(totals)
        if args.page:
            print("# the Inspect page (AppTest, server time)")
            for key, value in time_page(args.data, work, args.page, args.pixels).items():
                print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
