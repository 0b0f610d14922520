"""Long-running server memory: models evicted from the cache and ended sessions do not pile up."""

import gc
import weakref

import pytest

from tl_core.training.runner import train

from .factories import colors_dataset, small_config

pytestmark = pytest.mark.slow


@pytest.fixture
def two_runs(tmp_path):
    colors_dataset(tmp_path, per_class=4)
    cfg = dict(size=32, epochs=1)
    return [train(small_config(**cfg), tmp_path / "a")[0], train(small_config(**cfg, seed=7), tmp_path / "b")[0]]


def test_evicted_models_and_ended_sessions_do_not_stay_in_memory(two_runs):
    """Load 6 models through the app's cache (4 entries): what stays alive is bounded by the cache, not by
    how many models were ever loaded (before the fix every one stayed, frozen). And a session that was
    alive when a model loaded (so frozen with everything else) and then ended is cyclic garbage the
    collector cannot see: the next model load must free it."""
    from tl_app import models

    models._load_predictor.clear()

    class SessionLike:
        pass

    session = SessionLike()
    session.self = session  # a reference cycle, as Streamlit's session objects have
    session_ref = weakref.ref(session)
    refs = []
    for i in range(6):
        predictor = models._load_predictor(str(two_runs[i % 2].root), 1000.0 + i)  # a new key: a new load
        refs.append(weakref.ref(predictor.loaded.model))
        del predictor
        if i == 0:
            del session  # ended after the first load froze it
    gc.collect()
    alive = [i for i, ref in enumerate(refs) if ref() is not None]
    # the 4 cached models, and the one evicted by the last load (freed at the next load)
    assert alive == [1, 2, 3, 4, 5], alive
    assert session_ref() is None, "an ended session frozen at a model load stays in memory for good"
    models._load_predictor.clear()
    gc.unfreeze()
