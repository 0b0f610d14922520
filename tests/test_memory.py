"""Long-running server memory: models evicted from the cache and ended sessions do not pile up."""
import gc
import weakref

import pytest

from tl_core import datasets
from tl_core.config import TrainConfig
from tl_core.training import train

from .conftest import make_class_folders



@pytest.fixture
def two_runs(tmp_path):
    datasets.add_folder(make_class_folders(tmp_path / "src", per_class=4), "colors")
    cfg = dict(data="colors", base="MobileNetV2", alpha=0.35, size=32, epochs=1)
    return [train(TrainConfig(**cfg), tmp_path / "a")[0], train(TrainConfig(**cfg, seed=7), tmp_path / "b")[0]]


def test_models_evicted_from_the_cache_are_freed(two_runs):
    """Load 6 models through the app's cache (4 entries): what stays alive is bounded by the cache, not
    by how many models were ever loaded (before the fix every one stayed, frozen)."""
    from tl_app import models
    models._load_predictor.clear()
    refs = []
    for i in range(6):
        run = two_runs[i % 2]
        predictor = models._load_predictor(str(run.root), 1000.0 + i)   # a new key each time: a new load
        refs.append(weakref.ref(predictor.loaded.model))
        del predictor
    gc.collect()
    alive = [i for i, ref in enumerate(refs) if ref() is not None]
    # the 4 cached models, and the one evicted by the last load (freed at the next load)
    assert alive == [1, 2, 3, 4, 5], alive
    models._load_predictor.clear()
    gc.unfreeze()


def test_garbage_frozen_at_one_model_load_is_freed_at_the_next(two_runs):
    """A session that was alive when a model loaded (so frozen with everything else) and then ended is
    cyclic garbage the collector cannot see; the next model load must free it."""
    from tl_app import models
    models._load_predictor.clear()

    class SessionLike:
        pass

    session = SessionLike()
    session.self = session                  # a reference cycle, as Streamlit's session objects have
    ref = weakref.ref(session)
    models._load_predictor(str(two_runs[0].root), 1.0)   # freezes everything alive, the session too
    del session
    gc.collect()
    models._load_predictor(str(two_runs[1].root), 2.0)
    assert ref() is None, "an ended session frozen at a model load stays in memory for good"
    models._load_predictor.clear()
    gc.unfreeze()
