"""Transfer Learning Studio core: datasets, model zoo, training runs, evaluation and prediction.

Modules, one per stage (none imports streamlit; only modeling, freeze's graph helpers, features,
training, model_handle and predict import Keras):
- ``workspace``: the ``$TL_HOME`` folder and atomic writes
- ``images``: decoding bytes to upright RGB pixels, the same everywhere
- ``datasets``: building checked, split datasets from candidate files; listing, loading, deleting
- ``sources`` / ``archives``: where candidate files come from; zip entries read with bounded memory
- ``uploads``: browser uploads staged on disk until imported
- ``audit``: the log of deletions and cancellations
- ``architectures``: the registry of keras.applications bases and their weights files
- ``freeze``: freeze depth: parsing, applying, previewing, checking, clean cuts (private Keras graph access)
- ``config``: ``TrainConfig`` (saved as JSON in each run), the head kinds and optimizers
- ``modeling``: building the end-to-end model: preprocessing inside, base, new head
- ``features``: the cache of frozen-base features
- ``training``: running a config into a run folder, one unit per training path
- ``evaluate``: the ``Interpretation`` of validation predictions
- ``runs``: run folders and their lifecycle; ``artifacts``: every file training produces
- ``model_handle``: ``LoadedModel``, a trained run's model and its parts, for either head kind
- ``predict``: classifying images with a loaded model
- ``backends``: the seam between the app and what executes jobs (``local``: a worker on this host)
- ``device``: accelerator, precision and distribution policy, process identity
"""
from .workspace import TLError

__all__ = ["TLError"]
__version__ = "0.1.0"
