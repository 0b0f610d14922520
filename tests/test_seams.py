"""The seams: one owner of a run's artifacts, one loaded-model handle for both head kinds, one backend
between the app and whatever executes jobs, and no dead code left behind."""

import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tl_core.backends.base import ExecutionBackend
from tl_core.data.images import load_array
from tl_core.errors import TLError
from tl_core.models.config import TrainConfig
from tl_core.runs import artifacts
from tl_core.runs.store import new_run, run_by_id
from tl_core.training.runner import train

from .factories import REPO

pytestmark = pytest.mark.usefixtures("server_past_pages_folder_mode")

ARTIFACT_NAMES = [
    artifacts.MODEL,
    artifacts.HEAD,
    artifacts.MODEL_INFO,
    artifacts.CLASS_NAMES,
    artifacts.CHECKPOINT,
    artifacts.CHECKPOINT_MODEL,
    artifacts.CHECKPOINT_HEAD,
    artifacts.METRICS,
    artifacts.PREDICTIONS,
]


def test_artifact_file_names_are_spelled_only_in_artifacts_module():
    sources = [REPO / "streamlit_app.py"] + [
        p for folder in ("tl_core", "tl_app", "pages") for p in (REPO / folder).rglob("*.py")
    ]
    spelled = {
        str(p.relative_to(REPO)): [n for n in ARTIFACT_NAMES if f'"{n}"' in p.read_text()]
        for p in sources
        if p.name != "artifacts.py"
    }
    assert {k: v for k, v in spelled.items() if v} == {}


@pytest.mark.parametrize("head", ["keras", "logreg"])
@pytest.mark.slow
def test_loaded_model_gives_base_feature_map_head_and_preprocessing_for_both_head_kinds(colors, tmp_path, head):
    run, metrics = train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, epochs=2, head=head))
    loaded = run.load_model()
    assert loaded.head_kind == head and loaded.class_names == colors.classes
    assert loaded.base.name.startswith("mobilenetv2")
    conv = loaded.base.get_layer(loaded.last_conv_layer())
    assert tuple(conv.output.shape[1:3]) == (2, 2)  # 64 px / 32: the last spatial map
    pixels = np.stack([load_array(colors.root / it["path"], 64) for it in colors.items[:4]]).astype("float32")
    import keras

    features = np.asarray(keras.ops.mean(loaded.base(loaded.preprocess(pixels)), axis=(1, 2)))
    np.testing.assert_allclose(loaded.head_probabilities(features), loaded.probabilities(pixels), atol=1e-4)
    assert loaded.probabilities(pixels).shape == (4, 3)


@pytest.mark.slow
def test_sklearn_probabilities_are_aligned_by_class_even_when_the_head_never_saw_a_class(colors, tmp_path):
    run, _ = train(TrainConfig(data="colors", base="MobileNetV2", alpha=0.35, size=64, head="logreg"))
    loaded = run.load_model()
    from sklearn.linear_model import LogisticRegression

    features = np.random.default_rng(0).normal(size=(6, 56))
    head = LogisticRegression().fit(features, [0, 2, 0, 2, 0, 2])  # label 1 never seen in training
    loaded.sklearn_head = head
    probs = loaded.head_probabilities(features)
    assert probs.shape == (6, 3) and np.all(probs[:, 1] == 0)
    np.testing.assert_allclose(probs[:, [0, 2]], head.predict_proba(features))


def test_a_run_id_from_a_url_is_an_id_never_a_path(tmp_path):
    run = new_run(TrainConfig(data="x").resolved())
    assert run_by_id(run.id).root == run.root
    outside = new_run(TrainConfig(data="x").resolved(), tmp_path / "elsewhere")
    for bad in (str(outside.root), "../runs/" + run.id, "..", ""):
        with pytest.raises(TLError):
            run_by_id(bad)


class RecordingBackend(ExecutionBackend):
    """A stand-in executor: records what the app asks of it, runs nothing."""

    name = "recording"
    submitted: list = []

    def submit(self, cfg, user=None):
        run = new_run(cfg.resolved(), user=user)
        self.submitted.append(cfg)
        return run

    def cancel(self, run, user=None):
        run.set_status("cancelled", message="recorded")

    def resume(self, run):
        pass

    def is_alive(self, run):
        return True

    def logs(self, run):
        return "recorded log"

    def ensure_running(self):
        pass

    def describe(self):
        return {"backend": "recording backend", "device": "none", "max_jobs": 1}


def test_pages_reach_jobs_only_through_the_backend_seam(colors, monkeypatch):
    monkeypatch.setattr("tl_app.widgets.get_backend", RecordingBackend)
    RecordingBackend.submitted = []
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    assert "Runs on: recording backend" in [c.value for c in at.sidebar.caption]
    at.switch_page("pages/train.py").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.button(key="train_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [cfg.epochs for cfg in RecordingBackend.submitted] == [1]
    for page in (REPO / "pages").glob("*.py"):
        text = page.read_text()
        assert "backends.local" not in text and "subprocess" not in text and "fcntl" not in text, page.name


def test_removed_dead_code_stays_gone():
    names = [
        "predict_files",
        "save_json",
        "paths_and_labels",
        "elapsed_since",
        "alpha_by_name",
        "lr_model",
        "route_through_app",
    ]
    code = "\n".join(p.read_text() for folder in ("tl_core", "tl_app", "pages") for p in (REPO / folder).rglob("*.py"))
    assert [n for n in names if re.search(rf"\b(def|class) {n}\b|\b{n}=|\.{n}\b", code)] == []
    assert "extra" not in TrainConfig.__dataclass_fields__
