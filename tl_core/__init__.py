"""Transfer Learning Studio's engine: datasets, models, training runs, inference and deployment.

Stage subpackages in pipeline order, each importing only from the ones before it (``LAYERS``; the
rule is enforced by ``tests/test_layers.py``, counting imports inside functions too). None imports
streamlit. ``docs/architecture.md`` says what each module owns.
"""

from tl_core.errors import TLError

# Lowest first. A module may import from its own layer (without cycles) and from layers listed before it.
LAYERS = (
    ("errors", "clock"),  # the foundation: exceptions, time-zone-aware timestamps
    ("workspace", "device", "audit"),  # the $TL_HOME folder, the host's cores and accelerators, the audit log
    ("data",),  # images, archives, sources, uploads, datasets, versions, inboxes
    ("models",),  # architectures, preprocessing, settings, freeze depth, model building, engines, features
    ("runs",),  # run folders, their artifacts, the evaluation, the loaded model, the model card
    ("tracking",),  # runs in MLflow: logged live or after the fact, the run's model as an MLflow model
    ("training",),  # running a config into a run, and the tools that choose its settings
    ("inference",),  # predicting with a run's model, pretrained classifiers, explanations
    ("inspection",),  # data quality: suspects, the embedding map
    ("deploy",),  # exports, their parity checks, model cards, the REST server
    ("backends",),  # where jobs run: this host or a Ray cluster
    ("cli", "__main__"),  # python -m tl_core
)

__all__ = ["LAYERS", "TLError"]
__version__ = "0.1.0"
