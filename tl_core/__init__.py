"""Transfer Learning Studio core: datasets, model zoo, training runs, evaluation and prediction.

Modules, one per stage (none imports streamlit; only modeling/features/train/predict import Keras):
- ``workspace``: the ``$TL_HOME`` folder and atomic writes
- ``images``: decoding bytes to upright RGB pixels, the same everywhere
- ``datasets``: importing zips, folders and uploads into checked, split datasets
- ``architectures``: the registry of keras.applications bases and their weights files
- ``config``: ``TrainConfig``, saved as JSON in each run
- ``modeling``: building the end-to-end model and setting the freeze depth
- ``features``: the cache of frozen-base features
- ``train``: running a config into a run folder
- ``evaluate``: the ``Interpretation`` of validation predictions
- ``predict``: loading a run and classifying images
- ``runs`` / ``jobs``: run folders, and the background worker and queue the app uses
"""
from .workspace import TLError

__all__ = ["TLError"]
__version__ = "0.1.0"
