"""Commands that run a model on images: ``predict``, ``evaluate``, ``classify``, ``explain``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tl_core.cli.common import load_tensorflow
from tl_core.errors import TLError
from tl_core.inference.tta import MODES as TTA_MODES


def cmd_predict(args) -> int:
    if args.input or args.out:
        return predict_batch(args)
    if not args.images:
        raise TLError("Name image files to predict, or a folder or zip with --input DIR_OR_ZIP --out FILE.csv.")
    load_tensorflow()
    from tl_core.inference.predict import Predictor

    predictor = Predictor.from_run(args.run)
    missing = [f for f in args.images if not Path(f).is_file()]
    if missing:
        raise TLError(f"Image file(s) not found: {missing}")
    for image in args.images:  # one line each: top_k, unknown (null for a run without a scope), distance
        print(json.dumps({"image": image, **predictor.predict_each([image], args.top_k, tta=args.tta)[0]}))
    return 0


def predict_batch(args) -> int:
    """``predict --input DIR_OR_ZIP --out FILE.csv``: every image of a folder or zip into one CSV, streamed in
    chunks with a progress bar on stderr; one JSON summary line on stdout."""
    from tl_core.inference import batch

    if args.images:
        raise TLError(f"Give image files or --input, not both; got {args.images[:3]!r} with --input.")
    if not (args.input and args.out):
        raise TLError("--input DIR_OR_ZIP and --out FILE.csv go together: name both.")
    spec = batch.check_spec(args.run, args.input, args.out, args.top_k, args.tta)  # bad input: no TensorFlow
    load_tensorflow()
    from tl_core.inference.predict import Predictor

    predictor = Predictor.from_run(spec["run"])
    bar = batch.ProgressBar(0)

    def progress(event: dict) -> None:
        bar.total = event["total"]
        bar.update(event)

    summary = batch.predict_to_csv(predictor, spec["input"], spec["out"], spec["top_k"], spec["tta"], progress)
    print(
        f"{summary['predicted']} predicted, {summary['skipped']} skipped (rows with an error) of "
        f"{summary['images']} files in {summary['seconds']} s ({summary['images_per_s']} images/s); "
        f"CSV: {summary['out']}",
        file=sys.stderr,
    )
    print(json.dumps(summary))
    return 0


def cmd_evaluate(args) -> int:
    load_tensorflow()
    import time

    import numpy as np

    from tl_core.deploy.parity import validation_pixels
    from tl_core.inference.predict import Predictor
    from tl_core.runs.store import get_run

    run = get_run(args.run)
    predictor = Predictor.from_run(run)
    pixels, labels = validation_pixels(run, predictor.loaded)
    result = {"run": run.id, "images": int(len(labels)), "tta": args.tta}
    for mode in ("none", args.tta):
        start = time.perf_counter()
        predicted = predictor.probabilities(pixels, tta=mode).argmax(axis=1)
        result[f"accuracy_{mode}"] = float(np.mean(predicted == labels))
        result[f"seconds_{mode}"] = round(time.perf_counter() - start, 2)
    print(json.dumps(result))
    return 0


def cmd_classify(args) -> int:
    load_tensorflow()
    from tl_core.data.images import ImageRejected
    from tl_core.inference.pretrained import KerasApplicationClassifier, TFLiteClassifier

    if bool(args.tflite) == bool(args.base):
        raise TLError("Name one classifier: --tflite MODEL --labels LABELS, or --base NAME (a Keras application).")
    if args.tflite:
        if not args.labels:
            raise TLError("--tflite needs --labels LABELS (the labels file that came with the model).")
        for path in (args.tflite, args.labels):
            if not Path(path).is_file():
                raise TLError(f"File not found: {path!r}")
        classifier = TFLiteClassifier(args.tflite, args.labels)
    else:
        classifier = KerasApplicationClassifier(args.base, args.alpha)
    for image in args.images:
        try:
            top = classifier.top_k([image], args.top_k)[0]
            print(json.dumps({"image": image, "top_k": top}))
        except (ImageRejected, OSError) as exc:
            print(json.dumps({"image": image, "error": str(exc)}))
    return 0


def cmd_explain(args) -> int:
    load_tensorflow()
    from tl_core.inference.explain import explain
    from tl_core.runs.store import get_run

    if not Path(args.image).is_file():
        raise TLError(f"Image file not found: {args.image!r}")
    result = explain(get_run(args.run).load_model(), args.image, args.class_name)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise TLError(f"--out must name a .png file; got {args.out!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.overlay().save(out)
    print(json.dumps({"image": args.image, **result.summary(), "out": str(out)}))
    return 0


def add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k labels for images, one JSON line each; or a whole folder or zip into a CSV (--input, --out)",
    )
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--tta", default="none", choices=list(TTA_MODES), help="test-time augmentation views to average")
    add_batch_io(p)
    p.add_argument("images", nargs="*")
    p.set_defaults(func=cmd_predict)


def add_batch_io(p) -> None:
    """``--input`` and ``--out`` of a batch prediction (``predict`` and ``submit --predict``)."""
    p.add_argument("--input", help="a folder (read recursively) or a .zip of images to predict in batches")
    p.add_argument("--out", help="the CSV to write: one row per file (written whole, then renamed into place)")


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="a finished run's accuracy on its validation images, with and without "
        "test-time augmentation; one JSON object",
    )
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("--tta", default="flip", choices=list(TTA_MODES))
    p.set_defaults(func=cmd_evaluate)


def add_classify(sub) -> None:
    p = sub.add_parser(
        "classify", help="a pretrained classifier as it is (ImageNet labels, no training); one JSON line per image"
    )
    p.add_argument("--tflite", help="a TFLite image classifier")
    p.add_argument("--labels", help="its labels file, one per line")
    p.add_argument("--base", help="a Keras application with its top, e.g. MobileNetV2")
    p.add_argument("--alpha", type=float)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("images", nargs="+")
    p.set_defaults(func=cmd_classify)


def add_explain(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM of a run on one image: writes the overlay, prints class and bbox")
    p.add_argument("--run", required=True, help="run folder or run id")
    p.add_argument("image")
    p.add_argument("--class", dest="class_name", help="the class to explain (default: the predicted one)")
    p.add_argument("--out", required=True, help="PNG file to write the overlay to")
    p.set_defaults(func=cmd_explain)
